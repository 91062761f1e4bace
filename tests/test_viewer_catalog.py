"""kidneyseg.viewer.catalog: listed cases only, path traversal refused, run folder and manifest."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from kidneyseg.errors import KidneysegError
from kidneyseg.viewer.catalog import CASE_ID_PATTERN, open_catalog

from .browser.fake_run import SHAPE, make_fake_run


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory):
    return make_fake_run(tmp_path_factory.mktemp("run"), n_cases=3)


def test_run_folder_lists_predicted_cases_with_metrics(fake_run):
    cat = open_catalog(fake_run)
    assert cat.kind == "run" and cat.has_predictions
    assert cat.case_ids == ["case_00000", "case_00001", "case_00002"]
    entry = cat.entry("case_00001")
    assert entry.prediction == (fake_run / "predictions" / "case_00001.nii.gz").resolve()
    assert entry.metrics["kidney_dice"] == pytest.approx(
        pd.read_csv(fake_run / "metrics.csv").set_index("case_id").loc["case_00001", "kidney_dice"])
    assert entry.info["tumor_size_cm"] == pytest.approx(2.4)
    case = cat.load_case("case_00001")
    assert case.image.shape == case.label.shape == case.prediction.shape == SHAPE
    assert case.label.array.dtype.name == "uint8" and set(case.label.array.ravel().tolist()) == {0, 1, 2}
    assert "3 cases, with predictions" in cat.describe()


def test_run_lists_only_cases_it_predicted(fake_run, tmp_path):
    run = make_fake_run(tmp_path, n_cases=3)
    (run / "predictions" / "case_00002.nii.gz").unlink()
    assert open_catalog(run).case_ids == ["case_00000", "case_00001"]
    assert open_catalog(run / "run.json").case_ids == ["case_00000", "case_00001"]


def test_manifest_alone_gives_ground_truth_only(fake_run):
    cat = open_catalog(fake_run.parent / "data" / "manifest.csv")
    assert cat.kind == "manifest" and not cat.has_predictions
    assert cat.case_ids == ["case_00000", "case_00001", "case_00002"]
    case = cat.load_case("case_00000")
    assert case.prediction is None and case.label is not None and case.image is not None
    assert "ground truth only" in cat.describe()


@pytest.mark.parametrize("case_id", [
    "../../etc/passwd", "/etc/passwd", "case_00000/../case_00001", "..", "case_00003", "", "case_00000 ",
    "CASE_00000", None, 3,
])
def test_unlisted_or_traversing_case_ids_are_refused(fake_run, case_id):
    cat = open_catalog(fake_run)
    with pytest.raises(KidneysegError, match="not listed"):
        cat.load_case(case_id)


def test_case_id_pattern_rejects_path_like_ids():
    assert CASE_ID_PATTERN.match("case_00042") and CASE_ID_PATTERN.match("patient-7.v2")
    for bad in ("../x", "a/b", "a\\b", "..", ".hidden", "a..b", "", "x\n"):
        assert not CASE_ID_PATTERN.match(bad), bad


def test_manifest_row_with_path_like_case_id_is_not_listed(tmp_path):
    run = make_fake_run(tmp_path, n_cases=2)
    manifest = run.parent / "data" / "manifest.csv"
    df = pd.read_csv(manifest, dtype={"case_id": str})
    df.loc[1, "case_id"] = "../case_00001"
    df.to_csv(manifest, index=False)
    with pytest.warns(UserWarning, match="not a plain name"):
        cat = open_catalog(manifest)
    assert cat.case_ids == ["case_00000"]


def test_prediction_symlink_escaping_the_predictions_folder_is_refused(tmp_path):
    run = make_fake_run(tmp_path, n_cases=2)
    pred = run / "predictions" / "case_00001.nii.gz"
    outside = tmp_path / "elsewhere.nii.gz"
    pred.rename(outside)
    os.symlink(outside, pred)
    with pytest.warns(UserWarning, match="outside the predictions folder"):
        cat = open_catalog(run)
    assert cat.case_ids == ["case_00000"]  # the run lists the cases it predicted (safely)


def test_bad_sources_give_one_clear_line(tmp_path):
    with pytest.raises(KidneysegError, match="no such run folder or manifest"):
        open_catalog(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(KidneysegError, match="not a run folder"):
        open_catalog(tmp_path / "empty")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "run.json").write_text("{not json")
    with pytest.raises(KidneysegError, match="not valid JSON"):
        open_catalog(bad)
    (bad / "run.json").write_text(json.dumps({"predictions_dir": "p"}))
    with pytest.raises(KidneysegError, match="has no 'manifest' entry"):
        open_catalog(bad)
    (bad / "run.json").write_text(json.dumps({"manifest": "nowhere.csv"}))
    with pytest.raises(KidneysegError, match="no such manifest"):
        open_catalog(bad)
