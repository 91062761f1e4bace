"""Choosing a model's post-processing: score every strategy on raw validation predictions, keep the best.

Inference applies a strategy (:mod:`kidneyseg.infer.postprocess`); choosing one needs the
reference labels and the metrics, so it happens here, after inference. Predictions must be *raw*
(``kidneyseg predict --postprocess none``, or the notebook's ``postprocess="none"``) so every
strategy starts from the same input. The winner (highest :func:`~kidneyseg.evaluate.metrics.mean_dice`
over the cases; ties go to the order of ``STRATEGIES``) is written to ``MODEL_DIR/postprocess.json``.
The Dice is the evaluation protocol's of the model's dataset (KiTS19: kidney and tumor, NaN for an
empty reference; KiTS23: its three regions, both empty = 1).

>>> best, scores = choose_postprocessing("model", "preds_raw", "labels")   # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from ..data.datasets import Dataset, get_dataset
from ..errors import ensure_output_dir, fail
from ..infer.postprocess import STRATEGIES, get_strategy, postprocess, save_choice
from ..io import load_volume, save_like
from .metrics import mean_dice
from .protocols import get_protocol
from .report import find_label_files

__all__ = ["best_strategy", "choose_postprocessing", "compare_strategies"]


def compare_strategies(cases: Iterable[tuple[np.ndarray, np.ndarray, Sequence[float]]],
                       strategies: Sequence[str] | None = None, options: Mapping[str, dict] | None = None,
                       dataset: str | Dataset | None = None) -> dict[str, dict[str, float]]:
    """Score each strategy on cases.

    Args:
        cases: ``(raw predicted labels, reference labels, spacing)`` triples.
        strategies: names to compare (default: all).
        options: per strategy name, options other than its defaults (e.g.
            ``{"anatomy": {"min_component_ml": 5}}``).
        dataset: the labels' dataset (default KiTS19); its protocol's Dice is used.

    Returns:
        ``{name: {"<region>_dice" ..., "mean_dice", "n_cases"}}`` (KiTS19: ``kidney_dice``,
        ``tumor_dice``): NaN-ignoring means over the cases and their
        :func:`~kidneyseg.evaluate.metrics.mean_dice`.
    """
    ds = get_dataset(dataset)
    proto = get_protocol(ds)
    names = list(strategies or STRATEGIES)
    opts = {n: get_strategy(n).check_options(dict((options or {}).get(n, {}))) for n in names}
    per = {n: {r.name: [] for r in ds.regions} for n in names}
    count = 0
    for pred, gt, spacing in cases:
        count += 1
        for n in names:
            for region, d in proto.dice_scores(postprocess(pred, spacing, n, dataset=ds, **opts[n]), gt).items():
                per[n][region].append(d)
    if count == 0:
        raise ValueError("compare_strategies needs at least one case")
    out = {}
    for n, d in per.items():
        row = {}
        for region, values in d.items():
            v = np.asarray(values, float)
            row[f"{region}_dice"] = float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
        out[n] = {**row, "mean_dice": mean_dice(d), "n_cases": count}
    return out


def best_strategy(scores: Mapping[str, Mapping[str, float]]) -> str:
    """The strategy with the highest mean Dice; ties go to the order of ``STRATEGIES``."""
    order = list(STRATEGIES)
    return max(scores, key=lambda n: (scores[n]["mean_dice"], -order.index(n)))


def choose_postprocessing(model_dir: os.PathLike | str, raw_pred_dir: os.PathLike | str,
                          references: os.PathLike | str | Mapping[str, os.PathLike | str],
                          out_dir: os.PathLike | str | None = None, strategies: Sequence[str] | None = None,
                          options: Mapping[str, dict] | None = None) -> tuple[str, dict]:
    """Compare the strategies on raw predictions, store the best in ``MODEL_DIR/postprocess.json``.

    Args:
        model_dir: the model folder to write the choice into; its ``plan.json`` names the dataset
            (KiTS19 without one).
        raw_pred_dir: raw predicted label maps (``<case_id>.nii.gz`` or the KiTS layout).
        references: a folder of reference label maps, or ``case_id -> label file``; only cases
            with both a prediction and a reference are scored.
        out_dir: if given, the predictions post-processed with the chosen strategy are written
            there (``<case_id>.nii.gz``, the reference's geometry).
        strategies, options: see :func:`compare_strategies`.

    Returns:
        ``(best strategy, scores)``.

    Raises:
        KidneysegError: no prediction has a reference.
    """
    preds = find_label_files(raw_pred_dir)
    refs = find_label_files(references) if not isinstance(references, Mapping) else {
        str(k): Path(v) for k, v in references.items()}
    ids = sorted(set(preds) & set(refs))
    if not ids:
        raise fail(raw_pred_dir, f"no raw predictions with a reference ({len(preds)} predictions, "
                                 f"{len(refs)} references); predict with postprocess 'none' first")
    from ..model.folder import ModelFolder

    folder = ModelFolder(model_dir)
    ds = get_dataset(folder.load_plan().dataset if folder.plan_path.is_file() else None)
    values = ds.label_values
    loaded = [(cid, load_volume(preds[cid], kind="label", label_values=values),
               load_volume(refs[cid], kind="label", label_values=values)) for cid in ids]
    scores = compare_strategies(((p.array, g.array, g.spacing) for _, p, g in loaded), strategies, options, ds)
    best = best_strategy(scores)
    best_options = get_strategy(best).check_options(dict((options or {}).get(best, {})))
    save_choice(model_dir, best, scores, **best_options)
    if out_dir is not None:
        out = ensure_output_dir(out_dir)
        for cid, pred, gt in loaded:
            save_like(postprocess(pred.array, gt.spacing, best, dataset=ds, **best_options), out / f"{cid}.nii.gz", gt,
                      kind="label")
    return best, scores
