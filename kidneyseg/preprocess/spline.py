"""One axis at a time: the cubic B-spline prefilter, the interpolation taps and the slab-wise gather.

The machinery behind :mod:`kidneyseg.preprocess.resample` (read its docstring for the method and
the scipy equivalence). Everything works on axis 0 of a torch tensor, in float32 slabs of at most
:data:`SLAB_ELEMENTS` elements, with a small thread pool on the CPU. Only single-rounding
elementwise operations are used, so results are bitwise identical whatever the slab shape, the
thread count or the CPU's SIMD width (tests/test_preprocess_resample.py).
"""

from __future__ import annotations

import math
import warnings

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


def taps(coords: np.ndarray, n_in: int, order: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer input indices (n_out, K) and weights (n_out, K) for one axis.

    ``coords``: the input index coordinate each output voxel samples (float64, (n_out,)).

    Indices address the *padded* coefficient array for order 3 (offset by ``_NPAD``) and the raw
    input for orders 0 and 1; they are clipped to the valid range (mode "nearest").
    """
    u = np.asarray(coords, np.float64)
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


def prefilter_(c: torch.Tensor) -> None:
    """In place: cubic B-spline coefficients along axis 0 of ``c`` (already edge-padded).

    Mirror boundary (what scipy's spline_filter applies to the pre-padded array); gain 6.

    Only single-rounding elementwise operations are used (a multiply, then an add; no reductions,
    no ``alpha=`` fused multiply-adds): each output element is then the same IEEE float32 number
    whatever the slab shape, the SIMD width the CPU dispatches to, or the number of threads, so a
    cache built with 1 or 8 workers, on any x86 or ARM machine, holds identical bytes.
    """
    n = c.shape[0]
    z = _POLE
    c.mul_(6.0)
    if n == 1:
        return
    tmp = torch.empty_like(c[0])
    # causal initial value, mirror boundary: sum_k z^k c[k] (+ mirrored terms when n is short)
    if n > _HORIZON:
        c0 = c[0].clone()
        for k in range(1, _HORIZON):
            c0.add_(torch.mul(c[k], z ** k, out=tmp))
    else:
        zn = z ** (n - 1)
        c0 = c[0] + torch.mul(c[n - 1], zn, out=tmp)
        zi = z
        for i in range(1, n - 1):
            c0.add_(torch.mul(c[i] + torch.mul(c[n - 1 - i], zn, out=tmp), zi))
            zi *= z
        c0.div_(1 - zn * zn)
    c[0].copy_(c0)
    for i in range(1, n):
        c[i].add_(torch.mul(c[i - 1], z, out=tmp))
    c[n - 1].add_(torch.mul(c[n - 2], z, out=tmp)).mul_(z / (z * z - 1))
    for i in range(n - 2, -1, -1):
        # c[i] = z * (c[i+1] - c[i])
        c[i].sub_(c[i + 1]).mul_(-z)


def resample_axis0(src: torch.Tensor, out: torch.Tensor, coords: np.ndarray, order: int) -> None:
    """Resample along axis 0 of ``src`` (n_in, ...) into ``out`` (n_out, ...), same trailing shape.

    Output row ``j`` samples input coordinate ``coords[j]`` (index units) with spline ``order``.

    Works in slabs along axis 1 so the float32 scratch stays below ``SLAB_ELEMENTS`` per worker.
    On CPU the slabs run in a small thread pool with torch's intra-op threading switched off:
    the per-row operations are too small for OpenMP to pay off, and on a shared machine its barriers
    made them 10-50x slower (measured). On CUDA the slabs run one after another.
    """
    n_in = src.shape[0]
    idx, w = taps(coords, n_in, order)
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
            prefilter_(c)
        else:
            c = block if order == 0 else block.to(torch.float32)
            if c.stride(-1) != 1:  # x-pass: gather rows from a contiguous copy, not a strided view
                c = c.contiguous()
        dst = out[:, r0:r1]
        tmp = torch.empty(dst.shape[1:], dtype=torch.float32, device=dev)
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
                d.add_(torch.mul(c[i], wk, out=tmp))  # multiply, then add: no fused rounding
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


def as_tensor(array) -> tuple[torch.Tensor, bool]:
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


__all__ = ["SLAB_ELEMENTS", "as_tensor", "prefilter_", "resample_axis0", "taps"]
