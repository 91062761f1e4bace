"""kidneyseg.experiments: inference preprocesses like training (cascade and baseline), the ablation's
configs and table, the post-processing choice wrapper, the untrained control."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch

from kidneyseg import experiments as ex
from kidneyseg.experiments import ablation as ablation_module
from kidneyseg.errors import KidneysegError
from kidneyseg.preprocess.cache import load_case, preprocess_dataset
from kidneyseg.preprocess.plan import Plan

from ._preprocess_data import write_dataset
from .infer_helpers import make_model_dir

pytestmark = pytest.mark.filterwarnings("ignore:.*box reaches outside:UserWarning")

# stage 1 at the cases' own spacing of case_00000 (3.0, 0.8, 0.8): the stage-1 round trip is exact
PLAN = dict(clip_low_hu=-100.0, clip_high_hu=300.0, mean_hu=100.0, std_hu=50.0, target_spacing=(1.5, 0.8, 0.8),
            stage1_spacing=(3.0, 0.8, 0.8), box_size_mm=(24.0, 10.0, 18.0))


@pytest.fixture
def data(tmp_path):
    manifest = write_dataset(tmp_path / "data", n=2)  # case_00000 train, case_00001 val
    return manifest


def _spy(monkeypatch, module, answers=None):
    """Record every input the module hands to the sliding window; answer with ``answers[i]`` labels."""
    from kidneyseg.infer.sliding_window import SlidingWindowResult

    seen = []

    def spy(image, network, patch_size, **kw):
        x = np.asarray(image)
        seen.append(x.copy())
        lab = answers[len(seen) - 1] if answers else np.zeros(x.shape[1:], np.uint8)
        return SlidingWindowResult(np.asarray(lab, np.uint8), None, 1, "cpu")

    monkeypatch.setattr(module, "sliding_window_predict", spy)
    return seen


def test_cascade_inference_preprocesses_exactly_like_its_training_cache(data, tmp_path, monkeypatch):
    """Stage 1 (whole volume) and stage 2 (the box around a perfect stage-1 answer) get the very arrays
    the training cache holds: one transform, train and predict alike."""
    from kidneyseg.infer import cascade
    from kidneyseg.io import load_volume

    plan = Plan(**PLAN)
    preprocess_dataset(data, plan, tmp_path / "cache", progress=False)
    c1, c2 = (load_case(tmp_path / "cache", "case_00000", st, mmap=False) for st in (1, 2))
    model = make_model_dir(tmp_path / "model", plan=PLAN)
    inside = c2.properties.inside_slices()  # the box reaches past the volume: stage 2 runs inside it
    seen = _spy(monkeypatch, cascade, answers=[c1.label, c2.label[inside]])
    # the tiny cases' kidneys are below the anatomy rule's 10 ml: keep the stage-1 answer as it is, so
    # the ROI centre is the ground truth's, as in training
    monkeypatch.setattr(cascade, "postprocess", lambda labels, spacing, name="anatomy", **kw: labels)
    m = cascade.CascadeModel.load(model)
    vol = load_volume(data.parent / "case_00000" / "imaging.nii.gz", "image")
    cascade.predict_volume(vol, m, progress=False, body_crop=False)
    assert np.array_equal(seen[0][0], c1.image)                       # stage 1: identical bytes
    assert np.array_equal(seen[1][0], c2.image[inside])               # stage 2 image channel: identical
    prior = np.stack([c2.label == 1, c2.label == 2]).astype(np.float32)[(slice(None), *inside)]
    assert np.array_equal(seen[1][1:], prior)


def test_baseline_inference_preprocesses_exactly_like_its_training_cache(data, tmp_path, monkeypatch):
    """The single-stage baseline: its cache (stage 1 at the fine spacing) and its inference input match;
    before the fix inference normalised before resampling and did not."""
    from kidneyseg.infer import sliding_window

    plan_path = Plan(**PLAN).save(tmp_path / "plan.json")
    single = Plan.load(ex.single_stage_plan(plan_path, tmp_path / "single.json"))
    assert single.stage1_spacing == single.target_spacing
    preprocess_dataset(data, single, tmp_path / "cache", stages=(1,), progress=False)
    cached = load_case(tmp_path / "cache", "case_00001", 1, mmap=False)
    model = make_model_dir(tmp_path / "model", plan=single.to_dict())
    seen = _spy(monkeypatch, sliding_window)
    df = ex.validate_single_stage(model, data, "val", device="cpu")
    assert list(df.case_id) == ["case_00001"]
    assert np.array_equal(seen[0][0], cached.image)


def test_variant_configs_change_only_the_flags_and_seed():
    from kidneyseg.train.config import preset

    base = preset("demo", 2, {"epochs": 1})
    for name, flags in ex.VARIANTS.items():
        cfg = ablation_module._stage2_variant_config(base, name, seed=7)
        assert cfg.seed == 7 and cfg.stage == 2 and cfg.epochs == 1
        assert (cfg.network.residual, cfg.network.deep_supervision) == (flags["residual"], flags["deep_supervision"])
        assert cfg.network.base_features == base.network.base_features


def test_ablation_table_mean_and_spread_over_seeds():
    rows = []
    for seed, (k, t) in enumerate([(0.9, 0.5), (0.7, 0.3)]):
        rows += [{"variant": "PM", "seed": seed, "case_id": "a", "kidney_dice": k, "tumor_dice": t},
                 {"variant": "PM", "seed": seed, "case_id": "b", "kidney_dice": k, "tumor_dice": np.nan}]
    table = ex.ablation_table(pd.DataFrame(rows))
    row = table.iloc[0]
    assert row["seeds"] == 2
    assert row["kidney_dice_mean"] == pytest.approx(80.0) and row["kidney_dice_sd"] == pytest.approx(14.142, abs=1e-3)
    assert row["tumor_dice_mean"] == pytest.approx(40.0)           # NaN of the tumor-free case ignored
    assert row["mean_dice_mean"] == pytest.approx(60.0)            # (0.9 + 0.5)/2 and (0.7 + 0.3)/2
    assert row["Kidney Dice"] == "80.00 ± 14.14"


def test_choose_postprocessing_needs_raw_predictions(data, tmp_path):
    with pytest.raises(KidneysegError, match="raw prediction missing"):
        ex.choose_postprocessing(tmp_path / "model", tmp_path / "nothing", data, "val")


def test_untrained_copy_keeps_the_layout_and_resets_the_weights(tmp_path):
    from kidneyseg.model.checkpoint import load_checkpoint
    from kidneyseg.model.folder import ModelFolder

    src = make_model_dir(tmp_path / "model", plan=PLAN)
    out = ModelFolder(ex.untrained_copy(src, tmp_path / "control", seed=3))
    assert out.plan_path.read_text() == ModelFolder(src).plan_path.read_text()
    a = load_checkpoint(ModelFolder(src).stage(2).checkpoint())["model"]
    b = load_checkpoint(out.stage(2).checkpoint_best)["model"]
    assert a.keys() == b.keys() and any(not torch.equal(a[k], b[k]) for k in a)
    assert json.loads(out.stage(2).config.read_text())["stage"] == 2


def _ablation_rows(per_variant: dict[str, list[float]]) -> pd.DataFrame:
    return pd.DataFrame([{"variant": v, "seed": s, "case_id": "a", "kidney_dice": 0.9, "tumor_dice": t}
                         for v, ts in per_variant.items() for s, t in enumerate(ts)])


def test_ablation_differences_tell_a_real_gap_from_seed_noise():
    clear = ex.ablation_differences(_ablation_rows({"PM": [0.80, 0.81, 0.79], "PM without Res": [0.50, 0.51, 0.49]}))
    tumor = clear[clear.Metric == "Tumor Dice"].iloc[0]
    assert tumor.difference == pytest.approx(-30.0) and tumor.ci_high < 0 and tumor.distinguishable
    assert not clear[clear.Metric == "Kidney Dice"].iloc[0].distinguishable      # identical: no difference
    noisy = ex.ablation_differences(_ablation_rows({"PM": [0.8, 0.4, 0.6], "PM without Res": [0.55, 0.7, 0.5]}))
    assert not noisy.distinguishable.any()
    assert "none of these differences can be told apart" in ex.ablation_summary(noisy)
    assert "Told apart from seed noise" in ex.ablation_summary(clear)


def test_ablation_summary_with_one_seed_says_the_noise_is_unmeasured():
    diffs = ex.ablation_differences(_ablation_rows({"PM": [0.8], "PM without Res": [0.5]}))
    assert diffs.ci_low.isna().all()
    assert "fewer than two seeds" in ex.ablation_summary(diffs)


def test_welch_interval_matches_scipys_welch_test():
    from scipy import stats

    a, b = [1.0, 2.0, 4.0, 3.5], [0.5, 0.7, 1.9]
    diff, se, low, high = ex.welch_interval(a, b, level=0.95)
    t = stats.ttest_ind(a, b, equal_var=False)
    assert diff / se == pytest.approx(t.statistic)
    assert (low > 0) == (t.pvalue < 0.05)


def test_reusable_stage2_only_for_the_identical_finished_recipe(tmp_path):
    from kidneyseg.model.checkpoint import load_checkpoint, save_checkpoint
    from kidneyseg.model.folder import ModelFolder
    from kidneyseg.train.config import load_config, save_config

    src = ModelFolder(make_model_dir(tmp_path / "model", plan=PLAN))
    cache = tmp_path / "cache"
    cache.mkdir()
    Plan(**PLAN).save(cache / "plan.json")
    stage = src.stage(2)
    save_config(dataclasses.replace(load_config(stage.config), dataset="kits19"), stage.config)  # as training saves it
    cfg = load_config(stage.config)
    assert not ex.reusable_stage2(src.root, cfg, cache)          # no best checkpoint: unfinished
    ckpt = load_checkpoint(stage.checkpoint_last)
    ckpt["epoch"] = cfg.epochs
    save_checkpoint(stage.checkpoint_last, ckpt)
    save_checkpoint(stage.checkpoint_best, ckpt)
    same = load_config(stage.config)
    assert ex.reusable_stage2(src.root, same, cache)
    other_seed = ablation_module._stage2_variant_config(same, "PM", seed=cfg.seed + 1)
    assert not ex.reusable_stage2(src.root, other_seed, cache)
    ckpt["epoch"] = cfg.epochs - 1                                             # stopped early
    save_checkpoint(stage.checkpoint_last, ckpt)
    assert not ex.reusable_stage2(src.root, same, cache)


def test_run_ablation_trains_each_run_once_and_validates_with_the_given_overlap(tmp_path, monkeypatch):
    from kidneyseg.experiments import ablation
    from kidneyseg.train import stage as stage_module
    from kidneyseg.train.config import preset

    trained, seen = [], []
    monkeypatch.setattr(stage_module, "train_stage", lambda cfg, cache, root, **kw: trained.append((cfg.seed, cfg.network.residual)))

    def fake_validate(model_dir, manifest, **kw):
        seen.append(kw["overlap"])
        return pd.DataFrame([{"case_id": "a", "kidney_dice": 0.9, "tumor_dice": 0.5}])

    monkeypatch.setattr(ablation, "validate_model", fake_validate)
    src = make_model_dir(tmp_path / "model", plan=PLAN)
    kw = dict(seeds=[0, 1], variants=["PM", "PM without Res"], reuse=False, overlap=0.25, log=lambda *a: None)
    df = ex.run_ablation(preset("demo", 2, {"epochs": 1}), tmp_path / "cache", src, "m.csv", tmp_path / "out", **kw)
    assert sorted(trained) == [(0, False), (0, True), (1, False), (1, True)] and seen == [0.25] * 4
    assert list(df.variant) == ["PM", "PM", "PM without Res", "PM without Res"] and set(df.stage2) == {"trained"}
    ex.run_ablation(preset("demo", 2, {"epochs": 1}), tmp_path / "cache", src, "m.csv", tmp_path / "out", **kw)
    assert len(trained) == 4                                    # finished runs are kept, not trained again
    ex.run_ablation(preset("demo", 2, {"epochs": 2}), tmp_path / "cache", src, "m.csv", tmp_path / "out", **kw)
    assert len(trained) == 8                                    # another recipe: every run again, none kept
    kw["overlap"] = 0.5
    ex.run_ablation(preset("demo", 2, {"epochs": 2}), tmp_path / "cache", src, "m.csv", tmp_path / "out", **kw)
    assert len(trained) == 12 and seen[-4:] == [0.5] * 4          # other validation settings: scored again
    ex.run_ablation(preset("demo", 2, {"epochs": 2}), tmp_path / "cache", src, "m.csv", tmp_path / "out", **kw)
    assert len(trained) == 12


def test_max_cases_predicts_the_largest_and_records_the_steps(tmp_path, monkeypatch):
    """A capped validation (the rehearsal's 3 cases) always holds the largest case; predict and evaluate
    rows land in resources.json when a run folder is configured."""
    from kidneyseg.resources import ENV_RUN_DIR, latest_rows, read_resources

    manifest = write_dataset(tmp_path / "data", n=4)
    df = pd.read_csv(manifest)
    df["split"] = "val"
    df.to_csv(manifest, index=False)
    sizes = {r.case_id: r.shape_z * r.shape_y * r.shape_x for r in df.itertuples()}
    picked = [c for c, _, _ in ex.split_cases(manifest, "val", max_cases=2)]
    assert len(picked) == 2 and max(sizes, key=sizes.get) in picked
    assert len(ex.split_cases(manifest, "val")) == 4
    monkeypatch.setenv(ENV_RUN_DIR, str(tmp_path / "run"))
    model = make_model_dir(tmp_path / "model", plan=PLAN)
    out = ex.validate_model(model, manifest, "val", pred_dir=tmp_path / "pred", device="auto", max_cases=1)
    assert list(out.case_id) == [max(sizes, key=sizes.get)]
    ex.evaluate_predictions(tmp_path / "pred", manifest, "val", max_cases=1)
    rows = {r["step"]: r for r in read_resources(tmp_path / "run")}
    assert rows["predict"]["details"]["cases"] == 1 and rows["predict"]["bytes_written"] > 0
    assert rows["evaluate"]["details"]["cases"] == 1
    # two models scored without saved maps (the ablation's way): two rows in the report, one per model
    other = make_model_dir(tmp_path / "model_b", plan=PLAN)
    for m in (model, other):
        ex.validate_model(m, manifest, "val", device="auto", max_cases=1)
    targets = [r["target"] for r in latest_rows(read_resources(tmp_path / "run")) if r["step"] == "predict"]
    assert sorted(t.rsplit("/", 1)[-1] for t in targets) == ["model", "model_b", "pred"]


def test_a_rerun_scores_saved_predictions_and_predicts_again_when_the_key_changes(tmp_path, monkeypatch):
    """A killed notebook 05 resumes per case: a second validate_model with the same model and settings
    scores the saved label maps (no network call, the same rows and the first run's timings); other
    settings, new weights or a touched input predict again; a map without its index entry is not
    trusted. The single-stage baseline resumes the same way."""
    from kidneyseg.infer import cascade, sliding_window
    from kidneyseg.model.checkpoint import load_checkpoint, save_checkpoint

    manifest = write_dataset(tmp_path / "data", n=3)
    df = pd.read_csv(manifest)
    df["split"] = "val"
    df.to_csv(manifest, index=False)
    model = make_model_dir(tmp_path / "model", plan=PLAN)
    calls = []
    real = cascade.predict_volume
    monkeypatch.setattr(cascade, "predict_volume", lambda v, m, **kw: calls.append(kw["case_id"]) or real(v, m, **kw))
    pred = tmp_path / "pred"
    first = ex.validate_model(model, manifest, "val", pred_dir=pred, overlap=0.25)
    assert len(calls) == 3 and (pred / ex.PREDICTIONS_INDEX).is_file()
    again = ex.validate_model(model, manifest, "val", pred_dir=pred, overlap=0.25)
    assert len(calls) == 3                                            # nothing predicted again
    pd.testing.assert_frame_equal(first, again)                       # same metrics, the first run's timings
    ex.validate_model(model, manifest, "val", pred_dir=pred, overlap=0.5)
    assert len(calls) == 6                                            # another overlap: another prediction
    from kidneyseg.model.folder import ModelFolder

    ck = ModelFolder(model).stage(2).checkpoint()
    data = load_checkpoint(ck)
    data["model"] = {k: v + 1 for k, v in data["model"].items()}
    save_checkpoint(ck, {k: v for k, v in data.items() if k != "format"})
    ex.validate_model(model, manifest, "val", pred_dir=pred, overlap=0.5)
    assert len(calls) == 9                                            # new weights
    index = json.loads((pred / ex.PREDICTIONS_INDEX).read_text())
    del index["case_00001"]
    (pred / ex.PREDICTIONS_INDEX).write_text(json.dumps(index))
    img = tmp_path / "data" / "case_00002" / "imaging.nii.gz"
    img.touch()
    import os
    os.utime(img, ns=(img.stat().st_atime_ns, img.stat().st_mtime_ns + 10**9))
    ex.validate_model(model, manifest, "val", pred_dir=pred, overlap=0.5)
    assert calls[9:] == ["case_00001", "case_00002"]                  # no entry; a changed input

    seen = _spy(monkeypatch, sliding_window)
    single = make_model_dir(tmp_path / "single", plan=PLAN)
    a = ex.validate_single_stage(single, manifest, "val", pred_dir=tmp_path / "single_pred")
    b = ex.validate_single_stage(single, manifest, "val", pred_dir=tmp_path / "single_pred")
    assert len(seen) == 3
    pd.testing.assert_frame_equal(a, b)
