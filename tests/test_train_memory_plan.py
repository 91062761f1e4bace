"""kidneyseg.train.memory_plan: the estimate of one step's memory, checked against a real step; refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kidneyseg.errors import KidneysegError
from kidneyseg.train.config import preset
from kidneyseg.train.memory_plan import GIB, check_memory_plan, training_memory_plan

ROOT = Path(__file__).resolve().parents[1]
STEP = dict(epochs=1, iterations_per_epoch=2, val_iterations=0, progress=False, prefetch=0, augment=None)


@pytest.mark.slow  # two fresh processes training real steps: about a minute on 2 cores
@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc (VmHWM)")
@pytest.mark.parametrize("name,cfg", [
    # the thesis's 6-stage topology (residual, deep supervision) with 8 base features: seconds on a CPU
    ("thesis topology, 8 features, 64^3, batch 2", preset("thesis", 1, {"network": {"base_features": 8},
                                                                         "patch_size": [64, 64, 64], **STEP})),
    # precision auto: bf16 + channels-last on a CPU with native bf16, fp32 elsewhere
    ("demo network, stage 2, 32 x 128 x 128", preset("demo", 2, {"patch_size": [32, 128, 128], **STEP})),
    ("demo network, stage 2, 32 x 128 x 128, fp32", preset("demo", 2, {"patch_size": [32, 128, 128],
                                                                       "precision": "fp32", **STEP})),
])
def test_estimate_is_within_30_percent_of_a_real_steps_peak(name, cfg, tmp_path):
    """Two real optimizer steps of the Trainer in a fresh process (the second has the momentum buffers):
    the growth of its peak RSS over the RSS before the network existed is the step's memory."""
    r = subprocess.run([sys.executable, str(ROOT / "tests" / "_memory_step.py"), cfg.to_json(), str(tmp_path)],
                       capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    m = json.loads(r.stdout.strip().splitlines()[-1])
    measured = m["peak"] - m["baseline"]
    assert measured > 100 * 2**20, m  # a step big enough for the comparison to mean something
    assert abs(m["estimate"] - measured) <= 0.3 * measured, (name, m["estimate"] / GIB, measured / GIB)


def test_activations_scale_with_batch_and_patch_and_stages_are_listed():
    a = training_memory_plan(preset("demo", 1, {"patch_size": [16, 64, 64]}))
    b = training_memory_plan(preset("demo", 1, {"patch_size": [32, 64, 64], "batch_size": 4}))
    assert b.network_activation_bytes == 4 * a.network_activation_bytes
    assert b.loss_activation_bytes == pytest.approx(4 * a.loss_activation_bytes, rel=1e-6)
    assert b.weight_bytes == a.weight_bytes == 4 * a.parameters
    assert [s.shape for s in a.stages] == [(16, 64, 64), (16, 32, 32), (8, 16, 16), (4, 8, 8)]
    assert "stage 3:" in a.table() and "total" in a.table()


def test_the_thesis_step_on_cpu_is_about_twelve_gib():
    """The full network at 128^3, batch 2, fp32: the rehearsal's CPU step (docs/full_scale.md)."""
    plan = training_memory_plan(preset("thesis", 2, {"precision": "fp32"}))
    assert 30e6 < plan.parameters < 33e6 and plan.precision == "fp32"
    assert 10 * GIB < plan.total_bytes < 13 * GIB


def test_the_plan_follows_the_runtime_precision(monkeypatch):
    """``auto`` resolves as the trainer resolves it (kidneyseg.runtime): bf16 on a CPU with native
    bf16, where the network's saved activations are counted from a real autocast pass (the bf16 copies
    the convolutions keep, the norms' fp32 inputs) rather than on the meta device; on a CPU without it
    ``auto`` is fp32 and ``bf16`` is refused."""
    from kidneyseg import runtime

    cfg = {"patch_size": [16, 64, 64]}
    monkeypatch.setattr(runtime, "cpu_bf16_support", lambda: "AVX-512 BF16")
    auto = training_memory_plan(preset("demo", 2, cfg))
    fp32 = training_memory_plan(preset("demo", 2, {**cfg, "precision": "fp32"}))
    assert (auto.precision, fp32.precision) == ("bf16", "fp32")
    assert 0 < auto.network_activation_bytes < fp32.network_activation_bytes
    assert auto.weight_bytes == fp32.weight_bytes  # fp32 master weights either way
    monkeypatch.setattr(runtime, "cpu_bf16_support", lambda: None)
    assert training_memory_plan(preset("demo", 2, cfg)).precision == "fp32"
    with pytest.raises(KidneysegError, match="--precision bf16 on an unsupported device"):
        training_memory_plan(preset("demo", 2, {**cfg, "precision": "bf16"}))


def test_too_large_a_step_is_refused_naming_the_settings():
    plan = training_memory_plan(preset("demo", 1, {"patch_size": [16, 64, 64]}))
    check_memory_plan(plan, plan.total_bytes, "the RAM budget")  # fits exactly
    with pytest.raises(KidneysegError, match=r"needs about .* GiB .*batch_size 2 x patch_size \[16, 64, 64\].*"
                                             r"the RAM budget is .* lower batch_size or patch_size"):
        check_memory_plan(plan, plan.total_bytes // 2, "the RAM budget")


def test_cli_dry_run_prints_the_plan_and_a_budget_refusal_is_one_line(tmp_path, capsys):
    from kidneyseg.cli import main

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cfg = tmp_path / "cfg.json"
    cfg.write_text(preset("demo", 2, {"patch_size": [16, 64, 64]}).to_json())
    assert main(["train", "--config", str(cfg), "--dry-run", "--device", "auto"]) == 0
    out = capsys.readouterr().out
    assert "memory plan: batch 2 x patch [16, 64, 64]" in out and "dry run" in out and not (tmp_path / "model").exists()
    bad = subprocess.run([sys.executable, "-m", "kidneyseg", "train", "--config", str(cfg), "--dry-run",
                          "--memory-budget", "0.001"], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "lower batch_size or patch_size" in bad.stderr


def test_training_refuses_before_loading_any_case(tmp_path, monkeypatch):
    """The refusal comes first: a cache folder that holds nothing is never opened."""
    from kidneyseg.train.stage import train_stage

    from kidneyseg.preprocess.plan import Plan

    from .infer_helpers import PLAN

    (tmp_path / "cache").mkdir()
    Plan(**PLAN).save(tmp_path / "cache" / "plan.json")  # a cache's plan (it decides the dataset), no case
    monkeypatch.setenv("KIDNEYSEG_RAM_BUDGET_GIB", "0.001")
    with pytest.raises(KidneysegError, match="the RAM budget is 0.0 GiB; lower batch_size or patch_size"):
        train_stage(preset("demo", 1, {"patch_size": [16, 64, 64]}), tmp_path / "cache", tmp_path / "model")
    assert not (tmp_path / "model").exists()


def test_training_writes_the_plan_and_prints_one_line(tmp_path, capsys):
    """Stages trained side by side print one line each; the table goes to the stage folder (the CLI prints it)."""
    from kidneyseg.train.config import load_config
    from kidneyseg.train.stage import train_stage

    from . import hardening_helpers as H

    cache = H.build_cache(tmp_path, n=2)
    cfg = load_config(H.tiny_train_config(tmp_path / "cfg.json", epochs=1, iterations=1))
    train_stage(cfg, cache, tmp_path / "model")
    out = capsys.readouterr().out
    table = (tmp_path / "model" / "stage1" / "memory_plan.txt").read_text()
    assert table.startswith("memory plan: batch 2 x patch [8, 16, 16]") and "total" in table
    plan_lines = [ln for ln in out.splitlines() if "memory plan" in ln]
    assert len(plan_lines) == 1 and "GiB per training step" in plan_lines[0] and "total" not in out
    train_stage(cfg, cache, tmp_path / "model2", full_plan=True)
    assert table.splitlines()[-1] in capsys.readouterr().out


def test_a_resumed_finished_training_records_no_work(tmp_path, monkeypatch):
    """The rehearsal resumes across sessions: re-entering a finished stage must not replace the row
    of the training that did the work (resources.json, latest_rows)."""
    from kidneyseg.resources import ENV_RUN_DIR, latest_rows, read_resources
    from kidneyseg.train.config import load_config
    from kidneyseg.train.stage import train_stage

    from . import hardening_helpers as H

    monkeypatch.setenv(ENV_RUN_DIR, str(tmp_path / "run"))
    cache = H.build_cache(tmp_path, n=2)
    cfg = load_config(H.tiny_train_config(tmp_path / "cfg.json", epochs=1, iterations=1))
    train_stage(cfg, cache, tmp_path / "model")
    train_stage(cfg, cache, tmp_path / "model", resume=True)
    rows = [r for r in read_resources(tmp_path / "run") if r["step"] == "train stage 1"]
    assert [r["details"]["epochs_run"] for r in rows] == [1, 0]
    assert [r["details"].get("no_work") for r in rows] == [None, "already trained"]
    assert [r for r in latest_rows(rows)] == [rows[0]]
