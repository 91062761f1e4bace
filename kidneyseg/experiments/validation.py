"""Whole-case validation of a cascade model and the single-stage baseline it is compared with.

* :func:`validate_model` predicts every case of a manifest split with a cascade model directory
  (stage 1 -> ROI -> stage 2 -> post-processing), writes the label maps and returns per-case metrics.
* :func:`train_single_stage` / :func:`validate_single_stage`: the comparison the thesis's cascade is
  measured against, one network on the whole volume at the *target* (fine) spacing.
* :func:`choose_postprocessing`, :func:`evaluate_predictions`: the post-processing choice and the
  ``kidneyseg evaluate`` rows of a prediction folder; :func:`untrained_copy`: the control a trained
  model must beat.

Cases are scored with the evaluation protocol of the data's dataset
(:mod:`kidneyseg.evaluate.protocols`): KiTS19's kidney/tumor report, or KiTS23's three nested
regions at the challenge's tolerances (``tolerance_mm`` must then stay ``None``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import pandas as pd
import torch

from ..errors import ensure_output_dir, fail, write_text_atomic
from ..resources import record
from ..runtime import resolve_device

#: Columns of the per-case tables (KiTS19; KiTS23's are ``get_protocol("kits23").columns``).
METRIC_COLUMNS = ("kidney_dice", "tumor_dice", "mean_dice", "kidney_surface_dice", "tumor_surface_dice",
                  "kidney_hd95", "tumor_hd95", "kidney_ml", "tumor_ml", "gt_kidney_ml", "gt_tumor_ml")


def manifest_protocol(manifest: os.PathLike | str):
    """The evaluation protocol (:class:`~kidneyseg.evaluate.protocols.Protocol`) of a manifest's dataset."""
    from ..data.manifest import manifest_dataset, read_manifest
    from ..evaluate.protocols import get_protocol

    return get_protocol(manifest_dataset(read_manifest(manifest)))


def results_protocol(results: pd.DataFrame):
    """The protocol whose per-case columns ``results`` holds (KiTS23's regions, else KiTS19)."""
    from ..evaluate.protocols import get_protocol

    kits23 = get_protocol("kits23")
    return kits23 if all(c in results.columns for c in kits23.dice_columns) else get_protocol("kits19")


def split_cases(manifest: os.PathLike | str, split: str = "val",
                max_cases: int | None = None) -> list[tuple[str, Path, Path]]:
    """``(case_id, image_path, label_path)`` of the manifest's ``split`` cases that have both files.

    ``max_cases``: at most that many, spread over the case sizes with the largest always among them
    (:func:`kidneyseg.data.manifest.spread_by_size`; ``None`` or 0: all).
    """
    from ..data.manifest import case_paths, read_manifest, select_cases, spread_by_size

    df = select_cases(read_manifest(manifest), split)
    df = df[df["has_image"].astype(bool) & df["has_label"].astype(bool)]
    df = spread_by_size(df, max_cases)
    out = []
    for _, row in df.iterrows():
        img, lab = case_paths(row, manifest)
        if img is not None and lab is not None:
            out.append((row.case_id, Path(img), Path(lab)))
    if not out:
        raise fail(manifest, f"no {split!r} case with both an image and a label")
    return out


#: Beside the label maps of a prediction folder: which model and settings made each one (see
#: :func:`prediction_key`), so a rerun with the same key scores the saved map instead of predicting again.
PREDICTIONS_INDEX = ".predictions.json"


def prediction_key(checkpoints, **settings) -> str:
    """A sha256 naming what decides a prediction: the weights (each checkpoint's digest,
    :func:`kidneyseg.model.checkpoint.checkpoint_digest`) and the settings (plan, overlap,
    post-processing, precision ...; any JSON-able values)."""
    from ..model.checkpoint import checkpoint_digest

    h = hashlib.sha256()
    for path in checkpoints:
        h.update(checkpoint_digest(path).encode())
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return h.hexdigest()


def _input_stamp(path: Path) -> list:
    st = Path(path).stat()
    return [int(st.st_size), int(st.st_mtime_ns)]


def _evaluate_cases(cases, predict, pred_dir: Path | None, tolerance_mm: float | None, protocol,
                    step: str = "predict", key: str | None = None, model_dir=None) -> pd.DataFrame:
    """Run ``predict(volume, case_id) -> (labels, timings)`` on each case and score it with ``protocol``
    (recorded as ``step`` in the run's ``resources.json``, :mod:`kidneyseg.resources`; the row's
    target is ``pred_dir``, else ``model_dir``, so that the predictions of several models without
    saved maps, as in the ablation, stay separate rows in the report).

    With ``pred_dir`` and ``key`` (:func:`prediction_key`) the run resumes: a case whose label map is
    in ``pred_dir`` and whose entry in ``pred_dir/.predictions.json`` has the same key and the same
    input file (size and modification time) is scored from the saved map, with the timings recorded
    when it was predicted; every other case is predicted, and its entry written after its map.
    """
    with record(step, pred_dir if pred_dir is not None else model_dir) as rec:
        df, reused = _evaluate_each(cases, predict, pred_dir, tolerance_mm, protocol, key)
        rec.details.update(cases=len(df), seconds_per_case=dict(zip(df["case_id"], df["seconds_total"])))
        if reused:
            rec.details["reused"] = reused
            if reused == len(df):
                rec.details["no_work"] = "all cases predicted before"
    return df


def _evaluate_each(cases, predict, pred_dir: Path | None, tolerance_mm: float | None, protocol,
                   key: str | None = None) -> tuple[pd.DataFrame, int]:
    from ..io import load_volume, save_like

    protocol.tolerance(tolerance_mm)
    index_path = Path(pred_dir) / PREDICTIONS_INDEX if (pred_dir is not None and key) else None
    index = {}
    if index_path is not None and index_path.is_file():
        try:
            index = json.loads(index_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            index = {}  # unreadable: predict everything again
    rows, reused = [], 0
    for case_id, img_path, lab_path in cases:
        t0 = time.perf_counter()
        gt = load_volume(lab_path, "label", label_values=protocol.dataset.label_values)
        out = None if pred_dir is None else Path(pred_dir) / f"{case_id}.nii.gz"
        entry = index.get(case_id, {})  # empty without pred_dir and key
        if (entry.get("key") == key and entry.get("input") == _input_stamp(img_path) and out is not None
                and out.is_file()):
            labels = load_volume(out, "label", label_values=protocol.dataset.label_values).array
            timings, seconds_total = entry["timings"], entry["seconds_total"]
            reused += 1
        else:
            image = load_volume(img_path, "image")
            labels, timings = predict(image, case_id)
            del image
            if out is not None:
                save_like(labels, out, gt, kind="label")
            timings = {k: round(v, 3) for k, v in timings.items()}
            seconds_total = round(time.perf_counter() - t0, 3)
            if index_path is not None:  # after the map: an entry always names a complete file
                index[case_id] = {"key": key, "input": _input_stamp(img_path), "timings": timings,
                                  "seconds_total": seconds_total}
                write_text_atomic(index_path, json.dumps(index, indent=1) + "\n")
        row = {"case_id": case_id, **protocol.case_metrics(labels, gt.array, gt.spacing, tolerance_mm)}
        row.pop("tolerance_mm", None)
        row.update({f"seconds_{k}": v for k, v in timings.items()})
        row["seconds_total"] = seconds_total
        rows.append(row)
    return pd.DataFrame(rows), reused


def validate_model(model_dir: os.PathLike | str, manifest: os.PathLike | str, split: str = "val",
                   pred_dir: os.PathLike | str | None = None, device: str = "cpu", overlap: float = 0.5,
                   tta: bool = False, tolerance_mm: float | None = None, postprocess: str | None = None,
                   batch_size: int = 2, max_cases: int | None = None) -> pd.DataFrame:
    """Predict the split's cases with a cascade model and score them (one row per case), with the
    evaluation protocol of the model's dataset.

    Args:
        model_dir: ``MODEL_DIR`` with ``plan.json``, ``stage1/``, ``stage2/``.
        manifest: a manifest CSV whose ``split`` cases have images and labels.
        pred_dir: where to write ``<case_id>.nii.gz`` label maps (input geometry); ``None``: not written.
        postprocess: override the model's post-processing strategy (e.g. ``"none"``).
        batch_size: sliding windows per network call. 2 rather than 1: on a CPU, torch runs a
            batch of one through its slow native convolution when the network's first stage is
            narrow (8 features; measured 3x slower per case), and the labels are the same.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        max_cases: predict at most this many cases (see :func:`split_cases`).

    Returns:
        DataFrame with ``case_id``, the protocol's columns (KiTS19: :data:`METRIC_COLUMNS`) and
        ``seconds_*`` timings.
    """
    from ..evaluate.protocols import get_protocol
    from ..infer.cascade import CascadeModel, predict_volume
    from ..model.folder import ModelFolder

    model = CascadeModel.load(model_dir, device=device, postprocess=postprocess)
    if pred_dir is not None:
        pred_dir = ensure_output_dir(pred_dir)

    def predict(volume, case_id):
        return predict_volume(volume, model, overlap=overlap, tta=tta, batch_size=batch_size, progress=False,
                              case_id=case_id)

    folder = ModelFolder(model_dir)
    key = prediction_key([folder.stage(n).checkpoint() for n in (1, 2)], kind="cascade",
                         plan=folder.plan_path.read_text(encoding="utf-8"), overlap=overlap, tta=tta,
                         batch_size=batch_size, postprocess=model.postprocess, runtime=_runtime_settings(model.runtime))
    return _evaluate_cases(split_cases(manifest, split, max_cases), predict, pred_dir, tolerance_mm,
                           get_protocol(model.dataset), key=key, model_dir=model_dir)


def choose_postprocessing(model_dir: os.PathLike | str, raw_pred_dir: os.PathLike | str,
                          manifest: os.PathLike | str, split: str = "val",
                          out_dir: os.PathLike | str | None = None, max_cases: int | None = None) -> tuple[str, dict]:
    """:func:`kidneyseg.evaluate.postprocess_choice.choose_postprocessing` against the manifest's
    ``split`` labels: compare the strategies on raw predictions, store the best in
    ``MODEL_DIR/postprocess.json``, optionally write the post-processed maps to ``out_dir``.

    Returns:
        ``(best strategy, {strategy: {"<region>_dice" ..., "mean_dice", "n_cases"}})``.
    """
    from ..evaluate.postprocess_choice import choose_postprocessing as choose

    refs = {case_id: lab for case_id, _, lab in split_cases(manifest, split, max_cases)}
    missing = [c for c in refs if not (Path(raw_pred_dir) / f"{c}.nii.gz").exists()]
    if missing:
        raise fail(Path(raw_pred_dir) / f"{missing[0]}.nii.gz",
                   "raw prediction missing; run validate_model(..., postprocess='none') first")
    with record("choose postprocessing", out_dir) as rec:
        rec.details["cases"] = len(refs)
        return choose(model_dir, raw_pred_dir, refs, out_dir=out_dir)


def evaluate_predictions(pred_dir: os.PathLike | str, manifest: os.PathLike | str, split: str = "val",
                         tolerance_mm: float | None = None, max_cases: int | None = None) -> list[dict]:
    """Per-case metric rows (the ``kidneyseg evaluate`` rows, with ``protocol``) of
    ``pred_dir/<case_id>.nii.gz`` against the manifest's labels of ``split``, with the protocol of
    the manifest's dataset (``max_cases``: see :func:`split_cases`)."""
    from ..evaluate.report import evaluate_pair

    proto = manifest_protocol(manifest)
    rows = []
    with record("evaluate") as rec:
        for case_id, _, lab_path in split_cases(manifest, split, max_cases):
            rows.append({**evaluate_pair(Path(pred_dir) / f"{case_id}.nii.gz", lab_path, tolerance_mm, case_id=case_id,
                                         protocol=proto), "protocol": proto.name})
        rec.details["cases"] = len(rows)
    return rows


# ------------------------------------------------------------------------------- single stage
def single_stage_plan(plan_path: os.PathLike | str, out_path: os.PathLike | str) -> Path:
    """A copy of the plan whose stage-1 spacing is the fine target spacing (the whole volume, full resolution)."""
    from ..preprocess.plan import Plan

    plan = Plan.load(plan_path)
    single = dataclasses.replace(plan, stage1_spacing=tuple(plan.target_spacing))
    single.save(out_path)
    return Path(out_path)


def train_single_stage(config, manifest: os.PathLike | str, plan_path: os.PathLike | str,
                       work_dir: os.PathLike | str, device: str = "cpu", max_train_cases: int | None = None,
                       max_val_cases: int | None = None, workers: int = 1) -> Path:
    """Train one network on whole volumes at the target spacing; returns its model folder.

    ``config`` is a stage-1 :class:`~kidneyseg.train.config.TrainConfig` (1 input channel). The
    cache is built with :func:`single_stage_plan` (stage 1 at the fine spacing) and resumes like
    any cache; a killed training resumes from its last checkpoint.

    Its cache holds whole volumes at the fine spacing: about twice the voxels of the original CTs on
    KiTS19 (23.2 G voxels for the 209 cases, 70 GB as float16; docs/full_scale.md).
    ``max_train_cases`` / ``max_val_cases`` cap it to that many cases of each split, spread over the
    case sizes (:func:`kidneyseg.data.manifest.spread_by_size`; ``None`` or 0: all), for runs whose
    work is capped anyway (the ``rehearsal`` profile); ``workers``: preprocessing processes.
    """
    from ..data.manifest import read_manifest, select_cases, spread_by_size
    from ..model.folder import ModelFolder
    from ..preprocess.cache import preprocess_dataset
    from ..train.stage import train_stage

    work = ensure_output_dir(work_dir)
    plan = single_stage_plan(plan_path, work / "plan_single_stage.json")
    cache = work / "cache"
    cases = None
    if max_train_cases or max_val_cases:
        df = read_manifest(manifest)
        cases = [c for split, n in (("train", max_train_cases), ("val", max_val_cases))
                 for c in spread_by_size(select_cases(df, split), n)["case_id"]]
    preprocess_dataset(manifest, plan, cache, stages=(1,), progress=False, cases=cases, workers=workers)
    model = ModelFolder(work / "model")
    train_stage(config, cache, model.root, device=resolve_device(device).type,
                resume=model.stage(1).checkpoint_last.exists())
    return model.root


def validate_single_stage(model_dir: os.PathLike | str, manifest: os.PathLike | str, split: str = "val",
                          pred_dir: os.PathLike | str | None = None, device: str = "cpu",
                          overlap: float = 0.5, tolerance_mm: float | None = None,
                          postprocess: str | None = "anatomy", batch_size: int = 2,
                          max_cases: int | None = None) -> pd.DataFrame:
    """Score the single-stage baseline: the case preprocessed exactly as its training cache was
    (:func:`~kidneyseg.preprocess.case.preprocess_case`, stage 1 of the single-stage plan: the
    whole volume at the target spacing), sliding window, labels back to the input grid with the one
    inverse (:func:`~kidneyseg.preprocess.case.paste_label_back`), then the cascade's
    post-processing (``postprocess=None``: the model folder's own choice); ``batch_size`` as in
    :func:`validate_model`."""
    from ..evaluate.protocols import get_protocol
    from ..infer.postprocess import load_choice
    from ..infer.postprocess import postprocess as apply_postprocess
    from ..infer.sliding_window import sliding_window_predict
    from ..model.folder import ModelFolder, load_stage
    from ..preprocess.case import paste_label_back, preprocess_case
    from ..runtime import resolve_runtime

    device = resolve_device(device)
    folder = ModelFolder(model_dir).require(stages=(1,))
    plan = folder.load_plan()
    runtime = resolve_runtime(device, "auto")  # the cascade's precision and layout: a like-for-like comparison
    net, spec = load_stage(folder.stage(1), device=runtime)
    name, opts = load_choice(folder) if postprocess is None else (postprocess, {})
    if pred_dir is not None:
        pred_dir = ensure_output_dir(pred_dir)

    def predict(volume, case_id):
        t0 = time.perf_counter()
        x, _, props = preprocess_case(volume.array, None, volume.spacing, plan, 1, case_id=case_id)
        res = sliding_window_predict(torch.from_numpy(x)[None], net, spec.patch_size, overlap=overlap,
                                     device=runtime, output=spec.output, batch_size=batch_size)
        labels = apply_postprocess(paste_label_back(res.labels, props), volume.spacing, name, dataset=plan.dataset,
                                   **opts)
        return labels, {"single_stage": time.perf_counter() - t0}

    key = prediction_key([folder.stage(1).checkpoint()], kind="single stage",
                         plan=folder.plan_path.read_text(encoding="utf-8"), overlap=overlap, batch_size=batch_size,
                         postprocess=(name, opts), runtime=_runtime_settings(runtime))
    return _evaluate_cases(split_cases(manifest, split, max_cases), predict, pred_dir, tolerance_mm,
                           get_protocol(plan.dataset), step="predict single stage", key=key, model_dir=model_dir)


def _runtime_settings(runtime) -> dict:
    """What of a :class:`~kidneyseg.runtime.Runtime` changes the predicted labels."""
    return {"device": runtime.device.type, "precision": runtime.precision, "channels_last": runtime.channels_last}


def untrained_copy(model_dir: os.PathLike | str, out_dir: os.PathLike | str, seed: int = 0) -> Path:
    """A model folder like ``model_dir`` whose networks keep their initial random weights.

    The control for sanity checks: a trained model must beat it.
    """
    from ..model.checkpoint import load_checkpoint, save_checkpoint
    from ..model.folder import ModelFolder
    from ..model.unet import build_unet
    from ..train.config import TrainConfig

    src, out = ModelFolder(model_dir).require(), ModelFolder(ensure_output_dir(out_dir))
    shutil.copyfile(src.plan_path, out.plan_path)
    for stage in (1, 2):
        data = load_checkpoint(src.stage(stage).checkpoint())
        cfg = TrainConfig.from_json(data["config"])
        torch.manual_seed(seed)
        data["model"] = build_unet(cfg.network).state_dict()
        ensure_output_dir(out.stage(stage).root)
        shutil.copyfile(src.stage(stage).config, out.stage(stage).config)
        data.pop("format", None)
        save_checkpoint(out.stage(stage).checkpoint_best, data)
    return out.root
