"""Finding DICOM series: files below a folder or inside a ``.zip``, grouped by series; picking one.

* :func:`scan_series` reads every DICOM file below a folder header-only (recursively; a ``.zip``
  is unpacked into a temporary folder first by :func:`dicom_folder`) and groups the files by
  ``SeriesInstanceUID``.
* :func:`pick_series` takes ``--series UID`` when given; otherwise the largest axial CT series
  (most voxels; localizers, multi-frame images and single images excluded). Two equally large
  candidates are an error that lists them: the choice is the user's (``--list-series`` shows
  them, :func:`list_series`).

Reading the chosen series: :mod:`kidneyseg.io.dicom`.

>>> series, default = list_series("patient7/")     # doctest: +SKIP
>>> print(default.describe())                      # doctest: +SKIP
1.2.840...  CT  axial      312 x 512 x 512  #3 'abdomen venous'
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import KidneysegError, fail

_TAGS = ["SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "Modality", "ImagePositionPatient",
         "ImageOrientationPatient", "Rows", "Columns", "PixelSpacing", "ImageType", "InstanceNumber",
         "SeriesDescription", "SeriesNumber", "NumberOfFrames"]


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
    with dicom_folder(path) as folder:
        series = scan_series(folder, where=path)
    try:
        chosen = pick_series(series, None, path)
    except KidneysegError:
        chosen = None
    return series, chosen


__all__ = ["SeriesInfo", "dicom_folder", "find_dicom_files", "first_dicom_file", "is_dicom_file", "list_series",
           "pick_series", "scan_series"]
