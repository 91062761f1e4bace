"""Evaluate a folder of predicted label maps against a folder of references: per-case rows + summary.

The scoring follows an evaluation protocol (:mod:`kidneyseg.evaluate.protocols`): ``kits19`` (the
default, kidneyseg's KiTS19 report) or ``kits23`` (the KiTS23 challenge's regions and metrics).
Without an explicit protocol, :func:`evaluate_folders` takes the references' dataset: the folder's
``kits23.json`` / ``kits.json``, else the label values (a cyst, label 3, means KiTS23). A label
value outside the protocol's dataset is refused, naming the file.

Files are matched by case id. Both folders may hold ``<case_id>.nii.gz`` files or the KiTS19
layout ``<case_id>/segmentation.nii.gz`` (mixing the two in one folder works). Every prediction
needs a reference; references without a prediction are ignored (a 20-case validation split is
scored against the 210-case KiTS19 folder).

>>> rows = evaluate_folders("runs/demo/predictions", "data/kits19")      # doctest: +SKIP
>>> write_csv(rows, "metrics.csv", tolerance_mm=2.0)                      # doctest: +SKIP
"""

from __future__ import annotations

import csv
import io as _io
import json
import math
import os
from pathlib import Path
from typing import Iterable

import numpy as np
from tqdm.auto import tqdm

from ..errors import atomic_path, fail
from ..io import load_volume
from .protocols import KITS19_COLUMNS, Protocol, get_protocol

#: Columns of the kits19 metrics CSV, in order (the shared contract's columns come first); the
#: kits23 protocol's are ``get_protocol("kits23").columns``.
COLUMNS = list(KITS19_COLUMNS)
SUMMARY_ID = "mean"
#: Affines of prediction and reference may differ by this much (mm) and still count as one grid.
AFFINE_ATOL_MM = 1e-3


def find_label_files(folder: os.PathLike | str) -> dict[str, Path]:
    """Map case id -> label file in ``folder`` (``<id>.nii[.gz]`` or ``<id>/segmentation.nii.gz``).

    Raises:
        KidneysegError: the folder does not exist, or a case id appears twice.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise fail(folder, "no such folder")
    found: dict[str, Path] = {}

    def add(cid: str, path: Path) -> None:
        if cid in found:
            raise fail(folder, f"case {cid} appears twice ({found[cid].name} and {path.relative_to(folder)})")
        found[cid] = path

    for entry in sorted(folder.iterdir()):
        name = entry.name
        if name.startswith("."):
            continue  # temporary files of atomic writes, hidden files
        if entry.is_file() and (name.endswith(".nii.gz") or name.endswith(".nii")):
            add(name[:-7] if name.endswith(".nii.gz") else name[:-4], entry)
        elif entry.is_dir():
            for seg in ("segmentation.nii.gz", "segmentation.nii"):
                if (entry / seg).is_file():
                    add(name, entry / seg)
                    break
    return found


def evaluate_pair(pred_path: os.PathLike | str, gt_path: os.PathLike | str, tolerance_mm: float | None = None,
                  case_id: str | None = None, protocol: str | Protocol | None = None) -> dict:
    """Metrics of one predicted label file against its reference (same grid required).

    Args:
        tolerance_mm: surface-Dice tolerance of the kits19 protocol (default 2 mm); the kits23
            protocol fixes it per region and refuses one.
        protocol: ``"kits19"`` (default) or ``"kits23"``.

    Raises:
        KidneysegError: unreadable files, a geometry mismatch (shape or affine), or label values
            outside the protocol's dataset.
    """
    proto = get_protocol(protocol)
    proto.tolerance(tolerance_mm)
    labels = proto.dataset.label_values
    pred = load_volume(pred_path, kind="label", label_values=labels)
    gt = load_volume(gt_path, kind="label", label_values=labels)
    if pred.shape != gt.shape:
        raise fail(pred_path, f"shape {pred.shape} (z, y, x) differs from the reference's {gt.shape} ({gt_path})")
    if not np.allclose(pred.affine, gt.affine, atol=AFFINE_ATOL_MM):
        raise fail(pred_path, f"affine differs from the reference's ({gt_path}); "
                   f"spacing {tuple(round(s, 4) for s in pred.spacing)} vs {tuple(round(s, 4) for s in gt.spacing)} mm")
    row = {"case_id": case_id or Path(pred_path).name.split(".")[0]}
    row.update(proto.case_metrics(pred.array, gt.array, gt.spacing, tolerance_mm))
    return row


def detect_protocol(gt_dir: os.PathLike | str, references: Iterable[os.PathLike | str] = ()) -> Protocol:
    """The protocol of a reference folder's dataset: its metadata file, else its label values.

    ``kits23.json`` -> kits23, ``kits.json`` -> kits19; with neither, the reference files are read
    and any label 3 (cyst) means kits23, otherwise kits19.
    """
    from ..data.datasets import dataset_for_labels, detect_dataset
    from ..data.volumes import ALL_LABEL_VALUES

    found = detect_dataset(gt_dir)
    if found is not None:
        return get_protocol(found)
    values: set[int] = {0}
    for path in references:
        arr = load_volume(path, kind="label", label_values=ALL_LABEL_VALUES).array
        if arr.size and arr.max() > 2:  # only values beyond KiTS19's need a look
            values.update(int(v) for v in np.unique(arr[arr > 2]))
    return get_protocol(dataset_for_labels(values))


def evaluate_folders(pred_dir: os.PathLike | str, gt_dir: os.PathLike | str, tolerance_mm: float | None = None,
                     progress: bool = True, protocol: str | Protocol | None = None) -> list[dict]:
    """Per-case metric rows (sorted by case id) for every prediction in ``pred_dir``.

    Args:
        protocol: ``"kits19"``, ``"kits23"`` or ``None`` (the references' dataset, see
            :func:`detect_protocol`). Each row carries it as ``protocol`` (not a CSV column).

    Raises:
        KidneysegError: no predictions, a prediction without reference, or any per-case error.
    """
    preds = find_label_files(pred_dir)
    gts = find_label_files(gt_dir)
    if protocol is not None:
        get_protocol(protocol).tolerance(tolerance_mm)
    elif tolerance_mm is not None:
        get_protocol("kits19").tolerance(tolerance_mm)  # a bad number fails before any file is read
    if not preds:
        raise fail(pred_dir, "no label maps found (expected case_XXXXX.nii.gz or case_XXXXX/segmentation.nii.gz)")
    missing = sorted(set(preds) - set(gts))
    if missing:
        raise fail(gt_dir, f"no reference for {len(missing)} predicted case(s): {', '.join(missing[:5])}")
    proto = get_protocol(protocol) if protocol is not None else detect_protocol(
        gt_dir, [gts[c] for c in sorted(preds)])
    rows = []
    for cid in tqdm(sorted(preds), desc="evaluate", unit="case", disable=not progress):
        rows.append({**evaluate_pair(preds[cid], gts[cid], tolerance_mm, case_id=cid, protocol=proto),
                     "protocol": proto.name})
    return rows


def _protocol_of(rows: list[dict], protocol: str | Protocol | None) -> Protocol:
    if protocol is not None:
        return get_protocol(protocol)
    names = {r.get("protocol", "kits19") for r in rows}
    if len(names) > 1:
        raise ValueError(f"rows of several protocols {sorted(names)}; report them separately")
    return get_protocol(names.pop() if names else "kits19")


def summarize(rows: Iterable[dict], protocol: str | Protocol | None = None) -> dict:
    """The summary row: NaN-ignoring mean of each column over cases.

    ``mean_dice`` of the summary follows :func:`kidneyseg.evaluate.metrics.mean_dice`: for kits19
    (mean kidney Dice + mean tumor Dice) / 2, the KiTS19 leaderboard's composite; for kits23 the
    mean over the three regions (the challenge's average Dice).
    """
    rows = list(rows)
    return _protocol_of(rows, protocol).summarize(rows)


def _fmt(v) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.6g}"
    return str(v)


def to_csv_text(rows: list[dict], tolerance_mm: float | None = None, protocol: str | Protocol | None = None) -> str:
    """CSV text: one row per case, then the summary row (``case_id = mean``), the protocol's columns."""
    proto = _protocol_of(rows, protocol)
    tol = proto.tolerance(tolerance_mm) if not proto.fixed_tolerances else None
    buf = _io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(proto.columns)
    for r in [*rows, proto.summarize(rows)]:
        if tol is not None:
            r = {**r, "tolerance_mm": float(tol)}
        w.writerow([_fmt(r.get(c, float("nan"))) for c in proto.columns])
    return buf.getvalue()


def write_csv(rows: list[dict], path: os.PathLike | str, tolerance_mm: float | None = None,
              protocol: str | Protocol | None = None) -> Path:
    """Write the per-case CSV (with summary row) atomically."""
    text = to_csv_text(rows, tolerance_mm, protocol)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def _json_safe(v):
    return None if isinstance(v, float) and not math.isfinite(v) else v


def write_json(rows: list[dict], path: os.PathLike | str, tolerance_mm: float | None = None,
               protocol: str | Protocol | None = None) -> Path:
    """Write ``{"protocol", "tolerance_mm", "nan_convention", "cases": [...], "summary": {...}}`` atomically
    (NaN -> null; kits23: ``tolerance_mm`` maps each region to its tolerance)."""
    proto = _protocol_of(rows, protocol)
    if proto.fixed_tolerances:
        tol: object = {r.name: r.tolerance_mm for r in proto.dataset.regions}
        convention = "both masks empty: Dice and surface Dice 1; exactly one empty: 0 (the KiTS23 challenge's rule)"
    else:
        tol = proto.tolerance(tolerance_mm)
        convention = "null (NaN) where the reference region is empty; HD95 null when either is empty"
    doc = {
        "protocol": proto.name,
        "tolerance_mm": tol,
        "nan_convention": convention,
        "cases": [{k: _json_safe(v) for k, v in r.items()} for r in rows],
        "summary": {k: _json_safe(v) for k, v in proto.summarize(rows).items()},
    }
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    return Path(path)


def format_table(rows: list[dict], tolerance_mm: float | None = None, protocol: str | Protocol | None = None) -> str:
    """A Markdown table of the main columns, per case and the summary."""
    proto = _protocol_of(rows, protocol)
    if proto.fixed_tolerances:
        cols = [c for c in proto.columns if c == "case_id" or "dice" in c]
        head = (f"protocol {proto.name}; surface Dice tolerances: "
                + ", ".join(f"{r.name} {r.tolerance_mm:.4f} mm" for r in proto.dataset.regions)
                + "; both empty = 1, one empty = 0")
    else:
        cols = list(proto.columns[:10])
        head = f"protocol {proto.name}; surface Dice tolerance: {proto.tolerance(tolerance_mm):g} mm; NaN = empty reference"
    lines = [head, "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in [*rows, proto.summarize(rows)]:
        lines.append("| " + " | ".join(
            (f"{r[c]:.4f}" if isinstance(r[c], float) and not math.isnan(r[c]) else _fmt(r[c])) for c in cols) + " |")
    return "\n".join(lines)


__all__ = ["COLUMNS", "detect_protocol", "evaluate_folders", "evaluate_pair", "find_label_files", "format_table", "summarize",
           "to_csv_text", "write_csv", "write_json"]
