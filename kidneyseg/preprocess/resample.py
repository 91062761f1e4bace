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

import math
import warnings
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import torch

#: The cubic B-spline's prefilter pole.
_POLE = math.sqrt(3.0) - 2.0
#: Edge padding before the prefilter, as scipy does for mode="nearest" (``_prepad_for_spline_filter``).
_NPAD = 12
#: Terms kept in the causal initial value (|pole|**40 < 1e-22).
_HORIZON = 40
#: Elements per working slab (float32): bounds the scratch memory to ~4 x 64 MB.
SLAB_ELEMENTS = 16 * 2**20

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


# --------------------------------------------------------------------------------------- 1D kernels
def _taps(amap: AxisMap, n_in: int, order: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer input indices (n_out, K) and weights (n_out, K) for one axis.

    Indices address the *padded* coefficient array for order 3 (offset by ``_NPAD``) and the raw
    input for orders 0 and 1; they are clipped to the valid range (mode "nearest").
    """
    u = amap.coords()
    if order == 0:
        idx = np.clip(np.floor(u + 0.5), 0, n_in - 1).astype(np.int64)[:, None]
        return idx, np.ones_like(idx, dtype=np.float64)
    if order == 1:
        u = np.clip(u, 0, n_in - 1)
        i0 = np.floor(u)
        t = u - i0
        i0 = i0.astype(np.int64)
        idx = np.stack([i0, np.minimum(i0 + 1, n_in - 1)], 1)
        return idx, np.stack([1 - t, t], 1)
    if order == 3:
        # coordinates just outside [0, n-1] use the 12 edge-padded coefficients, as scipy does
        u = u + _NPAD
        i0 = np.floor(u)
        t = u - i0
        w = np.stack([(1 - t) ** 3 / 6, (3 * t**3 - 6 * t**2 + 4) / 6,
                      (-3 * t**3 + 3 * t**2 + 3 * t + 1) / 6, t**3 / 6], 1)
        idx = i0.astype(np.int64)[:, None] + np.arange(-1, 3)[None]
        return np.clip(idx, 0, n_in + 2 * _NPAD - 1), w
    raise ValueError(f"order must be 0, 1 or 3, got {order!r}")


def _prefilter_(c: torch.Tensor) -> None:
    """In place: cubic B-spline coefficients along axis 0 of ``c`` (already edge-padded).

    Mirror boundary (what scipy's spline_filter applies to the pre-padded array); gain 6.
    """
    n = c.shape[0]
    z = _POLE
    c.mul_(6.0)
    if n == 1:
        return
    # causal initial value, mirror boundary: sum_k z^k c[k] (+ mirrored terms when n is short)
    if n > _HORIZON:
        w = torch.tensor([z**k for k in range(_HORIZON)], dtype=c.dtype, device=c.device)
        c0 = torch.tensordot(w, c[:_HORIZON], dims=1)
    else:
        zn = z ** (n - 1)
        c0 = c[0] + zn * c[n - 1]
        zi = z
        for i in range(1, n - 1):
            c0 = c0 + zi * (c[i] + zn * c[n - 1 - i])
            zi *= z
        c0 = c0 / (1 - zn * zn)
    c[0].copy_(c0)
    for i in range(1, n):
        c[i].add_(c[i - 1], alpha=z)
    c[n - 1].add_(c[n - 2], alpha=z).mul_(z / (z * z - 1))
    for i in range(n - 2, -1, -1):
        # c[i] = z * (c[i+1] - c[i])
        c[i].sub_(c[i + 1]).mul_(-z)


def _resample_axis0(src: torch.Tensor, out: torch.Tensor, amap: AxisMap, order: int) -> None:
    """Resample along axis 0 of ``src`` (n_in, ...) into ``out`` (n_out, ...), same trailing shape.

    Works in slabs along axis 1 so the float32 scratch stays below ``SLAB_ELEMENTS`` per worker.
    On CPU the slabs run in a small thread pool with torch's intra-op threading switched off:
    the per-row operations are too small for OpenMP to pay off, and on a shared machine its barriers
    made them 10-50x slower (measured). On CUDA the slabs run one after another.
    """
    n_in = src.shape[0]
    idx, w = _taps(amap, n_in, order)
    idx_l, w_l = idx.tolist(), w.tolist()
    dev = out.device
    per_row = max(1, int(np.prod(src.shape[2:], dtype=np.int64)))
    pad_n = n_in + 2 * _NPAD if order == 3 else n_in
    cuda = dev.type == "cuda"
    threads = 1 if cuda else max(1, torch.get_num_threads())
    budget = SLAB_ELEMENTS * (4 if cuda else 1)
    rows = max(1, min(budget // (pad_n * per_row), -(-src.shape[1] // threads)))

    def work(r0: int, r1: int) -> None:
        block = src[:, r0:r1]
        if order == 3:
            c = torch.empty((pad_n,) + tuple(block.shape[1:]), dtype=torch.float32, device=dev)
            c[_NPAD:_NPAD + n_in].copy_(block)
            c[:_NPAD].copy_(c[_NPAD:_NPAD + 1].expand_as(c[:_NPAD]))
            c[_NPAD + n_in:].copy_(c[_NPAD + n_in - 1:_NPAD + n_in].expand_as(c[_NPAD + n_in:]))
            _prefilter_(c)
        else:
            c = block if order == 0 else block.to(torch.float32)
            if c.stride(-1) != 1:  # x-pass: gather rows from a contiguous copy, not a strided view
                c = c.contiguous()
        dst = out[:, r0:r1]
        final = None
        if dst.stride(-1) != 1:  # write a contiguous slab, transpose it into place once
            final, dst = dst, torch.empty(dst.shape, dtype=dst.dtype, device=dev)
        for j, (ii, ww) in enumerate(zip(idx_l, w_l)):
            d = dst[j]
            if order == 0:  # nearest: a plain copy, any dtype (labels stay uint8)
                d.copy_(c[ii[0]])
                continue
            torch.mul(c[ii[0]], ww[0], out=d)
            for i, wk in zip(ii[1:], ww[1:]):
                d.add_(c[i], alpha=wk)
        if final is not None:
            final.copy_(dst)

    spans = [(r0, min(src.shape[1], r0 + rows)) for r0 in range(0, src.shape[1], rows)]
    if threads == 1 or len(spans) == 1:
        for r0, r1 in spans:
            work(r0, r1)
        return
    from concurrent.futures import ThreadPoolExecutor

    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(threads) as pool:
            for f in [pool.submit(_no_grad(work), r0, r1) for r0, r1 in spans]:
                f.result()
    finally:
        torch.set_num_threads(saved)


def _no_grad(fn):
    def wrapped(*a):
        with torch.no_grad():
            return fn(*a)
    return wrapped


def _as_tensor(array) -> tuple[torch.Tensor, bool]:
    if isinstance(array, torch.Tensor):
        return array, False
    arr = np.asarray(array)
    if arr.ndim != 3:
        raise ValueError(f"array must be 3D (z, y, x), got shape {arr.shape}")
    if any(st < 0 for st in arr.strides):  # torch cannot view negative strides; any other view is
        arr = np.ascontiguousarray(arr)     # used as it is (no copy of a cropped 1 GB CT)
    if arr.dtype == np.uint16 or arr.dtype == np.uint32:  # torch lacks some unsigned ops
        arr = arr.astype(np.int32)
    if not arr.flags.writeable:  # read-only memory maps: we never write into the input
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return torch.from_numpy(arr), True
    return torch.from_numpy(arr), True


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
    x, was_numpy = _as_tensor(image)
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
            _resample_axis0(cur.permute(perm), out.permute(perm), maps[ax], orders[ax])
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
    x, _ = _as_tensor(image) if not isinstance(image, torch.Tensor) else (image, False)
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
    x, was_numpy = _as_tensor(label)
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
                _resample_axis0(out.permute(perm), nxt.permute(perm), maps[ax], 0)
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
    x, _ = _as_tensor(label) if not isinstance(label, torch.Tensor) else (label, False)
    out_shape = tuple(shape) if shape is not None else new_shape(x.shape, spacing, target_spacing)
    maps = [zoom_map(n, m) for n, m in zip(x.shape, out_shape)]
    return resample_label_maps(label, maps, mode, num_classes)


__all__ = [
    "AxisMap", "lowres_axis", "new_shape", "resample_image", "resample_image_maps", "resample_label",
    "resample_label_maps", "zoom_map", "SLAB_ELEMENTS",
]
