"""Tiny DICOM CT series written with pydicom for the io/predict tests (8-12 slices of 32 x 32).

:func:`write_ct_series` writes a (z, y, x) HU array as a classic single-frame CT series with full
patient/study/geometry attributes, and can shuffle the file names, tilt the gantry, drop a slice,
or compress the pixel data (JPEG 2000, JPEG-LS lossless; encoders from pylibjpeg-openjpeg and
pyjpegls). :func:`expected_affine` is the RAS affine of the (slice, row, column) array by the
DICOM definition, written independently of kidneyseg's reader.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

ORIGIN = (-12.0, -20.0, 100.0)


def write_ct_series(array: np.ndarray, folder: Path, spacing=(2.5, 0.8, 0.75), origin=ORIGIN,
                    orientation=(1, 0, 0, 0, 1, 0), tilt_mm_per_slice: float = 0.0, shuffle: bool = False,
                    transfer_syntax: str | None = None, series_uid: str | None = None, study_uid: str | None = None,
                    modality: str = "CT", description: str = "abdomen", slice_positions=None, seed: int = 0) -> Path:
    """Write ``array`` (slice, row, column) in HU as one DICOM file per slice under ``folder``.

    Args:
        spacing: (slice step, row spacing, column spacing) mm.
        orientation: ImageOrientationPatient (row direction, column direction), LPS.
        tilt_mm_per_slice: shift of each slice along the column direction (a gantry tilt).
        shuffle: random file names and instance numbers (the slice order must come from positions).
        transfer_syntax: a compressed transfer syntax UID, or ``None`` for explicit VR little endian.
        slice_positions: distances along the normal per slice (default ``k * spacing[0]``).
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    study = study_uid or generate_uid()
    series = series_uid or generate_uid()
    frame = generate_uid()
    o = np.asarray(orientation, float)
    normal = np.cross(o[:3], o[3:])
    n = array.shape[0]
    dist = np.arange(n) * spacing[0] if slice_positions is None else np.asarray(slice_positions, float)
    names = rng.permutation(n) if shuffle else np.arange(n)
    instance = rng.permutation(n) + 1 if shuffle else np.arange(n) + 1
    for k in range(n):
        pos = np.asarray(origin) + dist[k] * normal + k * tilt_mm_per_slice * o[3:]
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        sop = generate_uid()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = sop
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality = modality
        ds.PatientID, ds.PatientName, ds.PatientBirthDate, ds.PatientSex = "KS001", "Test^Kidney", "", "O"
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20260101", "120000", "1", ""
        ds.ReferringPhysicianName = ""
        ds.SeriesNumber, ds.InstanceNumber, ds.SeriesDescription = 2, int(instance[k]), description
        ds.Manufacturer = "kidneyseg-tests"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImageOrientationPatient = [float(v) for v in o]
        ds.ImagePositionPatient = [round(float(v), 4) for v in pos]
        ds.PixelSpacing = [float(spacing[1]), float(spacing[2])]
        ds.SliceThickness = float(spacing[0])
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
        ds.set_pixel_data((np.asarray(array[k]) + 1024).astype(np.uint16), "MONOCHROME2", 12)
        if transfer_syntax is not None:
            ds.compress(transfer_syntax)
        ds.save_as(folder / f"im_{int(names[k]):04d}.dcm", enforce_file_format=True)
    return folder


def expected_affine(spacing=(2.5, 0.8, 0.75), origin=ORIGIN, orientation=(1, 0, 0, 0, 1, 0),
                    tilt_mm_per_slice: float = 0.0) -> np.ndarray:
    """RAS affine of the (slice, row, column) array of :func:`write_ct_series`'s series."""
    o = np.asarray(orientation, float)
    normal = np.cross(o[:3], o[3:])
    lps = np.eye(4)
    lps[:3, 0] = spacing[0] * normal + tilt_mm_per_slice * o[3:]
    lps[:3, 1] = o[3:] * spacing[1]
    lps[:3, 2] = o[:3] * spacing[2]
    lps[:3, 3] = origin
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def zip_folder(folder: Path, target: Path, subdir: str = "DICOM/series") -> Path:
    """Zip every file of ``folder`` under ``subdir/`` in the archive."""
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(folder.iterdir()):
            zf.write(p, f"{subdir}/{p.name}")
    return target


def phantom(shape=(10, 32, 32), seed=0) -> np.ndarray:
    """(z, y, x) int16 HU: air border, soft tissue body, a 300 HU 'kidney' on the patient's right."""
    rng = np.random.default_rng(seed)
    ct = np.full(shape, -1000, np.int16)
    z, y, x = shape
    ct[:, 3:y - 3, 3:x - 3] = rng.integers(-20, 40, (z, y - 6, x - 6))
    ct[2:z - 2, y // 3: y // 3 + 8, 5:12] = 300
    return ct
