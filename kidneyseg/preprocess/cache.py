"""The preprocessed cache: per case, memory-mappable ``.npy`` arrays plus a properties JSON.

Layout (``CACHE`` = the ``--out`` folder of ``kidneyseg preprocess``)::

    CACHE/cache.json                     plan hash, format version, skipped cases
    CACHE/plan.json                      the plan the cache was built with
    CACHE/manifest.csv                   case_id, split, excluded (from the source manifest)
    CACHE/stage1/<case_id>/image.npy     float16 (z, y, x), normalised, whole volume at stage1_spacing
                                         (the plan's ``image_dtype``; float32 when the plan says so)
    CACHE/stage1/<case_id>/label.npy     uint8 (z, y, x)
    CACHE/stage1/<case_id>/properties.json
    CACHE/stage2/<case_id>/...           the fixed-size ROI box at target_spacing, centred on the
                                         ground-truth foreground

Why float16 images: the 209 usable KiTS19 cases hold 1.49 G stage-1 voxels and 5.11 G stage-2 voxels
(the fixed box with its 10 mm margin at 1.0 x 0.78 x 0.78 mm): 33 GB as float32 images + uint8 labels,
20 GB as float16 + uint8 (docs/full_scale.md). The network gets float32 either way, and inference
rounds its input the same way (:func:`~kidneyseg.preprocess.case.preprocess_case`), so training and
inference still see identical numbers. The arrays stay plain, uncompressed ``.npy`` so that training
memory-maps them and reads only the patches it draws.

``properties.json`` is written last and marks a complete case; every file is written atomically, so
a killed run leaves complete cases and no half-written file, and the next run resumes.

Rules (what happens when):

- **Up to date**: a case whose properties carry the current plan hash and the same source file
  sizes and modification times is skipped.
- **Changed plan**: ``cache.json`` holds the plan hash. A different plan is refused with a message
  naming both hashes, unless ``force=True`` (``--force``), which re-preprocesses every case.
- **Empty foreground**: stage 1 is written as usual; stage 2 is skipped with a warning (no box centre
  exists) and recorded in ``cache.json`` under ``skipped``; :func:`list_cases` leaves it out for stage 2.
- **Volume smaller than the box**: the box is padded (image with the plan's ``clip_low_hu``, i.e.
  the normalised minimum; label with 0); ``properties.padded`` is true and a warning names the
  case.
- **No images** (a labels-only manifest): a clear error; preprocessing needs the CT images.

>>> from kidneyseg.preprocess.cache import list_cases, load_case   # doctest: +SKIP
>>> case = load_case("cache", "case_00000", stage=2)                  # doctest: +SKIP
>>> case.image.shape, case.image.dtype, case.label.dtype              # doctest: +SKIP
((236, 240, 395), dtype('float16'), dtype('uint8'))
"""

from __future__ import annotations

import json
import os
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..data.datasets import get_dataset
from ..data.manifest import manifest_dataset
from ..errors import KidneysegError, atomic_path, ensure_output_dir, fail, read_json, write_text_atomic
from ..resources import record
from ..runtime import ram_budget_bytes
from .case import STAGES, CaseProperties, preprocess_case
from .memory import check_memory
from .plan import Plan

#: 3: images stored in the plan's ``image_dtype`` (float16 by default; 2 was float32 always).
CACHE_FORMAT = 3


@dataclass
class CachedCase:
    """One preprocessed case.

    Attributes:
        case_id: the manifest's case id.
        stage: 1 or 2.
        image: (z, y, x) normalised, in the plan's ``image_dtype`` (float16 by default; memory-mapped
            when loaded with ``mmap=True``).
        label: uint8 (z, y, x), values 0 background, 1 kidney, 2 tumor.
        properties: geometry and provenance (:class:`~kidneyseg.preprocess.case.CaseProperties`).
    """

    case_id: str
    stage: int
    image: np.ndarray
    label: np.ndarray
    properties: CaseProperties


# ------------------------------------------------------------------------------- the cache
def _case_dir(cache_dir: Path, stage: int, case_id: str) -> Path:
    return Path(cache_dir) / f"stage{stage}" / case_id


def _read_json(path: Path) -> dict:
    return read_json(path, "cache file", None)


def load_case(cache_dir: str | os.PathLike, case_id: str, stage: int, mmap: bool = True) -> CachedCase:
    """Load one cached case (``mmap=True``: arrays are read-only memory maps, nearly free to open).

    Raises:
        KidneysegError: the case is not in the cache (or was skipped for this stage, with the reason).
    """
    if stage not in STAGES:
        raise ValueError(f"stage must be 1 or 2, got {stage!r}")
    d = _case_dir(Path(cache_dir), stage, str(case_id))
    pfile = d / "properties.json"
    if not pfile.is_file():
        raise fail(d, f"case {case_id!r} is not in the stage-{stage} cache (run `kidneyseg preprocess`)")
    props = CaseProperties.from_dict(_read_json(pfile), str(pfile))
    if props.skipped:
        raise fail(d, f"case {case_id!r} has no stage-{stage} data: {props.skipped}")
    mode = "r" if mmap else None
    try:
        image = np.load(d / "image.npy", mmap_mode=mode)
        label = np.load(d / "label.npy", mmap_mode=mode)
    except (OSError, ValueError) as exc:
        raise fail(d, f"unreadable cached array ({exc})") from None
    return CachedCase(str(case_id), stage, image, label, props)


def list_cases(cache_dir: str | os.PathLike, split: str | None = None, stage: int | None = None) -> list[str]:
    """Complete case ids in the cache, sorted, optionally of one split (``"train"``/``"val"``).

    ``stage=None`` lists cases complete in every stage the cache holds (so stage-2-skipped cases are
    left out; a cache built with ``--stages 2`` only is listed by its stage-2 cases);
    ``stage=1`` or ``2`` lists that stage's cases.
    """
    import pandas as pd

    cache_dir = Path(cache_dir)
    if split not in (None, "train", "val"):
        raise ValueError(f"split must be 'train', 'val' or None, got {split!r}")
    stages = [st for st in STAGES if (cache_dir / f"stage{st}").is_dir()] if stage is None else (stage,)
    sets = []
    for st in stages:
        ids = set()
        root = cache_dir / f"stage{st}"
        if root.is_dir():
            for p in root.glob("*/properties.json"):
                try:
                    if not json.loads(p.read_text(encoding="utf-8")).get("skipped"):
                        ids.add(p.parent.name)
                except (OSError, json.JSONDecodeError):
                    continue
        sets.append(ids)
    ids = set.intersection(*sets) if sets else set()
    if split is not None:
        mf = cache_dir / "manifest.csv"
        if not mf.is_file():
            raise fail(mf, "cache has no manifest copy; cannot select a split")
        df = pd.read_csv(mf, dtype={"case_id": str, "split": str})
        ids &= set(df.loc[df["split"] == split, "case_id"])
    return sorted(ids)


def _signature(path: Path | None) -> list | None:
    if path is None:
        return None
    if not Path(path).is_file() and not Path(path).is_dir():
        raise fail(path, "no such file (listed in the manifest)")
    st = Path(path).stat()
    return [str(path), st.st_size, st.st_mtime_ns]


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(array))


def _clean_partials(d: Path) -> None:
    if d.is_dir():
        for p in d.glob(".*.part*"):
            p.unlink(missing_ok=True)


def _up_to_date(d: Path, plan_hash: str, sources: dict) -> bool:
    pfile = d / "properties.json"
    if not pfile.is_file():
        return False
    try:
        props = json.loads(pfile.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    if props.get("plan_hash") != plan_hash or props.get("sources") != sources:
        return False
    return bool(props.get("skipped")) or ((d / "image.npy").is_file() and (d / "label.npy").is_file())


def _process_case(task: dict) -> dict:
    """Worker: preprocess one case for the requested stages. Returns messages and status."""
    import time

    import torch

    torch.set_num_threads(task["threads"])
    from ..io import load_volume

    t0 = time.perf_counter()

    plan = Plan.from_dict(task["plan"])
    cache_dir, case_id = Path(task["cache"]), task["case_id"]
    img_path, lab_path = Path(task["image"]), Path(task["label"])
    sources = {"image": _signature(img_path), "label": _signature(lab_path)}
    todo = [st for st in task["stages"]
            if task["force"] or not _up_to_date(_case_dir(cache_dir, st, case_id), plan.hash(), sources)]
    result = {"case_id": case_id, "done": [], "skipped": {}, "warnings": [], "up_to_date": not todo}
    if not todo:
        return result
    img = load_volume(img_path, kind="image")
    lab = load_volume(lab_path, kind="label", label_values=get_dataset(plan.dataset).label_values)
    if img.shape != lab.shape:
        raise fail(lab_path, f"label shape {lab.shape} differs from the image's {img.shape}")
    if not np.allclose(img.spacing, lab.spacing, rtol=1e-3):
        raise fail(lab_path, f"label spacing {lab.spacing} differs from the image's {img.spacing}")
    provenance = {"sources": sources, "original_affine": np.asarray(img.affine).tolist()}
    for st in todo:
        d = _case_dir(cache_dir, st, case_id)
        d.mkdir(parents=True, exist_ok=True)
        _clean_partials(d)
        (d / "properties.json").unlink(missing_ok=True)  # the case is incomplete until rewritten
        if st == 2 and not (lab.array > 0).any():
            reason = "empty foreground (no kidney or tumor voxel): no box centre"
            props = CaseProperties(case_id, st, plan.hash(), skipped=reason, **provenance)
            write_text_atomic(d / "properties.json", json.dumps(props.to_dict(), indent=1))
            for f in ("image.npy", "label.npy"):
                (d / f).unlink(missing_ok=True)
            result["skipped"][st] = reason
            result["warnings"].append(f"{case_id}: stage 2 skipped: {reason}")
            continue
        image, label, props = preprocess_case(img.array, lab.array, img.spacing, plan, st, case_id=case_id)
        props.sources, props.original_affine = provenance["sources"], provenance["original_affine"]
        if props.padded:
            ext = [n * s for n, s in zip(img.shape, img.spacing)]
            result["warnings"].append(
                f"{case_id}: the {tuple(round(b) for b in plan.box_size_mm)} mm box reaches outside the "
                f"{tuple(round(e) for e in ext)} mm volume; padded (image: clip_low_hu, label: 0)")
        _save_npy(d / "image.npy", image.astype(plan.image_dtype, copy=False))
        _save_npy(d / "label.npy", label.astype(np.uint8, copy=False))
        write_text_atomic(d / "properties.json", json.dumps(props.to_dict(), indent=1))
        result["done"].append(st)
    result["seconds"] = round(time.perf_counter() - t0, 2)
    return result


def _cases_from_manifest(manifest_path: Path, only: Sequence[str] | None = None):
    from ..data.manifest import case_paths, read_manifest

    df = read_manifest(manifest_path)
    use = df[~df["excluded"].astype(bool)]
    if only is not None:
        unknown = sorted(set(only) - set(use["case_id"]))
        if unknown:
            raise fail(manifest_path, f"cases {unknown[:5]} are not usable cases of this manifest (missing or excluded)")
        use = use[use["case_id"].isin(set(only))]
    if len(use) == 0:
        raise fail(manifest_path, "no case left after removing excluded rows")
    if not use["has_image"].astype(bool).any():
        raise fail(manifest_path, f"no case has a CT image (has_image is false for all {len(use)} cases); "
                                  "preprocessing needs the images: place imaging.nii.gz beside each "
                                  "segmentation.nii.gz and rebuild the manifest with `kidneyseg manifest`")
    cases, missing = [], []
    for _, row in use.iterrows():
        image, label = case_paths(row, manifest_path)
        if image is None or label is None:
            missing.append(row["case_id"])
        else:
            cases.append((row["case_id"], image, label))
    return df, cases, missing


def preprocess_dataset(manifest: str | os.PathLike, plan: Plan | str | os.PathLike, out: str | os.PathLike,
                       workers: int = 1, force: bool = False, stages: Sequence[int] = STAGES,
                       progress: bool = True, cases: Sequence[str] | None = None) -> dict:
    """Build or update a cache from a manifest (what ``kidneyseg preprocess`` runs).

    Args:
        manifest: manifest CSV (excluded rows skipped; rows without image or label skipped with a
            warning).
        plan: a :class:`Plan` or the path of ``plan.json``.
        out: cache folder (created).
        workers: parallel processes (each uses ``max(1, 2 // workers)`` torch threads).
        force: rebuild every case, and accept a plan that differs from the cache's.
        stages: which stages to build.
        progress: show a tqdm bar.
        cases: only these case ids of the manifest (default: every usable case).

    Returns:
        Summary dict: ``processed``, ``up_to_date``, ``skipped`` (case -> reason), ``warnings``,
        ``seconds`` (case -> seconds it took, processed cases).

    With ``$KIDNEYSEG_RESOURCES`` set (the pipeline sets it), the run is recorded as the step
    ``preprocess`` of the run folder's ``resources.json`` (:mod:`kidneyseg.resources`).

    Before any work, the memory each case needs is estimated from the manifest's shapes
    (:func:`kidneyseg.preprocess.memory.case_memory_bytes`): a case that cannot fit the RAM budget
    (:func:`kidneyseg.runtime.ram_budget_bytes`) is refused with the GiB it needs, and fewer workers
    run when the largest cases would not fit side by side.

    Raises:
        KidneysegError: changed plan without ``force``, no images, a case that fails to read, a case
        too large for the RAM budget.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers!r}")
    for st in stages:
        if st not in STAGES:
            raise ValueError(f"stages must be among {STAGES}, got {tuple(stages)!r}")
    plan = plan if isinstance(plan, Plan) else Plan.load(plan)
    if 2 in stages:
        plan.require_box()
    manifest = Path(manifest)
    df, cases, missing = _cases_from_manifest(manifest, cases)
    if manifest_dataset(df).name != plan.dataset:
        raise fail(manifest, f"holds {manifest_dataset(df).name} cases but the plan was fitted on {plan.dataset}; "
                             "fit a plan on this manifest (`kidneyseg plan`)")
    workers = check_memory(df, cases, plan, stages, workers, ram_budget_bytes())  # before any work
    out = ensure_output_dir(out)
    with record("preprocess", out) as rec:
        summary = _run(df, cases, missing, manifest, plan, out, workers, force, stages, progress)
        rec.details.update(cases=len(cases), workers=workers, stages=list(stages),
                           processed=len(summary["processed"]), seconds_per_case=summary["seconds"])
        if not summary["processed"]:  # every case was cached already: this row measured no work
            rec.details["no_work"] = "all cases cached"
    return summary


def _shape_of(df, case_id: str) -> int:
    row = df[df["case_id"] == case_id]
    return int(row["shape_z"].iloc[0] * row["shape_y"].iloc[0] * row["shape_x"].iloc[0]) if len(row) else 0


def _run(df, cases, missing, manifest: Path, plan: Plan, out: Path, workers: int, force: bool,
         stages: Sequence[int], progress: bool) -> dict:
    from tqdm.auto import tqdm

    meta_path = out / "cache.json"
    meta = _read_json(meta_path) if meta_path.is_file() else {}
    old = meta.get("plan_hash")
    if old is not None and old != plan.hash() and not force:
        raise fail(out, f"cache was built with plan {old}, the given plan is {plan.hash()}; "
                        "pass --force to re-preprocess every case with the new plan, or use a new --out")
    meta.update({"format": CACHE_FORMAT, "plan_hash": plan.hash(), "manifest": str(manifest)})
    meta.setdefault("skipped", {})
    write_text_atomic(meta_path, json.dumps(meta, indent=1))
    plan.save(out / "plan.json")
    cols = [c for c in ("case_id", "split", "excluded", "kidney_ml", "tumor_ml") if c in df.columns]
    with atomic_path(out / "manifest.csv") as tmp:
        df[cols].to_csv(tmp, index=False)
    messages = [f"{c}: no image or label file; skipped" for c in missing]
    threads = max(1, 2 // workers)
    # largest cases first, so parallel workers finish together (the order never changes a byte)
    cases = sorted(cases, key=lambda c: -_shape_of(df, c[0]))
    tasks = [{"plan": plan.to_dict(), "cache": str(out), "case_id": c, "image": str(i), "label": str(l),
              "stages": list(stages), "force": force, "threads": threads} for c, i, l in cases]
    summary = {"processed": [], "up_to_date": [], "skipped": {}, "warnings": messages, "seconds": {}}
    errors = []

    def collect(r):
        (summary["up_to_date"] if r["up_to_date"] else summary["processed"]).append(r["case_id"])
        if not r["up_to_date"]:
            summary["seconds"][r["case_id"]] = r["seconds"]
        for st, why in r["skipped"].items():
            summary["skipped"][f"{r['case_id']}/stage{st}"] = why
        summary["warnings"].extend(r["warnings"])

    bar = tqdm(total=len(tasks), desc="preprocess", unit="case", disable=not progress)
    try:
        if workers == 1:
            for t in tasks:
                try:
                    collect(_process_case(t))
                except KidneysegError as exc:
                    errors.append(str(exc))
                bar.update()
        else:
            with ProcessPoolExecutor(workers) as pool:
                futs = {pool.submit(_process_case, t): t["case_id"] for t in tasks}
                for f in as_completed(futs):
                    try:
                        collect(f.result())
                    except KidneysegError as exc:
                        errors.append(str(exc))
                    bar.update()
    finally:
        bar.close()
        meta["skipped"].update(summary["skipped"])
        write_text_atomic(meta_path, json.dumps(meta, indent=1))
    for msg in summary["warnings"]:
        warnings.warn(msg, stacklevel=2)
    if errors:
        more = f" (and {len(errors) - 1} more case(s) failed)" if len(errors) > 1 else ""
        raise KidneysegError(errors[0] + more)
    return summary


__all__ = ["CACHE_FORMAT", "CachedCase", "list_cases", "load_case", "preprocess_dataset"]
