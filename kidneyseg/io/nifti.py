"""NIfTI files (nibabel): read into a canonical :class:`~kidneyseg.io.volume.Volume`, write back exactly.

:func:`save_like` writes a canonical array with the shape, affine and header of the file it came
from (for inputs that were not NIfTI, with their RAS affine), atomically.

>>> vol = load_nifti("case_00000/segmentation.nii.gz", kind="label")   # doctest: +SKIP
>>> vol.array.shape, vol.spacing                                        # doctest: +SKIP
((611, 512, 512), (0.5, 0.919921875, 0.919921875))
"""

from __future__ import annotations

import contextlib
import gzip
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import nibabel as nib
import numpy as np
from nibabel import orientations as nio

from ..errors import atomic_path, fail
from .volume import (LABEL_VALUES, Kind, Volume, check_affine, check_exists, check_image_values, check_label_values,
                     from_canonical, orientation_to_canonical, spacing_from_affine, spatial_shape, to_canonical)

#: File name endings read and written as NIfTI.
NIFTI_SUFFIXES = (".nii.gz", ".nii")


def is_nifti_name(path: os.PathLike | str) -> bool:
    """Whether a file name ends in ``.nii`` or ``.nii.gz``."""
    return Path(path).name.lower().endswith(NIFTI_SUFFIXES)


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


def _open_checked(path: Path):
    """The opened NIfTI image, its spatial shape and its checked affine (one-line errors otherwise)."""
    check_exists(path)
    img = _open_nifti(path)
    shape = spatial_shape(path, tuple(int(s) for s in img.shape))
    affine = np.asarray(img.affine, float)
    check_affine(path, affine)
    return img, shape, affine


def read_header(path: os.PathLike | str) -> HeaderInfo:
    """Shape and spacing of a NIfTI file in canonical (z, y, x) order, from its header only."""
    path = Path(path)
    img, shape, affine = _open_checked(path)
    ornt = orientation_to_canonical(affine)
    canon_shape = tuple(int(s) for s in nio.apply_orientation(np.empty(shape, dtype=np.bool_), ornt).shape)
    canon_affine = affine @ nio.inv_ornt_aff(ornt, shape)
    return HeaderInfo(str(path), canon_shape, spacing_from_affine(canon_affine), canon_affine,
                      str(img.get_data_dtype()))


def load_nifti(path: os.PathLike | str, kind: Kind = "image", label_values: Sequence[int] = LABEL_VALUES) -> Volume:
    """Read a ``.nii``/``.nii.gz`` file into a canonical :class:`Volume` (see :func:`kidneyseg.io.load_volume`)."""
    path = Path(path)
    img, shape, affine = _open_checked(path)
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
        data = check_label_values(path, data, label_values)
    else:
        check_image_values(path, data)
    return to_canonical(data, affine, str(path), img.header.copy())


def save_like(array: np.ndarray, path: os.PathLike | str, like: Volume, kind: Kind = "label") -> Path:
    """Write a canonical (z, y, x) array as NIfTI with the exact shape, affine and header of ``like``'s file.

    The array must have ``like``'s canonical shape. Labels are written as uint8, images with the
    source header's data type where the values fit it exactly (else float32). Inputs that were
    not NIfTI (DICOM, NRRD, MHA) get their file layout and RAS affine. The write is atomic: the
    file appears complete or not at all.
    """
    if tuple(array.shape) != tuple(like.array.shape):
        raise ValueError(f"array shape {array.shape} differs from the reference volume's {like.array.shape}")
    path = Path(path)
    if not is_nifti_name(path):
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


__all__ = ["HeaderInfo", "NIFTI_SUFFIXES", "is_nifti_name", "load_nifti", "read_header", "save_like", "save_volume"]
