"""DICOM Segmentation output (highdicom): the predicted labels as a SEG object referencing the input series.

One frame per source slice that holds a segment (empty slices are omitted, as the standard
allows), two segments with SNOMED CT codes (:data:`kidneyseg.io.segments.SEGMENTS`): 1 kidney,
2 renal tumor. The SEG shares the input's study, patient and frame of reference and names each
source image, so a PACS or viewer (OHIF, 3D Slicer, Weasis) lays it over the CT. It can only be
made from a DICOM input: a NIfTI input has no series to reference.

Read back with highdicom: ``hd.seg.segread(path).get_pixels_by_source_instance(uids,
combine_segments=True)`` returns the label values per source slice.

>>> save_dicom_seg(labels, "case.seg.dcm", ct_volume)     # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from ..errors import atomic_path, fail
from .segments import SEGMENTS, Code
from .volume import Volume, from_canonical

#: The ending of the DICOM SEG files kidneyseg writes.
DICOM_SEG_SUFFIX = ".seg.dcm"
#: Fixed ``SeriesNumber`` of the SEG series (distinct from a scanner's usual small numbers).
SEG_SERIES_NUMBER = 9901


def _concept(code: Code):
    from highdicom.sr.coding import CodedConcept

    return CodedConcept(code.value, code.scheme, code.meaning)


def _descriptions():
    import highdicom as hd
    from highdicom.color import CIELabColor

    from .. import __version__

    algorithm = hd.AlgorithmIdentificationSequence(
        name="kidneyseg", version=__version__,
        family=_concept(Code("123109", "DCM", "Artificial Intelligence")))
    out = []
    for seg in SEGMENTS:
        out.append(hd.seg.SegmentDescription(
            segment_number=seg.label, segment_label=seg.name,
            segmented_property_category=_concept(seg.category), segmented_property_type=_concept(seg.type),
            algorithm_type="AUTOMATIC", algorithm_identification=algorithm,
            anatomic_regions=[_concept(seg.region)] if seg.region else None,
            display_color=CIELabColor.from_rgb(*seg.rgb)))
    return out


def require_dicom_source(volume: Volume, where: os.PathLike | str | None = None) -> None:
    """Raise the one-line error of a DICOM SEG request for a volume not read from a DICOM series."""
    src = volume.source
    if src is None or src.dicom is None:
        what = src.format if src is not None else "an array in memory"
        raise fail(where if where is not None else (src.path if src else None),
                   f"--format dicom-seg needs a DICOM series as input (this input is {what}); "
                   "use --format nifti or nrrd")


def save_dicom_seg(labels: np.ndarray, path: os.PathLike | str, like: Volume) -> Path:
    """Write canonical (z, y, x) labels as a DICOM SEG referencing the series ``like`` was read from.

    Args:
        labels: uint8 {0, 1, 2} in ``like``'s canonical layout.
        path: the output file (``*.dcm``); written atomically.
        like: a volume from :func:`kidneyseg.io.dicom.load_dicom` (its ``source.dicom`` headers).

    Raises:
        KidneysegError: ``like`` was not read from DICOM.
    """
    import highdicom as hd
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    from .. import __version__

    if tuple(labels.shape) != tuple(like.array.shape):
        raise ValueError(f"labels shape {labels.shape} differs from the reference volume's {like.array.shape}")
    path = Path(path)
    require_dicom_source(like)
    series = like.source.dicom
    frames = np.ascontiguousarray(from_canonical(labels, like.source), dtype=np.uint8)  # (slice, row, column)
    if frames.shape[0] != len(series.headers):
        raise ValueError(f"{frames.shape[0]} label slices for {len(series.headers)} source images")
    log = logging.getLogger("highdicom")
    level = log.level
    log.setLevel(logging.ERROR)  # an all-empty prediction is encoded with all frames: not worth a line
    try:
        seg = hd.seg.Segmentation(
            source_images=series.headers, pixel_array=frames, segmentation_type="BINARY",
            segment_descriptions=_descriptions(), series_instance_uid=generate_uid(),
            series_number=SEG_SERIES_NUMBER, sop_instance_uid=generate_uid(), instance_number=1,
            manufacturer="kidneyseg", manufacturer_model_name="kidneyseg cascade 3D U-Net",
            software_versions=__version__, device_serial_number="0", series_description="kidneyseg kidney and tumor",
            content_label="KIDNEYSEG", content_description="kidney and renal tumor segmentation",
            transfer_syntax_uid=ExplicitVRLittleEndian, omit_empty_frames=True)
    finally:
        log.setLevel(level)
    with atomic_path(path) as tmp:
        seg.save_as(str(tmp))
    return path


__all__ = ["DICOM_SEG_SUFFIX", "SEG_SERIES_NUMBER", "require_dicom_source", "save_dicom_seg"]
