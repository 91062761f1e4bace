"""Evaluate a folder of predicted label maps against a folder of references: per-case rows + summary.

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
from .metrics import case_metrics, mean_dice

#: Columns of the metrics CSV, in order (the shared contract's columns come first).
COLUMNS = ["case_id", "kidney_dice", "tumor_dice", "mean_dice", "kidney_surface_dice", "tumor_surface_dice",
           "kidney_hd95", "tumor_hd95", "kidney_ml", "tumor_ml", "kidney_label_dice", "tumor_label_dice",
           "gt_kidney_ml", "gt_tumor_ml", "tolerance_mm"]
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


def evaluate_pair(pred_path: os.PathLike | str, gt_path: os.PathLike | str, tolerance_mm: float = 2.0,
                  case_id: str | None = None) -> dict:
    """Metrics of one predicted label file against its reference (same grid required).

    Raises:
        KidneysegError: unreadable files or a geometry mismatch (shape or affine).
    """
    pred = load_volume(pred_path, kind="label")
    gt = load_volume(gt_path, kind="label")
    if pred.shape != gt.shape:
        raise fail(pred_path, f"shape {pred.shape} (z, y, x) differs from the reference's {gt.shape} ({gt_path})")
    if not np.allclose(pred.affine, gt.affine, atol=AFFINE_ATOL_MM):
        raise fail(pred_path, f"affine differs from the reference's ({gt_path}); "
                   f"spacing {tuple(round(s, 4) for s in pred.spacing)} vs {tuple(round(s, 4) for s in gt.spacing)} mm")
    row = {"case_id": case_id or Path(pred_path).name.split(".")[0]}
    row.update(case_metrics(pred.array, gt.array, gt.spacing, tolerance_mm))
    row["tolerance_mm"] = float(tolerance_mm)
    return row


def evaluate_folders(pred_dir: os.PathLike | str, gt_dir: os.PathLike | str, tolerance_mm: float = 2.0,
                     progress: bool = True) -> list[dict]:
    """Per-case metric rows (sorted by case id) for every prediction in ``pred_dir``.

    Raises:
        KidneysegError: no predictions, a prediction without reference, or any per-case error.
    """
    if not (tolerance_mm >= 0 and math.isfinite(tolerance_mm)):
        raise ValueError(f"tolerance_mm must be a finite number >= 0, got {tolerance_mm!r}")
    preds = find_label_files(pred_dir)
    gts = find_label_files(gt_dir)
    if not preds:
        raise fail(pred_dir, "no label maps found (expected case_XXXXX.nii.gz or case_XXXXX/segmentation.nii.gz)")
    missing = sorted(set(preds) - set(gts))
    if missing:
        raise fail(gt_dir, f"no reference for {len(missing)} predicted case(s): {', '.join(missing[:5])}")
    rows = []
    for cid in tqdm(sorted(preds), desc="evaluate", unit="case", disable=not progress):
        rows.append(evaluate_pair(preds[cid], gts[cid], tolerance_mm, case_id=cid))
    return rows


def summarize(rows: Iterable[dict]) -> dict:
    """The summary row: NaN-ignoring mean of each column over cases.

    ``mean_dice`` of the summary follows :func:`kidneyseg.evaluate.metrics.mean_dice`: (mean kidney
    Dice + mean tumor Dice) / 2, the KiTS19 leaderboard's composite.
    """
    rows = list(rows)
    out: dict = {"case_id": SUMMARY_ID}
    for col in COLUMNS[1:]:
        vals = np.array([r.get(col, float("nan")) for r in rows], float)
        out[col] = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
    out["mean_dice"] = mean_dice({r: [row.get(f"{r}_dice", float("nan")) for row in rows] for r in ("kidney", "tumor")})
    return out


def _fmt(v) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.6g}"
    return str(v)


def to_csv_text(rows: list[dict], tolerance_mm: float) -> str:
    """CSV text: one row per case, then the summary row (``case_id = mean``)."""
    buf = _io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    for r in [*rows, summarize(rows)]:
        r = {**r, "tolerance_mm": float(tolerance_mm)}
        w.writerow([_fmt(r.get(c, float("nan"))) for c in COLUMNS])
    return buf.getvalue()


def write_csv(rows: list[dict], path: os.PathLike | str, tolerance_mm: float) -> Path:
    """Write the per-case CSV (with summary row) atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(to_csv_text(rows, tolerance_mm), encoding="utf-8")
    return Path(path)


def _json_safe(v):
    return None if isinstance(v, float) and not math.isfinite(v) else v


def write_json(rows: list[dict], path: os.PathLike | str, tolerance_mm: float) -> Path:
    """Write ``{"tolerance_mm", "nan_convention", "cases": [...], "summary": {...}}`` atomically (NaN -> null)."""
    doc = {
        "tolerance_mm": float(tolerance_mm),
        "nan_convention": "null (NaN) where the reference region is empty; HD95 null when either is empty",
        "cases": [{k: _json_safe(v) for k, v in r.items()} for r in rows],
        "summary": {k: _json_safe(v) for k, v in summarize(rows).items()},
    }
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    return Path(path)


def format_table(rows: list[dict], tolerance_mm: float) -> str:
    """A Markdown table of the main columns, per case and the summary."""
    cols = COLUMNS[:10]
    lines = [f"surface Dice tolerance: {tolerance_mm:g} mm; NaN = empty reference",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in [*rows, summarize(rows)]:
        lines.append("| " + " | ".join(
            (f"{r[c]:.4f}" if isinstance(r[c], float) and not math.isnan(r[c]) else _fmt(r[c])) for c in cols) + " |")
    return "\n".join(lines)


__all__ = ["COLUMNS", "evaluate_folders", "evaluate_pair", "find_label_files", "format_table", "summarize",
           "to_csv_text", "write_csv", "write_json"]
