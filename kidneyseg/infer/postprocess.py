"""Post-processing of predicted label maps with connected components, as selectable strategies.

Strategies (``STRATEGIES``, choose by name):

* ``"anatomy"`` (kidneyseg's default): a body has at most two kidneys. Connected components of
  the kidney+tumor region (``label > 0``) that contain kidney tissue (label 1) are ranked by
  volume; the largest is kept, the second too if it holds at least ``min_component_ml``. Every
  other component is removed, so islands and tumor blobs away from a kept kidney go (a tumor
  component survives only where it touches or lies within a kept kidney).
* ``"largest"``: the thesis's rule (section 3.4): keep only the largest component of the
  foreground (``label > 0``). Note it drops the second kidney.
* ``"largest_per_class"``: nnU-Net's keep-largest applied to each class (1, 2) separately.
* ``"none"``: unchanged.

:func:`compare_strategies` scores them on validation cases (mean of KiTS19 kidney and tumor Dice)
and :func:`save_choice` writes the winner to ``MODEL_DIR/postprocess.json``, which
:func:`load_choice` reads at inference.

Components use full (26-) connectivity. Work is restricted to the foreground's bounding box, so
memory scales with the kidneys, not the CT.

>>> lab = np.zeros((5, 5, 9), np.uint8); lab[1:4, 1:4, 0:3] = 1; lab[2, 2, 7] = 1
>>> int(postprocess(lab, (1, 1, 1), "anatomy", min_component_ml=0.01).sum())
27
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from scipy import ndimage

from ..errors import fail, read_json, write_text_atomic

_FULL = np.ones((3, 3, 3), bool)
CHOICE_FILE = "postprocess.json"
DEFAULT_STRATEGY = "anatomy"
DEFAULT_MIN_COMPONENT_ML = 10.0


def _fg_box(labels: np.ndarray) -> tuple[slice, ...] | None:
    objs = ndimage.find_objects((labels > 0).astype(np.uint8))
    return objs[0] if objs else None


def _components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    # int32 on the foreground box only; uint16 would overflow on noisy predictions
    return ndimage.label(mask, structure=_FULL)


def _none(labels: np.ndarray, spacing, **_) -> np.ndarray:
    return labels.copy()


def _zero_all_but_largest(sub: np.ndarray, mask: np.ndarray) -> None:
    """Set ``sub`` to 0 in every connected component of ``mask`` except the largest (in place)."""
    comp, n = _components(mask)
    if n > 1:
        sizes = np.bincount(comp.ravel())
        sizes[0] = 0
        sub[(comp > 0) & (comp != int(sizes.argmax()))] = 0


def _largest(labels: np.ndarray, spacing, **_) -> np.ndarray:
    out = labels.copy()
    box = _fg_box(labels)
    if box is None:
        return out
    _zero_all_but_largest(out[box], out[box] > 0)
    return out


def _largest_per_class(labels: np.ndarray, spacing, **_) -> np.ndarray:
    out = labels.copy()
    box = _fg_box(labels)
    if box is None:
        return out
    sub = out[box]
    for value in (1, 2):
        _zero_all_but_largest(sub, sub == value)
    return out


def _anatomy(labels: np.ndarray, spacing, min_component_ml: float = DEFAULT_MIN_COMPONENT_ML,
             max_kidneys: int = 2, **_) -> np.ndarray:
    out = labels.copy()
    box = _fg_box(labels)
    if box is None:
        return out
    sub = out[box]
    comp, n = _components(sub > 0)
    sizes = np.bincount(comp.ravel(), minlength=n + 1)
    kidney_vox = np.bincount(comp.ravel(), weights=(sub == 1).ravel(), minlength=n + 1)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    ranked = [c for c in np.argsort(-sizes[1:], kind="stable") + 1 if kidney_vox[c] > 0]
    keep = ranked[:1] + [c for c in ranked[1:max_kidneys] if sizes[c] * voxel_ml >= min_component_ml]
    sub[~np.isin(comp, keep)] = 0
    return out


#: name -> function(labels uint8 (z, y, x), spacing (z, y, x) mm, **options) -> new labels
STRATEGIES: dict[str, Callable[..., np.ndarray]] = {
    "anatomy": _anatomy,
    "largest": _largest,
    "largest_per_class": _largest_per_class,
    "none": _none,
}


def get_strategy(name: str) -> Callable[..., np.ndarray]:
    """The post-processing function called ``name``; unknown names list the valid ones."""
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown post-processing strategy {name!r}; valid: {', '.join(sorted(STRATEGIES))}") from None


def postprocess(labels: np.ndarray, spacing: Sequence[float], strategy: str = DEFAULT_STRATEGY,
                **options) -> np.ndarray:
    """Apply a named strategy to a label map.

    Args:
        labels: uint8 (z, y, x) label map (0 background, 1 kidney, 2 tumor).
        spacing: voxel size (z, y, x) in mm (volume thresholds are in ml).
        strategy: a key of :data:`STRATEGIES`.
        **options: strategy options, e.g. ``min_component_ml`` for ``"anatomy"``.

    Returns:
        A new uint8 label map of the same shape (the input is not modified).
    """
    fn = get_strategy(strategy)
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"labels must be 3D (z, y, x), got shape {labels.shape}")
    return fn(labels.astype(np.uint8, copy=False), tuple(float(s) for s in spacing), **options)


def compare_strategies(cases: Iterable[tuple[np.ndarray, np.ndarray, Sequence[float]]],
                       strategies: Sequence[str] | None = None, **options) -> dict[str, dict[str, float]]:
    """Score each strategy on validation cases.

    Args:
        cases: ``(predicted labels, reference labels, spacing)`` triples (raw network output).
        strategies: names to compare (default: all).

    Returns:
        ``{name: {"kidney_dice", "tumor_dice", "mean_dice", "n_cases"}}``: NaN-ignoring means over
        cases; ``mean_dice`` = (kidney + tumor) / 2.
    """
    from ..evaluate.metrics import kits_dice  # metrics are pure functions; no cycle at import time

    names = list(strategies or STRATEGIES)
    for n in names:
        get_strategy(n)
    per = {n: {"kidney_dice": [], "tumor_dice": []} for n in names}
    count = 0
    for pred, gt, spacing in cases:
        count += 1
        for n in names:
            s = kits_dice(postprocess(pred, spacing, n, **options), gt)
            per[n]["kidney_dice"].append(s["kidney_dice"])
            per[n]["tumor_dice"].append(s["tumor_dice"])
    if count == 0:
        raise ValueError("compare_strategies needs at least one case")
    out = {}
    for n, d in per.items():
        k = float(np.nanmean(d["kidney_dice"])) if np.isfinite(d["kidney_dice"]).any() else float("nan")
        t = float(np.nanmean(d["tumor_dice"])) if np.isfinite(d["tumor_dice"]).any() else float("nan")
        out[n] = {"kidney_dice": k, "tumor_dice": t, "mean_dice": (k + t) / 2 if not math.isnan(t) else k,
                  "n_cases": count}
    return out


def best_strategy(scores: dict[str, dict[str, float]]) -> str:
    """The strategy with the highest mean Dice; ties go to the order of :data:`STRATEGIES`."""
    order = list(STRATEGIES)
    return max(scores, key=lambda n: (scores[n]["mean_dice"], -order.index(n)))


def save_choice(model_dir: os.PathLike | str, strategy: str, scores: dict | None = None,
                **options) -> Path:
    """Write ``MODEL_DIR/postprocess.json`` (``strategy``, ``options``, ``scores``) atomically."""
    get_strategy(strategy)
    doc = {"strategy": strategy, "options": options, "scores": scores or {}}
    return write_text_atomic(Path(model_dir) / CHOICE_FILE, json.dumps(doc, indent=1))


def load_choice(model_dir: os.PathLike | str) -> tuple[str, dict]:
    """``(strategy, options)`` from ``MODEL_DIR/postprocess.json``; the default when the file is absent.

    Raises:
        KidneysegError: the file is unreadable, or names an unknown strategy or key.
    """
    path = Path(model_dir) / CHOICE_FILE
    if not path.exists():
        return DEFAULT_STRATEGY, {"min_component_ml": DEFAULT_MIN_COMPONENT_ML}
    doc = read_json(path, "post-processing choice")
    unknown = set(doc) - {"strategy", "options", "scores"}
    if unknown:
        raise fail(path, f"unknown keys {sorted(unknown)}; valid: ['options', 'scores', 'strategy']")
    name = doc.get("strategy", DEFAULT_STRATEGY)
    if name not in STRATEGIES:
        raise fail(path, f"unknown post-processing strategy {name!r}; valid: {', '.join(sorted(STRATEGIES))}")
    return name, dict(doc.get("options") or {})


def choose_for_model(pred_dir: os.PathLike | str, gt_dir: os.PathLike | str, model_dir: os.PathLike | str,
                     strategies: Sequence[str] | None = None, **options) -> tuple[str, dict]:
    """Compare strategies on raw validation predictions (``pred_dir``) and store the best in ``model_dir``.

    Predictions must be *raw* (``--postprocess none``) so each strategy starts from the same input.
    """
    from ..evaluate.report import find_label_files
    from ..io import load_volume

    preds, gts = find_label_files(pred_dir), find_label_files(gt_dir)
    ids = sorted(set(preds) & set(gts))
    if not ids:
        raise fail(pred_dir, f"no predictions with a reference in {gt_dir}")

    def cases():
        for cid in ids:
            gt = load_volume(gts[cid], kind="label")
            yield load_volume(preds[cid], kind="label").array, gt.array, gt.spacing

    scores = compare_strategies(cases(), strategies, **options)
    best = best_strategy(scores)
    if best == "anatomy" and "min_component_ml" not in options:
        options = {**options, "min_component_ml": DEFAULT_MIN_COMPONENT_ML}
    save_choice(model_dir, best, scores, **(options if best == "anatomy" else {}))
    return best, scores


__all__ = ["STRATEGIES", "best_strategy", "choose_for_model", "compare_strategies", "get_strategy", "load_choice",
           "postprocess", "save_choice"]
