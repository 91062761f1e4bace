"""kidneyseg.preprocess.plan / intensity / fit: JSON round trip, unknown keys, hash, fitted values."""

import json

import numpy as np
import pytest

from kidneyseg.errors import KidneysegError
from kidneyseg.preprocess.fit import fit_plan
from kidneyseg.preprocess.intensity import fit_intensity, foreground_samples, normalize, window
from kidneyseg.preprocess.plan import Plan

from ._preprocess_data import write_dataset


def test_plan_round_trip(tmp_path):
    p = Plan(clip_low_hu=-50, clip_high_hu=300, mean_hu=110, std_hu=60, box_size_mm=(216, 180, 296))
    p.save(tmp_path / "plan.json")
    q = Plan.load(tmp_path / "plan.json")
    assert q == p and q.hash() == p.hash()
    assert q.box_size_mm == (216.0, 180.0, 296.0) and q.target_spacing == (1.0, 0.78, 0.78)


def test_unknown_key_lists_valid_keys(tmp_path):
    d = Plan().to_dict()
    d["clip_lo"] = 3
    (tmp_path / "plan.json").write_text(json.dumps(d))
    with pytest.raises(KidneysegError, match=r"unknown key 'clip_lo'; valid keys: clip_low_hu"):
        Plan.load(tmp_path / "plan.json")


def test_bad_values_and_files(tmp_path):
    with pytest.raises(ValueError, match="target_spacing must be 3 positive"):
        Plan(target_spacing=(1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="clip_low_hu must be < clip_high_hu"):
        Plan(clip_low_hu=10, clip_high_hu=5)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(KidneysegError, match="not valid JSON"):
        Plan.load(tmp_path / "bad.json")
    with pytest.raises(KidneysegError, match="plan file not found"):
        Plan.load(tmp_path / "missing.json")


def test_hash_follows_content():
    a, b = Plan(), Plan(mean_hu=1.0)
    assert a.hash() != b.hash() and a.hash() == Plan().hash()
    assert Plan(notes={"x": 1}).hash() == a.hash()          # notes are information only


def test_intensity_fit_and_normalize():
    samples = [np.arange(0, 1000, dtype=np.float32), np.full(10, 5000, np.float32)]
    s = fit_intensity(samples)
    assert s.n_voxels == 1010
    assert s.clip_low_hu == pytest.approx(np.percentile(np.concatenate(samples), 0.5))
    assert s.clip_high_hu == pytest.approx(np.percentile(np.concatenate(samples), 99.5))
    out = normalize(np.array([-2000.0, 100.0, 9000.0]), -100, 300, 100, 50)
    np.testing.assert_allclose(out, [-4.0, 0.0, 4.0])
    np.testing.assert_allclose(window(np.array([-160.0, 40, 240]), 400, 40), [0.0, 0.5, 1.0])
    with pytest.raises(ValueError, match="no foreground voxels"):
        fit_intensity([np.empty(0)])


def test_foreground_sampling_is_seeded_and_capped():
    img = np.arange(1000, dtype=np.float32).reshape(10, 10, 10)
    lab = np.zeros_like(img, dtype=np.uint8)
    lab[2:8] = 1
    a = foreground_samples(img, lab, 50, np.random.default_rng(3))
    b = foreground_samples(img, lab, 50, np.random.default_rng(3))
    assert a.size == 50 and np.array_equal(a, b) and a.min() >= 200 and a.max() < 800


def test_fit_plan_from_manifest(tmp_path):
    manifest = write_dataset(tmp_path / "data")
    plan = fit_plan(manifest, samples_per_case=500, progress=False, margin_mm=5)
    assert plan.n_train_cases == 3                            # the val case is not used
    assert 30 < plan.mean_hu < 160 and plan.clip_low_hu < 60 < 150 < plan.clip_high_hu + 30
    # tiny_label's foreground spans 6 slices; training cases 0-2 have z spacing 3, 1.5 and 5 mm (case 3,
    # 2 mm, is val): 6 x 5 mm + 2 x 5 mm margin
    assert plan.box_size_mm[0] == pytest.approx(6 * 5.0 + 10)
    med = fit_plan(manifest, target_spacing="median", samples_per_case=100, progress=False)
    assert med.target_spacing == pytest.approx((3.0, 0.8, 0.8))
    # notebook 02 fits with its `workers` (one process read all 209 KiTS19 CTs in the rehearsal):
    # the plan must not depend on them
    two = fit_plan(manifest, samples_per_case=500, progress=False, margin_mm=5, workers=2)
    assert two.to_dict() == plan.to_dict()


def test_fit_plan_needs_images(tmp_path):
    manifest = write_dataset(tmp_path / "data", labels_only=True)
    with pytest.raises(KidneysegError, match="no training case has a CT image"):
        fit_plan(manifest, progress=False)


def test_plan_cli(tmp_path, capsys):
    from kidneyseg.cli import main

    manifest = write_dataset(tmp_path / "data")
    out = tmp_path / "plan.json"
    assert main(["plan", str(manifest), "-o", str(out), "--target-spacing", "1", "0.8", "0.8",
                 "--samples", "200", "--no-progress"]) == 0
    assert Plan.load(out).target_spacing == (1.0, 0.8, 0.8)
    assert main(["plan", str(manifest), "-o", str(out), "--target-spacing", "1", "0"]) == 2
    assert "spacing must be 3 positive numbers" in capsys.readouterr().err
