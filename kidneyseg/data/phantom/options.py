"""The options of a synthetic phantom (:class:`PhantomOptions`), checked, with KiTS19-like defaults."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

from ..datasets import get_dataset
from .appearance import PHASES


@dataclass
class PhantomOptions:
    """Options of :func:`make_phantom` (all have defaults; unknown names are refused).

    Attributes:
        size: in-plane pixels (square grid, y = x). 512 is a CT's matrix; the demo uses fewer
            pixels (and so a coarser spacing) to stay fast.
        spacing_xy: ``None`` (default): the in-plane spacing follows from the field of view a
            scanner would choose, 1.08-1.3 times the body's width, over ``size`` pixels (0.6-0.9 mm
            at 512). A ``(min, max)`` range (mm) draws it instead; when the field of view is then
            smaller than the body, it is centred on the kidneys (a targeted reconstruction).
        spacing_z: z spacings to draw from, mm (KiTS19-like: many 5 mm and thin-slice scans).
        slices: ``None``: the scan covers the kidneys plus 40-110 mm above and below
            (``coverage_mm``); ``(min, max)``: the slice count is drawn in this range instead,
            centred on the kidneys (may cut them).
        coverage_mm: (min, max) margins above and below the kidneys, mm.
        body_width_mm: (min, max) width of the abdomen (skin to skin), mm.
        noise_hu: (min, max) standard deviation of the noise, HU.
        tumor_counts: probabilities of 0, 1, 2 tumors.
        blur: scanner blur, Gaussian sigma in voxels in-plane (half of it along z).
        kidney_scale: kidney (and tumor) size relative to the drawn anatomy (1 = life size).
        phases: probabilities of the corticomedullary and nephrographic phases.
        dataset: ``"kits19"`` (labels 0-2) or ``"kits23"`` (adds renal cysts, label 3, drawn by
            :func:`kidneyseg.data.cysts.place_cysts` and painted as fluid).
        cyst_counts: probabilities of 0, 1, 2, ... cysts per case (``dataset="kits23"`` only).
        cyst_radius_mm: (min, max) cyst radius, mm (simple renal cysts: mostly 3-12 mm; a few larger).
    """

    size: int = 512
    spacing_xy: tuple[float, float] | None = None
    spacing_z: tuple[float, ...] = (1.25, 1.5, 2.0, 2.5, 3.0, 3.0, 4.0, 5.0, 5.0, 5.0)
    slices: tuple[int, int] | None = None
    coverage_mm: tuple[float, float] = (40.0, 110.0)
    body_width_mm: tuple[float, float] = (300.0, 400.0)
    noise_hu: tuple[float, float] = (12.0, 25.0)
    tumor_counts: tuple[float, float, float] = (0.15, 0.55, 0.30)
    blur: float = 0.6
    kidney_scale: float = 1.0
    phases: tuple[float, float] = (0.65, 0.35)
    dataset: str = "kits19"
    cyst_counts: tuple[float, ...] = (0.2, 0.35, 0.3, 0.15)
    cyst_radius_mm: tuple[float, float] = (4.0, 20.0)

    @classmethod
    def from_kwargs(cls, **kwargs) -> "PhantomOptions":
        """Options from keyword arguments (``None`` values keep the default); checks every value."""
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(kwargs) - set(valid))
        if unknown:
            raise ValueError(f"unknown phantom option(s) {unknown}; valid options are {valid}")
        opts = cls(**{k: v for k, v in kwargs.items() if v is not None})
        opts.check()
        return opts

    def check(self) -> None:
        if int(self.size) < 32:
            raise ValueError(f"size must be >= 32 pixels, got {self.size!r}")
        if self.spacing_xy is not None and (len(self.spacing_xy) != 2 or min(self.spacing_xy) <= 0
                                            or self.spacing_xy[0] > self.spacing_xy[1]):
            raise ValueError(f"spacing_xy must be None or (min, max) > 0 mm, got {self.spacing_xy!r}")
        if len(self.spacing_z) < 1 or min(self.spacing_z) <= 0:
            raise ValueError(f"spacing_z must be positive spacings (mm), got {self.spacing_z!r}")
        if self.slices is not None and (len(self.slices) != 2 or not 4 <= self.slices[0] <= self.slices[1]):
            raise ValueError(f"slices must be None or (min, max) with 4 <= min <= max, got {self.slices!r}")
        for name in ("coverage_mm", "body_width_mm", "noise_hu"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(f"{name} must be (min, max) with 0 <= min <= max, got {getattr(self, name)!r}")
        if not (200 <= self.body_width_mm[0] and self.body_width_mm[1] <= 600):
            raise ValueError(f"body_width_mm must lie in 200..600 mm, got {self.body_width_mm!r}")
        if not 0.5 <= float(self.kidney_scale) <= 2.0:
            raise ValueError(f"kidney_scale must be in [0.5, 2], got {self.kidney_scale!r}")
        if not 0 <= float(self.blur) <= 3:
            raise ValueError(f"blur must be in [0, 3] voxels, got {self.blur!r}")
        for name, n in (("tumor_counts", 3), ("phases", len(PHASES))):
            p = np.asarray(getattr(self, name), float)
            if p.shape != (n,) or (p < 0).any() or not math.isclose(p.sum(), 1.0, abs_tol=1e-6):
                raise ValueError(f"{name} must be {n} probabilities summing to 1, got {getattr(self, name)!r}")
        get_dataset(self.dataset)  # a one-line error naming the valid datasets
        p = np.asarray(self.cyst_counts, float)
        if p.ndim != 1 or p.size < 1 or (p < 0).any() or not math.isclose(p.sum(), 1.0, abs_tol=1e-6):
            raise ValueError(f"cyst_counts must be probabilities of 0, 1, ... cysts summing to 1, got {self.cyst_counts!r}")
        lo, hi = self.cyst_radius_mm
        if not 0 < lo <= hi:
            raise ValueError(f"cyst_radius_mm must be (min, max) with 0 < min <= max, got {self.cyst_radius_mm!r}")

    def as_json(self) -> dict:
        """The options as JSON-able values (tuples as lists)."""
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in fields(self)}

    @classmethod
    def from_json(cls, data: dict) -> "PhantomOptions":
        return cls.from_kwargs(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})
