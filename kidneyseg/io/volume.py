"""The :class:`Volume` type: a (z, y, x) array in one canonical layout, with the geometry to undo it.

Every array inside kidneyseg is laid out **(z, y, x)** in the orientation ``('I', 'P', 'L')``:
axis 0 runs head to feet (slice index), axis 1 front to back, axis 2 patient right to left.
That is how KiTS19 stores its files (so they load without a copy) and how radiologists view an
axial slice (``array[k]`` shows patient right on the image's left, anterior at the top).
Files in any other orientation (RAS from dcm2niix or TotalSegmentator, LPS from DICOM) are
permuted/flipped into it on load, and :func:`save_like` undoes exactly that permutation, so an
output has the input's shape, affine and header.

Spacing is always given in mm in (z, y, x) order.

Every reader of :mod:`kidneyseg.io` (NIfTI, NRRD/MHA, DICOM) returns a :class:`Volume`; the
checks every reader applies (affine, label values, CT intensities) live here too.

>>> vol = new_volume(np.zeros((4, 5, 6), np.uint8), (3.0, 0.8, 0.8))
>>> vol.shape, vol.spacing
((4, 5, 6), (3.0, 0.8, 0.8))
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import nibabel as nib
import numpy as np
from nibabel import orientations as nio

from ..errors import fail

#: The orientation of kidneyseg's canonical arrays: axis 0 -> Inferior, 1 -> Posterior, 2 -> Left.
CANONICAL_AXCODES = ("I", "P", "L")
#: Valid label values: 0 background, 1 kidney, 2 tumor.
LABEL_VALUES = (0, 1, 2)

Kind = Literal["image", "label"]


@dataclass
class SourceGeometry:
    """Where a canonical array came from, so it can be written back exactly.

    Attributes:
        path: the file, DICOM folder or ``.zip`` read.
        shape: the array shape as stored in the file (DICOM: (slice, row, column) in slice order).
        affine: the file's 4x4 voxel-to-world (RAS, mm) matrix.
        to_canonical: nibabel orientation transform (file axes -> canonical axes).
        header: the NIfTI header to reuse on output (``None`` for other inputs).
        format: what was read: ``"nifti"``, ``"nrrd"``, ``"mha"`` (any SimpleITK file) or ``"dicom"``.
        dicom: for DICOM input, the :class:`~kidneyseg.io.dicom.DicomSeries` read (its slice
            headers in file-array order, which a DICOM SEG output references); else ``None``.
    """

    path: str
    shape: tuple[int, ...]
    affine: np.ndarray
    to_canonical: np.ndarray
    header: nib.Nifti1Header | None = None
    format: str = "nifti"
    dicom: Any = None


@dataclass
class Volume:
    """A 3D array in canonical (z, y, x) layout with its geometry.

    Attributes:
        array: voxels, shape (z, y, x). Images are float32 in HU; labels uint8 in {0, 1, 2}.
        affine: 4x4 voxel-to-world (RAS, mm) matrix *of the canonical array*.
        source: how to restore the file layout (``None`` for arrays made in memory).
    """

    array: np.ndarray
    affine: np.ndarray
    source: SourceGeometry | None = field(default=None, repr=False)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm, (z, y, x)."""
        return spacing_from_affine(self.affine)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.array.shape)  # type: ignore[return-value]

    def with_array(self, array: np.ndarray) -> "Volume":
        """A volume on the same grid holding ``array`` (same shape required)."""
        if array.shape != self.array.shape:
            raise ValueError(f"array shape must be {self.array.shape}, got {array.shape}")
        return Volume(array, self.affine.copy(), self.source)


def spacing_from_affine(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size in mm along the array's three axes (column norms of the 3x3 part)."""
    return tuple(float(v) for v in np.linalg.norm(np.asarray(affine)[:3, :3], axis=0))  # type: ignore[return-value]


def affine_from_spacing(spacing: tuple[float, float, float], origin=(0.0, 0.0, 0.0)) -> np.ndarray:
    """The canonical ('I','P','L') affine for a (z, y, x) spacing in mm, KiTS19 style.

    >>> affine_from_spacing((3.0, 0.8, 0.8))[:3, :3].tolist()
    [[0.0, 0.0, -0.8], [0.0, -0.8, 0.0], [-3.0, 0.0, 0.0]]
    """
    dz, dy, dx = (float(s) for s in spacing)
    aff = np.zeros((4, 4))
    aff[0, 2], aff[1, 1], aff[2, 0] = -dx, -dy, -dz
    aff[:3, 3] = origin
    aff[3, 3] = 1.0
    return aff


# ----------------------------------------------------------------------------------- orientation
def orientation_to_canonical(affine: np.ndarray) -> np.ndarray:
    return nio.ornt_transform(nio.io_orientation(affine), nio.axcodes2ornt(CANONICAL_AXCODES))


def c_order(array: np.ndarray, tile: int = 64) -> np.ndarray:
    """``array`` as a C-contiguous copy (itself when it already is one), copied in ``tile``-sized cubes.

    NIfTI stores the first axis fastest, so nibabel hands out Fortran-ordered arrays: turning a
    1059 x 512 x 512 CT into the canonical C order is a full transpose. ``np.ascontiguousarray``
    walks it element by element across the whole volume (cache-hostile: 6.0 s of CPU for a
    611 x 512 x 512 float32 CT); copying 64^3 cubes keeps both sides in cache (0.5 s, measured in
    docs/full_scale.md). Same values, any strides (flips and permutations included).
    """
    if array.flags.c_contiguous or array.ndim != 3:
        return np.ascontiguousarray(array)
    out = np.empty(array.shape, array.dtype)
    nz, ny, nx = array.shape
    for z in range(0, nz, tile):
        for y in range(0, ny, tile):
            for x in range(0, nx, tile):
                out[z:z + tile, y:y + tile, x:x + tile] = array[z:z + tile, y:y + tile, x:x + tile]
    return out


def to_canonical(array: np.ndarray, affine: np.ndarray, path: str = "<array>", header=None,
                 format: str = "nifti", dicom=None) -> Volume:
    """Permute/flip a file-layout array into the canonical layout; keep what undoes it."""
    ornt = orientation_to_canonical(affine)
    canon = nio.apply_orientation(array, ornt)
    canon_affine = affine @ nio.inv_ornt_aff(ornt, array.shape)
    src = SourceGeometry(str(path), tuple(array.shape), np.asarray(affine, float).copy(), ornt, header,
                         format, dicom)
    return Volume(c_order(canon), canon_affine, src)


def from_canonical(array: np.ndarray, source: SourceGeometry) -> np.ndarray:
    """Undo :func:`to_canonical`: the array in the source file's layout (exact inverse)."""
    inverse = nio.ornt_transform(nio.axcodes2ornt(CANONICAL_AXCODES), nio.io_orientation(source.affine))
    out = nio.apply_orientation(array, inverse)
    if tuple(out.shape) != tuple(source.shape):
        raise ValueError(f"array shape {array.shape} does not map onto source shape {source.shape}")
    return np.ascontiguousarray(out)


# -------------------------------------------------------------------------------------- checks
def check_exists(path: Path) -> None:
    """One-line error for a missing path or an empty file."""
    if not path.exists():
        raise fail(path, "no such file or folder")
    if path.is_file() and path.stat().st_size == 0:
        raise fail(path, "file is empty")


def spatial_shape(path, shape: tuple[int, ...]) -> tuple[int, int, int]:
    """The 3D shape of a file's array (a singleton 4th axis dropped), or a one-line error."""
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]  # a singleton 4th axis is accepted and dropped
    if len(shape) != 3:
        raise fail(path, f"expected a 3D volume, got {len(shape)}D with shape {tuple(shape)}")
    if min(shape) < 1:
        raise fail(path, f"volume is empty: shape {tuple(shape)} has 0 voxels along an axis")
    return shape  # type: ignore[return-value]


#: Obliquity (degrees between a voxel axis and its nearest scanner axis) above which a warning is shown.
OBLIQUE_WARN_DEGREES = 1.0


def obliquity_degrees(affine: np.ndarray) -> float:
    """Largest angle in degrees between a voxel axis of ``affine`` and its nearest scanner axis."""
    cols = np.asarray(affine, float)[:3, :3]
    cols = cols / np.linalg.norm(cols, axis=0)
    return float(np.degrees(np.arccos(np.clip(np.abs(cols).max(axis=0).min(), 0.0, 1.0))))


def check_affine(path, affine: np.ndarray, warn_oblique: bool = True) -> None:
    """Finite affine with positive spacing; a warning for oblique grids (accepted)."""
    if not np.all(np.isfinite(affine)):
        raise fail(path, "affine contains NaN or Inf")
    spacing = spacing_from_affine(affine)
    if min(spacing) <= 0 or abs(np.linalg.det(np.asarray(affine, float)[:3, :3])) < 1e-12:
        raise fail(path, f"voxel spacing must be positive, got {tuple(round(s, 4) for s in spacing)} mm")
    # Oblique grids (gantry tilt, reformatted series) are accepted: all work happens on the voxel
    # grid with the column-norm spacing, and outputs are written with the input's own affine.
    angle = obliquity_degrees(affine)
    if warn_oblique and angle > OBLIQUE_WARN_DEGREES:
        warnings.warn(f"{path}: oblique affine ({angle:.1f} degrees off the scanner axes); accepted, "
                      "processed on its voxel grid, outputs keep this affine", stacklevel=3)


def check_label_values(path, array: np.ndarray, label_values: Sequence[int] = LABEL_VALUES) -> np.ndarray:
    """A label map as uint8 in ``label_values`` (default KiTS19's {0, 1, 2}), or a one-line error
    (floats must be whole numbers). A dataset's own values come from ``kidneyseg.data.datasets``."""
    valid = ", ".join(str(int(v)) for v in label_values)
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)):
            raise fail(path, "label map contains NaN or Inf")
        rounded = np.rint(array)
        if not np.array_equal(rounded, array):
            raise fail(path, f"label map has non-integer (float) values; expected {valid}")
        array = rounded
    values = sorted({int(v) for v in label_values})
    if np.issubdtype(array.dtype, np.integer) and array.size and values == list(range(values[0], values[-1] + 1)):
        # the valid values are a run of integers: two O(n) passes instead of np.unique's sort
        # (2.5 s of CPU on a 160 M-voxel label map)
        lo, hi = int(array.min()), int(array.max())
        if lo >= values[0] and hi <= values[-1]:
            return array.astype(np.uint8, copy=False)
    present = np.unique(array)
    bad = [v for v in present.tolist() if v not in tuple(label_values)]
    if bad:
        raise fail(path, f"label values must be in {{{valid}}}, found {bad[:5]}")
    return array.astype(np.uint8, copy=False)


def check_image_values(path, array: np.ndarray) -> None:
    """A CT in HU: finite, not constant; a warning when its range does not look like CT."""
    if not np.all(np.isfinite(array)):
        n = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise fail(path, f"image contains {n} NaN or Inf voxels")
    if array.size == 0:
        raise fail(path, "image is empty")
    lo, hi = float(array.min()), float(array.max())
    if hi - lo == 0:
        raise fail(path, f"image is constant ({lo:g}); nothing to segment")
    if lo > -500 or hi < 0:
        warnings.warn(f"{path}: intensity range {lo:g}..{hi:g} does not look like CT in HU "
                      "(no air near -1000 HU); is this an MR or a rescaled image?", stacklevel=3)


def checked_array(path, array: np.ndarray, kind: Kind, label_values: Sequence[int] = LABEL_VALUES) -> np.ndarray:
    """``kind="label"``: uint8 in ``label_values``; ``"image"``: float32 HU, checked."""
    if kind == "label":
        return check_label_values(path, array, label_values)
    array = np.asarray(array, np.float32)
    check_image_values(path, array)
    return array


def check_kind(kind) -> None:
    if kind not in ("image", "label"):
        raise ValueError(f"kind must be 'image' or 'label', got {kind!r}")


def new_volume(array: np.ndarray, spacing: tuple[float, float, float]) -> Volume:
    """A canonical volume made in memory (KiTS19-style affine) from a (z, y, x) array."""
    if np.asarray(array).ndim != 3:
        raise ValueError(f"array must be 3D (z, y, x), got shape {np.shape(array)}")
    if min(spacing) <= 0:
        raise ValueError(f"spacing must be positive (mm), got {spacing}")
    return Volume(np.asarray(array), affine_from_spacing(spacing))


__all__ = [
    "CANONICAL_AXCODES", "LABEL_VALUES", "Kind", "OBLIQUE_WARN_DEGREES", "SourceGeometry", "Volume",
    "affine_from_spacing", "c_order", "check_affine", "check_image_values", "check_label_values", "checked_array",
    "from_canonical", "new_volume", "obliquity_degrees", "spacing_from_affine", "to_canonical",
]
