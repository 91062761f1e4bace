"""Volumes in one canonical layout, read from and written back to NIfTI (nibabel) or DICOM (SimpleITK).

Every array inside kidneyseg is laid out **(z, y, x)** in the orientation ``('I', 'P', 'L')``:
axis 0 runs head to feet (slice index), axis 1 front to back, axis 2 patient right to left.
That is how KiTS19 stores its files (so they load without a copy) and how radiologists view an
axial slice (``array[k]`` shows patient right on the image's left, anterior at the top).
Files in any other orientation (RAS from dcm2niix or TotalSegmentator, LPS from DICOM) are
permuted/flipped into it on load, and :func:`save_like` undoes exactly that permutation, so an
output has the input's shape, affine and header.

Spacing is always given in mm in (z, y, x) order.

>>> vol = load_volume("case_00000/segmentation.nii.gz", kind="label")   # doctest: +SKIP
>>> vol.array.shape, vol.spacing                                          # doctest: +SKIP
((611, 512, 512), (0.5, 0.919921875, 0.919921875))
"""

from __future__ import annotations

import contextlib
import gzip
import os
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence

import nibabel as nib
import numpy as np
from nibabel import orientations as nio

from .errors import KidneysegError, atomic_path, fail

#: The orientation of kidneyseg's canonical arrays: axis 0 -> Inferior, 1 -> Posterior, 2 -> Left.
CANONICAL_AXCODES = ("I", "P", "L")
#: Valid label values: 0 background, 1 kidney, 2 tumor.
LABEL_VALUES = (0, 1, 2)

Kind = Literal["image", "label"]


@dataclass
class SourceGeometry:
    """Where a canonical array came from, so it can be written back exactly.

    Attributes:
        path: the file or DICOM folder read.
        shape: the array shape as stored in the file.
        affine: the file's 4x4 voxel-to-world (RAS, mm) matrix.
        to_canonical: nibabel orientation transform (file axes -> canonical axes).
        header: the NIfTI header to reuse on output (``None`` for DICOM input).
    """

    path: str
    shape: tuple[int, ...]
    affine: np.ndarray
    to_canonical: np.ndarray
    header: nib.Nifti1Header | None = None


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
def _orientation_to_canonical(affine: np.ndarray) -> np.ndarray:
    return nio.ornt_transform(nio.io_orientation(affine), nio.axcodes2ornt(CANONICAL_AXCODES))


def to_canonical(array: np.ndarray, affine: np.ndarray, path: str = "<array>", header=None) -> Volume:
    """Permute/flip a file-layout array into the canonical layout; keep what undoes it."""
    ornt = _orientation_to_canonical(affine)
    canon = nio.apply_orientation(array, ornt)
    canon_affine = affine @ nio.inv_ornt_aff(ornt, array.shape)
    src = SourceGeometry(str(path), tuple(array.shape), np.asarray(affine, float).copy(), ornt, header)
    return Volume(np.ascontiguousarray(canon), canon_affine, src)


def from_canonical(array: np.ndarray, source: SourceGeometry) -> np.ndarray:
    """Undo :func:`to_canonical`: the array in the source file's layout (exact inverse)."""
    inverse = nio.ornt_transform(nio.axcodes2ornt(CANONICAL_AXCODES), nio.io_orientation(source.affine))
    out = nio.apply_orientation(array, inverse)
    if tuple(out.shape) != tuple(source.shape):
        raise ValueError(f"array shape {array.shape} does not map onto source shape {source.shape}")
    return np.ascontiguousarray(out)


# ------------------------------------------------------------------------------------- reading
def _check_exists(path: Path) -> None:
    if not path.exists():
        raise fail(path, "no such file or folder")
    if path.is_file() and path.stat().st_size == 0:
        raise fail(path, "file is empty")


@contextlib.contextmanager
def _quiet_nibabel():
    """Silence nibabel's header-fix log lines (e.g. "pixdim[1,2,3] should be non-zero"): kidneyseg
    checks the same facts itself and reports them as its one-line error or warning."""
    log = nib.imageglobals.logger
    was = log.disabled
    log.disabled = True
    try:
        yield
    finally:
        log.disabled = was


def _open_nifti(path: Path):
    try:
        with _quiet_nibabel():  # header fixes are reported by us, not logged
            img = nib.load(str(path))
    except nib.filebasedimages.ImageFileError:
        raise fail(path, "not a NIfTI file (nibabel cannot read its header)") from None
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise fail(path, f"corrupt or truncated file ({exc})") from None
    except Exception as exc:  # nibabel raises assorted errors on garbage headers
        raise fail(path, f"not a readable NIfTI file ({type(exc).__name__}: {exc})") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise fail(path, f"not a NIfTI file ({type(img).__name__})")
    return img


def _spatial_shape(path: Path, shape: tuple[int, ...]) -> tuple[int, int, int]:
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


def _check_affine(path: Path, affine: np.ndarray) -> None:
    if not np.all(np.isfinite(affine)):
        raise fail(path, "affine contains NaN or Inf")
    spacing = spacing_from_affine(affine)
    if min(spacing) <= 0:
        raise fail(path, f"voxel spacing must be positive, got {tuple(round(s, 4) for s in spacing)} mm")
    # Oblique grids (gantry tilt, reformatted series) are accepted: all work happens on the voxel
    # grid with the column-norm spacing, and outputs are written with the input's own affine.
    angle = obliquity_degrees(affine)
    if angle > OBLIQUE_WARN_DEGREES:
        warnings.warn(f"{path}: oblique affine ({angle:.1f} degrees off the scanner axes); accepted, "
                      "processed on its voxel grid, outputs keep this affine", stacklevel=3)


@dataclass
class HeaderInfo:
    """Facts read from a NIfTI header alone (no voxel decompression).

    ``shape`` and ``spacing`` are in canonical (z, y, x) order; spacing in mm.
    """

    path: str
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    affine: np.ndarray
    dtype: str


def read_header(path: os.PathLike | str) -> HeaderInfo:
    """Shape and spacing of a NIfTI file in canonical (z, y, x) order, from its header only."""
    path = Path(path)
    _check_exists(path)
    img = _open_nifti(path)
    shape = _spatial_shape(path, tuple(int(s) for s in img.shape))
    affine = np.asarray(img.affine, float)
    _check_affine(path, affine)
    ornt = _orientation_to_canonical(affine)
    canon_shape = tuple(int(s) for s in nio.apply_orientation(np.empty(shape, dtype=np.bool_), ornt).shape)
    canon_affine = affine @ nio.inv_ornt_aff(ornt, shape)
    return HeaderInfo(str(path), canon_shape, spacing_from_affine(canon_affine), canon_affine,
                      str(img.get_data_dtype()))


def _check_label_values(path, array: np.ndarray, label_values: Sequence[int] = LABEL_VALUES) -> np.ndarray:
    valid = ", ".join(str(int(v)) for v in label_values)
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)):
            raise fail(path, "label map contains NaN or Inf")
        rounded = np.rint(array)
        if not np.array_equal(rounded, array):
            raise fail(path, f"label map has non-integer (float) values; expected {valid}")
        array = rounded
    present = np.unique(array)
    bad = [v for v in present.tolist() if v not in tuple(label_values)]
    if bad:
        raise fail(path, f"label values must be in {{{valid}}}, found {bad[:5]}")
    return array.astype(np.uint8, copy=False)


def _check_image_values(path, array: np.ndarray) -> None:
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


def load_volume(path: os.PathLike | str, kind: Kind = "image", label_values: Sequence[int] = LABEL_VALUES) -> Volume:
    """Read a NIfTI file or a DICOM series folder into a canonical :class:`Volume`.

    Args:
        path: ``.nii``/``.nii.gz`` file, or a folder holding one DICOM series.
        kind: ``"image"`` (float32 HU, checked finite) or ``"label"`` (uint8, checked in
            ``label_values``).
        label_values: the valid label values (default KiTS19's 0, 1, 2; a dataset's own come from
            ``kidneyseg.data.datasets``, e.g. ``KITS23.label_values``).

    Raises:
        KidneysegError: one line naming the file and the problem.
    """
    if kind not in ("image", "label"):
        raise ValueError(f"kind must be 'image' or 'label', got {kind!r}")
    path = Path(path)
    _check_exists(path)
    if path.is_dir():
        return load_dicom_series(path, kind, label_values)
    img = _open_nifti(path)
    shape = _spatial_shape(path, tuple(int(s) for s in img.shape))
    affine = np.asarray(img.affine, float)
    _check_affine(path, affine)
    try:
        # scl_slope/inter can push stored values past float32 (-> Inf); reported below as one error
        with np.errstate(over="ignore", invalid="ignore"), _quiet_nibabel():
            if kind == "label":
                data = np.asanyarray(img.dataobj)
            else:
                data = img.get_fdata(dtype=np.float32)
    except (OSError, EOFError, zlib.error, ValueError) as exc:
        raise fail(path, f"corrupt or truncated voxel data ({exc})") from None
    data = data.reshape(shape)
    if kind == "label":
        data = _check_label_values(path, data, label_values)
    else:
        _check_image_values(path, data)
    return to_canonical(data, affine, str(path), img.header.copy())


def load_dicom_series(folder: os.PathLike | str, kind: Kind = "image",
                      label_values: Sequence[int] = LABEL_VALUES) -> Volume:
    """Read the one DICOM series in ``folder`` with SimpleITK (LPS converted to RAS)."""
    import SimpleITK as sitk

    folder = Path(folder)
    ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)) or []
    if not ids:
        raise fail(folder, "folder holds no DICOM series (and is not a NIfTI file)")
    if len(ids) > 1:
        raise fail(folder, f"folder holds {len(ids)} DICOM series; put one series per folder")
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), ids[0])
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise fail(folder, f"cannot read DICOM series ({str(exc).splitlines()[0]})") from None
    if image.GetDimension() != 3:
        raise fail(folder, f"expected a 3D DICOM series, got {image.GetDimension()}D")
    array = sitk.GetArrayFromImage(image)  # numpy axes (k, j, i) = ITK index reversed
    spacing = np.array(image.GetSpacing())  # (i, j, k)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    origin = np.array(image.GetOrigin())
    lps = np.eye(4)
    # numpy axis a corresponds to ITK index 2 - a
    for a in range(3):
        lps[:3, a] = direction[:, 2 - a] * spacing[2 - a]
    lps[:3, 3] = origin
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps  # LPS -> RAS
    _check_affine(folder, affine)
    if kind == "label":
        data = _check_label_values(folder, array, label_values)
    else:
        data = array.astype(np.float32)
        _check_image_values(folder, data)
    return to_canonical(data, affine, str(folder), None)


# ------------------------------------------------------------------------------------- writing
def save_like(array: np.ndarray, path: os.PathLike | str, like: Volume, kind: Kind = "label") -> Path:
    """Write a canonical (z, y, x) array with the exact shape, affine and header of ``like``'s file.

    The array must have ``like``'s canonical shape. Labels are written as uint8, images with the
    source header's data type where the values fit it exactly (else float32). The write is
    atomic: the file appears complete or not at all.
    """
    if tuple(array.shape) != tuple(like.array.shape):
        raise ValueError(f"array shape {array.shape} differs from the reference volume's {like.array.shape}")
    path = Path(path)
    if not (path.name.endswith(".nii") or path.name.endswith(".nii.gz")):
        raise fail(path, "output name must end in .nii or .nii.gz")
    if like.source is None:
        out, affine, header = array, like.affine, None
    else:
        out = from_canonical(array, like.source)
        affine, header = like.source.affine, like.source.header
    header = header.copy() if header is not None else nib.Nifti1Header()
    if kind == "label":
        out = out.astype(np.uint8, copy=False)
    else:
        disk = header.get_data_dtype() if like.source and like.source.header is not None else np.dtype(np.float32)
        if np.issubdtype(disk, np.integer):
            info = np.iinfo(disk)
            if np.array_equal(np.rint(out), out) and out.min() >= info.min and out.max() <= info.max:
                out = out.astype(disk)
            else:
                out = out.astype(np.float32)
        else:
            out = out.astype(np.float32)
    header.set_data_dtype(out.dtype)
    img = nib.Nifti1Image(out, affine, header=header)
    img.header.set_slope_inter(1.0, 0.0)
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return path


def save_volume(volume: Volume, path: os.PathLike | str, kind: Kind = "label") -> Path:
    """Write ``volume`` back in its source geometry (or its canonical affine if it has none)."""
    return save_like(volume.array, path, volume, kind)


def new_volume(array: np.ndarray, spacing: tuple[float, float, float]) -> Volume:
    """A canonical volume made in memory (KiTS19-style affine) from a (z, y, x) array."""
    if np.asarray(array).ndim != 3:
        raise ValueError(f"array must be 3D (z, y, x), got shape {np.shape(array)}")
    if min(spacing) <= 0:
        raise ValueError(f"spacing must be positive (mm), got {spacing}")
    return Volume(np.asarray(array), affine_from_spacing(spacing))


__all__ = [
    "CANONICAL_AXCODES", "LABEL_VALUES", "HeaderInfo", "KidneysegError", "SourceGeometry", "Volume",
    "affine_from_spacing", "from_canonical", "load_dicom_series", "load_volume", "new_volume",
    "read_header", "save_like", "save_volume", "spacing_from_affine", "to_canonical",
]
