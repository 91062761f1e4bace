"""The thesis's Table 4.2 ablation: stage-2 variants over seeds, their table, and whether they differ.

* :func:`run_ablation` trains each variant's stage-2 network for each seed on one cache, all
  sharing one stage-1 model, and scores the whole cascade on the validation split. The (PM, seed)
  run whose configuration equals the stage 2 of the given cascade model (notebook 03's) takes that
  model instead of training it again. Independent runs go ``workers`` at a time
  (:func:`kidneyseg.train.parallel.run_jobs`).
* :func:`ablation_table`: Table 4.2's layout, mean ± sd over seeds (%).
* :func:`ablation_differences` / :func:`ablation_summary`: each variant against PM, the difference
  of the means with its 95 % confidence interval over seeds (Welch's t), and a plain sentence on
  whether it can be told apart from seed noise.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..errors import ensure_output_dir, write_text_atomic
from .validation import results_protocol, validate_model

#: Table 4.2's variants: name -> network flags of the stage-2 model.
VARIANTS: dict[str, dict[str, bool]] = {
    "PM": {"residual": True, "deep_supervision": True},
    "PM without Res": {"residual": False, "deep_supervision": True},
    "PM without Res and DS": {"residual": False, "deep_supervision": False},
}

#: The thesis's Table 4.2 numbers (KiTS19 test set, %), for side-by-side display.
THESIS_TABLE_4_2 = pd.DataFrame(
    [("PM", 97.94, 85.24, 91.59), ("PM without Res", 97.54, 84.63, 91.09),
     ("PM without Res and DS", 97.39, 84.39, 90.89)],
    columns=["Method", "Kidney Dice", "Tumor Dice", "Mean Dice"])


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")


def _stage2_variant_config(base, variant: str, seed: int):
    from ..config import merge
    from ..train.config import TrainConfig

    data = merge(base.to_dict(), {"seed": int(seed), "stage": 2, "network": VARIANTS[variant]}, "ablation variant")
    return TrainConfig.from_dict(data)


def _training_key(config) -> dict:
    """What of a stage config decides the trained network (all of it, progress bars aside)."""
    d = config.to_dict()
    d.pop("progress", None)
    return d


def _same_training(a, b) -> bool:
    """Whether two stage configs train the same network the same way."""
    return _training_key(a) == _training_key(b)


def reusable_stage2(model_dir: os.PathLike | str, config, cache_dir: os.PathLike | str) -> bool:
    """Whether ``model_dir``'s stage 2 was trained to the end with exactly ``config`` on ``cache_dir``'s dataset."""
    from ..model.checkpoint import load_checkpoint
    from ..model.folder import ModelFolder
    from ..train.config import load_config
    from ..train.stage import resolve_dataset

    stage = ModelFolder(model_dir).stage(2)
    if not (stage.config.is_file() and stage.checkpoint_last.is_file() and stage.checkpoint_best.is_file()):
        return False
    saved = load_config(stage.config)
    if not _same_training(saved, resolve_dataset(config, cache_dir)):
        return False
    return int(load_checkpoint(stage.checkpoint_last)["epoch"]) == int(saved.epochs)


#: What a finished (variant, seed) run was made with; a re-run with other settings starts it again.
SETTINGS = "settings.json"


def _run_settings(cfg, source, manifest, split: str, tolerance_mm, overlap: float, max_cases) -> dict:
    """The settings a run's result depends on, as JSON values: the stage-2 config, the shared stage-1
    checkpoint (its sha256), the scored cases and the validation options."""
    from ..model.checkpoint import checkpoint_digest

    best = source.stage(1).checkpoint_best
    listed = Path(f"{best}.sha256").exists()
    data = {"stage2_config": _training_key(cfg), "stage1_sha256": checkpoint_digest(best) if listed else None,
            "manifest": str(Path(manifest).resolve()), "split": split, "tolerance_mm": tolerance_mm,
            "overlap": overlap, "max_cases": max_cases}
    return json.loads(json.dumps(data, sort_keys=True, default=str))


def _read_settings(run: Path) -> dict | None:
    try:
        return json.loads((run / SETTINGS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _ablation_job(job: tuple) -> list[dict]:
    """Train (or resume) one (variant, seed) stage-2 model and score the cascade; writes ``result.json``."""
    from ..model.folder import ModelFolder
    from ..train.config import TrainConfig
    from ..train.stage import train_stage

    variant, seed, config, cache_dir, model_dir, manifest, split, device, tolerance_mm, overlap, max_cases, done = job
    model = ModelFolder(model_dir)
    t0 = time.perf_counter()
    train_stage(TrainConfig.from_dict(config), cache_dir, model.root, device=device,
                resume=model.stage(2).checkpoint_last.exists())
    train_s = time.perf_counter() - t0
    df = validate_model(model.root, manifest, split=split, device=device, tolerance_mm=tolerance_mm, overlap=overlap,
                        max_cases=max_cases)
    df.insert(0, "seed", seed)
    df.insert(0, "variant", variant)
    df["train_seconds"] = round(train_s, 1)
    df["stage2"] = "trained"
    write_text_atomic(done, df.to_json(orient="records"))
    return df.to_dict(orient="records")


def run_ablation(base_config, cache_dir: os.PathLike | str, stage1_model_dir: os.PathLike | str,
                 manifest: os.PathLike | str, out_dir: os.PathLike | str, seeds: Sequence[int] = (0, 1, 2),
                 variants: Sequence[str] = tuple(VARIANTS), split: str = "val", device: str = "cpu",
                 tolerance_mm: float | None = None, workers: int = 1, threads: int | None = None,
                 reuse: bool = True, overlap: float = 0.5, log=print, max_cases: int | None = None) -> pd.DataFrame:
    """Train each variant's stage-2 model for each seed and score the full cascade on ``split``.

    Every variant shares the stage-1 model (``stage1_model_dir/stage1``) and the plan, so the rows
    differ only in the stage-2 network's flags and seed. With ``reuse``, a run whose configuration
    equals that of ``stage1_model_dir``'s finished stage 2 (notebook 03's cascade: same preset,
    overrides and seed; :func:`reusable_stage2`) takes that stage 2 instead of training the same
    network again (column ``stage2``: ``reused``). A finished (variant, seed) keeps its
    ``result.json`` and is skipped on a re-run with the same settings (``settings.json``: stage-2 config,
    stage-1 checkpoint, cases, validation options; other settings run it again); a killed training
    resumes from its checkpoint.

    Args:
        workers, threads: runs trained at once and torch threads per run
            (:func:`kidneyseg.train.parallel.run_jobs`; results do not depend on ``workers``).
        overlap: sliding-window overlap of the validation predictions (:func:`validate_model`).
        max_cases: score at most that many ``split`` cases (:func:`~kidneyseg.experiments.split_cases`).

    Returns:
        One row per (variant, seed, case) with the case metrics, ``train_seconds`` and ``stage2``.
    """
    from ..model.folder import ModelFolder
    from ..runtime import resolve_device
    from ..train.parallel import run_jobs

    device = resolve_device(device).type  # "auto" resolved once, here; the jobs get "cpu" or "cuda"
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"variants must be among {list(VARIANTS)}, got {unknown!r}")
    source = ModelFolder(stage1_model_dir).require(stages=(1,))
    out = ensure_output_dir(out_dir)
    results: dict[tuple[str, int], list[dict]] = {}
    jobs = []
    for variant in variants:
        for seed in seeds:
            run = out / _slug(variant) / f"seed{seed}"
            done = run / "result.json"
            cfg = _stage2_variant_config(base_config, variant, seed)
            settings = _run_settings(cfg, source, manifest, split, tolerance_mm, overlap, max_cases)
            if run.exists() and _read_settings(run) != settings:  # an earlier run with other settings
                log(f"ablation {variant} seed {seed}: settings differ from the earlier run in {run}; run again")
                shutil.rmtree(run)
            if done.exists():
                results[variant, seed] = json.loads(done.read_text(encoding="utf-8"))
                log(f"ablation {variant} seed {seed}: done earlier, skipped")
                continue
            model = ModelFolder(ensure_output_dir(run / "model"))
            write_text_atomic(run / SETTINGS, json.dumps(settings, indent=1, sort_keys=True))
            shutil.copyfile(source.plan_path, model.plan_path)
            if not model.stage(1).root.exists():
                shutil.copytree(source.stage(1).root, model.stage(1).root)
            if reuse and reusable_stage2(source.root, cfg, cache_dir):
                if model.stage(2).root.exists():
                    shutil.rmtree(model.stage(2).root)
                shutil.copytree(source.stage(2).root, model.stage(2).root)
                df = validate_model(model.root, manifest, split=split, device=device, tolerance_mm=tolerance_mm,
                                    overlap=overlap, max_cases=max_cases)
                df.insert(0, "seed", seed)
                df.insert(0, "variant", variant)
                df["train_seconds"], df["stage2"] = 0.0, "reused"
                write_text_atomic(done, df.to_json(orient="records"))
                results[variant, seed] = df.to_dict(orient="records")
                log(f"ablation {variant} seed {seed}: {_scores(df)} (stage 2 of {source.root} reused)")
                continue
            jobs.append((variant, seed, cfg.to_dict(), str(cache_dir), str(model.root), str(manifest), split, device,
                         tolerance_mm, overlap, max_cases, str(done)))
    for job, rows in zip(jobs, run_jobs(_ablation_job, jobs, workers=workers, threads=threads)):
        results[job[0], job[1]] = rows
        df = pd.DataFrame(rows)
        log(f"ablation {job[0]} seed {job[1]}: {_scores(df)} ({df.train_seconds.iloc[0]:.0f} s training)")
    return pd.DataFrame([row for v in variants for s in seeds for row in results[v, s]])


def _scores(df: pd.DataFrame) -> str:
    return " ".join(f"{c[:-5]} {df[c].mean():.3f}" for c in results_protocol(df).dice_columns)


def _per_seed(results: pd.DataFrame) -> tuple[dict[str, str], dict[str, dict[str, np.ndarray]]]:
    """``(column -> label, variant -> column -> per-seed Dice in %)`` for each scored region and the mean."""
    from ..evaluate.metrics import mean_dice

    regions = results_protocol(results).dataset.regions
    cols = [f"{r.name}_dice" for r in regions]
    labels = {**{f"{r.name}_dice": f"{r.title} Dice" for r in regions}, "mean_dice": "Mean Dice"}
    out = {}
    for variant, by_variant in results.groupby("variant", sort=False):
        per_seed: dict[str, list] = {c: [] for c in labels}
        for _, grp in by_variant.groupby("seed", sort=False):
            values = {c: grp[c].to_numpy(float) for c in cols}
            for c, v in values.items():
                per_seed[c].append(np.nanmean(v) if np.isfinite(v).any() else np.nan)
            per_seed["mean_dice"].append(mean_dice(values))
        out[variant] = {c: np.asarray(v, float) * 100 for c, v in per_seed.items()}
    return labels, out


def ablation_table(results: pd.DataFrame) -> pd.DataFrame:
    """Table 4.2's layout: per variant, the Dice of each scored region and their mean (%), as mean +- sd
    over seeds.

    KiTS19 gives the thesis's columns (``Kidney Dice``, ``Tumor Dice``, ``Mean Dice``); KiTS23
    rows (:func:`results_protocol`) give ``Kidney and masses Dice``, ``Masses Dice``, ``Tumor Dice``,
    ``Mean Dice``. Each seed's scores are over its validation cases (NaN Dice of cases without the
    region ignored; the mean Dice by :func:`kidneyseg.evaluate.metrics.mean_dice`); the spread is
    the sample standard deviation over seeds. Numeric columns ``<region>_dice_mean`` / ``_sd``.
    """
    labels, per_variant = _per_seed(results)
    rows = []
    for variant, per_seed in per_variant.items():
        row = {"Method": variant, "seeds": len(per_seed["mean_dice"])}
        for col, label in labels.items():
            vals = per_seed[col]
            sd = float(np.nanstd(vals, ddof=1)) if np.sum(~np.isnan(vals)) > 1 else float("nan")
            row[label] = f"{np.nanmean(vals):.2f} ± {sd:.2f}"
            row[f"{col}_mean"], row[f"{col}_sd"] = float(np.nanmean(vals)), sd
        rows.append(row)
    return pd.DataFrame(rows)


def welch_interval(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> tuple[float, float, float, float]:
    """``(mean(a) - mean(b), standard error, low, high)``: Welch's t confidence interval of a difference of means.

    NaN values are left out; with fewer than 2 values on a side the error and the interval are NaN.

    >>> [round(v, 3) for v in welch_interval([1, 2, 3], [1, 2, 3])]
    [0.0, 0.816, -2.267, 2.267]
    """
    from scipy import stats

    a, b = (np.asarray(x, float) for x in (a, b))
    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    if len(a) == 0 or len(b) == 0:
        return (float("nan"),) * 4
    diff = float(a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2:
        return diff, float("nan"), float("nan"), float("nan")
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return diff, 0.0, diff, diff
    dof = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = float(stats.t.ppf(0.5 + level / 2, dof)) * se
    return diff, se, diff - half, diff + half


def ablation_differences(results: pd.DataFrame, reference: str = "PM", level: float = 0.95) -> pd.DataFrame:
    """Each variant against ``reference``: difference of the mean Dice over seeds (points of %), its
    standard error and ``level`` confidence interval (:func:`welch_interval`, seeds as the samples),
    and ``distinguishable``: whether the interval excludes 0, i.e. whether the difference stands
    out from the spread between seeds.

    Returns:
        One row per (variant, Dice column): ``Method``, ``Compared with``, ``Metric``,
        ``difference``, ``se``, ``ci_low``, ``ci_high``, ``seeds``, ``distinguishable``.
    """
    labels, per_variant = _per_seed(results)
    if reference not in per_variant:
        raise ValueError(f"reference must be one of the variants {list(per_variant)}, got {reference!r}")
    ref = per_variant[reference]
    rows = []
    for variant, per_seed in per_variant.items():
        if variant == reference:
            continue
        for col, label in labels.items():
            diff, se, low, high = welch_interval(per_seed[col], ref[col], level)
            rows.append({"Method": variant, "Compared with": reference, "Metric": label, "difference": diff,
                         "se": se, "ci_low": low, "ci_high": high,
                         "seeds": f"{np.sum(~np.isnan(per_seed[col]))} vs {np.sum(~np.isnan(ref[col]))}",
                         "distinguishable": bool(not math.isnan(low) and (low > 0 or high < 0))})
    return pd.DataFrame(rows, columns=["Method", "Compared with", "Metric", "difference", "se", "ci_low", "ci_high",
                                       "seeds", "distinguishable"])


def ablation_summary(differences: pd.DataFrame, level: float = 0.95) -> str:
    """Plain sentences on :func:`ablation_differences`: each difference with its interval, then
    which of them (if any) can be told apart from seed noise."""
    if differences.empty:
        return "No variant to compare."
    lines = []
    for (variant, ref), grp in differences.groupby(["Method", "Compared with"], sort=False):
        parts = [f"{r.Metric[:-5].lower()} {r.difference:+.1f} ({_interval(r)})" for r in grp.itertuples()]
        lines.append(f"{variant} minus {ref}, Dice points: " + "; ".join(parts) + ".")
    level_pct = f"{100 * level:.0f} %"
    if differences.ci_low.isna().all():
        lines.append("With fewer than two seeds per variant the seed noise cannot be measured, so no difference "
                     "can be told apart from it.")
        return " ".join(lines)
    real = differences[differences.distinguishable]
    if real.empty:
        lines.append(f"Every {level_pct} interval contains 0: none of these differences can be told apart from "
                     f"the noise between seeds; more seeds or longer training would be needed to rank the variants.")
    else:
        named = "; ".join(f"{r.Method} on {r.Metric} ({r.difference:+.1f})" for r in real.itertuples())
        lines.append(f"Told apart from seed noise (the {level_pct} interval excludes 0): {named}. "
                     f"The other differences are within the noise between seeds.")
    return " ".join(lines)


def _interval(row) -> str:
    if math.isnan(row.ci_low):
        return "interval needs 2 seeds"
    return f"{row.ci_low:+.1f} to {row.ci_high:+.1f}"
