"""Batches drawn ahead of the training step in a background thread.

The sampler and the CPU side of augmentation run while the network computes the previous step; an
exception in the source is forwarded to the training thread, and a source that ends early is a
one-line error.

>>> list(Prefetcher(iter([1, 2, 3]), n=2, depth=1))
[1, 2]
"""

from __future__ import annotations

import queue
import threading
from typing import Iterable, Iterator

from ..errors import fail

__all__ = ["Prefetcher"]


class Prefetcher:
    """Draw ``n`` batches from ``source`` in a background thread, ``depth`` ahead (0: inline)."""

    def __init__(self, source: Iterable, n: int, depth: int):
        self.n, self.depth = n, depth
        self.it = iter(source)
        if depth > 0:
            self.q: queue.Queue = queue.Queue(maxsize=depth)
            self.thread = threading.Thread(target=self._work, daemon=True)
            self.thread.start()

    def _work(self) -> None:
        try:
            for _ in range(self.n):
                self.q.put(("ok", next(self.it)))
        except BaseException as exc:  # forwarded to the training thread
            self.q.put(("err", exc))
        finally:
            self._close()

    def _close(self) -> None:
        close = getattr(self.it, "close", None)  # end a generator (and its worker pool) early
        if close is not None:
            close()

    def __iter__(self) -> Iterator:
        for _ in range(self.n):
            if self.depth == 0:
                try:
                    yield next(self.it)
                except StopIteration:
                    raise fail(None, f"batch source ended early (needed {self.n} batches)") from None
            else:
                kind, item = self.q.get()
                if kind == "err":
                    if isinstance(item, StopIteration):
                        raise fail(None, f"batch source ended early (needed {self.n} batches)")
                    raise item
                yield item
        if self.depth == 0:
            self._close()
