"""Fast, memory-lean, anisotropy-aware resampling of CT volumes and label maps (torch, CPU or CUDA).

Images use a **cubic B-spline** (order 3, the thesis's "third-order spline"), computed exactly as
``scipy.ndimage.zoom(order=3, mode="nearest", grid_mode=True)`` does it, but separably, one axis at a
time, in float32 slabs with torch:

1. the interpolating prefilter (the recursive filter with the pole ``sqrt(3) - 2``) runs along the
   axis over a slab, vectorised over the two other axes, after the same 12-voxel edge padding scipy
   uses for ``mode="nearest"``;
2. the spline is evaluated at the output coordinates with four taps (gather + multiply-add).

A tensor-product B-spline is separable, so this equals scipy's 3D result up to float32 rounding
(measured in ``benchmarks/resample.py`` and ``tests/test_preprocess_resample.py``). We write our own
rather than call scipy because scipy runs single-threaded in float64 (about 20 s for a 150x512x512
case) and nnU-Net's ``resample_data_or_seg_to_shape`` builds full-size int64/float64 coordinate grids
(about 8 GB peak for the same case); this module needs neither.

Labels use **nearest-exact** sampling (the input voxel whose centre is nearest to the output voxel
centre). It can never create a value that is not in the input, it is a pure gather (fast, no float
copies of the label), and on the benchmark volumes and real KiTS19 labels it keeps kidney and tumor
volumes within 1 % (see docs/preprocess.md). ``label_mode="linear"`` (per-class linear interpolation
of the one-hot map, then argmax, as nnU-Net does) is available for comparison.

Anisotropy: when ``max(spacing) / min(spacing) > anisotropy_threshold`` (3, as nnU-Net) for the input
or the output grid, the low-resolution axis is resampled *separately and last* with its own order
(``order_z``; 3 by default as the thesis uses a cubic spline everywhere, 1 or 0 to avoid
interpolating across thick slices as nnU-Net does with 0). Otherwise the most shrinking axis goes
first, so intermediate arrays stay small.

Coordinates follow the pixel-area convention (``align_corners=False`` in torch, ``grid_mode=True`` in
scipy): output voxel ``j`` along an axis samples input coordinate ``a + b * j`` in voxel-index units
(voxel ``i``'s centre is at ``i``). For a plain zoom ``b = n_in / n_out`` and ``a = b / 2 - 0.5``, so
the field of view is preserved exactly.

>>> import numpy as np
>>> img = np.zeros((30, 64, 64), np.float32)
>>> out = resample_image(img, (3.0, 0.8, 0.8), (1.0, 0.8, 0.8))
>>> out.shape
(90, 64, 64)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import torch

from .spline import SLAB_ELEMENTS, as_tensor, resample_axis0

LabelMode = Literal["nearest", "linear"]


# ----------------------------------------------------------------------------------------- geometry
@dataclass(frozen=True)
class AxisMap:
    """Output voxel ``j`` (0 <= j < n_out) samples input index coordinate ``offset + step * j``."""

    n_out: int
    offset: float
    step: float

    def coords(self) -> np.ndarray:
        return self.offset + self.step * np.arange(self.n_out, dtype=np.float64)

    def is_identity(self, n_in: int) -> bool:
        """True when the map returns the input axis unchanged."""
        return self.n_out == n_in and abs(self.offset) < 1e-9 and abs(self.step - 1) < 1e-9


def zoom_map(n_in: int, n_out: int) -> AxisMap:
    """The axis map of a plain zoom from ``n_in`` to ``n_out`` voxels (field of view preserved)."""
    if n_in < 1 or n_out < 1:
        raise ValueError(f"axis sizes must be >= 1, got n_in={n_in!r}, n_out={n_out!r}")
    step = n_in / n_out
    return AxisMap(int(n_out), 0.5 * step - 0.5, step)


def new_shape(shape: Sequence[int], spacing: Sequence[float], target_spacing: Sequence[float]) -> tuple[int, ...]:
    """Output shape for resampling ``shape`` from ``spacing`` to ``target_spacing`` (mm, z y x).

    ``round(n * spacing / target)``, at least 1 voxel (nnU-Net's rule).

    >>> new_shape((150, 512, 512), (3.0, 0.78, 0.78), (1.0, 0.78, 0.78))
    (450, 512, 512)
    """
    _check_spacing(spacing, "spacing")
    _check_spacing(target_spacing, "target_spacing")
    return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing, target_spacing))


def _check_spacing(spacing, name):
    if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"{name} must be 3 positive numbers (z, y, x mm), got {tuple(spacing)!r}")


def lowres_axis(spacing: Sequence[float], target_spacing: Sequence[float] | None = None,
                threshold: float = 3.0) -> int | None:
    """The axis to resample separately, or ``None`` for an (almost) isotropic problem.

    Like nnU-Net: the input spacing is checked first, then the target spacing; an axis qualifies
    when ``max / min > threshold`` and it is the single coarsest axis.

    >>> lowres_axis((3.0, 0.78, 0.78)), lowres_axis((0.8, 0.78, 0.78), (1.0, 0.78, 0.78))
    (0, None)
    """
    for sp in (spacing, target_spacing):
        if sp is None:
            continue
        sp = np.asarray(sp, float)
        if sp.max() / sp.min() > threshold:
            coarsest = np.flatnonzero(np.isclose(sp, sp.max()))
            if len(coarsest) == 1:
                return int(coarsest[0])
    return None


# ------------------------------------------------------------------------------------------ images
def resample_image_maps(image, maps: Sequence[AxisMap], order: int = 3, order_z: int | None = None,
                        separate_axis: int | None = None) -> np.ndarray | torch.Tensor:
    """Resample an image with one :class:`AxisMap` per axis (the general form of :func:`resample_image`).

    Args:
        image: (z, y, x) numpy array or torch tensor (CPU or CUDA), any real dtype; HU.
        maps: three axis maps (z, y, x).
        order: spline order for the axes (3 cubic B-spline, 1 linear, 0 nearest).
        order_z: order for ``separate_axis`` (default ``order``).
        separate_axis: axis resampled last with ``order_z`` (``None``: all axes alike, the most
            shrinking axis first to keep intermediates small; the order only changes float rounding).

    Returns:
        float32 array (numpy if a numpy array came in, else a tensor on the input's device),
        shape ``(maps[0].n_out, maps[1].n_out, maps[2].n_out)``.
    """
    x, was_numpy = as_tensor(image)
    if x.dim() != 3:
        raise ValueError(f"image must be 3D (z, y, x), got shape {tuple(x.shape)}")
    if len(maps) != 3:
        raise ValueError(f"need 3 axis maps (z, y, x), got {len(maps)}")
    orders = [order] * 3
    if separate_axis is not None:
        orders[separate_axis] = order if order_z is None else order_z
    # pass order: the separate (low-res) axis last; otherwise the most shrinking axis first, so the
    # intermediate arrays stay small (a 1059-slice case going to 2.5 mm loses 80 % in the first pass)
    if separate_axis is None:
        order_axes = sorted((1, 2, 0), key=lambda a: maps[a].n_out / x.shape[a])
    else:
        order_axes = [a for a in (1, 2, 0) if a != separate_axis] + [separate_axis]
    todo = [a for a in order_axes if not maps[a].is_identity(x.shape[a])]
    with torch.no_grad():
        cur = x
        for ax in todo:
            out_shape = list(cur.shape)
            out_shape[ax] = maps[ax].n_out
            out = torch.empty(out_shape, dtype=torch.float32, device=x.device)
            # move the working axis to the front (views only) so the kernel sees axis 0
            perm = [ax] + [a for a in range(3) if a != ax]
            resample_axis0(cur.permute(perm), out.permute(perm), maps[ax].coords(), orders[ax])
            cur = out
        if cur is x:
            cur = x.to(torch.float32, copy=True)
    return cur.cpu().numpy() if was_numpy else cur


def resample_image(image, spacing: Sequence[float], target_spacing: Sequence[float],
                   shape: Sequence[int] | None = None, order: int = 3, order_z: int | None = None,
                   anisotropy_threshold: float = 3.0):
    """Resample a CT image (z, y, x) from ``spacing`` to ``target_spacing`` (mm) with a cubic B-spline.

    Equals ``scipy.ndimage.zoom(image, new/old, order=3, mode="nearest", grid_mode=True)`` to float32
    precision, 10-100x faster and with no full-size coordinate grids.

    Args:
        image: (z, y, x) numpy array or torch tensor (CUDA tensors are processed on the GPU).
        spacing: input voxel size (z, y, x) in mm.
        target_spacing: output voxel size (z, y, x) in mm.
        shape: output shape (default :func:`new_shape`).
        order: 3 (cubic B-spline), 1 or 0.
        order_z: order along the low-resolution axis when the problem is anisotropic (default ``order``).
        anisotropy_threshold: spacing ratio above which the low-res axis is done separately.

    Returns:
        float32 (z', y', x') numpy array or tensor.
    """
    x, _ = as_tensor(image) if not isinstance(image, torch.Tensor) else (image, False)
    out_shape = tuple(shape) if shape is not None else new_shape(x.shape, spacing, target_spacing)
    maps = [zoom_map(n, m) for n, m in zip(x.shape, out_shape)]
    sep = lowres_axis(spacing, target_spacing, anisotropy_threshold)
    return resample_image_maps(image, maps, order, order_z, sep)


# ------------------------------------------------------------------------------------------ labels
def resample_label_maps(label, maps: Sequence[AxisMap], mode: LabelMode = "nearest",
                        num_classes: int = 3):
    """Resample a label map with per-axis maps; see :func:`resample_label`.

    Returns uint8 (numpy if numpy came in, else a tensor on the input's device).
    """
    x, was_numpy = as_tensor(label)
    if x.dim() != 3:
        raise ValueError(f"label must be 3D (z, y, x), got shape {tuple(x.shape)}")
    with torch.no_grad():
        if mode == "nearest":
            out = x
            for ax in (1, 2, 0):
                if maps[ax].is_identity(out.shape[ax]):
                    continue
                shape = list(out.shape)
                shape[ax] = maps[ax].n_out
                nxt = torch.empty(shape, dtype=torch.uint8, device=x.device)
                perm = [ax] + [a for a in range(3) if a != ax]
                resample_axis0(out.permute(perm), nxt.permute(perm), maps[ax].coords(), 0)
                out = nxt
            if out is x:
                out = x.to(torch.uint8, copy=True)
        elif mode == "linear":
            shape = tuple(m.n_out for m in maps)
            best = torch.zeros(shape, dtype=torch.float32, device=x.device)
            out = torch.zeros(shape, dtype=torch.uint8, device=x.device)
            for cls in range(num_classes):
                onehot = (x == cls).to(torch.float32)
                prob = resample_image_maps(onehot, maps, order=1)
                better = prob > best
                out[better] = cls
                best = torch.maximum(best, prob)
                del onehot, prob, better
        else:
            raise ValueError(f"label mode must be 'nearest' or 'linear', got {mode!r}")
    return out.cpu().numpy() if was_numpy else out


def resample_label(label, spacing: Sequence[float], target_spacing: Sequence[float],
                   shape: Sequence[int] | None = None, mode: LabelMode = "nearest", num_classes: int = 3):
    """Resample a label map (z, y, x; values 0..num_classes-1) to ``target_spacing`` (mm).

    ``mode="nearest"``: each output voxel takes the input voxel whose centre is nearest (never
    creates a value, volumes kept within 1 % on KiTS-like data). ``mode="linear"``: per-class linear
    interpolation of the one-hot map, then argmax (nnU-Net's choice; smoother, 3x the work).

    >>> lab = np.zeros((10, 8, 8), np.uint8); lab[4:6, 2:6, 2:6] = 2
    >>> out = resample_label(lab, (3.0, 1.0, 1.0), (1.0, 1.0, 1.0))
    >>> out.shape, int((out == 2).sum()) == 3 * int((lab == 2).sum())
    ((30, 8, 8), True)
    """
    x, _ = as_tensor(label) if not isinstance(label, torch.Tensor) else (label, False)
    out_shape = tuple(shape) if shape is not None else new_shape(x.shape, spacing, target_spacing)
    maps = [zoom_map(n, m) for n, m in zip(x.shape, out_shape)]
    return resample_label_maps(label, maps, mode, num_classes)


__all__ = [
    "AxisMap", "lowres_axis", "new_shape", "resample_image", "resample_image_maps", "resample_label",
    "resample_label_maps", "zoom_map", "SLAB_ELEMENTS",
]
