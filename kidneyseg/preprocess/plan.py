"""The preprocessing plan: every number that turns a raw CT into network input, saved as ``plan.json``.

A :class:`Plan` is fitted once on the training split (``kidneyseg plan``) and then travels with the
cache and the model directory, so training and inference normalise and resample identically.
:meth:`Plan.hash` is a short content hash; the cache stores it to notice a changed plan.

>>> p = Plan(clip_low_hu=-80.0, clip_high_hu=300.0, mean_hu=100.0, std_hu=75.0)
>>> Plan.from_dict(p.to_dict()) == p
True
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..config import from_dict, to_dict
from ..data.datasets import DEFAULT_DATASET, get_dataset
from ..errors import fail, read_json, write_text_atomic

#: The thesis's target spacing, 0.78 x 0.78 x 1.0 mm (x, y, z), here in (z, y, x) order.
DEFAULT_TARGET_SPACING = (1.0, 0.78, 0.78)
#: Stage-1 spacing: 2.5x the target on every axis (see docs/preprocess.md for the reasoning).
DEFAULT_STAGE1_SPACING = (2.5, 1.95, 1.95)
PLAN_VERSION = 1
#: Storage precisions of the preprocessed image (see :attr:`Plan.image_dtype`).
IMAGE_DTYPES = ("float16", "float32")


@dataclass
class Plan:
    """Preprocessing parameters (all spacings and sizes in (z, y, x) order, mm; intensities in HU).

    Attributes:
        clip_low_hu, clip_high_hu: 0.5th / 99.5th percentile of training foreground intensities.
        mean_hu, std_hu: mean and standard deviation of training foreground intensities (unclipped,
            as nnU-Net's CT normalisation); normalised = (clip(x) - mean) / std.
        target_spacing: stage-2 voxel size (thesis: 1.0, 0.78, 0.78).
        stage1_spacing: coarse stage-1 voxel size (whole volume).
        box_size_mm: the fixed ROI box covering every training case's foreground plus ``margin_mm``
            on each side (``None`` until fitted).
        kidney_box_size_mm: the per-kidney box (one box per kidney), same rule.
        margin_mm: margin added on each side of the largest foreground extent.
        image_order: spline order for images (3 = cubic B-spline, as the thesis).
        image_order_z: order along the low-resolution axis of anisotropic cases.
        label_mode: ``"nearest"`` or ``"linear"`` (per-class linear + argmax).
        image_dtype: the precision of the network input the transform produces and the cache
            stores: ``"float16"`` (default: half the disk and page cache; a voxel moves by at most
            2**-11 of its distance from the mean, below 0.2 HU for a 400 HU clip range, under the
            1 HU quantisation of CT) or ``"float32"``. The arrays handed to the network are float32
            either way; with float16 their values are float16 numbers, identical in training and
            inference.
        anisotropy_threshold: spacing ratio above which the low-res axis is resampled separately.
        intensity_samples_per_case: foreground voxels sampled per training case for the fit.
        seed: sampling seed.
        n_train_cases: training cases the fit used (information only).
        version: plan format version.
        dataset: the dataset of the training manifest (``"kits19"`` or ``"kits23"``): its label
            values are what the cache and the networks work with.
    """

    clip_low_hu: float = -1024.0
    clip_high_hu: float = 3071.0
    mean_hu: float = 0.0
    std_hu: float = 1.0
    target_spacing: tuple[float, float, float] = DEFAULT_TARGET_SPACING
    stage1_spacing: tuple[float, float, float] = DEFAULT_STAGE1_SPACING
    box_size_mm: tuple[float, float, float] | None = None
    kidney_box_size_mm: tuple[float, float, float] | None = None
    margin_mm: float = 10.0
    image_order: int = 3
    image_order_z: int = 3
    label_mode: str = "nearest"
    image_dtype: str = "float16"
    anisotropy_threshold: float = 3.0
    intensity_samples_per_case: int = 10000
    seed: int = 0
    n_train_cases: int = 0
    version: int = PLAN_VERSION
    notes: dict = field(default_factory=dict)
    dataset: str = DEFAULT_DATASET

    def __post_init__(self):
        self.validate()

    # ---------------------------------------------------------------------------------- checks
    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field."""
        for name in ("target_spacing", "stage1_spacing"):
            v = tuple(float(s) for s in getattr(self, name))
            if len(v) != 3 or min(v) <= 0:
                raise ValueError(f"{name} must be 3 positive numbers (z, y, x mm), got {v!r}")
            setattr(self, name, v)
        for name in ("box_size_mm", "kidney_box_size_mm"):
            v = getattr(self, name)
            if v is not None:
                v = tuple(float(s) for s in v)
                if len(v) != 3 or min(v) <= 0:
                    raise ValueError(f"{name} must be 3 positive numbers (z, y, x mm) or null, got {v!r}")
                setattr(self, name, v)
        if not self.clip_low_hu < self.clip_high_hu:
            raise ValueError(f"clip_low_hu must be < clip_high_hu, got {self.clip_low_hu!r} >= {self.clip_high_hu!r}")
        if not self.std_hu > 0:
            raise ValueError(f"std_hu must be > 0, got {self.std_hu!r}")
        if self.image_order not in (0, 1, 3) or self.image_order_z not in (0, 1, 3):
            raise ValueError(f"image_order and image_order_z must be 0, 1 or 3, got "
                             f"{self.image_order!r}, {self.image_order_z!r}")
        if self.label_mode not in ("nearest", "linear"):
            raise ValueError(f"label_mode must be 'nearest' or 'linear', got {self.label_mode!r}")
        if self.image_dtype not in IMAGE_DTYPES:
            raise ValueError(f"image_dtype must be one of {list(IMAGE_DTYPES)}, got {self.image_dtype!r}")
        if not self.anisotropy_threshold > 1:
            raise ValueError(f"anisotropy_threshold must be > 1, got {self.anisotropy_threshold!r}")
        if self.margin_mm < 0:
            raise ValueError(f"margin_mm must be >= 0, got {self.margin_mm!r}")
        get_dataset(self.dataset)

    # ------------------------------------------------------------------------------------ JSON
    def to_dict(self) -> dict:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: dict, source: str | os.PathLike | None = None) -> "Plan":
        """Build a plan from a dict; unknown keys raise a ``KidneysegError`` listing the valid ones."""
        return from_dict(cls, data, source or "plan")

    def hash(self) -> str:
        """Short sha256 of the fields that change preprocessing output (``notes`` excluded).

        The default dataset does not enter the hash, so plans and caches made before the
        ``dataset`` field existed keep their hash.
        """
        d = self.to_dict()
        d.pop("notes", None)
        d.pop("n_train_cases", None)
        if d.get("dataset") == DEFAULT_DATASET:
            d.pop("dataset")
        blob = json.dumps(d, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``plan.json`` atomically."""
        return write_text_atomic(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Plan":
        path = Path(path)
        if not path.is_file():
            raise fail(path, "plan file not found (make one with `kidneyseg plan MANIFEST -o plan.json`)")
        return cls.from_dict(read_json(path, "plan"), source=path)

    def require_box(self) -> tuple[float, float, float]:
        if self.box_size_mm is None:
            raise fail("plan", "box_size_mm is not set; fit it with `kidneyseg plan`")
        return self.box_size_mm  # type: ignore[return-value]


def load_plan(path: str | os.PathLike) -> Plan:
    """Read ``plan.json`` (see :meth:`Plan.load`)."""
    return Plan.load(path)


__all__ = ["DEFAULT_STAGE1_SPACING", "DEFAULT_TARGET_SPACING", "IMAGE_DTYPES", "Plan", "load_plan"]
