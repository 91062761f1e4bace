"""Preprocessing: intensity normalisation, resampling, the ROI box, one case's transform and the cache.

Modules: :mod:`.plan` (the Plan dataclass <-> plan.json), :mod:`.fit` (fit a plan on the training
split), :mod:`.intensity` (clip + z-score, display windows), :mod:`.resample` (cubic B-spline /
nearest on per-axis maps; the 1-D machinery in :mod:`.spline`), :mod:`.roi` (bounding boxes and the
fixed-size box), :mod:`.roi_study` (the ROI strategies compared on real labels), :mod:`.body` (the
body's box), :mod:`.case` (one case through preprocessing and back: :func:`preprocess_case`,
:func:`paste_label_back`, :class:`CaseProperties`), :mod:`.cache` (the on-disk cache:
``preprocess_dataset``, ``load_case``, ``list_cases``).
"""

from .cache import CachedCase, list_cases, load_case, preprocess_dataset
from .case import CaseProperties, paste_label_back, preprocess_case
from .plan import Plan, load_plan

__all__ = ["CachedCase", "CaseProperties", "Plan", "list_cases", "load_case", "load_plan", "paste_label_back",
           "preprocess_case", "preprocess_dataset"]
