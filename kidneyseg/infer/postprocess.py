"""Post-processing of predicted label maps with connected components, as named strategies.

Strategies (:data:`STRATEGIES`; each declares its options, and an unknown option is refused):

* ``"anatomy"`` (kidneyseg's default): a body has at most two kidneys. Connected components of
  the kidney+tumor region (``label > 0``) that contain kidney tissue (label 1) are ranked by
  volume; the largest is kept, the second too if it holds at least ``min_component_ml``. Every
  other component is removed, so islands and tumor blobs away from a kept kidney go (a tumor
  component survives only where it touches or lies within a kept kidney). Options:
  ``min_component_ml`` (10), ``max_kidneys`` (2).
* ``"largest"``: the thesis's rule (section 3.4): keep only the largest component of the
  foreground (``label > 0``). Note it drops the second kidney.
* ``"largest_per_class"``: nnU-Net's keep-largest applied to each class (1, 2; KiTS23 also 3)
  separately.
* ``"none"``: unchanged.

Datasets (``dataset=``, :mod:`kidneyseg.data.datasets`): the "foreground" above is the dataset's
outermost region (KiTS23 kidney-and-masses, labels 1-3) and "kidney tissue" its kidney label.
For KiTS23 every strategy but ``none`` then keeps the nested regions consistent: a component of
the kidney-and-masses region without kidney tissue is removed, so no tumor or cyst voxel is left
outside a kept kidney-and-masses component (``largest_per_class`` could otherwise keep a mass
whose kidney it dropped). KiTS19's results are unchanged.

Which strategy a model uses is stored in ``MODEL_DIR/postprocess.json`` (:class:`PostprocessChoice`,
written by :func:`save_choice` after :func:`kidneyseg.evaluate.postprocess_choice.choose_postprocessing`
scored them on validation cases; read by :func:`load_choice` at inference). Components come from
:mod:`kidneyseg.measure.components`.

>>> lab = np.zeros((5, 5, 9), np.uint8); lab[1:4, 1:4, 0:3] = 1; lab[2, 2, 7] = 1
>>> int(postprocess(lab, (1, 1, 1), "anatomy", min_component_ml=0.01).sum())
27
>>> postprocess(lab, (1, 1, 1), "anatomy", min_component=1)
Traceback (most recent call last):
...
ValueError: post-processing strategy 'anatomy' has no option 'min_component'; valid options: min_component_ml, max_kidneys
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from ..config import from_dict, to_dict
from ..data.datasets import KITS19, Dataset, get_dataset
from ..errors import read_json, write_text_atomic
from ..measure.components import bounding_box, component_sizes, components, keep_largest, kidney_voxels, select
from ..model.folder import ModelFolder

DEFAULT_STRATEGY = "anatomy"
DEFAULT_MIN_COMPONENT_ML = 10.0

__all__ = ["DEFAULT_STRATEGY", "PostprocessChoice", "STRATEGIES", "Strategy", "get_strategy",
           "keep_regions_consistent", "load_choice", "postprocess", "save_choice"]


def _none(labels: np.ndarray, spacing, dataset: Dataset = KITS19) -> np.ndarray:
    return labels.copy()


def _largest(labels: np.ndarray, spacing, dataset: Dataset = KITS19) -> np.ndarray:
    out = labels.copy()
    out[~keep_largest(labels > 0)] = 0  # label > 0: the outermost region of every dataset
    return out


def _largest_per_class(labels: np.ndarray, spacing, dataset: Dataset = KITS19) -> np.ndarray:
    out = labels.copy()
    for value in dataset.foreground_labels:
        mask = labels == value
        out[mask & ~keep_largest(mask)] = 0
    return out


def _anatomy(labels: np.ndarray, spacing, min_component_ml: float = DEFAULT_MIN_COMPONENT_ML,
             max_kidneys: int = 2, dataset: Dataset = KITS19) -> np.ndarray:
    out = labels.copy()
    box = bounding_box(labels > 0)
    if box is None:
        return out
    sub = out[box]
    comp, n = components(sub > 0)
    sizes = component_sizes(comp, n)
    kidney_vox = kidney_voxels(comp, n, sub == dataset.label("kidney"))
    voxel_ml = float(np.prod(spacing)) / 1000.0
    ranked = [c for c in np.argsort(-sizes[1:], kind="stable") + 1 if kidney_vox[c] > 0]
    keep = ranked[:1] + [c for c in ranked[1:int(max_kidneys)] if sizes[c] * voxel_ml >= min_component_ml]
    sub[~select(comp, n, keep)] = 0
    return out


def keep_regions_consistent(labels: np.ndarray, dataset: Dataset) -> np.ndarray:
    """Remove every component of the outermost region that holds no kidney tissue, in place.

    After a strategy has chosen what to keep, an inner-region voxel (tumor, cyst) must lie in a
    kept kidney-and-masses component: the components without a kidney voxel are what is left of
    dropped kidneys. Returns ``labels``.
    """
    box = bounding_box(labels > 0)
    if box is None:
        return labels
    sub = labels[box]
    comp, n = components(sub > 0)
    kidney_vox = kidney_voxels(comp, n, sub == dataset.label("kidney"))
    orphans = np.flatnonzero(kidney_vox[1:] == 0) + 1
    if len(orphans):
        sub[select(comp, n, orphans)] = 0
    return labels


@dataclass(frozen=True)
class Strategy:
    """A post-processing strategy: ``fn(labels uint8 (z, y, x), spacing (z, y, x) mm, dataset=, **options)``.

    Attributes:
        name: its key in :data:`STRATEGIES`.
        fn: the function (returns a new label map).
        options: the options it takes, with their defaults.
    """

    name: str
    fn: Callable[..., np.ndarray]
    options: dict[str, Any] = field(default_factory=dict)

    def check_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """``options`` over the defaults; an unknown option raises ``ValueError`` listing the valid ones."""
        unknown = [k for k in options if k not in self.options]
        if unknown:
            valid = ", ".join(self.options) or "none"
            raise ValueError(f"post-processing strategy {self.name!r} has no option {unknown[0]!r}; "
                             f"valid options: {valid}")
        return {**self.options, **options}


#: name -> :class:`Strategy`, in tie-breaking order (the first wins a tie).
STRATEGIES: dict[str, Strategy] = {s.name: s for s in (
    Strategy("anatomy", _anatomy, {"min_component_ml": DEFAULT_MIN_COMPONENT_ML, "max_kidneys": 2}),
    Strategy("largest", _largest),
    Strategy("largest_per_class", _largest_per_class),
    Strategy("none", _none),
)}


def get_strategy(name: str) -> Strategy:
    """The strategy called ``name``; unknown names list the valid ones."""
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown post-processing strategy {name!r}; valid: {', '.join(sorted(STRATEGIES))}") from None


def postprocess(labels: np.ndarray, spacing: Sequence[float], strategy: str = DEFAULT_STRATEGY,
                dataset: str | Dataset | None = None, **options) -> np.ndarray:
    """Apply a named strategy to a label map.

    Args:
        labels: uint8 (z, y, x) label map (0 background, 1 kidney, 2 tumor; KiTS23 3 cyst).
        spacing: voxel size (z, y, x) in mm (volume thresholds are in ml).
        strategy: a key of :data:`STRATEGIES`.
        dataset: the labels' dataset (default KiTS19); KiTS23 adds :func:`keep_regions_consistent`.
        **options: the strategy's options (unknown ones raise ``ValueError``).

    Returns:
        A new uint8 label map of the same shape (the input is not modified).
    """
    s = get_strategy(strategy)
    opts = s.check_options(options)
    ds = get_dataset(dataset)
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"labels must be 3D (z, y, x), got shape {labels.shape}")
    out = s.fn(labels.astype(np.uint8, copy=False), tuple(float(v) for v in spacing), dataset=ds, **opts)
    if ds.consistent_regions and s.name != "none":
        keep_regions_consistent(out, ds)
    return out


@dataclass
class PostprocessChoice:
    """``MODEL_DIR/postprocess.json``: the strategy inference applies, its options, and the validation
    scores it was chosen on (strategy -> {"kidney_dice", "tumor_dice", "mean_dice", "n_cases"})."""

    strategy: str = DEFAULT_STRATEGY
    options: dict[str, Any] = field(default_factory=dict)
    scores: dict[str, dict[str, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.options = get_strategy(self.strategy).check_options(dict(self.options))


def save_choice(model_dir: os.PathLike | str, strategy: str, scores: dict | None = None, **options):
    """Write ``MODEL_DIR/postprocess.json`` atomically (options checked against the strategy)."""
    choice = PostprocessChoice(strategy, options, scores or {})
    return write_text_atomic(ModelFolder(model_dir).postprocess_path, json.dumps(to_dict(choice), indent=1))


def load_choice(model_dir: os.PathLike | str | ModelFolder) -> tuple[str, dict]:
    """``(strategy, options)`` from ``MODEL_DIR/postprocess.json``; the default strategy when absent.

    Raises:
        KidneysegError: the file is unreadable, or names an unknown strategy, key or option.
    """
    folder = model_dir if isinstance(model_dir, ModelFolder) else ModelFolder(model_dir)
    path = folder.postprocess_path
    if path.exists():
        choice = from_dict(PostprocessChoice, read_json(path, "post-processing choice"), path)
    else:
        choice = PostprocessChoice()
    return choice.strategy, choice.options
