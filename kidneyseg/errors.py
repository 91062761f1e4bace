"""User-facing errors and atomic file output.

Every problem a user can cause (a bad file, a bad argument, a missing folder) raises
:class:`KidneysegError`. The command line prints its message as one line and exits non-zero;
library callers catch it like any ``ValueError``.

Outputs are written through :func:`atomic_path`: the data goes to a temporary file beside the
target and is renamed into place only when complete, so a crash or a kill never leaves a
half-written output and never destroys an older complete one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator


class KidneysegError(ValueError):
    """A problem with the user's input or environment, reported as one clear line."""


def fail(path: os.PathLike | str | None, problem: str) -> KidneysegError:
    """Build the one-line error ``"<path>: <problem>"`` (``problem`` alone without a path).

    >>> str(fail("case_00001/imaging.nii.gz", "not a NIfTI file"))
    'case_00001/imaging.nii.gz: not a NIfTI file'
    """
    return KidneysegError(f"{path}: {problem}" if path is not None else problem)


def ensure_output_dir(path: os.PathLike | str) -> Path:
    """Create ``path`` (and parents) and check it is writable; raise a clear error if not."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise fail(path, f"cannot create output folder ({exc.strerror or exc})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise fail(path, "output folder is not writable")
    return path


def _process_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: Read once at import (os.umask can only be read by setting it): outputs get the permissions a plain
#: ``open(path, "w")`` would give them, not mkstemp's owner-only 0600.
_UMASK = _process_umask()


@contextlib.contextmanager
def atomic_path(target: os.PathLike | str, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` when the block succeeds.

    The temporary name keeps the target's suffixes (``.nii.gz``, ``.npy``) so libraries that
    choose a format from the file name still work. On any exception the temporary file is
    removed and ``target`` is left untouched. Disk-full and permission errors become a
    :class:`KidneysegError` naming the target.

    >>> with atomic_path("/tmp/example.txt") as tmp:
    ...     _ = tmp.write_text("complete", encoding="utf-8")
    """
    target = Path(target)
    ensure_output_dir(target.parent)
    if suffix is None:
        suffix = "".join(target.suffixes) or ".tmp"
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part" + suffix, dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if tmp.exists():
            os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise fail(target, f"could not write output ({exc.strerror or exc})") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(target: os.PathLike | str, text: str) -> Path:
    """Write ``text`` to ``target`` atomically and return the path."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(target)


def read_json(path: os.PathLike | str, what: str = "JSON file", kind: type | None = dict):
    """Parse a UTF-8 JSON file, or raise one :class:`KidneysegError` line naming the file.

    Args:
        path: the file.
        what: how the message names it ("plan", "cache file", ...).
        kind: the required top-level type (``dict``, ``list``) or ``None`` for any.
    """
    import json

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise fail(path, f"{what} not found") from None
    except json.JSONDecodeError as exc:
        raise fail(path, f"{what} is not valid JSON ({exc})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise fail(path, f"cannot read {what} ({exc})") from None
    if kind is not None and not isinstance(data, kind):
        raise fail(path, f"{what} must hold a JSON {'object' if kind is dict else kind.__name__}")
    return data
