"""Connected components of label maps: labelling, sizes, keeping the largest, bounding boxes.

Full (26-) connectivity everywhere, as the thesis's post-processing and KiTS practice. Work is
restricted to a mask's bounding box where it matters, so memory scales with the kidneys, not the
CT (a 1059 x 512 x 512 volume is never labelled whole).

>>> import numpy as np
>>> m = np.zeros((5, 5, 9), bool); m[1:4, 1:4, 0:3] = True; m[2, 2, 7] = True
>>> components(m)[1]
2
>>> int(keep_largest(m).sum())
27
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["FULL_CONNECTIVITY", "bounding_box", "component_sizes", "components", "keep_largest", "kidney_voxels", "select"]

#: 26-connectivity in 3-D.
FULL_CONNECTIVITY = np.ones((3, 3, 3), bool)


def bounding_box(mask: np.ndarray, margin: int = 0) -> tuple[slice, ...] | None:
    """Slices of the non-zero voxels' bounding box (grown by ``margin``, clipped); ``None`` if empty.

    One pass of axis projections (no voxel index list), so it is cheap on a large volume.
    """
    mask = np.asarray(mask)
    first = np.flatnonzero(mask.any(axis=tuple(range(1, mask.ndim))))
    if first.size == 0:
        return None
    slab = mask[first[0]: first[-1] + 1]
    spans = [first]
    for ax in range(1, mask.ndim):
        spans.append(np.flatnonzero(slab.any(axis=tuple(a for a in range(mask.ndim) if a != ax))))
    return tuple(slice(max(int(v[0]) - margin, 0), min(int(v[-1]) + 1 + margin, n))
                 for v, n in zip(spans, mask.shape))


def components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """``(labels int32, n)``: the 26-connected components of a boolean mask, numbered 1..n."""
    return ndimage.label(np.asarray(mask, bool), structure=FULL_CONNECTIVITY)


#: Voxels counted per ``np.bincount`` call: it copies its input to int64, so counting a 278 M-voxel
#: box at once took 8 bytes per voxel of it. Counting the labelled voxels of one slice at a time keeps
#: the copy under 128 MB whatever the box and however much of it is foreground.
_COUNT_CHUNK = 1 << 24


def _count(comp: np.ndarray, n: int, where: np.ndarray | None = None) -> np.ndarray:
    """Voxels per component id (int64 ``(n + 1,)``, index 0 set to 0), of ``where`` only when given."""
    flat = comp.reshape(-1)
    keep = None if where is None else np.asarray(where, bool).reshape(-1)
    counts = np.zeros(n + 1, np.int64)
    for start in range(0, flat.size, _COUNT_CHUNK):
        ids = flat[start:start + _COUNT_CHUNK]
        sel = ids > 0 if keep is None else keep[start:start + _COUNT_CHUNK]
        counts += np.bincount(ids[sel], minlength=n + 1)
    counts[0] = 0
    return counts


def component_sizes(comp: np.ndarray, n: int) -> np.ndarray:
    """Voxels per component: int64 ``(n + 1,)`` with index 0 (background) set to 0."""
    return _count(comp, n)


def kidney_voxels(comp: np.ndarray, n: int, kidney: np.ndarray) -> np.ndarray:
    """Voxels of ``kidney`` (boolean, same shape as ``comp``) in each component: int64 ``(n + 1,)``."""
    return _count(comp, n, kidney)


def select(comp: np.ndarray, n: int, ids) -> np.ndarray:
    """Boolean mask of the voxels of components ``ids`` (a lookup table: 1 byte per voxel, any number of ids)."""
    table = np.zeros(n + 1, bool)
    table[np.asarray(ids, np.int64)] = True
    table[0] = False
    return table[comp]


def keep_largest(mask: np.ndarray) -> np.ndarray:
    """The largest 26-connected component of a boolean mask (a new array; all False when empty)."""
    mask = np.asarray(mask, bool)
    out = np.zeros(mask.shape, bool)
    box = bounding_box(mask)
    if box is None:
        return out
    comp, n = components(mask[box])
    out[box] = comp == int(component_sizes(comp, n).argmax())
    return out
