"""One case through preprocessing and back: the transform training and inference share, and its inverse.

:func:`preprocess_case` turns a CT (and its labels, in training) into a stage's network input:

* stage 1: the whole volume resampled to ``plan.stage1_spacing``;
* stage 2: the plan's fixed ROI box (``plan.box_size_mm``, thesis section 3.4) centred on a point
  of the original grid (the ground-truth foreground's bounding-box centre in training, the
  stage-1 prediction's at inference), resampled to ``plan.target_spacing``. Only the box plus a
  small margin is read from the original grid, so a 1059-slice case is never resampled whole.

Intensities are clipped and z-scored *after* resampling (which also clips spline overshoot). The
geometry of the transform travels as :class:`CaseProperties` (saved as the cache's
``properties.json``), and :func:`paste_label_back` is its one inverse: labels of a stage's grid
back onto the original grid (nearest; background outside the box). The training cache, the
cascade and the single-stage baseline all call these two functions.

>>> import numpy as np
>>> from kidneyseg.preprocess.plan import Plan
>>> plan = Plan(clip_low_hu=-100, clip_high_hu=300, mean_hu=100, std_hu=50, stage1_spacing=(2.0, 2.0, 2.0))
>>> ct, lab = np.zeros((10, 20, 20), np.float32), np.zeros((10, 20, 20), np.uint8)
>>> lab[4:6, 8:12, 8:12] = 1
>>> x, y, props = preprocess_case(ct, lab, (2.0, 1.0, 1.0), plan, stage=1)
>>> x.shape, props.resampled_spacing
((10, 10, 10), (2.0, 2.0, 2.0))
>>> bool((paste_label_back(y, props) == lab).all())
True
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Sequence

import numpy as np

from ..data.datasets import get_dataset
from ..errors import fail
from .intensity import normalize_with_plan
from .plan import Plan
from .resample import AxisMap, lowres_axis, new_shape, resample_image_maps, resample_label_maps, zoom_map
from .roi import Crop, box_voxels, foreground_center

STAGES = (1, 2)
#: Original voxels read beyond the box on each side so the cubic prefilter sees real data (its
#: influence decays as 0.268**k: 2.7e-5 of an edge step at 8 voxels).
CROP_MARGIN_VOX = 8

__all__ = ["CROP_MARGIN_VOX", "CaseProperties", "STAGES", "paste_label_back", "preprocess_case"]


@dataclass
class CaseProperties:
    """The geometry and provenance of one preprocessed case (``properties.json`` in the cache).

    All shapes and indices are (z, y, x); spacings in mm.

    Attributes:
        case_id, stage: which case, which cascade stage (1 or 2).
        plan_hash: the :meth:`Plan.hash` it was made with.
        original_shape, original_spacing: the CT's grid.
        maps: per axis, output voxel ``j`` samples original index ``offset + step * j``.
        separate_axis: the low-resolution axis resampled on its own (``None``: none).
        resampled_shape, resampled_spacing: the stage's grid.
        inside: per axis ``[start, stop)`` of the output voxels whose centre lies inside the
            original volume (stage 1: everything; stage 2: the part of the box not padding).
        padded: whether any output voxel lies outside the original volume (stage 2).
        box_size_mm, box_voxels, center_vox: the stage-2 ROI box (``None`` for stage 1).
        crop: the region read from the original grid (the box plus a margin; stage 2).
        label_voxels: voxels per label value on the stage grid (``None`` without labels).
        sources, original_affine: the cache's provenance (source file signatures, the canonical
            affine); ``None`` outside the cache.
        skipped: why the cache holds no arrays for this case and stage (``None``: it does).
        image_min: the smallest value of the stage image (what patches leaving the volume are
            padded with in training), so a sampler need not read the whole image.
    """

    case_id: str
    stage: int
    plan_hash: str
    original_shape: tuple[int, int, int] | None = None
    original_spacing: tuple[float, float, float] | None = None
    maps: tuple[AxisMap, AxisMap, AxisMap] | None = None
    separate_axis: int | None = None
    resampled_shape: tuple[int, int, int] | None = None
    resampled_spacing: tuple[float, float, float] | None = None
    inside: tuple[tuple[int, int], ...] | None = None
    padded: bool = False
    box_size_mm: tuple[float, float, float] | None = None
    box_voxels: tuple[int, int, int] | None = None
    center_vox: tuple[float, float, float] | None = None
    crop: Crop | None = None
    label_voxels: list[int] | None = None
    sources: dict[str, Any] | None = None
    original_affine: list[list[float]] | None = None
    skipped: str | None = None
    image_min: float | None = None

    def inside_slices(self) -> tuple[slice, slice, slice]:
        """:attr:`inside` as slices of the stage array."""
        return tuple(slice(a, b) for a, b in self.inside)  # type: ignore[return-value]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the ``properties.json`` format)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "maps" and v is not None:
                v = [{"n_out": m.n_out, "offset": m.offset, "step": m.step} for m in v]
            elif f.name == "crop" and v is not None:
                v = v.to_dict()
            elif isinstance(v, tuple):
                v = [list(x) if isinstance(x, tuple) else x for x in v]
            out[f.name] = v
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "properties") -> "CaseProperties":
        """Read a ``properties.json`` dict; unknown keys raise a one-line error naming ``where``."""
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise fail(where, f"unknown case property key(s) {unknown}; valid keys: {', '.join(names)}")
        d = dict(data)
        if d.get("maps") is not None:
            d["maps"] = tuple(AxisMap(int(m["n_out"]), float(m["offset"]), float(m["step"])) for m in d["maps"])
        if d.get("crop") is not None:
            d["crop"] = Crop.from_dict(d["crop"])
        for key in ("original_shape", "resampled_shape", "box_voxels"):
            if d.get(key) is not None:
                d[key] = tuple(int(v) for v in d[key])
        for key in ("original_spacing", "resampled_spacing", "box_size_mm", "center_vox"):
            if d.get(key) is not None:
                d[key] = tuple(float(v) for v in d[key])
        if d.get("inside") is not None:
            d["inside"] = tuple((int(a), int(b)) for a, b in d["inside"])
        try:
            return cls(**d)
        except TypeError as exc:
            raise fail(where, f"invalid case properties ({exc})") from None


def _stage_maps(shape, spacing, plan: Plan, stage: int, center=None):
    """Axis maps from the original grid to the stage's output grid, plus box facts for stage 2."""
    if stage == 1:
        out = new_shape(shape, spacing, plan.stage1_spacing)
        return [zoom_map(n, m) for n, m in zip(shape, out)], {}
    box_mm = plan.require_box()
    n_t = box_voxels(box_mm, plan.target_spacing)
    maps = [AxisMap(n, c + (0.5 - n / 2) * t / s, t / s)
            for n, c, t, s in zip(n_t, center, plan.target_spacing, spacing)]
    return maps, {"box_size_mm": tuple(box_mm), "box_voxels": tuple(n_t),
                  "center_vox": tuple(float(c) for c in center)}


def preprocess_case(image: np.ndarray, label: np.ndarray | None, spacing: Sequence[float], plan: Plan,
                    stage: int, center: Sequence[float] | None = None, case_id: str = "case",
                    ) -> tuple[np.ndarray, np.ndarray | None, CaseProperties]:
    """Normalise and resample one case for a stage (training cache and inference alike).

    Args:
        image: (z, y, x) HU, any real dtype (strided views are read in place).
        label: (z, y, x) uint8 or ``None`` (inference).
        spacing: original voxel size (z, y, x) mm.
        plan: the preprocessing plan.
        stage: 1 or 2.
        center: stage-2 box centre in original voxel coordinates (default: the centre of
            ``label``'s foreground bounding box).
        case_id: used in messages and the properties.

    Returns:
        ``(image float32, label uint8 | None, properties)``; padding outside the volume is the
        plan's normalised ``clip_low_hu`` in the image and 0 in the label. The image values are
        rounded to ``plan.image_dtype`` (float16 by default: exactly what the cache stores).

    Raises:
        KidneysegError: stage 2 without a centre and with an empty (or missing) label.
    """
    if stage not in STAGES:
        raise ValueError(f"stage must be 1 or 2, got {stage!r}")
    shape = tuple(int(s) for s in image.shape)
    spacing = tuple(float(s) for s in spacing)
    if stage == 2 and center is None:
        center = foreground_center(label) if label is not None else None
        if center is None:
            raise fail(case_id, "empty foreground: no stage-2 box centre (give one, e.g. from a stage-1 prediction)")
    maps, box = _stage_maps(shape, spacing, plan, stage, center)
    sep = lowres_axis(spacing, plan.target_spacing if stage == 2 else plan.stage1_spacing,
                      plan.anisotropy_threshold)
    crop, valid = None, None
    if stage == 2:
        # read only the box (plus a margin) from the original grid
        lo = [int(np.floor(m.offset)) - CROP_MARGIN_VOX for m in maps]
        hi = [int(np.ceil(m.offset + m.step * (m.n_out - 1))) + CROP_MARGIN_VOX + 1 for m in maps]
        crop = Crop(tuple(lo), tuple(hi), shape)  # type: ignore[arg-type]
        sub_maps = [AxisMap(m.n_out, m.offset - s.start, m.step) for m, s in zip(maps, crop.inside)]
        img_src = image[crop.inside]
        lab_src = label[crop.inside] if label is not None else None
        # output voxels whose centre lies outside the original volume are padding
        valid = [((m.coords() >= -0.5) & (m.coords() <= n - 0.5)) for m, n in zip(maps, shape)]
        # per axis the [start, stop) of box voxels inside the volume: a contiguous range, as the
        # coordinates grow along each axis; inference runs the network on this part only
        inside = tuple((int(np.argmax(v)), int(len(v) - np.argmax(v[::-1]))) if v.any() else (0, 0) for v in valid)
        padded = not all(v.all() for v in valid)
    else:
        sub_maps, img_src, lab_src = maps, image, label
        inside, padded = tuple((0, m.n_out) for m in maps), False
    out_img = resample_image_maps(img_src, sub_maps, plan.image_order, plan.image_order_z, sep)
    out_img = normalize_with_plan(out_img, plan, out=out_img)
    n_classes = get_dataset(plan.dataset).num_classes
    out_lab = resample_label_maps(lab_src, sub_maps, plan.label_mode, n_classes) if lab_src is not None else None
    if padded:
        outside = ~(valid[0][:, None, None] & valid[1][None, :, None] & valid[2][None, None, :])
        out_img[outside] = (plan.clip_low_hu - plan.mean_hu) / plan.std_hu
        if out_lab is not None:
            out_lab[outside] = 0
    if plan.image_dtype != "float32":  # the cache's precision, so training and inference see the same numbers
        out_img[...] = out_img.astype(plan.image_dtype)
    props = CaseProperties(
        case_id=case_id, stage=stage, plan_hash=plan.hash(), original_shape=shape, original_spacing=spacing,
        maps=tuple(maps), separate_axis=sep, resampled_shape=tuple(out_img.shape),
        resampled_spacing=tuple(m.step * s for m, s in zip(maps, spacing)), inside=inside, padded=padded,
        crop=crop, label_voxels=None if out_lab is None else _label_counts(out_lab, n_classes),
        image_min=float(out_img.min()) if out_img.size else None, **box)
    return out_img, out_lab, props


def _label_counts(label: np.ndarray, n_classes: int) -> list[int]:
    """Voxels of each value ``0 .. n_classes - 1`` (no int64 copy of the map, unlike ``np.bincount``)."""
    return [int(np.count_nonzero(label == v)) for v in range(n_classes)]


def paste_label_back(label: np.ndarray, properties: CaseProperties) -> np.ndarray:
    """Map a stage's label array (z, y, x) back onto the original grid (nearest; 0 outside the box).

    The one inverse of :func:`preprocess_case`'s geometry, for either stage.
    """
    shape = tuple(properties.original_shape)
    maps = properties.maps
    if tuple(label.shape) != tuple(m.n_out for m in maps):
        raise ValueError(f"label shape {label.shape} differs from the stage shape {[m.n_out for m in maps]}")
    back = [AxisMap(n, -m.offset / m.step, 1.0 / m.step) for n, m in zip(shape, maps)]
    out = resample_label_maps(label, back, "nearest")
    for ax, (b, m) in enumerate(zip(back, maps)):
        u = b.coords()
        bad = (u < -0.5) | (u > m.n_out - 0.5)
        if bad.any():
            idx = [slice(None)] * 3
            idx[ax] = bad
            out[tuple(idx)] = 0
    return out
