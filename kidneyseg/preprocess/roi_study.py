"""The ROI study (notebook 02): what each box strategy keeps and cuts, measured on real label maps.

:func:`compare_strategies` measures, per case, the volume each strategy keeps and the foreground it
cuts: the thesis's two alternatives (a fixed-location box, a tight per-label box) against the
fixed-size centred box (the thesis's choice, :mod:`kidneyseg.preprocess.roi`) and one fixed-size
box per kidney. :func:`scan_labels` reads the label maps' geometry in parallel.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .roi import BBox, Crop, bbox, bbox_center, box_voxels, crop_for_center, extent_mm, fit_box_size, kidney_boxes


@dataclass
class LabelGeometry:
    """What the ROI study needs from one label map (all boxes in voxels, spacing in mm)."""

    case_id: str
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    fg_box: BBox | None
    kidney_boxes: list
    fg_voxels: int


def label_geometry(path: str | os.PathLike, case_id: str | None = None) -> LabelGeometry:
    """Read one label file and measure its foreground and per-kidney boxes (canonical z, y, x).

    Reads the voxels with nibabel directly (no value validation: this is a study, not training
    input), which is ~10x faster than :func:`kidneyseg.io.load_volume` on large KiTS19 labels.
    """
    import nibabel as nib
    from nibabel import orientations as nio

    from ..io import CANONICAL_AXCODES, spacing_from_affine, to_canonical
    from ..errors import fail

    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel raises assorted errors on broken files
        raise fail(path, f"cannot read label map ({type(exc).__name__}: {exc})") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    affine = np.asarray(img.affine, float)
    ornt = nio.ornt_transform(nio.io_orientation(affine), nio.axcodes2ornt(CANONICAL_AXCODES))
    if np.array_equal(ornt, [[0, 1], [1, 1], [2, 1]]):
        lab, spacing = data, spacing_from_affine(affine)
    else:
        vol = to_canonical(data, affine, str(path))
        lab, spacing = vol.array, vol.spacing
    return LabelGeometry(case_id or Path(path).parent.name, tuple(lab.shape), tuple(spacing),
                         bbox(lab), kidney_boxes(lab, spacing), int(np.count_nonzero(lab)))


def _geom_worker(args):
    return label_geometry(*args)


def scan_labels(paths: Sequence[tuple[str, str]], workers: int = 1, progress: bool = True) -> list[LabelGeometry]:
    """:func:`label_geometry` for many ``(case_id, label_path)`` pairs, in parallel, with a bar."""
    from tqdm.auto import tqdm

    jobs = [(p, c) for c, p in paths]
    if workers <= 1:
        return [label_geometry(*j) for j in tqdm(jobs, desc="labels", disable=not progress)]
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(workers) as pool:
        return list(tqdm(pool.map(_geom_worker, jobs, chunksize=2), total=len(jobs), desc="labels",
                         disable=not progress))


def _overlap_voxels(a: BBox, b: BBox) -> int:
    return int(np.prod([max(0, min(b1, d1) - max(a0, c0)) for a0, b1, c0, d1 in zip(a[0], a[1], b[0], b[1])]))


def _crop_box(c: Crop) -> BBox:
    return c.start, c.stop


def compare_strategies(geoms: Sequence[LabelGeometry], train_ids: Iterable[str] | None = None,
                       margin_mm: float = 10.0) -> "pandas.DataFrame":  # noqa: F821
    """Volume kept and foreground cut per case for four ROI strategies.

    Strategies (boxes fitted on ``train_ids``, default all cases, and applied to every case):

    - ``fixed_location``: one box at the same place in every scan (thesis alternative 1): the union
      of all training foreground boxes in *relative* coordinates (fraction of each axis), plus the
      margin.
    - ``tight``: each case's own foreground bounding box plus the margin (thesis alternative 2; sizes
      vary).
    - ``fixed_size_centered``: the thesis's box, fixed size in mm, centred on the case's foreground.
    - ``per_kidney``: one fixed-size box per kidney (union of the two counted once).

    Foreground cut is measured against the foreground bounding box (voxels of the box outside the
    crop), an upper bound on the labelled voxels lost; it is exact zero when nothing is cut.

    Returns:
        DataFrame with columns case_id, split, strategy, box_z_mm, box_y_mm, box_x_mm, kept_fraction,
        removed_fraction, fg_cut_fraction.
    """
    import pandas as pd

    geoms = [g for g in geoms if g.fg_box is not None]
    train = set(train_ids) if train_ids is not None else {g.case_id for g in geoms}
    tr = [g for g in geoms if g.case_id in train]
    if not tr:
        raise ValueError("no training case with foreground for the ROI comparison")
    box_mm = fit_box_size([extent_mm(g.fg_box, g.spacing) for g in tr], margin_mm)
    kid_mm = fit_box_size([extent_mm(b, g.spacing) for g in tr for b in g.kidney_boxes], margin_mm)
    rel_lo = np.min([[a / n for a, n in zip(g.fg_box[0], g.shape)] for g in tr], axis=0)
    rel_hi = np.max([[b / n for b, n in zip(g.fg_box[1], g.shape)] for g in tr], axis=0)
    rows = []
    for g in geoms:
        vol = float(np.prod(g.shape))
        fg = g.fg_box
        fg_vox = float(np.prod([b - a for a, b in zip(*fg)]))
        m = [margin_mm / s for s in g.spacing]
        fixed = (tuple(max(0, int(math.floor(lo * n - mm))) for lo, n, mm in zip(rel_lo, g.shape, m)),
                 tuple(min(n, int(math.ceil(hi * n + mm))) for hi, n, mm in zip(rel_hi, g.shape, m)))
        tight = (tuple(max(0, int(math.floor(a - mm))) for a, mm in zip(fg[0], m)),
                 tuple(min(n, int(math.ceil(b + mm))) for b, n, mm in zip(fg[1], g.shape, m)))
        centered = _crop_box(crop_for_center(bbox_center(fg), box_voxels(box_mm, g.spacing), g.shape))
        kboxes = [_crop_box(crop_for_center(bbox_center(b), box_voxels(kid_mm, g.spacing), g.shape))
                  for b in g.kidney_boxes]
        full = ((0, 0, 0), g.shape)
        variants = {"fixed_location": [fixed], "tight": [tight], "fixed_size_centered": [centered],
                    "per_kidney": kboxes}
        for name, boxes in variants.items():
            inside = [_overlap_voxels(b, full) for b in boxes]
            kept = sum(inside)
            if len(boxes) == 2:
                kept -= _overlap_voxels(boxes[0], boxes[1]) if inside[0] and inside[1] else 0
            if name == "per_kidney":
                need = sum(float(np.prod([b - a for a, b in zip(*kb)])) for kb in g.kidney_boxes)
                got = sum(max(_overlap_voxels(kb, b) for b in boxes) for kb in g.kidney_boxes)
                cut = 1 - got / need if need else 0.0
            else:
                cut = 1 - _overlap_voxels(fg, boxes[0]) / fg_vox
            size = [(b - a) * s for a, b, s in zip(*boxes[0], g.spacing)] if len(boxes) == 1 else \
                list(kid_mm) if name == "per_kidney" else [math.nan] * 3
            if name == "fixed_size_centered":
                size = list(box_mm)
            rows.append({"case_id": g.case_id, "split": "train" if g.case_id in train else "val",
                         "strategy": name, "box_z_mm": size[0], "box_y_mm": size[1], "box_x_mm": size[2],
                         "kept_fraction": kept / vol, "removed_fraction": 1 - kept / vol,
                         "fg_cut_fraction": max(0.0, cut)})
    df = pd.DataFrame(rows)
    df.attrs["box_size_mm"] = box_mm
    df.attrs["kidney_box_size_mm"] = kid_mm
    return df


def summarize_strategies(df) -> "pandas.DataFrame":  # noqa: F821
    """Median/min/max kept fraction and the number of cases with any foreground cut, per strategy."""
    g = df.groupby("strategy", sort=False)
    return g.agg(median_kept=("kept_fraction", "median"), median_removed=("removed_fraction", "median"),
                 min_kept=("kept_fraction", "min"), max_kept=("kept_fraction", "max"),
                 cases_with_fg_cut=("fg_cut_fraction", lambda s: int((s > 0).sum())),
                 max_fg_cut=("fg_cut_fraction", "max"))


def study(labels_dir: str | os.PathLike | None, manifest: str | os.PathLike | None = None,
          split_manifest: str | os.PathLike | None = None, margin_mm: float = 0.0, workers: int = 1,
          progress: bool = False):
    """The ROI comparison of notebook 02 on a folder of label maps or on a manifest's labels.

    Args:
        labels_dir: a KiTS-layout folder of ``case_*/segmentation.nii.gz`` (e.g. ``../shared/kits19``),
            or ``None`` to use ``manifest``'s label files.
        manifest: the manifest whose labels (and split) are used when ``labels_dir`` is ``None``.
        split_manifest: with ``labels_dir``, a manifest giving the train/val split and exclusions
            (e.g. ``data_manifest.csv``); ``None``: every case is training.
        margin_mm, workers, progress: see :func:`compare_strategies`, :func:`scan_labels`.

    Returns:
        ``(per-case table, summary table, number of cases the boxes were fitted on)``.
    """
    from ..data import manifest as mf

    if labels_dir:
        paths = [(p.parent.name, str(p)) for p in sorted(Path(labels_dir).glob("case_*/segmentation.nii.gz"))]
        split_df = mf.read_manifest(split_manifest) if split_manifest else None
    else:
        if manifest is None:
            raise ValueError("give labels_dir or manifest")
        split_df = mf.read_manifest(manifest)
        paths = [(r.case_id, str(mf.case_paths(r, manifest)[1])) for _, r in split_df.iterrows() if r.has_label]
    geoms = scan_labels(paths, workers=workers, progress=progress)
    train_ids = None
    if split_df is not None:
        train_ids = set(mf.select_cases(split_df, "train").case_id)
        excluded = set(split_df.loc[split_df.excluded.astype(bool), "case_id"])
        geoms = [g for g in geoms if g.case_id not in excluded]
    table = compare_strategies(geoms, train_ids=train_ids, margin_mm=margin_mm)
    return table, summarize_strategies(table), len(train_ids) if train_ids else len(geoms)


__all__ = ["LabelGeometry", "compare_strategies", "label_geometry", "scan_labels", "study", "summarize_strategies"]
