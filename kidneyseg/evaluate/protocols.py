"""Evaluation protocols: which regions are scored, how, and what the report's columns are.

Two protocols, one per dataset (:mod:`kidneyseg.data.datasets`):

* ``kits19``: kidneyseg's KiTS19 report (:func:`kidneyseg.evaluate.metrics.case_metrics`): kidney
  (label > 0) and tumor Dice, surface Dice at one tolerance (default 2 mm), HD95 and volumes; an
  empty reference region scores NaN.
* ``kits23``: the KiTS23 challenge's definition (``kits23/evaluation/metrics.py`` of the official
  starter code). For each nested region (kidney_and_masses {1, 2, 3}, masses {2, 3}, tumor {2})
  the Dice and the surface Dice at the region's own tolerance (1.0331, 1.1329, 1.1498 mm, the
  unrounded values of the challenge); both masks empty -> 1 for both metrics, exactly one empty
  -> 0. The surface Dice uses DeepMind's surface elements (the ``"classic"`` area table of
  :func:`kidneyseg.evaluate.metrics.surface_distances`), as the challenge's code does. The case
  row adds the mean of the three Dice and of the three surface Dice (the challenge ranks on the
  averages over cases and regions) and the region volumes (ml). Spacing comes from the files.

>>> import numpy as np
>>> gt = np.zeros((6, 6, 6), np.uint8); gt[1:5, 1:5, 1:5] = 1; gt[2:4, 2:4, 2:4] = 3
>>> row = get_protocol("kits23").case_metrics(gt, gt, (1.0, 1.0, 1.0))
>>> row["masses_dice"], row["tumor_dice"], row["tumor_surface_dice"]   # no tumor anywhere: 1
(1.0, 1.0, 1.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from ..data.datasets import KITS19, KITS23, Dataset, get_dataset
from .metrics import _check_pair, _check_spacing, _surface_dice_from, case_metrics, dice, mean_dice, \
    surface_distances, volume_ml

__all__ = ["KITS19_COLUMNS", "PROTOCOLS", "Protocol", "get_protocol", "kits23_case_metrics", "region_scores"]

#: Columns of the kits19 protocol's report, in order (the shared contract's columns come first).
KITS19_COLUMNS = ("case_id", "kidney_dice", "tumor_dice", "mean_dice", "kidney_surface_dice", "tumor_surface_dice",
                  "kidney_hd95", "tumor_hd95", "kidney_ml", "tumor_ml", "kidney_label_dice", "tumor_label_dice",
                  "gt_kidney_ml", "gt_tumor_ml", "tolerance_mm")
DEFAULT_TOLERANCE_MM = 2.0


def region_scores(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float], tolerance_mm: float,
                  surface: bool = True) -> tuple[float, float]:
    """(Dice, surface Dice) of one region's boolean masks under the KiTS23 conventions.

    Both empty -> ``(1, 1)``; exactly one empty -> ``(0, 0)``; otherwise the Dice and the surface
    Dice at ``tolerance_mm`` with DeepMind's ("classic") surface elements. ``surface=False``
    skips the surface Dice (returned as NaN).
    """
    p_any, g_any = bool(pred.any()), bool(gt.any())
    if not p_any and not g_any:
        return 1.0, 1.0
    if not p_any or not g_any:
        return 0.0, 0.0
    d = dice(pred, gt)
    if not surface:
        return d, float("nan")
    return d, _surface_dice_from(surface_distances(pred, gt, spacing, areas="classic"), tolerance_mm)


def kits23_case_metrics(pred_labels: np.ndarray, gt_labels: np.ndarray, spacing: Sequence[float],
                        dataset: Dataset = KITS23) -> dict[str, float]:
    """The KiTS23 challenge's metrics of one case (see the module docstring).

    Args:
        pred_labels, gt_labels: label maps (z, y, x) on the same grid, values 0-3.
        spacing: voxel size (z, y, x) in mm, from the files.
        dataset: a dataset whose regions carry tolerances (KiTS23).

    Returns:
        ``<region>_dice`` and ``<region>_surface_dice`` per region, ``mean_dice``,
        ``mean_surface_dice``, and the predicted and reference volumes ``<region>_ml`` /
        ``gt_<region>_ml`` in ml.
    """
    _check_pair(pred_labels, gt_labels)
    sp = _check_spacing(spacing)
    out: dict[str, float] = {}
    vols: dict[str, float] = {}
    for region in dataset.regions:
        if region.tolerance_mm is None:
            raise ValueError(f"{dataset.name}: region {region.name!r} has no surface-Dice tolerance")
        p, g = region.mask(pred_labels), region.mask(gt_labels)
        out[f"{region.name}_dice"], out[f"{region.name}_surface_dice"] = region_scores(p, g, sp, region.tolerance_mm)
        vols[f"{region.name}_ml"] = volume_ml(p, sp)
        vols[f"gt_{region.name}_ml"] = volume_ml(g, sp)
    out["mean_dice"] = float(np.mean([out[f"{r.name}_dice"] for r in dataset.regions]))
    out["mean_surface_dice"] = float(np.mean([out[f"{r.name}_surface_dice"] for r in dataset.regions]))
    return {**out, **{k: vols[k] for k in sorted(vols, key=lambda k: k.startswith("gt_"))}}


@dataclass(frozen=True)
class Protocol:
    """How a dataset's predictions are scored.

    Attributes:
        name: ``"kits19"`` or ``"kits23"``.
        dataset: the dataset whose labels and regions it scores.
        columns: the report's columns, in order (``case_id`` first).
        fixed_tolerances: the surface-Dice tolerances are the regions' own (no ``tolerance_mm``).
    """

    name: str
    dataset: Dataset
    columns: tuple[str, ...]
    fixed_tolerances: bool

    @property
    def dice_columns(self) -> tuple[str, ...]:
        """``<region>_dice`` of each scored region, outermost first."""
        return tuple(f"{r.name}_dice" for r in self.dataset.regions)

    def tolerance(self, tolerance_mm: float | None) -> float | None:
        """The tolerance to use: ``None`` -> the default (kits19) or the regions' own (kits23)."""
        if self.fixed_tolerances:
            if tolerance_mm is not None:
                raise ValueError(f"the {self.name} protocol fixes the surface-Dice tolerance per region "
                                 f"({', '.join(f'{r.name} {r.tolerance_mm:.4f} mm' for r in self.dataset.regions)}); "
                                 f"got tolerance_mm={tolerance_mm!r}")
            return None
        tol = DEFAULT_TOLERANCE_MM if tolerance_mm is None else tolerance_mm
        if not (isinstance(tol, (int, float)) and tol >= 0 and math.isfinite(tol)):
            raise ValueError(f"tolerance_mm must be a finite number >= 0, got {tolerance_mm!r}")
        return float(tol)

    def dice_scores(self, pred_labels: np.ndarray, gt_labels: np.ndarray) -> dict[str, float]:
        """Dice per scored region (``region name -> Dice``) under the protocol's empty-mask rule:
        kits19 NaN for an empty reference, kits23 1 when both are empty and 0 when one is."""
        _check_pair(pred_labels, gt_labels)
        out = {}
        for region in self.dataset.regions:
            p, g = region.mask(pred_labels), region.mask(gt_labels)
            if self.fixed_tolerances:
                out[region.name] = region_scores(p, g, (1.0, 1.0, 1.0), 0.0, surface=False)[0]
            else:
                out[region.name] = dice(p, g)
        return out

    def case_metrics(self, pred_labels: np.ndarray, gt_labels: np.ndarray, spacing: Sequence[float],
                     tolerance_mm: float | None = None) -> dict[str, float]:
        """The per-case row (without ``case_id``) of this protocol."""
        tol = self.tolerance(tolerance_mm)
        if self.name == "kits19":
            row = case_metrics(pred_labels, gt_labels, spacing, tol)
            row["tolerance_mm"] = tol
            return row
        return kits23_case_metrics(pred_labels, gt_labels, spacing, self.dataset)

    def summarize(self, rows: Iterable[dict]) -> dict:
        """The summary row (``case_id = "mean"``): the NaN-ignoring mean of each column over cases.

        ``mean_dice`` follows :func:`kidneyseg.evaluate.metrics.mean_dice` (per region the mean
        over cases, then the mean over regions); under kits23 no value is NaN, so this is also the
        mean of the per-case means.
        """
        rows = list(rows)
        out: dict = {"case_id": "mean"}
        for col in self.columns[1:]:
            vals = np.array([r.get(col, float("nan")) for r in rows], float)
            out[col] = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
        out["mean_dice"] = mean_dice({c: [row.get(c, float("nan")) for row in rows] for c in self.dice_columns})
        return out


def _kits23_columns(dataset: Dataset) -> tuple[str, ...]:
    names = [r.name for r in dataset.regions]
    return ("case_id", *(f"{n}_dice" for n in names), *(f"{n}_surface_dice" for n in names), "mean_dice",
            "mean_surface_dice", *(f"{n}_ml" for n in names), *(f"gt_{n}_ml" for n in names))


#: name -> :class:`Protocol`.
PROTOCOLS: dict[str, Protocol] = {
    "kits19": Protocol("kits19", KITS19, KITS19_COLUMNS, fixed_tolerances=False),
    "kits23": Protocol("kits23", KITS23, _kits23_columns(KITS23), fixed_tolerances=True),
}


def get_protocol(name: str | Dataset | Protocol | None) -> Protocol:
    """The protocol called ``name`` or of a dataset (``None``: the default dataset's); unknown names
    list the valid ones."""
    if isinstance(name, Protocol):
        return name
    if name is None or isinstance(name, Dataset):
        name = get_dataset(name).name
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise ValueError(f"unknown evaluation protocol {name!r}; valid: {', '.join(PROTOCOLS)}") from None
