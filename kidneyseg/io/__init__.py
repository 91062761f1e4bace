"""Volumes in one canonical layout, read from and written back to the files of the field.

Every array inside kidneyseg is laid out **(z, y, x)** in the orientation ``('I', 'P', 'L')``
(:mod:`kidneyseg.io.volume`); spacing is in mm in (z, y, x) order. Readers, one per format, all
return a :class:`Volume` whose ``source`` undoes the canonical permutation exactly:

* ``.nii``, ``.nii.gz``: nibabel (:mod:`.nifti`);
* ``.nrrd``/``.nhdr``, ``.mha``/``.mhd``: SimpleITK (:mod:`.itk_files`);
* a DICOM folder or ``.zip``: pydicom, with pylibjpeg/pyjpegls for JPEG 2000, JPEG-LS and JPEG
  lossless pixel data (:mod:`.dicom_files` finds and picks the series, :mod:`.dicom` reads it).

Label outputs: NIfTI (:func:`save_like`), a Slicer segmentation ``.seg.nrrd``
(:func:`save_seg_nrrd`) or a DICOM SEG referencing a DICOM input (:func:`save_dicom_seg`); the
segments are defined once in :mod:`.segments`.

>>> vol = load_volume("case_00000/segmentation.nii.gz", kind="label")   # doctest: +SKIP
>>> vol.array.shape, vol.spacing                                          # doctest: +SKIP
((611, 512, 512), (0.5, 0.919921875, 0.919921875))
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from ..errors import KidneysegError, fail
from .dicom import load_dicom
from .dicom_files import is_dicom_file
from .dicom_seg import save_dicom_seg
from .itk_files import is_itk_name, load_itk_file, save_seg_nrrd
from .nifti import HeaderInfo, is_nifti_name, load_nifti, read_header, save_like, save_volume
from .volume import (CANONICAL_AXCODES, LABEL_VALUES, Kind, SourceGeometry, Volume, affine_from_spacing,
                     check_exists, check_kind, from_canonical, new_volume, obliquity_degrees, spacing_from_affine,
                     to_canonical)


def is_zip_name(path: os.PathLike | str) -> bool:
    """Whether a file name ends in ``.zip``."""
    return Path(path).name.lower().endswith(".zip")


def input_format(path: os.PathLike | str) -> str:
    """What :func:`load_volume` will read ``path`` as: ``nifti``, ``itk`` (NRRD/MHA) or ``dicom`` (folder, zip)."""
    path = Path(path)
    if path.is_dir() or is_zip_name(path):
        return "dicom"
    if is_itk_name(path):
        return "itk"
    return "nifti"


def load_volume(path: os.PathLike | str, kind: Kind = "image", label_values: Sequence[int] = LABEL_VALUES, *,
                series_uid: str | None = None) -> Volume:
    """Read a CT or label file (or DICOM series) into a canonical :class:`Volume`.

    Args:
        path: ``.nii``/``.nii.gz``; ``.nrrd``/``.nhdr``/``.mha``/``.mhd``; a folder holding DICOM
            files (searched recursively) or a ``.zip`` of them.
        kind: ``"image"`` (float32 HU, checked finite) or ``"label"`` (uint8, checked in
            ``label_values``).
        series_uid: for DICOM, the ``SeriesInstanceUID`` to read (default: the largest axial CT
            series; see :func:`kidneyseg.io.dicom.pick_series`).
        label_values: the valid label values (default KiTS19's 0, 1, 2; a dataset's own come from
            ``kidneyseg.data.datasets``, e.g. ``KITS23.label_values``).

    Raises:
        KidneysegError: one line naming the file and the problem.
    """
    check_kind(kind)
    path = Path(path)
    check_exists(path)
    fmt = input_format(path)
    if series_uid is not None and fmt != "dicom":
        raise fail(path, "--series applies to DICOM input (a folder or .zip) only")
    if fmt == "dicom":
        return load_dicom(path, kind, series_uid, label_values)
    if fmt == "itk":
        return load_itk_file(path, kind, label_values)
    if is_dicom_file(path):
        raise fail(path, "a single DICOM file; give the folder (or .zip) holding its series")
    return load_nifti(path, kind, label_values)


#: The name this reader had before ``kidneyseg.io`` became a package (same function).
load_dicom_series = load_dicom

__all__ = [
    "CANONICAL_AXCODES", "LABEL_VALUES", "HeaderInfo", "KidneysegError", "SourceGeometry", "Volume",
    "affine_from_spacing", "from_canonical", "input_format", "is_nifti_name", "is_zip_name", "load_dicom", "load_dicom_series",
    "load_volume", "new_volume", "obliquity_degrees", "read_header", "save_dicom_seg", "save_like",
    "save_seg_nrrd", "save_volume", "spacing_from_affine", "to_canonical",
]
