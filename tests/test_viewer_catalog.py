"""kidneyseg.viewer.catalog: listed cases only, path traversal refused, run folder and manifest."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
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


# ------------------------------------------------------------------------------------ KiTS23
@pytest.fixture(scope="module")
def fake_run23(tmp_path_factory):
    return make_fake_run(tmp_path_factory.mktemp("run23"), n_cases=2, dataset="kits23")


def _set_manifest_dataset(manifest, name):
    df = pd.read_csv(manifest, dtype={"case_id": str})
    df["dataset"] = name
    df.to_csv(manifest, index=False)


def test_catalog_takes_the_dataset_from_the_manifest(fake_run, fake_run23, tmp_path):
    from kidneyseg.data.datasets import KITS19, KITS23

    assert "dataset" not in pd.read_csv(fake_run.parent / "data" / "manifest.csv").columns  # an older manifest
    assert open_catalog(fake_run).dataset is KITS19
    cat = open_catalog(fake_run23)
    assert cat.dataset is KITS23 and "kits23 labels" in cat.describe()
    assert open_catalog(fake_run23.parent / "data" / "manifest.csv").dataset is KITS23   # manifest alone
    assert open_catalog(fake_run23 / "run.json").dataset is KITS23
    case = cat.load_case("case_00000")
    assert case.dataset is KITS23
    assert set(np.unique(case.label.array).tolist()) == {0, 1, 2, 3}                  # cysts load
    assert set(np.unique(case.prediction.array).tolist()) == {0, 1, 2, 3}
    run = make_fake_run(tmp_path, n_cases=1)
    _set_manifest_dataset(run.parent / "data" / "manifest.csv", "kits19")              # said explicitly
    assert open_catalog(run).dataset is KITS19 and "kits19 labels" in open_catalog(run).describe()


def test_kits19_run_loads_exactly_as_before(fake_run):
    """A KiTS19 case reads as the io default ({0, 1, 2}) always read it: same arrays, same dtype."""
    from kidneyseg.io import load_volume

    case = open_catalog(fake_run).load_case("case_00002")
    entry = case.entry
    for vol, path in ((case.label, entry.label), (case.prediction, entry.prediction)):
        ref = load_volume(path, "label")
        assert vol.array.dtype == ref.array.dtype == np.uint8
        np.testing.assert_array_equal(vol.array, ref.array)
        np.testing.assert_array_equal(vol.affine, ref.affine)


def test_label_values_outside_the_dataset_are_refused(fake_run23, tmp_path):
    from kidneyseg.io import load_volume, save_like

    # a cyst in a KiTS19 run: refused, naming the file and the manifest's dataset
    run19 = make_fake_run(tmp_path / "k19", n_cases=1)
    label19 = run19.parent / "data" / "case_00000" / "segmentation.nii.gz"
    vol = load_volume(label19, "label")
    arr = vol.array.copy()
    arr[arr == 2] = 3
    save_like(arr, label19, vol, kind="label")
    with pytest.raises(KidneysegError, match=r"case_00000/segmentation.nii.gz: label values must be in "
                                             r"\{0, 1, 2\}, found \[3\]; manifest.csv is a kits19 manifest"):
        open_catalog(run19).load_case("case_00000")
    # the same run declared KiTS23 loads it: the manifest's column decides
    _set_manifest_dataset(run19.parent / "data" / "manifest.csv", "kits23")
    assert 3 in open_catalog(run19).load_case("case_00000").label.array
    # a value outside KiTS23 in a prediction of a KiTS23 run
    run23 = make_fake_run(tmp_path / "k23", n_cases=1, dataset="kits23")
    pred = run23 / "predictions" / "case_00000.nii.gz"
    vol = load_volume(pred, "label", label_values=(0, 1, 2, 3))
    arr = vol.array.copy()
    arr[0, 0, 0] = 4
    save_like(arr, pred, vol, kind="label")
    with pytest.raises(KidneysegError, match=r"predictions/case_00000.nii.gz: label values must be in "
                                             r"\{0, 1, 2, 3\}, found \[4\]; manifest.csv is a kits23 manifest"):
        open_catalog(run23).load_case("case_00000")
    # a KiTS23 run whose manifest is switched to KiTS19 refuses its cysts
    _set_manifest_dataset(fake_run23.parent / "data" / "manifest.csv", "kits19")
    try:
        with pytest.raises(KidneysegError, match=r"found \[3\]; manifest.csv is a kits19 manifest"):
            open_catalog(fake_run23).load_case("case_00001")
    finally:
        _set_manifest_dataset(fake_run23.parent / "data" / "manifest.csv", "kits23")


def test_mixed_or_unknown_dataset_in_the_manifest_is_refused(fake_run23, tmp_path):
    manifest = fake_run23.parent / "data" / "manifest.csv"
    df = pd.read_csv(manifest, dtype={"case_id": str})
    df.loc[0, "dataset"] = "kits19"
    df.to_csv(tmp_path / "mixed.csv", index=False)
    with pytest.raises(KidneysegError, match="column 'dataset' must hold one of"):
        open_catalog(tmp_path / "mixed.csv")
    df.assign(dataset="kits21").to_csv(tmp_path / "unknown.csv", index=False)
    with pytest.raises(KidneysegError, match="column 'dataset' must hold one of"):
        open_catalog(tmp_path / "unknown.csv")


KITS23_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "kits23"
#: The smallest real KiTS23 label map with a cyst (38 x 512 x 512, 5 mm slices; 4324 cyst voxels).
KITS23_CASE = "case_00152"


def test_real_kits23_case_through_the_viewer(tmp_path):
    """A real KiTS23 label map with cysts: listed as kits23, loaded with label 3, metrics of the kits23
    protocol on the whole maps, a ground-truth cyst surface; the same files under a kits19 manifest
    are refused. Prediction: the label with its cysts called tumor."""
    from kidneyseg.data.manifest import build_manifest
    from kidneyseg.evaluate.protocols import get_protocol
    from kidneyseg.io import load_volume, save_like
    from kidneyseg.viewer.metrics import case_summary
    from kidneyseg.viewer.render import case_surfaces

    source = KITS23_DIR / KITS23_CASE / "segmentation.nii.gz"
    if not source.exists():
        pytest.skip(f"real KiTS23 labels not found at {KITS23_DIR}")
    data = tmp_path / "data"
    (data / KITS23_CASE).mkdir(parents=True)
    (data / KITS23_CASE / "segmentation.nii.gz").symlink_to(source)
    (data / "kits23.json").symlink_to(KITS23_DIR / "kits23.json")
    manifest = build_manifest(data, data / "manifest.csv", workers=1, progress=False)
    run = tmp_path / "run"
    (run / "predictions").mkdir(parents=True)
    label = load_volume(source, "label", label_values=(0, 1, 2, 3))
    pred = label.array.copy()
    pred[pred == 3] = 2
    save_like(pred, run / "predictions" / f"{KITS23_CASE}.nii.gz", label, kind="label")
    (run / "run.json").write_text(json.dumps({"manifest": str(manifest), "predictions_dir": "predictions"}))

    cat = open_catalog(run)
    assert cat.dataset.name == "kits23" and cat.case_ids == [KITS23_CASE]
    case = cat.load_case(KITS23_CASE)
    assert set(np.unique(case.label.array).tolist()) == {0, 1, 2, 3}
    summary = case_summary(case)
    official = get_protocol("kits23").case_metrics(case.prediction.array, case.label.array, case.spacing)
    assert summary["source"] == "viewer"
    for key in ("kidney_and_masses_dice", "masses_dice", "tumor_dice", "kidney_and_masses_surface_dice",
                "masses_surface_dice", "tumor_surface_dice", "mean_dice", "mean_surface_dice"):
        assert summary[key] == pytest.approx(official[key], abs=1e-9), key
    assert summary["kidney_and_masses_dice"] == 1.0 and summary["masses_dice"] == 1.0 and summary["tumor_dice"] < 1
    surfaces = case_surfaces(case)
    assert surfaces[("gt", "cyst")] is not None and surfaces[("pred", "cyst")] is None
    _set_manifest_dataset(manifest, "kits19")
    with pytest.raises(KidneysegError, match=r"label values must be in \{0, 1, 2\}, found \[3\]"):
        open_catalog(run).load_case(KITS23_CASE)
