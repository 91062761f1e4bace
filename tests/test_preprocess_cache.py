"""kidneyseg.preprocess.cache: layout, load_case/list_cases, skip, changed plan, kill safety, edge cases."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

from kidneyseg.errors import KidneysegError
from kidneyseg.preprocess.cache import list_cases, load_case, preprocess_dataset
from kidneyseg.preprocess.case import paste_label_back, preprocess_case
from kidneyseg.preprocess.plan import Plan
from kidneyseg.preprocess.roi import box_voxels

from ._preprocess_data import make_case, write_dataset

# the tiny volumes are smaller than the box in some axis: the 'padded' warning is expected there
pytestmark = pytest.mark.filterwarnings("ignore:.*box reaches outside:UserWarning")

PLAN = Plan(clip_low_hu=-100, clip_high_hu=300, mean_hu=100, std_hu=50, target_spacing=(1.5, 0.8, 0.8),
            stage1_spacing=(4.0, 1.6, 1.6), box_size_mm=(24.0, 10.0, 18.0))


@pytest.fixture
def dataset(tmp_path):
    return write_dataset(tmp_path / "data", n=4)


def _mtimes(cache):
    return {p: p.stat().st_mtime_ns for p in cache.rglob("*.npy")}


def test_cache_layout_and_contract(dataset, tmp_path):
    cache = tmp_path / "cache"
    s = preprocess_dataset(dataset, PLAN, cache, progress=False)
    assert len(s["processed"]) == 4 and not s["up_to_date"]
    assert list_cases(cache) == [f"case_{i:05d}" for i in range(4)]
    assert list_cases(cache, split="val") == ["case_00003"]
    c1 = load_case(cache, "case_00000", stage=1)
    assert isinstance(c1.image, np.memmap) and c1.image.dtype == np.float16 and c1.label.dtype == np.uint8
    assert c1.image.shape == (9, 10, 12)                            # (12*3/4, 20*.8/1.6, 24*.8/1.6)
    c2 = load_case(cache, "case_00000", stage=2, mmap=False)
    assert c2.image.shape == box_voxels(PLAN.box_size_mm, PLAN.target_spacing) == (16, 13, 23)
    assert set(np.unique(c2.label)) == {0, 1, 2}
    assert c2.image.min() >= (PLAN.clip_low_hu - PLAN.mean_hu) / PLAN.std_hu - 1e-6
    assert c2.image.max() <= (PLAN.clip_high_hu - PLAN.mean_hu) / PLAN.std_hu + 1e-6
    for key in ("original_shape", "original_spacing", "original_affine", "crop", "resampled_shape", "plan_hash"):
        assert getattr(c2.properties, key) is not None
    assert c2.properties.original_shape == (12, 20, 24)
    assert json.loads((cache / "cache.json").read_text())["plan_hash"] == PLAN.hash()


def test_stage2_label_maps_back_onto_original_grid(dataset, tmp_path):
    from kidneyseg.io import load_volume

    preprocess_dataset(dataset, PLAN, tmp_path / "cache", progress=False, stages=(2,))
    assert len(list_cases(tmp_path / "cache")) == 4 and list_cases(tmp_path / "cache", stage=1) == []
    # case 0: 3 mm -> 1.5 mm in z, in-plane unchanged, so nearest there and back is exact
    case = load_case(tmp_path / "cache", "case_00000", 2)
    orig = load_volume(dataset.parent / "case_00000" / "segmentation.nii.gz", "label").array
    back = paste_label_back(np.asarray(case.label), case.properties)
    assert back.shape == orig.shape
    np.testing.assert_array_equal(back, orig)


def test_up_to_date_cases_are_skipped_and_plan_change_refused(dataset, tmp_path, monkeypatch):
    from kidneyseg.resources import ENV_RUN_DIR, latest_rows, read_resources

    monkeypatch.setenv(ENV_RUN_DIR, str(tmp_path / "run"))
    cache = tmp_path / "cache"
    preprocess_dataset(dataset, PLAN, cache, progress=False)
    before = _mtimes(cache)
    s = preprocess_dataset(dataset, PLAN, cache, progress=False)
    assert len(s["up_to_date"]) == 4 and not s["processed"] and _mtimes(cache) == before
    # the second row measured nothing: the report keeps the first, which did the work
    rows = read_resources(tmp_path / "run")
    assert [r["details"].get("no_work") for r in rows] == [None, "all cases cached"]
    assert latest_rows(rows) == [rows[0]]
    changed = Plan(**{**PLAN.to_dict(), "mean_hu": 90.0})
    with pytest.raises(KidneysegError, match=f"built with plan {PLAN.hash()}.*--force"):
        preprocess_dataset(dataset, changed, cache, progress=False)
    s = preprocess_dataset(dataset, changed, cache, progress=False, force=True)
    assert len(s["processed"]) == 4
    assert load_case(cache, "case_00000", 1).properties.plan_hash == changed.hash()


def test_resumes_after_a_kill(dataset, tmp_path):
    cache = tmp_path / "cache"
    preprocess_dataset(dataset, PLAN, cache, progress=False)
    d = cache / "stage2" / "case_00002"
    # what a SIGKILL between two writes leaves: a temp file, no properties (the completion marker)
    (d / ".image.npy.abc.part.npy").write_bytes(b"half")
    (d / "properties.json").unlink()
    assert "case_00002" not in list_cases(cache)
    with pytest.raises(KidneysegError, match="not in the stage-2 cache"):
        load_case(cache, "case_00002", 2)
    s = preprocess_dataset(dataset, PLAN, cache, progress=False)
    assert s["processed"] == ["case_00002"]
    assert not list(d.glob(".*part*")) and load_case(cache, "case_00002", 2).image.shape == (16, 13, 23)


def test_empty_foreground_skips_stage2_with_warning(tmp_path):
    manifest = write_dataset(tmp_path / "data", n=3, empty_case=1)
    with pytest.warns(UserWarning, match="case_00001: stage 2 skipped: empty foreground"):
        s = preprocess_dataset(manifest, PLAN, tmp_path / "cache", progress=False)
    assert s["skipped"] == {"case_00001/stage2": "empty foreground (no kidney or tumor voxel): no box centre"}
    assert "case_00001" in list_cases(tmp_path / "cache", stage=1)
    assert "case_00001" not in list_cases(tmp_path / "cache")
    with pytest.raises(KidneysegError, match="has no stage-2 data: empty foreground"):
        load_case(tmp_path / "cache", "case_00001", 2)


def test_box_larger_than_volume_is_padded(tmp_path):
    img, lab = make_case(0)
    big = Plan(**{**PLAN.to_dict(), "box_size_mm": (60.0, 30.0, 30.0)})     # volume is 36 x 16 x 19 mm
    out, olab, props = preprocess_case(img, lab, (3.0, 0.8, 0.8), big, stage=2)
    assert props.padded and out.shape == (40, 38, 38)
    pad_value = (big.clip_low_hu - big.mean_hu) / big.std_hu
    assert out[0, 0, 0] == pytest.approx(pad_value) and olab[0, 0, 0] == 0
    assert (olab == 2).sum() > 0 and set(np.unique(olab)) == {0, 1, 2}


def test_labels_only_manifest_is_a_clear_error(tmp_path):
    manifest = write_dataset(tmp_path / "data", labels_only=True)
    with pytest.raises(KidneysegError, match="no case has a CT image"):
        preprocess_dataset(manifest, PLAN, tmp_path / "cache", progress=False)
    assert not (tmp_path / "cache").exists()


def test_plan_without_box_and_cli(dataset, tmp_path, capsys):
    from kidneyseg.cli import main

    Plan(**{**PLAN.to_dict(), "box_size_mm": None}).save(tmp_path / "nobox.json")
    assert main(["preprocess", str(dataset), "--plan", str(tmp_path / "nobox.json"), "--out",
                 str(tmp_path / "c")]) == 2
    assert "box_size_mm is not set" in capsys.readouterr().err
    PLAN.save(tmp_path / "plan.json")
    assert main(["preprocess", str(dataset), "--plan", str(tmp_path / "plan.json"), "--out",
                 str(tmp_path / "c"), "--workers", "2", "--no-progress"]) == 0
    assert "4 case(s) preprocessed" in capsys.readouterr().out
    assert os.path.isfile(tmp_path / "c" / "manifest.csv")


def test_preprocessing_is_deterministic(dataset, tmp_path):
    import hashlib

    def digest(cache):
        return {p.relative_to(cache).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(cache.rglob("*.npy"))}

    preprocess_dataset(dataset, PLAN, tmp_path / "a", progress=False)
    preprocess_dataset(dataset, PLAN, tmp_path / "b", progress=False, workers=2)
    assert digest(tmp_path / "a") == digest(tmp_path / "b") and len(digest(tmp_path / "a")) == 16


def test_cache_stores_the_plans_image_dtype_and_inference_sees_the_same_numbers(dataset, tmp_path):
    """float16 by default (half the disk of float32): the transform rounds its float32 output to float16
    numbers, so what the cache stores and what inference computes are the same values, and the rounding
    moves a voxel by at most 2**-11 of its magnitude (values are z-scores of clipped HU)."""
    import dataclasses

    from kidneyseg.io import load_volume

    wide = dataclasses.replace(PLAN, image_dtype="float32")
    preprocess_dataset(dataset, PLAN, tmp_path / "half", progress=False)
    preprocess_dataset(dataset, wide, tmp_path / "full", progress=False)
    for st in (1, 2):
        half = load_case(tmp_path / "half", "case_00001", st, mmap=False)
        full = load_case(tmp_path / "full", "case_00001", st, mmap=False)
        assert half.image.dtype == np.float16 and full.image.dtype == np.float32
        assert (tmp_path / "half" / f"stage{st}" / "case_00001" / "image.npy").stat().st_size < \
            0.6 * (tmp_path / "full" / f"stage{st}" / "case_00001" / "image.npy").stat().st_size
        np.testing.assert_array_equal(half.label, full.label)
        bound = np.abs(full.image) * 2.0 ** -11 + 2.0 ** -24
        assert np.all(np.abs(half.image.astype(np.float32) - full.image) <= bound)
        assert half.properties.plan_hash != full.properties.plan_hash  # the dtype is part of the plan
        # inference's transform gives the cache's numbers, as float32 arrays
        img = load_volume(dataset.parent / "case_00001" / "imaging.nii.gz", "image")
        lab = load_volume(dataset.parent / "case_00001" / "segmentation.nii.gz", "label")
        x, _, _ = preprocess_case(img.array, lab.array, img.spacing, PLAN, st)
        assert x.dtype == np.float32
        np.testing.assert_array_equal(x, half.image.astype(np.float32))


def test_unknown_image_dtype_is_refused():
    with pytest.raises(ValueError, match="image_dtype must be one of"):
        Plan(image_dtype="int8")


def test_a_case_too_large_for_the_ram_budget_is_refused_before_any_work(dataset, tmp_path, monkeypatch):
    """One line naming the case and the GiB it needs; nothing is written."""
    from kidneyseg.preprocess.memory import case_memory_bytes

    monkeypatch.setenv("KIDNEYSEG_RAM_BUDGET_GIB", "0.4")  # below the 0.5 GiB a case needs at least
    with pytest.raises(KidneysegError, match=r"case_0000\d: preprocessing this case needs about 0.5 GiB of RAM "
                                             r"but the RAM budget is 0.4 GiB"):
        preprocess_dataset(dataset, PLAN, tmp_path / "cache", progress=False, workers=2)
    assert not (tmp_path / "cache").exists()
    # KiTS19's largest case (1059 x 512 x 512 at 0.5 x 0.81 x 0.81 mm): 2.3 GiB measured, 2.5 estimated
    big = case_memory_bytes((1059, 512, 512), (0.5, 0.81, 0.81), Plan(box_size_mm=(236.0, 199.6, 315.9)))
    assert 2.3 * 2**30 < big < 2.8 * 2**30


def test_fewer_workers_run_when_the_largest_cases_do_not_fit_side_by_side(dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("KIDNEYSEG_RAM_BUDGET_GIB", "0.75")  # one tiny case (0.5 GiB) fits, two do not
    with pytest.warns(UserWarning, match="preprocessing with 1 worker"):
        s = preprocess_dataset(dataset, PLAN, tmp_path / "cache", progress=False, workers=2)
    assert len(s["processed"]) == 4 and set(s["seconds"]) == set(s["processed"])


_DIGEST_CHILD = """
import hashlib, json, sys, warnings
from pathlib import Path
import torch
from kidneyseg.preprocess.cache import preprocess_dataset
from kidneyseg.preprocess.plan import Plan
warnings.simplefilter("ignore")
plan = Plan.from_dict(json.loads(sys.argv[2]))
out = Path(sys.argv[3])
preprocess_dataset(sys.argv[1], plan, out, progress=False, workers=int(sys.argv[4]))
digest = {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.rglob("*.npy"))}
print(json.dumps({"cpu": torch.backends.cpu.get_cpu_capability(), "digest": digest}))
"""


@pytest.mark.slow  # two fresh processes: 10-25 s on 2 cores
def test_same_bytes_whatever_the_cpu_kernels_and_the_workers(tmp_path):
    """Results must not depend on the CPU model or the thread count. PyTorch picks its vector kernels by
    CPU (ATEN_CPU_CAPABILITY: plain C, AVX2, AVX-512, ...); forcing the plain ones in one process and
    letting the machine choose in another, with 1 worker (2 threads) against 2 workers (1 thread each),
    emulates two different machines on this one. Before 345cdfc (fused multiply-adds and tensordot in
    the spline filter) the caches differed between the plain and the AVX kernels on our 2-core machine;
    with single-rounding element-wise operations they are byte-identical."""
    import subprocess
    import sys

    data = write_dataset(tmp_path / "data", n=4, shape=(40, 64, 72))  # > 40 slices after padding
    runs = {}
    for name, cap, workers in (("plain kernels, 1 worker", "default", "1"), ("native kernels, 2 workers", None, "2")):
        env = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"}
        env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
        if cap:
            env["ATEN_CPU_CAPABILITY"] = cap
        r = subprocess.run([sys.executable, "-c", _DIGEST_CHILD, str(data), json.dumps(PLAN.to_dict()),
                            str(tmp_path / name), workers], capture_output=True, text=True, env=env, timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
        runs[name] = json.loads(r.stdout.strip().splitlines()[-1])
    plain, native = runs["plain kernels, 1 worker"], runs["native kernels, 2 workers"]
    assert plain["cpu"] == "DEFAULT" and len(plain["digest"]) == 16
    assert plain["digest"] == native["digest"], (native["cpu"], [k for k in plain["digest"]
                                                                if plain["digest"][k] != native["digest"].get(k)])
