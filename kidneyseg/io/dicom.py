"""DICOM CT series (pydicom): find the series in a folder or ``.zip``, pick one, read it with exact geometry.

* **Finding**: every DICOM file below a folder (recursively; a ``.zip`` is unpacked into a
  temporary folder first) is read header-only and grouped by ``SeriesInstanceUID``
  (:func:`scan_series`).
* **Picking** (:func:`pick_series`): ``--series UID`` when given; otherwise the largest axial CT
  series (most voxels; localizers and single images excluded). Two equally large candidates are
  an error that lists them: the choice is the user's (``--list-series`` shows them).
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

import contextlib
import os
import shutil
import tempfile
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import fail
from .volume import Kind, Volume, check_affine, checked_array, to_canonical

#: Gantry tilt (degrees between the slice normal and the direction the slices step along) above
#: which a warning is shown; the sheared geometry is kept exactly either way.
TILT_WARN_DEGREES = 0.1
#: Largest accepted deviation of one slice step from the median step: max(this fraction, 0.01 mm).
SPACING_TOLERANCE = 0.01

_TAGS = ["SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "Modality", "ImagePositionPatient",
         "ImageOrientationPatient", "Rows", "Columns", "PixelSpacing", "ImageType", "InstanceNumber",
         "SeriesDescription", "SeriesNumber", "NumberOfFrames"]
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


# ------------------------------------------------------------------------------------ finding
def is_dicom_file(path: os.PathLike | str) -> bool:
    """Whether ``path`` is a DICOM Part 10 file (the ``DICM`` marker after the 128-byte preamble)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def find_dicom_files(folder: Path) -> list[Path]:
    """Every DICOM file below ``folder`` (recursively, hidden entries skipped), sorted by path."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            p = Path(root) / name
            if not name.startswith(".") and name.upper() != "DICOMDIR" and is_dicom_file(p):
                found.append(p)
    return found


def first_dicom_file(folder: Path) -> Path | None:
    """The first DICOM file below ``folder`` (walk order, sorted), or ``None``."""
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in sorted(files):
            if not f.startswith(".") and is_dicom_file(Path(root) / f):
                return Path(root) / f
    return None


@dataclass
class SeriesInfo:
    """One series found below a folder (headers only).

    Attributes:
        uid: ``SeriesInstanceUID``.
        modality, description, number: ``Modality``, ``SeriesDescription``, ``SeriesNumber``.
        files: its files (unsorted).
        rows, columns: the first file's image size.
        normal: the slice normal (LPS unit vector) of the first file, ``None`` without orientation.
        localizer: whether ``ImageType`` says LOCALIZER.
        frames: ``NumberOfFrames`` of the first file (1 for classic single-frame images).
    """

    uid: str
    modality: str
    description: str
    number: str
    files: list[Path] = field(default_factory=list)
    rows: int = 0
    columns: int = 0
    normal: np.ndarray | None = None
    localizer: bool = False
    frames: int = 1

    @property
    def slices(self) -> int:
        return len(self.files)

    @property
    def voxels(self) -> int:
        return self.slices * self.frames * self.rows * self.columns

    @property
    def orientation(self) -> str:
        """``axial``, ``coronal`` or ``sagittal`` (the scanner axis nearest the slice normal), or ``unknown``."""
        if self.normal is None:
            return "unknown"
        return ("sagittal", "coronal", "axial")[int(np.argmax(np.abs(self.normal)))]

    @property
    def is_candidate(self) -> bool:
        """An axial CT volume: what :func:`pick_series` chooses from by default."""
        return (self.modality == "CT" and self.orientation == "axial" and not self.localizer
                and self.slices >= 2 and self.frames == 1)

    def describe(self) -> str:
        """One line for ``--list-series``."""
        return (f"{self.uid}  {self.modality or '?':<3} {self.orientation:<8} {self.slices:>5} x "
                f"{self.rows} x {self.columns}  #{self.number or '-'} {self.description!r}")


def _normal(orientation) -> np.ndarray | None:
    if orientation is None or len(orientation) != 6:
        return None
    o = np.asarray([float(v) for v in orientation])
    n = np.cross(o[:3], o[3:])
    norm = np.linalg.norm(n)
    return n / norm if norm > 0 else None


def scan_series(folder: Path, where: os.PathLike | str | None = None) -> list[SeriesInfo]:
    """The DICOM series below ``folder`` (headers only), largest first.

    Raises:
        KidneysegError: no DICOM file at all (naming ``where``, default ``folder``).
    """
    import pydicom

    where = where if where is not None else folder
    files = find_dicom_files(folder)
    if not files:
        raise fail(where, "no DICOM files found" + (" in the archive" if str(where).lower().endswith(".zip") else ""))
    by_uid: dict[str, SeriesInfo] = {}
    for p in files:
        try:
            ds = pydicom.dcmread(p, stop_before_pixels=True, specific_tags=_TAGS)
        except Exception:  # noqa: BLE001 - an unreadable file is not part of any series
            continue
        uid = str(ds.get("SeriesInstanceUID", "") or "")
        if not uid:
            continue
        info = by_uid.get(uid)
        if info is None:
            info = by_uid[uid] = SeriesInfo(
                uid, str(ds.get("Modality", "") or ""), str(ds.get("SeriesDescription", "") or ""),
                str(ds.get("SeriesNumber", "") or ""), [], int(ds.get("Rows", 0) or 0),
                int(ds.get("Columns", 0) or 0), _normal(ds.get("ImageOrientationPatient")),
                "LOCALIZER" in [str(v).upper() for v in (ds.get("ImageType") or [])],
                int(ds.get("NumberOfFrames", 1) or 1))
        info.files.append(p)
    if not by_uid:
        raise fail(where, "no readable DICOM series found")
    return sorted(by_uid.values(), key=lambda s: (-s.voxels, s.uid))


def pick_series(series: list[SeriesInfo], uid: str | None = None,
                where: os.PathLike | str | None = None) -> SeriesInfo:
    """The series ``uid``, or else the largest axial CT series.

    Raises:
        KidneysegError: ``uid`` not found; no axial CT series; two or more equally large candidates.
    """
    if uid is not None:
        for s in series:
            if s.uid == uid:
                return s
        raise fail(where, f"no series with UID {uid}; found {', '.join(s.uid for s in series)}")
    candidates = [s for s in series if s.is_candidate]
    if not candidates:
        found = "; ".join(f"{s.modality or '?'} {s.orientation} ({s.slices} files)" for s in series)
        raise fail(where, f"no axial CT series among {len(series)} series ({found}); choose one with --series UID")
    best = max(s.voxels for s in candidates)
    top = [s for s in candidates if s.voxels == best]
    if len(top) > 1:
        raise fail(where, f"{len(top)} axial CT series are equally large ({', '.join(s.uid for s in top)}); "
                          "choose one with --series UID (see --list-series)")
    return top[0]


# ------------------------------------------------------------------------------------ zip files
@contextlib.contextmanager
def dicom_folder(path: os.PathLike | str) -> Iterator[Path]:
    """Yield a folder holding the DICOM files of ``path``: the folder itself, or a ``.zip`` unpacked.

    Members of a zip are written under fresh flat names into a temporary folder (so no member
    name can point outside it) that is removed afterwards.

    Raises:
        KidneysegError: not a readable zip archive.
    """
    path = Path(path)
    if path.is_dir():
        yield path
        return
    tmp = Path(tempfile.mkdtemp(prefix="kidneyseg-dicom-"))
    try:
        try:
            with zipfile.ZipFile(path) as zf:
                for i, info in enumerate(m for m in zf.infolist() if not m.is_dir()):
                    with zf.open(info) as src, open(tmp / f"{i:06d}", "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError) as exc:
            raise fail(path, f"not a readable .zip archive ({exc})") from None
        except OSError as exc:
            raise fail(path, f"cannot unpack the archive ({exc.strerror or exc})") from None
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def list_series(path: os.PathLike | str) -> tuple[list[SeriesInfo], SeriesInfo | None]:
    """The series of a DICOM folder or ``.zip`` and the one chosen by default (``None`` when ambiguous)."""
    from ..errors import KidneysegError

    with dicom_folder(path) as folder:
        series = scan_series(folder, where=path)
    try:
        chosen = pick_series(series, None, path)
    except KidneysegError:
        chosen = None
    return series, chosen


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


def read_series(series: SeriesInfo, kind: Kind = "image", where: os.PathLike | str | None = None) -> Volume:
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
    array = checked_array(where, array, kind)
    info = DicomSeries(series.uid, series.description, kept, tilt, step)
    return to_canonical(array, affine, str(where), None, format="dicom", dicom=info)


def load_dicom(path: os.PathLike | str, kind: Kind = "image", series_uid: str | None = None) -> Volume:
    """Read a DICOM series from a folder (searched recursively) or a ``.zip`` of one.

    Args:
        path: the folder or ``.zip``.
        kind: ``"image"`` (float32 HU) or ``"label"``.
        series_uid: the ``SeriesInstanceUID`` to read; ``None``: the largest axial CT series.
    """
    with dicom_folder(path) as folder:
        series = scan_series(folder, where=path)
        chosen = pick_series(series, series_uid, path)
        return read_series(chosen, kind, where=path)


__all__ = ["DicomSeries", "SeriesInfo", "TILT_WARN_DEGREES", "dicom_folder", "find_dicom_files", "first_dicom_file",
           "is_dicom_file", "list_series", "load_dicom", "pick_series", "read_series", "scan_series"]
