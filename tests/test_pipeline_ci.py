"""The CI profile of the pipeline end to end: every output exists and the metrics are sane."""

import json
import math

import pandas as pd
import pytest

from kidneyseg import experiments, pipeline

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ci_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "ci"
    results = pipeline.run_pipeline(out, profile="ci", log=lambda s: None)
    return out, results


def test_every_step_ran_and_wrote_its_outputs(ci_run):
    out, results = ci_run
    assert [r.name for r in results] == list(pipeline.NOTEBOOKS)
    assert all(r.status == "ran" for r in results)
    for name in ("run.json", "config.json", "version.json", "timings.json", "data/manifest.csv"):
        assert (out / name).is_file(), name
    for nb in pipeline.NOTEBOOKS:
        assert (out / "notebooks" / f"{nb}.ipynb").is_file()
        assert (out / "steps" / f"{nb}.done").is_file()
        assert list((out / nb).glob("*.png")) or list((out / nb).rglob("*.png")), f"{nb} saved no figure"
    model = out / "03_training" / "model"
    for part in ("plan.json", "stage1/checkpoint_best.pt", "stage2/checkpoint_best.pt", "postprocess.json"):
        assert (model / part).is_file(), part
    run = json.loads((out / "run.json").read_text())
    assert (out / run["metrics_csv"]).is_file() and (out / run["predictions_dir"]).is_dir()
    table = pd.read_csv(out / "04_ablation" / "table_4_2.csv")
    assert list(table["Method"]) == list(experiments.VARIANTS) and (table["seeds"] == 3).all()


def test_metrics_are_sane_and_beat_an_untrained_model(ci_run, tmp_path):
    out, _ = ci_run
    metrics = pd.read_csv(out / "05_inference_evaluation" / "metrics_cascade.csv")
    cases = metrics[metrics.case_id != "mean"]
    assert len(cases) >= 2
    for col in ("kidney_dice", "kidney_surface_dice"):
        assert cases[col].notna().all() and cases[col].between(0, 1).all(), col
    assert cases["kidney_hd95"].dropna().ge(0).all()
    trained = cases["kidney_dice"].mean()
    manifest = out / "data" / "manifest.csv"
    control = experiments.untrained_copy(out / "03_training" / "model", tmp_path / "untrained")
    untrained = experiments.validate_model(control, manifest, "val", postprocess="none")["kidney_dice"].mean()
    assert not math.isnan(trained)
    assert trained > untrained + 0.1, (trained, untrained)


def test_rerun_skips_completed_steps(ci_run):
    out, _ = ci_run
    again = pipeline.run_pipeline(out, profile="ci", log=lambda s: None)
    assert all(r.status == "skipped" for r in again)
