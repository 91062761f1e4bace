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
    """Free memory on ``device`` now (CUDA: ``mem_get_info``; CPU: the RAM budget,
    :func:`kidneyseg.runtime.ram_budget_bytes`: ``$KIDNEYSEG_RAM_BUDGET_GIB`` or the available RAM)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    from ..runtime import ram_budget_bytes

    return ram_budget_bytes()


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


#: Host memory of one case in ``kidneyseg predict`` besides the networks' windows, per original voxel:
#: the CT read as float32 and turned into C order (8 while both copies exist), the stage-1 prior on
#: the original grid (1), the labels pasted back (1). Measured: 4.36 GiB peak for the 1059 x 512 x 512
#: case with the thesis's networks (docs/full_scale.md), which this rule puts at 4.55 GiB.
#: Process and libraries: :data:`PREDICT_BASE_BYTES`.
PREDICT_BYTES_PER_VOXEL = 10
PREDICT_BASE_BYTES = 600 * 2**20


def predict_case_bytes(shape: Sequence[int], spacing: Sequence[float], plan, patch: Sequence[int],
                       base_features: int, parameters: int, num_classes: int = 3) -> int:
    """Estimated host memory (bytes) to predict one CT of ``shape`` (z, y, x) at ``spacing`` (mm).

    The case's arrays (:data:`PREDICT_BYTES_PER_VOXEL` per original voxel), the stitching buffers of
    the larger stage grid (stage 1 on at most the whole volume at the coarse spacing; stage 2 on
    the plan's box with its 3 input channels), the two networks' weights and the activations of one
    window in flight (three first-stage feature maps), plus :data:`PREDICT_BASE_BYTES`.
    """
    from ..preprocess.resample import new_shape
    from ..preprocess.roi import box_voxels

    vox = int(np.prod([int(s) for s in shape], dtype=np.int64))
    grid1 = int(np.prod(new_shape(shape, spacing, plan.stage1_spacing), dtype=np.int64))
    grid2 = int(np.prod(box_voxels(plan.box_size_mm, plan.target_spacing), dtype=np.int64)) if plan.box_size_mm else 0
    stitch = max(accumulator_bytes([grid1], num_classes) + 4 * grid1,
                 accumulator_bytes([grid2], num_classes) + 3 * 4 * grid2 + grid2)
    window = 3 * 4 * base_features * int(np.prod([int(p) for p in patch]))
    return PREDICT_BASE_BYTES + PREDICT_BYTES_PER_VOXEL * vox + stitch + 4 * parameters + window


def check_predict_memory(path, shape: Sequence[int], spacing: Sequence[float], model, budget: int) -> int:
    """Refuse, before the CT is read, a case whose prediction cannot fit ``budget`` bytes of RAM.

    ``model`` is a loaded :class:`~kidneyseg.infer.cascade.CascadeModel`. Returns the estimate.

    Raises:
        KidneysegError: naming the file, the GiB it needs and the budget.
    """
    nets = (model.stage1, model.stage2)
    params = sum(p.numel() for net in nets for p in net.parameters())
    feats = max(int(getattr(getattr(net, "config", None), "base_features", 32)) for net in nets)
    patch = max((model.patch1, model.patch2), key=lambda p: int(np.prod(p)))
    from ..data.datasets import get_dataset

    need = predict_case_bytes(shape, spacing, model.plan, patch, feats, params,
                              num_classes=get_dataset(model.dataset).num_classes)
    if need > budget:
        raise fail(path, f"predicting this CT ({' x '.join(str(int(s)) for s in shape)} voxels) needs about "
                         f"{gib(need):.1f} GiB of RAM but the RAM budget is {gib(budget):.1f} GiB "
                         "(free memory, or $KIDNEYSEG_RAM_BUDGET_GIB); free memory or predict on a larger machine")
    return need


__all__ = ["PREDICT_BASE_BYTES", "PREDICT_BYTES_PER_VOXEL", "accumulator_bytes", "available_bytes",
           "check_predict_memory", "choose_stitch_device", "gib", "predict_case_bytes", "window_bytes"]
