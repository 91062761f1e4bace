"""Measure the peak RSS of one real training step in a fresh process (for tests/test_train_memory_plan.py).

    python tests/_memory_step.py CONFIG_JSON OUT_DIR

Prints one JSON line: ``{"baseline": bytes, "peak": bytes, "estimate": bytes}``. The baseline is the
process's RSS after the imports and the batch are ready and before the Trainer (network, optimizer)
exists; the peak is the kernel's high-water mark (VmHWM) after one epoch of two steps, reset first
(``/proc/self/clear_refs``), so the difference is what the steps (and the model) added. glibc is
told to return freed buffers at once (``KIDNEYSEG_TEST_ALLOCATOR=default`` keeps its default).
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kidneyseg.resources import _hwm_bytes  # noqa: E402
from kidneyseg.train.config import TrainConfig  # noqa: E402
from kidneyseg.train.memory_plan import training_memory_plan  # noqa: E402
from kidneyseg.train.trainer import Trainer  # noqa: E402


def rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def main(config_json: str, out_dir: str) -> None:
    torch.set_num_threads(2)
    if os.environ.get("KIDNEYSEG_TEST_ALLOCATOR") != "default":
        # glibc keeps freed blocks under its adaptive mmap threshold (up to 32 MB) in the heap, so a
        # CPU process's RSS can exceed the memory in use by 30-90 % for networks whose feature maps are
        # that small; a fixed 128 KiB threshold returns them at once and RSS measures the live memory
        ctypes.CDLL("libc.so.6").mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD
    cfg = TrainConfig.from_json(config_json)
    estimate = training_memory_plan(cfg, "cpu").total_bytes
    g = torch.Generator().manual_seed(0)
    shape = (cfg.batch_size, cfg.network.in_channels, *cfg.patch_size)
    x = torch.randn(shape, generator=g)
    y = torch.randint(0, cfg.network.num_classes, (cfg.batch_size, 1, *cfg.patch_size), generator=g)

    def batches(epoch, seed):
        while True:
            yield x.clone(), y.clone()

    base = rss()
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    trainer = Trainer(cfg, out_dir, batches)
    trainer.fit()
    print(json.dumps({"baseline": base, "peak": _hwm_bytes(os.getpid()), "estimate": estimate}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
