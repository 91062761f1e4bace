"""DICOM CT series (pydicom): read one series with exact geometry.

* **Finding and picking** the series of a folder or ``.zip``: :mod:`kidneyseg.io.dicom_files`.
* **Reading** (:func:`read_series`): slices are sorted by their position along the slice normal
  (file names and instance numbers do not matter, so a shuffled series reads the same); the
  rescale slope/intercept of each slice gives HU. Pixel data in compressed transfer syntaxes
  (JPEG 2000, JPEG-LS, JPEG lossless) is decoded by pydicom's plugins (pylibjpeg-openjpeg,
  pylibjpeg-libjpeg, pyjpegls).
* **Geometry**: the file array is ``(slice, row, column)`` in sorted slice order; its affine is
  built from ``ImageOrientationPatient``, ``PixelSpacing`` and the first and last
  ``ImagePositionPatient`` (LPS, converted to RAS). A **gantry tilt** (slices stepping along a
  direction other than their normal) is kept exactly as a sheared affine and reported with a
  one-line warning; **non-uniform slice spacing** (a missing or duplicated slice) cannot be put
  on a voxel grid and is refused with a one-line error, as are mixed orientations or sizes.

The headers of the slices read (without pixel data) travel on the volume
(``volume.source.dicom``), so a DICOM SEG output can reference them.

>>> vol = load_dicom("patient7/", series_uid=None)      # doctest: +SKIP
>>> vol.source.dicom.uid                                 # doctest: +SKIP
'1.2.840...'
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import fail
from .dicom_files import SeriesInfo, dicom_folder, pick_series, scan_series
from .volume import LABEL_VALUES, Kind, Volume, check_affine, checked_array, to_canonical

#: Gantry tilt (degrees between the slice normal and the direction the slices step along) above
#: which a warning is shown; the sheared geometry is kept exactly either way.
TILT_WARN_DEGREES = 0.1
#: Largest accepted deviation of one slice step from the median step: max(this fraction, 0.01 mm).
SPACING_TOLERANCE = 0.01

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


# ------------------------------------------------------------------------------------ reading
@dataclass
class DicomSeries:
    """The DICOM series a volume was read from (``volume.source.dicom``).

    Attributes:
        uid: ``SeriesInstanceUID``.
        description: ``SeriesDescription``.
        headers: the slices' pydicom datasets without pixel data, in file-array order (axis 0).
        tilt_degrees: gantry tilt (0 for orthogonal series).
        slice_step_mm: the distance between neighbouring slices along the normal.
    """

    uid: str
    description: str
    headers: list
    tilt_degrees: float = 0.0
    slice_step_mm: float = 0.0


def _floats(ds, name: str, n: int, file: Path) -> np.ndarray:
    value = ds.get(name)
    try:
        out = np.asarray([float(v) for v in value], float)
    except (TypeError, ValueError):
        out = np.zeros(0)
    if out.shape != (n,) or not np.all(np.isfinite(out)):
        raise fail(file, f"missing or invalid {name} ({value!r}); cannot place the slice in space")
    return out


def _geometry(headers: list, files: list[Path], where) -> tuple[list[int], np.ndarray, float, float]:
    """Sort order, RAS affine of the (slice, row, column) array, tilt (deg) and slice step (mm)."""
    orient = _floats(headers[0], "ImageOrientationPatient", 6, files[0])
    spacing = _floats(headers[0], "PixelSpacing", 2, files[0])
    rows, cols = int(headers[0].Rows), int(headers[0].Columns)
    for ds, f in zip(headers, files):
        if not np.allclose(_floats(ds, "ImageOrientationPatient", 6, f), orient, atol=1e-4):
            raise fail(where, "slices of the series have different orientations; cannot stack them")
        if (int(ds.Rows), int(ds.Columns)) != (rows, cols) or not np.allclose(
                _floats(ds, "PixelSpacing", 2, f), spacing, atol=1e-4):
            raise fail(where, "slices of the series have different sizes or pixel spacings; cannot stack them")
    row_dir, col_dir = orient[:3], orient[3:]
    normal = np.cross(row_dir, col_dir)
    if np.linalg.norm(normal) < 1e-6:
        raise fail(files[0], f"ImageOrientationPatient {orient.tolist()} has parallel row and column directions")
    normal /= np.linalg.norm(normal)
    pos = np.stack([_floats(ds, "ImagePositionPatient", 3, f) for ds, f in zip(headers, files)])
    dist = pos @ normal
    order = [int(i) for i in np.argsort(dist, kind="stable")]
    steps = np.diff(dist[order])
    median = float(np.median(steps))
    if median <= 1e-6 or steps.min() <= 1e-6:
        raise fail(where, "two slices lie at the same position (duplicated slices or several acquisitions "
                          "in one series); cannot build one volume")
    worst = float(np.max(np.abs(steps - median)))
    if worst > max(SPACING_TOLERANCE * median, 0.01):
        raise fail(where, f"slice spacing is not uniform ({steps.min():.3g} to {steps.max():.3g} mm, "
                          f"median {median:.3g} mm): a missing slice? refused")
    step = (pos[order[-1]] - pos[order[0]]) / (len(order) - 1)  # mean step vector (LPS), exact for tilt
    tilt = float(np.degrees(np.arccos(np.clip(abs(step @ normal) / np.linalg.norm(step), 0.0, 1.0))))
    lps = np.eye(4)
    lps[:3, 0] = step
    lps[:3, 1] = col_dir * spacing[0]  # rows advance along the column direction by the row spacing
    lps[:3, 2] = row_dir * spacing[1]
    lps[:3, 3] = pos[order[0]]
    affine = np.eye(4)
    affine[:3] = _LPS_TO_RAS @ lps[:3]
    return order, affine, tilt, median


def _pixels(ds, file: Path, kind: Kind) -> np.ndarray:
    if "PixelData" not in ds:
        raise fail(file, "DICOM file has no pixel data")
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise fail(file, f"expected a greyscale image, got SamplesPerPixel={ds.SamplesPerPixel}")
    try:
        arr = ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - pydicom's plugins raise assorted errors
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(ts, "name", str(ts))
        msg = " ".join(str(exc).split())[:200]
        raise fail(file, f"cannot decode its pixel data ({name}): {msg}") from None
    if kind == "label":
        return arr
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    return arr.astype(np.float32) * np.float32(slope) + np.float32(intercept)


def read_series(series: SeriesInfo, kind: Kind = "image", where: os.PathLike | str | None = None,
                label_values: Sequence[int] = LABEL_VALUES) -> Volume:
    """Read one series (see the module docstring) into a canonical :class:`Volume`.

    Raises:
        KidneysegError: multi-frame images, fewer than 2 slices, mixed orientation or size,
        non-uniform slice spacing, undecodable pixel data, image values that are not CT.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    where = where if where is not None else series.files[0].parent
    if series.frames > 1:
        raise fail(where, f"series {series.uid} is multi-frame (enhanced) DICOM, which is not supported; "
                          "convert it to NIfTI first (e.g. dcm2niix)")
    if series.slices < 2:
        raise fail(where, f"series {series.uid} has {series.slices} slice; a volume needs at least 2")
    headers = []
    for f in series.files:
        try:
            headers.append(pydicom.dcmread(f, stop_before_pixels=True))
        except (InvalidDicomError, OSError, ValueError) as exc:
            raise fail(f, f"unreadable DICOM header ({exc})") from None
    order, affine, tilt, step = _geometry(headers, series.files, where)
    check_affine(where, affine, warn_oblique=tilt <= TILT_WARN_DEGREES)
    if tilt > TILT_WARN_DEGREES:
        warnings.warn(f"{where}: gantry tilt of {tilt:.1f} degrees; read with its exact sheared geometry "
                      "(outputs keep it)", stacklevel=2)
    rows, cols = int(headers[0].Rows), int(headers[0].Columns)
    array = np.empty((len(order), rows, cols), np.float32 if kind == "image" else np.int32)
    kept = []
    for k, i in enumerate(order):
        try:
            ds = pydicom.dcmread(series.files[i])
        except (InvalidDicomError, OSError, ValueError) as exc:
            raise fail(series.files[i], f"unreadable DICOM file ({exc})") from None
        pix = _pixels(ds, series.files[i], kind)
        if pix.shape != (rows, cols):
            raise fail(series.files[i], f"pixel data has shape {pix.shape}, expected {(rows, cols)}")
        array[k] = pix
        kept.append(headers[i])
    array = checked_array(where, array, kind, label_values)
    info = DicomSeries(series.uid, series.description, kept, tilt, step)
    return to_canonical(array, affine, str(where), None, format="dicom", dicom=info)


def load_dicom(path: os.PathLike | str, kind: Kind = "image", series_uid: str | None = None,
               label_values: Sequence[int] = LABEL_VALUES) -> Volume:
    """Read a DICOM series from a folder (searched recursively) or a ``.zip`` of one.

    Args:
        path: the folder or ``.zip``.
        kind: ``"image"`` (float32 HU) or ``"label"``.
        series_uid: the ``SeriesInstanceUID`` to read; ``None``: the largest axial CT series.
    """
    with dicom_folder(path) as folder:
        series = scan_series(folder, where=path)
        chosen = pick_series(series, series_uid, path)
        return read_series(chosen, kind, where=path, label_values=label_values)


__all__ = ["DicomSeries", "TILT_WARN_DEGREES", "load_dicom", "read_series"]
