"""Memory estimates made *before* predicting, and the stitching device chosen from them.

Sliding-window stitching holds fp32 class probabilities and fp32 window weights for the whole
network-resolution volume: ``(K + 1) * 4`` bytes per voxel, plus the uint8 labels and, on
request, fp16 probabilities. :func:`choose_stitch_device` puts these accumulators on the GPU when
they fit in its free memory with room to spare, else on the CPU, and refuses up front (a clear
error, no out-of-memory-then-retry) when the CPU cannot hold them either.

>>> round(gib(accumulator_bytes((128, 256, 256), num_classes=3)), 3)
0.133
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import torch

from ..errors import fail

GIB = 1024 ** 3
#: Fraction of the currently free memory the accumulators may take.
SAFETY_FRACTION = 0.7


def gib(n_bytes: float) -> float:
    """Bytes -> GiB."""
    return n_bytes / GIB


def accumulator_bytes(shape: Sequence[int], num_classes: int, return_probs: bool = False) -> int:
    """Bytes the stitching buffers take for a (z, y, x) network-resolution volume.

    fp32 probabilities (K) + fp32 weights (1) + uint8 labels, + fp16 probabilities when requested.
    """
    vox = int(np.prod([int(s) for s in shape]))
    return vox * (4 * (num_classes + 1) + 1 + (2 * num_classes if return_probs else 0))


def window_bytes(patch: Sequence[int], channels: int, num_classes: int, batch_size: int) -> int:
    """Rough bytes of one batch of windows in flight (input, logits, softmax, weighted copy), not the network."""
    vox = int(np.prod([int(s) for s in patch]))
    return batch_size * vox * 4 * (channels + 3 * num_classes)


def available_bytes(device: torch.device) -> int:
    """Free memory on ``device`` now (CUDA: ``mem_get_info``; CPU: psutil's available RAM)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    import psutil

    return int(psutil.virtual_memory().available)


def choose_stitch_device(compute_device: torch.device | str, need_bytes: int, what: str = "stitching") -> torch.device:
    """The device for the accumulators: the compute device when they fit there, else the CPU.

    Args:
        compute_device: where the network runs.
        need_bytes: from :func:`accumulator_bytes` (+ :func:`window_bytes`).
        what: used in messages.

    Raises:
        KidneysegError: not even the CPU has room (message gives both figures in GiB).
    """
    dev = torch.device(compute_device)
    if dev.type == "cuda":
        free = available_bytes(dev)
        if need_bytes <= SAFETY_FRACTION * free:
            return dev
        warnings.warn(f"{what} needs {gib(need_bytes):.2f} GiB, GPU has {gib(free):.2f} GiB free: "
                      "stitching on the CPU (slower, no out-of-memory)", stacklevel=2)
        dev = torch.device("cpu")
    free = available_bytes(dev)
    if need_bytes > free:
        raise fail(None, f"{what} needs about {gib(need_bytes):.2f} GiB but only {gib(free):.2f} GiB of RAM is free; "
                         "use a coarser target spacing or free memory")
    return dev


__all__ = ["accumulator_bytes", "available_bytes", "choose_stitch_device", "gib", "window_bytes"]
