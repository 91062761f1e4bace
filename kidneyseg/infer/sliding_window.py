"""Gaussian-weighted sliding-window prediction over a whole (C, z, y, x) volume.

Windows of ``patch_size`` tile the volume with a given ``overlap``; each window's softmax is
weighted by a Gaussian centred on the window (border voxels of a patch see less context) and
accumulated in fp32 at network resolution (only the network runs in the runtime's precision, e.g.
bf16: the softmax, the Gaussian weights and the sums are float32); the result is the argmax as
uint8 labels, plus fp16 probabilities only on request. Class logits are never kept for more than
one batch of windows, and nothing is ever resampled to the original resolution here.

Optional mirror test-time augmentation runs the network on every combination of flips along
``mirror_axes`` and averages the softmax.

Region-based networks (``output=OutputSpec(..., "regions")``, :mod:`kidneyseg.model.outputs`)
go the same way with a sigmoid per region instead of the softmax, and their labels come from the
nested regions (each >= 0.5) instead of the argmax.

>>> import torch
>>> net = torch.nn.Conv3d(1, 3, 1)
>>> res = sliding_window_predict(torch.zeros(1, 20, 20, 20), net, (16, 16, 16), overlap=0.5)
>>> res.labels.shape, res.labels.dtype
((20, 20, 20), dtype('uint8'))
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..model.outputs import OutputSpec
from ..runtime import Runtime
from .memory import accumulator_bytes, choose_stitch_device, window_bytes


@dataclass
class SlidingWindowResult:
    """Output of :func:`sliding_window_predict`.

    Attributes:
        labels: uint8 (z, y, x) argmax (or decoded regions) at the input's (network) resolution.
        probs: fp16 (K, z, y, x) softmax (or region sigmoid) probabilities, or ``None`` unless requested.
        n_windows: network calls counted in windows (x mirror combinations).
        stitch_device: where the accumulators lived.
    """

    labels: np.ndarray
    probs: np.ndarray | None
    n_windows: int
    stitch_device: str


def check_overlap(overlap: float) -> float:
    """Validate an overlap fraction in [0, 1)."""
    if not isinstance(overlap, (int, float)) or isinstance(overlap, bool) or not (0.0 <= overlap < 1.0):
        raise ValueError(f"overlap must be in [0, 1), got {overlap!r}")
    return float(overlap)


def window_starts(size: int, patch: int, overlap: float) -> list[int]:
    """Start indices of windows along one axis, evenly spread, first at 0 and last at ``size - patch``.

    >>> window_starts(100, 40, 0.5)
    [0, 20, 40, 60]
    """
    if size <= patch:
        return [0]
    step = patch * (1.0 - overlap)
    n = int(math.ceil((size - patch) / step)) + 1
    return [int(round(i * (size - patch) / (n - 1))) for i in range(n)]


def gaussian_weights(patch: Sequence[int], sigma_scale: float = 0.125) -> torch.Tensor:
    """A (pz, py, px) fp32 Gaussian importance map, max 1, never 0 (sigma = ``sigma_scale`` x patch)."""
    axes = []
    for p in patch:
        c = (p - 1) / 2.0
        sigma = max(p * sigma_scale, 1e-6)
        x = torch.arange(p, dtype=torch.float64)
        axes.append(torch.exp(-0.5 * ((x - c) / sigma) ** 2))
    w = axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]
    w = w / w.max()
    w = torch.clamp(w, min=float(w[w > 0].min()))
    return w.float()


def _mirror_sets(mirror_axes: Sequence[int] | None) -> list[tuple[int, ...]]:
    if not mirror_axes:
        return [()]
    axes = sorted(set(int(a) for a in mirror_axes))
    if any(a not in (0, 1, 2) for a in axes):
        raise ValueError(f"mirror_axes must be spatial axes among (0, 1, 2), got {mirror_axes!r}")
    return [c for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]


def _forward(network: Callable, x: torch.Tensor) -> torch.Tensor:
    out = network(x)
    if isinstance(out, (list, tuple)):  # deep supervision: full resolution first
        out = out[0]
    return out


def sliding_window_predict(
    image: torch.Tensor | np.ndarray,
    network: Callable[[torch.Tensor], torch.Tensor],
    patch_size: Sequence[int],
    overlap: float = 0.5,
    batch_size: int = 1,
    mirror_axes: Sequence[int] | None = None,
    device: torch.device | str | Runtime = "cpu",
    stitch_device: torch.device | str | None = None,
    return_probs: bool = False,
    sigma_scale: float = 0.125,
    progress: bool = False,
    desc: str = "sliding window",
    output: OutputSpec | None = None,
) -> SlidingWindowResult:
    """Predict labels for a whole volume window by window.

    Args:
        image: (C, z, y, x) float input at network resolution (normalized); any device.
        network: callable mapping (B, C, pz, py, px) to logits (B, K, pz, py, px) (or a list whose
            first entry is that), already on ``device`` and in eval mode.
        patch_size: window size (pz, py, px) in voxels; a smaller volume is padded with each
            channel's minimum (as the training sampler pads).
        overlap: fraction of a window shared with its neighbour, in [0, 1) (0.5 as nnU-Net).
        batch_size: windows per network call.
        mirror_axes: spatial axes (0 = z, 1 = y, 2 = x) to flip for test-time augmentation;
            all 2**n flip combinations are averaged. ``None``: off.
        device: where the network runs: a device (float32, channels-first) or a
            :class:`~kidneyseg.runtime.Runtime` (device, precision such as bf16 autocast, and
            memory layout; the network must already be in that layout, ``Runtime.prepare_model``).
        stitch_device: where the fp32 accumulators live; ``None`` chooses from a memory estimate
            (the compute device when they fit there, else the CPU).
        return_probs: also return fp16 probabilities (K, z, y, x).
        sigma_scale: Gaussian sigma as a fraction of the patch size.
        progress: show a tqdm bar.
        output: how the network's channels read (default: KiTS19 softmax over labels).

    Returns:
        :class:`SlidingWindowResult` with uint8 labels (z, y, x).

    Example shapes: image (1, 150, 300, 300), patch (64, 128, 128), overlap 0.5 -> 4 x 4 x 4 = 64
    windows, labels (150, 300, 300) uint8.
    """
    overlap = check_overlap(overlap)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    patch = tuple(int(p) for p in patch_size)
    if len(patch) != 3 or min(patch) < 1:
        raise ValueError(f"patch_size must be 3 positive ints (z, y, x), got {patch_size!r}")
    x = torch.as_tensor(image)
    if x.ndim != 4:
        raise ValueError(f"image must be (C, z, y, x), got shape {tuple(x.shape)}")
    runtime = device if isinstance(device, Runtime) else Runtime(torch.device(device))
    dev = runtime.device
    output = output or OutputSpec()
    flips = _mirror_sets(mirror_axes)

    shape = tuple(int(s) for s in x.shape[1:])
    pad = [max(p - s, 0) for p, s in zip(patch, shape)]
    inner = tuple(slice(p // 2, p // 2 + s) for p, s in zip(pad, shape))
    if any(pad):  # pad symmetrically to at least one patch; cropped off again below
        # Each channel is padded with its own minimum (air for the CT, 0 for the prior channels),
        # as the training sampler pads patches that leave the volume: zeros would be mean
        # foreground intensity after z-scoring and read as tissue.
        mins = x.reshape(x.shape[0], -1).amin(dim=1)
        full = mins.view(-1, 1, 1, 1).expand(x.shape[0], *[s + p for s, p in zip(shape, pad)]).clone()
        full[(slice(None), *inner)] = x
        x = full
    padded = tuple(int(s) for s in x.shape[1:])

    # the number of classes comes from one forward pass on the first window (also a warm-up)
    starts = [window_starts(s, p, overlap) for s, p in zip(padded, patch)]
    windows = list(itertools.product(*starts))
    gauss = None
    acc = wsum = None
    n_calls = 0
    sdev = None
    bar = tqdm(total=len(windows), desc=desc, unit="win", disable=not progress, leave=False)
    with torch.inference_mode():
        for b0 in range(0, len(windows), batch_size):
            chunk = windows[b0:b0 + batch_size]
            batch = torch.stack([x[:, z:z + patch[0], y:y + patch[1], w:w + patch[2]] for z, y, w in chunk])
            batch = batch.to(dev, dtype=torch.float32, non_blocking=True)
            prob = None
            for axes in flips:
                xin = runtime.prepare_input(torch.flip(batch, [a + 2 for a in axes]) if axes else batch)
                with runtime.autocast():
                    logits = _forward(network, xin)
                # float32 and channels-first from here on (probabilities, weights, sums)
                p = output.probabilities(logits.float().contiguous())
                if axes:
                    p = torch.flip(p, [a + 2 for a in axes])
                prob = p if prob is None else prob.add_(p)
                n_calls += len(chunk)
            if len(flips) > 1:
                prob.div_(len(flips))
            if acc is None:
                k = int(prob.shape[1])
                need = accumulator_bytes(padded, k, return_probs) + window_bytes(patch, x.shape[0], k, batch_size)
                sdev = torch.device(stitch_device) if stitch_device is not None else choose_stitch_device(dev, need)
                acc = torch.zeros((k, *padded), dtype=torch.float32, device=sdev)
                wsum = torch.zeros(padded, dtype=torch.float32, device=sdev)
                gauss = gaussian_weights(patch, sigma_scale).to(dev)
            prob.mul_(gauss)
            prob = prob.to(sdev)
            g = gauss.to(sdev)
            for i, (z, y, w) in enumerate(chunk):
                sl = (slice(z, z + patch[0]), slice(y, y + patch[1]), slice(w, w + patch[2]))
                acc[(slice(None), *sl)] += prob[i]
                wsum[sl] += g
            bar.update(len(chunk))
    bar.close()

    acc = acc[(slice(None), *inner)]
    wsum = wsum[inner]
    labels = np.empty(shape, np.uint8)
    probs = np.empty((acc.shape[0], *shape), np.float16) if return_probs else None
    # normalise and argmax in z-slabs: no second full-size fp32 array
    slab = max(1, int(2 ** 24 // max(1, shape[1] * shape[2])))
    for z0 in range(0, shape[0], slab):
        a = acc[:, z0:z0 + slab] / wsum[z0:z0 + slab]
        labels[z0:z0 + slab] = output.labels(a).cpu().numpy()
        if probs is not None:
            probs[:, z0:z0 + slab] = a.half().cpu().numpy()
    return SlidingWindowResult(labels, probs, n_calls, str(sdev))


__all__ = ["SlidingWindowResult", "check_overlap", "gaussian_weights", "sliding_window_predict", "window_starts"]
