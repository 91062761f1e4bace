"""Kill safety: SIGKILL a real ``kidneyseg`` process, then check what is on disk and that a re-run finishes.

To kill *inside* a file write (the dangerous moment) rather than wherever the scheduler happens to
be, the command runs through a small wrapper that delays one chosen ``os.replace`` of an atomic
write (the rename of ``.<name>.<random>.part<suffix>`` onto ``<name>``): the wrapper writes a marker,
sleeps, and the test sends SIGKILL on seeing the marker. At that moment the new data sits complete
in the hidden temporary file and the target is still the old file (or absent). A kill at a random
moment of training is tested too.

What must hold after a kill: every visible output is complete (it loads, it verifies), nothing
half-written carries an output's name, and the re-run completes the work.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from . import hardening_helpers as H

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]

WRAPPER = r"""
import os, sys, time
from pathlib import Path
sys.path.insert(0, {root!r})
real_replace = os.replace
suffix, nth, mark = os.environ["HARD_SUFFIX"], int(os.environ["HARD_NTH"]), os.environ["HARD_MARK"]
seen = [0]

def replace(src, dst, *a, **k):
    if ".part" in os.path.basename(str(src)) and str(dst).endswith(suffix):
        seen[0] += 1
        if seen[0] == nth:
            Path(mark + ".tmp").write_text(str(dst))
            real_replace(mark + ".tmp", mark)  # whole or absent: the test reads it the moment it appears
            time.sleep(120)  # killed here, between a complete temp file and its rename
    return real_replace(src, dst, *a, **k)

os.replace = replace
from kidneyseg.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _kill_inside_write(tmp_path: Path, argv: list[str], suffix: str, nth: int, timeout: float = 120) -> Path:
    """Run ``kidneyseg argv``; SIGKILL it inside the ``nth`` atomic rename onto a ``*suffix`` target.

    Returns the target whose write was interrupted.
    """
    script = tmp_path / "wrapper.py"
    script.write_text(WRAPPER.format(root=str(ROOT)))
    mark = tmp_path / f"in_write_{time.monotonic_ns()}"
    env = {**_env(), "HARD_SUFFIX": suffix, "HARD_NTH": str(nth), "HARD_MARK": str(mark)}
    proc = subprocess.Popen([sys.executable, str(script), *argv], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.time() + timeout
    while not mark.exists():
        if proc.poll() is not None:
            pytest.fail(f"process ended before the write ({proc.returncode}): {proc.stderr.read().decode()[-2000:]}")
        if time.time() > deadline:
            proc.kill()
            pytest.fail("the chosen write never happened")
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    return Path(mark.read_text())


def _kidneyseg(argv: list[str], timeout: float = 150) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kidneyseg", *argv], env=_env(), capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def _visible(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))


# ---------------------------------------------------------------------------------------- train
def _train_argv(cfg: Path, cache: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--config", str(cfg), "--cache", str(cache), "--out", str(out), "--no-progress", *extra]


def _epochs(stage_dir: Path) -> list[int]:
    return [int(r["epoch"]) for r in csv.DictReader(open(stage_dir / "metrics.csv"))]


def test_train_killed_inside_a_checkpoint_save_resumes_to_the_same_weights(tmp_path):
    from kidneyseg.model.checkpoint import load_checkpoint

    cache = H.build_cache(tmp_path, n=3)
    cfg = H.tiny_train_config(tmp_path / "cfg.json", epochs=3, iterations=2)
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    r = _kidneyseg(_train_argv(cfg, cache, straight))
    assert r.returncode == 0, r.stderr
    # killed while renaming epoch 2's checkpoint_last.pt into place
    target = _kill_inside_write(tmp_path, _train_argv(cfg, cache, killed), "checkpoint_last.pt", nth=2)
    stage = killed / "stage1"
    assert target == stage / "checkpoint_last.pt"
    assert load_checkpoint(target)["epoch"] == 1  # the previous checkpoint is complete and verifies
    assert list(stage.glob(".checkpoint_last.pt.*.part*")), "the kill did not land inside the write"
    r = _kidneyseg(_train_argv(cfg, cache, killed, "--resume"))
    assert r.returncode == 0, r.stderr
    assert load_checkpoint(stage / "checkpoint_last.pt")["epoch"] == 3
    assert _epochs(stage) == [1, 2, 3]
    a = load_checkpoint(straight / "stage1" / "checkpoint_last.pt")["model"]
    b = load_checkpoint(stage / "checkpoint_last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [p.name for p in _visible(stage) if ".part" in p.name] == []


def test_train_killed_at_a_random_moment_resumes_and_finishes(tmp_path):
    from kidneyseg.model.checkpoint import load_checkpoint

    cache = H.build_cache(tmp_path, n=3)
    cfg = H.tiny_train_config(tmp_path / "cfg.json", epochs=3, iterations=3)
    out = tmp_path / "model"
    proc = subprocess.Popen([sys.executable, "-m", "kidneyseg", *_train_argv(cfg, cache, out)], env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    ck = out / "stage1" / "checkpoint_last.pt"
    deadline = time.time() + 120
    while not ck.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.5)  # somewhere in epoch 2
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert ck.exists(), "no checkpoint before the kill"
    r = _kidneyseg(_train_argv(cfg, cache, out, "--resume"))
    assert r.returncode == 0, r.stderr
    assert load_checkpoint(ck)["epoch"] == 3 and _epochs(out / "stage1") == [1, 2, 3]


# ----------------------------------------------------------------------------------- preprocess
def test_preprocess_killed_inside_a_write_leaves_no_half_case_and_rerun_completes(tmp_path):
    from kidneyseg.preprocess.cache import list_cases, load_case, preprocess_dataset

    manifest = H.write_dataset(tmp_path / "data", n=3)
    plan = H.write_plan(tmp_path / "plan.json")
    cache = tmp_path / "cache"
    argv = ["preprocess", str(manifest), "--plan", str(plan), "--out", str(cache), "--no-progress"]
    target = _kill_inside_write(tmp_path, argv, "label.npy", nth=2)
    case_dir = target.parent
    assert not target.exists() and not (case_dir / "properties.json").exists()
    assert list(case_dir.glob(".label.npy.*.part*")), "the kill did not land inside the write"
    # the interrupted case is not offered to training; complete ones are
    listed = {(st, c) for st in (1, 2) for c in list_cases(cache, stage=st)}
    assert all((cache / f"stage{st}" / c / "properties.json").is_file() for st, c in listed)
    for st, c in listed:
        load_case(cache, c, st)
    r = _kidneyseg(argv)
    assert r.returncode == 0, r.stderr
    assert H.part_files(cache) == []
    for st in (1, 2):
        assert list_cases(cache, stage=st) == ["case_00000", "case_00001", "case_00002"]
    # and the resumed cache equals one built without interruption
    preprocess_dataset(manifest, plan, tmp_path / "clean", progress=False)
    got = {p.relative_to(cache): p.read_bytes() for p in cache.rglob("*.npy")}
    want = {p.relative_to(tmp_path / "clean"): p.read_bytes() for p in (tmp_path / "clean").rglob("*.npy")}
    assert got.keys() == want.keys() and all(got[k] == want[k] for k in got)


# -------------------------------------------------------------------------------------- predict
def test_predict_killed_inside_a_write_leaves_complete_outputs_only_and_rerun_completes(tmp_path):
    from .infer_helpers import make_model_dir

    model = make_model_dir(tmp_path / "model", plan=H.PLAN)
    inputs = tmp_path / "in"
    for i in range(3):
        H.save_nifti(inputs / f"case_{i:05d}.nii.gz", H.ct_image(seed=i), dtype=np.int16)
    out = tmp_path / "pred"
    argv = ["predict", "-i", str(inputs), "-o", str(out), "--model", str(model), "--no-progress"]
    target = _kill_inside_write(tmp_path, argv, ".nii.gz", nth=2)
    assert target == out / "case_00001.nii.gz" and not target.exists()
    assert list(out.glob(".case_00001.nii.gz.*.part*")), "the kill did not land inside the write"
    visible = _visible(out)
    assert [p.name for p in visible] == ["case_00000.nii.gz"]
    for p in visible:  # complete: loads fully with the input's geometry
        assert np.asanyarray(nib.load(str(p)).dataobj).shape == H.SHAPE
    r = _kidneyseg(argv)
    assert r.returncode == 0, r.stderr
    assert "case_00000" in r.stdout and "skipped" in r.stdout  # complete outputs are not redone
    assert [p.name for p in _visible(out)] == ["case_00000.nii.gz", "case_00001.nii.gz", "case_00002.nii.gz"]
    for p in _visible(out):
        lab = np.asanyarray(nib.load(str(p)).dataobj)
        assert lab.shape == H.SHAPE and set(np.unique(lab)) <= {0, 1, 2}
    # the killed run's hidden temp file is never taken for an output (evaluate skips dot files)
    from kidneyseg.evaluate.report import find_label_files

    assert sorted(find_label_files(out)) == ["case_00000", "case_00001", "case_00002"]
