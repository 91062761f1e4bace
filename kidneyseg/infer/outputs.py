"""What ``kidneyseg predict`` writes for a case: labels in one of three formats, and optional sidecars.

============================  ===========================================================================
file (beside the labels)      written with
============================  ===========================================================================
``<case>.nii.gz``             ``--format nifti`` (default): the input's exact shape, affine and header
``<case>.seg.nrrd``           ``--format nrrd``: a 3D Slicer segmentation in the input's geometry
``<case>.seg.dcm``            ``--format dicom-seg``: a DICOM SEG referencing the input series (DICOM input only)
``<case>.statistics.json``    ``--statistics``: :func:`kidneyseg.measure.statistics.case_statistics`
``statistics.csv``            ``--statistics`` on a folder: one row per case, rebuilt from the JSON files
``<case>.preview.png``        ``--preview``: :func:`kidneyseg.infer.preview.save_preview`
``<case>.probabilities.npz``  ``--save-probabilities``: :class:`kidneyseg.infer.probabilities.BoxProbabilities`
============================  ===========================================================================

A case is complete when every requested file exists (each is written atomically, the label file
last); a re-run skips complete cases and redoes the others.

>>> case_outputs("case_00001", Path("out"), single=False, options=OutputOptions("nrrd", statistics=True)).labels
PosixPath('out/case_00001.seg.nrrd')
"""

from __future__ import annotations

import csv
import io as _io
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import fail, write_text_atomic
from ..io import Volume, save_dicom_seg, save_like, save_seg_nrrd
from ..measure.statistics import CSV_COLUMNS, CaseStatistics, KidneyStatistics, TumorStatistics

__all__ = ["FORMATS", "CaseOutputs", "OutputOptions", "case_outputs", "label_suffixes", "read_statistics",
           "write_labels", "write_statistics", "write_statistics_csv"]

#: ``--format`` values and the ending of their label files (a single output may use the others listed).
FORMATS = {"nifti": (".nii.gz", ".nii"), "nrrd": (".seg.nrrd", ".nrrd"), "dicom-seg": (".seg.dcm", ".dcm")}
STATISTICS_CSV = "statistics.csv"


def label_suffixes(fmt: str) -> tuple[str, ...]:
    """The file endings of a format (the first is what folder runs write)."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    return FORMATS[fmt]


@dataclass(frozen=True)
class OutputOptions:
    """What to write per case: the label format and the optional sidecars."""

    format: str = "nifti"
    statistics: bool = False
    preview: bool = False
    probabilities: bool = False

    def __post_init__(self):
        label_suffixes(self.format)


@dataclass(frozen=True)
class CaseOutputs:
    """The paths of one case's outputs (``None``: not requested)."""

    labels: Path
    statistics: Path | None = None
    preview: Path | None = None
    probabilities: Path | None = None

    def requested(self) -> list[Path]:
        return [p for p in (self.statistics, self.preview, self.probabilities, self.labels) if p is not None]

    def complete(self) -> bool:
        """Whether every requested file exists (each is written atomically)."""
        return all(p.exists() for p in self.requested())


def _any_suffix(name: str) -> str | None:
    low = name.lower()
    for sufs in FORMATS.values():
        for s in sufs:
            if low.endswith(s):
                return s
    return None


def is_label_file_name(path: Path) -> bool:
    """Whether ``path`` names a label file of any format (else it is taken as a folder)."""
    return _any_suffix(path.name) is not None


def case_outputs(case_id: str, output: Path, single: bool, options: OutputOptions) -> CaseOutputs:
    """The output paths of a case: ``output`` itself when one input gets a file name, else ``output/<id>.<ext>``.

    Raises:
        KidneysegError: a file name whose ending does not fit ``options.format``.
    """
    sufs = label_suffixes(options.format)
    if single and is_label_file_name(output):
        found = _any_suffix(output.name)
        if found not in sufs:
            raise fail(output, f"output name does not fit --format {options.format} (use a name ending in "
                               f"{' or '.join(sufs)}, or a folder)")
        labels = output
        stem = output.parent / output.name[: -len(found)]
    else:
        labels = output / f"{case_id}{sufs[0]}"
        stem = output / case_id
    side = lambda ext, on: Path(f"{stem}{ext}") if on else None  # noqa: E731
    return CaseOutputs(labels, side(".statistics.json", options.statistics), side(".preview.png", options.preview),
                       side(".probabilities.npz", options.probabilities))


def write_labels(labels: np.ndarray, path: Path, volume: Volume, fmt: str) -> Path:
    """Write canonical labels in ``fmt`` with ``volume``'s source geometry (atomically)."""
    label_suffixes(fmt)
    if fmt == "nifti":
        return save_like(labels, path, volume, kind="label")
    if fmt == "nrrd":
        return save_seg_nrrd(labels, path, volume)
    return save_dicom_seg(labels, path, volume)


# ---------------------------------------------------------------------------------- statistics
def write_statistics(stats: CaseStatistics, path: Path, case_id: str, volume: Volume, labels_path: Path) -> Path:
    """``<case>.statistics.json``: the case's statistics with what they were measured on."""
    src = volume.source
    doc = {
        "case_id": case_id,
        "input": src.path if src else None,
        "labels": str(labels_path),
        "shape_zyx": list(volume.shape),
        "spacing_zyx_mm": [round(float(s), 6) for s in volume.spacing],
        **stats.to_dict(),
    }
    if src is not None and src.dicom is not None:
        doc["dicom_series_uid"] = src.dicom.uid
    return write_text_atomic(path, json.dumps(doc, indent=2) + "\n")


def read_statistics(path: Path) -> tuple[str, CaseStatistics]:
    """``(case_id, statistics)`` back from a ``.statistics.json`` (``None`` values become NaN)."""
    from ..errors import read_json

    doc = read_json(path, "statistics file")
    nan = lambda v: float("nan") if v is None else v  # noqa: E731
    try:
        kidneys = [KidneyStatistics(**{k: nan(v) if k != "centroid_ras_mm" else tuple(v) for k, v in d.items()})
                   for d in doc["kidneys"].values()]
        tumors = [TumorStatistics(**{k: nan(v) if k != "centroid_ras_mm" else tuple(v) for k, v in d.items()})
                  for d in doc["tumors"]]
        stats = CaseStatistics(kidneys, tumors, doc["midline"]["method"], nan(doc["midline"]["x_ras_mm"]),
                               nan(doc["voxel_ml"]), True)
        return str(doc["case_id"]), stats
    except (KeyError, TypeError, AttributeError) as exc:
        raise fail(path, f"not a kidneyseg statistics file ({type(exc).__name__}: {exc})") from None


def _cell(v) -> str:
    if isinstance(v, float):
        return "" if not math.isfinite(v) else f"{v:.6g}"
    return str(v)


def write_statistics_csv(json_paths: list[Path], path: Path) -> Path:
    """``statistics.csv``: one row per case (:data:`~kidneyseg.measure.statistics.CSV_COLUMNS`), sorted by case id."""
    rows = sorted((read_statistics(p) for p in json_paths), key=lambda r: r[0])
    buf = _io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for cid, stats in rows:
        writer.writerow({k: _cell(v) for k, v in stats.row(cid).items()})
    return write_text_atomic(path, buf.getvalue())
