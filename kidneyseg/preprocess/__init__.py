"""Preprocessing: intensity normalisation, resampling, the ROI box and the preprocessed cache.

Modules: :mod:`.plan` (the Plan dataclass <-> plan.json), :mod:`.fit` (fit a plan on the training
split), :mod:`.intensity` (clip + z-score), :mod:`.resample` (cubic B-spline / nearest, torch),
:mod:`.roi` (fixed-size box centred on the foreground, exact crop inversion), :mod:`.cache`
(per-case .npy + properties.json; ``load_case``, ``list_cases``).
"""

from .cache import CachedCase, list_cases, load_case, paste_label_back, preprocess_case, preprocess_dataset
from .plan import Plan, load_plan

__all__ = ["CachedCase", "Plan", "list_cases", "load_case", "load_plan", "paste_label_back", "preprocess_case",
           "preprocess_dataset"]
