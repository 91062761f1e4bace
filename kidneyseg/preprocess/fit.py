"""Fit a :class:`~kidneyseg.preprocess.plan.Plan` on a manifest's training split (``kidneyseg plan``).

Intensity statistics need the CT images; the ROI box sizes need only the labels. Excluded rows and
the validation split are never used.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from ..errors import fail
from ..resources import record
from .intensity import fit_intensity, foreground_samples
from .plan import DEFAULT_STAGE1_SPACING, DEFAULT_TARGET_SPACING, Plan
from .roi import bbox, extent_mm, fit_box_size, kidney_boxes


def _case_task(args):
    """Worker: foreground samples (when an image is given) and box extents of one case."""
    case_id, image_path, label_path, n, seed, label_values = args
    from ..io import load_volume

    lab = load_volume(label_path, kind="label", label_values=label_values)
    box = bbox(lab.array > 0)
    ext = extent_mm(box, lab.spacing) if box is not None else None
    kid = [extent_mm(b, lab.spacing) for b in kidney_boxes(lab.array, lab.spacing)]
    samples = None
    if image_path is not None:
        img = load_volume(image_path, kind="image")
        if img.shape != lab.shape:
            raise fail(label_path, f"label shape {lab.shape} differs from the image's {img.shape}")
        rng = np.random.default_rng([seed, int.from_bytes(case_id.encode()[-8:], "little")])
        samples = foreground_samples(img.array, lab.array, n, rng)
    return case_id, ext, kid, samples


def training_rows(manifest_path: str | os.PathLike):
    """(df, train rows): the validated manifest and its non-excluded training rows."""
    from ..data.manifest import read_manifest, select_cases

    df = read_manifest(manifest_path)
    train = select_cases(df, "train")
    if len(train) == 0:
        raise fail(manifest_path, "no training case (split == 'train', not excluded)")
    return df, train


def median_spacing(manifest_path: str | os.PathLike) -> tuple[float, float, float]:
    """Median (z, y, x) spacing of the training split, mm (the thesis's resampling target rule)."""
    _, train = training_rows(manifest_path)
    return tuple(float(np.median(train[f"spacing_{a}"])) for a in "zyx")  # type: ignore[return-value]


def fit_plan(manifest_path: str | os.PathLike, target_spacing: Sequence[float] | str = DEFAULT_TARGET_SPACING,
             stage1_spacing: Sequence[float] = DEFAULT_STAGE1_SPACING, margin_mm: float = 10.0,
             samples_per_case: int = 10000, seed: int = 0, workers: int = 1, progress: bool = True,
             **plan_fields) -> Plan:
    """Fit intensity statistics and ROI box sizes on the training split of a manifest.

    Args:
        manifest_path: manifest CSV.
        target_spacing: stage-2 spacing (z, y, x mm) or ``"median"`` (training median).
        stage1_spacing: stage-1 spacing (z, y, x mm).
        margin_mm: margin on each side of the largest foreground extent.
        samples_per_case: foreground voxels sampled per training case.
        seed: sampling seed.
        workers: parallel processes.
        progress: tqdm bar.
        **plan_fields: other :class:`Plan` fields (e.g. ``image_order_z=1``).

    Raises:
        KidneysegError: no training case, no images (labels-only manifest), no foreground anywhere.
    """
    from tqdm.auto import tqdm

    from ..data.manifest import case_paths, manifest_dataset

    if isinstance(target_spacing, str):
        if target_spacing != "median":
            raise ValueError(f"target_spacing must be 3 numbers or 'median', got {target_spacing!r}")
        target_spacing = median_spacing(manifest_path)
    df, train = training_rows(manifest_path)
    dataset = manifest_dataset(df)
    tasks = []
    for _, row in train.iterrows():
        image, label = case_paths(row, manifest_path)
        if label is None:
            continue
        tasks.append((row["case_id"], str(image) if image else None, str(label), int(samples_per_case), int(seed),
                      dataset.label_values))
    if not tasks:
        raise fail(manifest_path, "no training case has a label file")
    if not any(t[1] for t in tasks):
        raise fail(manifest_path, f"no training case has a CT image (has_image is false for all {len(tasks)}); "
                                  "the intensity statistics need the images (the box size alone needs only labels)")
    results = []
    with record("plan") as rec:  # reading every training CT is the plan's cost
        rec.details.update(cases=len(tasks), workers=workers)
        if workers <= 1:
            for t in tqdm(tasks, desc="plan", unit="case", disable=not progress):
                results.append(_case_task(t))
        else:
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(workers) as pool:
                results = list(tqdm(pool.map(_case_task, tasks), total=len(tasks), desc="plan", unit="case",
                                    disable=not progress))
    results.sort(key=lambda r: r[0])
    extents = [r[1] for r in results if r[1] is not None]
    empty = [r[0] for r in results if r[1] is None]
    if not extents:
        raise fail(manifest_path, "no training case has foreground (kidney, tumor or cyst) voxels")
    stats = fit_intensity([r[3] for r in results if r[3] is not None])
    notes = {"empty_foreground_cases": empty, "intensity_voxels": stats.n_voxels,
             "max_extent_mm": [float(v) for v in np.max(extents, axis=0)]}
    return Plan(clip_low_hu=stats.clip_low_hu, clip_high_hu=stats.clip_high_hu, mean_hu=stats.mean_hu,
                std_hu=stats.std_hu, target_spacing=tuple(target_spacing), stage1_spacing=tuple(stage1_spacing),
                box_size_mm=fit_box_size(extents, margin_mm),
                kidney_box_size_mm=fit_box_size([k for r in results for k in r[2]], margin_mm),
                margin_mm=margin_mm, intensity_samples_per_case=int(samples_per_case), seed=int(seed),
                n_train_cases=len(results), notes=notes, **{"dataset": dataset.name, **plan_fields})


__all__ = ["fit_plan", "median_spacing", "training_rows"]
