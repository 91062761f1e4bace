"""Trainer: metrics CSV, checkpoints, exact resume, --extend-epochs, kill-safety, config refusal."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from kidneyseg.errors import KidneysegError
from kidneyseg.model.checkpoint import load_checkpoint
from kidneyseg.model.folder import StageFolder, load_stage
from kidneyseg.train.config import TrainConfig
from kidneyseg.train.trainer import Trainer

torch.set_num_threads(2)
ROOT = Path(__file__).resolve().parents[1]


def toy_volume(rng: np.random.Generator, shape=(16, 32, 32)):
    """A noisy (z, y, x) volume with a bright ellipsoid 'kidney' (1) holding a darker 'tumor' (2)."""
    z, y, x = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij")
    c = [rng.uniform(0.35, 0.65) * s for s in shape]
    r = [rng.uniform(0.2, 0.3) * s for s in shape]
    d = ((z - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((x - c[2]) / r[2]) ** 2
    label = (d < 1).astype(np.uint8)
    dt = ((z - c[0]) / (0.4 * r[0])) ** 2 + ((y - c[1]) / (0.4 * r[1])) ** 2 + ((x - c[2] - 0.3 * r[2]) / (0.4 * r[2])) ** 2
    label[(dt < 1) & (label == 1)] = 2
    image = np.where(label == 1, 2.0, np.where(label == 2, 1.0, 0.0)).astype(np.float32)
    image += rng.normal(0, 0.5, shape).astype(np.float32)
    return image, label


def toy_source(n_cases=4, shape=(8, 16, 16), batch=2, channels=1, base_seed=0):
    """``(epoch, seed) -> iterator`` of whole-volume batches drawn from a fixed set of toy cases."""
    rng0 = np.random.default_rng(base_seed)
    cases = [toy_volume(rng0, shape) for _ in range(n_cases)]

    def make(epoch, seed):
        rng = np.random.default_rng(seed)
        while True:
            idx = rng.integers(0, n_cases, batch)
            img = np.stack([cases[i][0] for i in idx])[:, None]
            lab = np.stack([cases[i][1] for i in idx])[:, None].astype(np.int64)
            if channels > 1:
                prior = np.concatenate([(lab == 1), (lab == 2)], 1).astype(np.float32)
                img = np.concatenate([img, prior], 1)
            yield torch.from_numpy(img), torch.from_numpy(lab)

    return make


def tiny_config(**over) -> TrainConfig:
    base = {"epochs": 4, "iterations_per_epoch": 2, "val_iterations": 1, "batch_size": 2,
            "patch_size": [8, 16, 16], "progress": False, "prefetch": 1,
            "network": {"n_stages": 3, "base_features": 4, "strides": [[1, 1, 1], [1, 2, 2], [2, 2, 2]]},
            "scheduler": {"patience": 1}}
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            base[k] = {**base[k], **v}
        else:
            base[k] = v
    return TrainConfig.from_dict(base)


def weights(path):
    return load_checkpoint(path)["model"]


def test_trains_writes_metrics_and_checkpoints(tmp_path):
    cfg = tiny_config(epochs=2)
    hist = Trainer(cfg, tmp_path, toy_source(), val_batches=toy_source(base_seed=1)).fit()
    assert len(hist) == 2
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    for col in ("train_loss", "val_loss", "val_dice_kidney", "val_dice_tumor", "lr", "epoch_time_s"):
        assert rows[-1][col] != ""
    for name in ("checkpoint_last.pt", "checkpoint_best.pt", "config.json", "checkpoint_last.pt.sha256"):
        assert (tmp_path / name).is_file(), name
    assert json.loads((tmp_path / "config.json").read_text())["epochs"] == 2
    model, spec = load_stage(StageFolder(tmp_path, 1))
    assert not model.training and spec.network == cfg.network
    out = model(torch.zeros(1, 1, 16, 32, 32))
    assert out.shape == (1, 3, 16, 32, 32)


@pytest.mark.parametrize("scheduler", ["plateau"])
def test_resume_is_exact(tmp_path, scheduler):
    cfg = tiny_config(scheduler={"name": scheduler})
    straight = tmp_path / "straight"
    Trainer(cfg, straight, toy_source(), toy_source(base_seed=1)).fit()
    split = tmp_path / "split"
    Trainer(cfg, split, toy_source(), toy_source(base_seed=1)).fit(stop_after=2)
    assert load_checkpoint(split / "checkpoint_last.pt")["epoch"] == 2
    Trainer(cfg, split, toy_source(), toy_source(base_seed=1)).fit(resume=True)
    a, b = weights(straight / "checkpoint_last.pt"), weights(split / "checkpoint_last.pt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    la = [r["lr"] for r in csv.DictReader(open(straight / "metrics.csv"))]
    lb = [r["lr"] for r in csv.DictReader(open(split / "metrics.csv"))]
    assert la == lb and len(la) == 4


def test_resume_finished_run_does_nothing_and_extend_has_no_lr_jump(tmp_path):
    cfg = tiny_config(epochs=2, scheduler={"name": "poly"})
    first = Trainer(cfg, tmp_path, toy_source())
    first.fit()
    assert first.epochs_run == 2
    before = weights(tmp_path / "checkpoint_last.pt")
    again = Trainer(cfg, tmp_path, toy_source())
    again.fit(resume=True)
    assert again.epochs_run == 0  # train_stage records such a row as "no_work"
    after = weights(tmp_path / "checkpoint_last.pt")
    assert all(torch.equal(before[k], after[k]) for k in before)
    t = Trainer(cfg, tmp_path, toy_source())
    t.fit(resume=True, extend_epochs=2)
    assert t.epochs_run == 2
    lrs = [float(r["lr"]) for r in csv.DictReader(open(tmp_path / "metrics.csv"))]
    assert len(lrs) == 4 and t.config.epochs == 4
    # poly over 2 epochs uses 1e-2 then 1e-2 * 0.5**0.9 and ends at 0; extended, it decays on from
    # the last lr used (anchored at epoch index 1) to 0 at the new end, with no jump back up
    assert lrs[0] == pytest.approx(1e-2) and lrs[1] == pytest.approx(1e-2 * 0.5 ** 0.9)
    assert lrs[2] == pytest.approx(lrs[1] * (2 / 3) ** 0.9)
    assert lrs[3] == pytest.approx(lrs[1] * (1 / 3) ** 0.9)


def test_unknown_config_key_lists_valid_keys():
    with pytest.raises(KidneysegError, match=r"unknown key 'epoch'; valid keys: .*iterations_per_epoch"):
        TrainConfig.from_dict({"epoch": 3})
    with pytest.raises(KidneysegError, match=r"config.network: unknown key 'featurs'"):
        TrainConfig.from_dict({"network": {"featurs": [1]}})
    with pytest.raises(KidneysegError, match="patch_size must be"):
        TrainConfig.from_dict({"patch_size": [100, 128, 128]})


def test_config_json_roundtrip():
    cfg = tiny_config(stage=2)
    assert cfg.network.in_channels == 3
    again = TrainConfig.from_json(cfg.to_json())
    assert again == cfg
    d = TrainConfig().to_dict()
    assert d["optimizer"] == {"name": "sgd", "lr": 1e-2, "momentum": 0.99, "nesterov": True, "weight_decay": 3e-5}
    assert d["scheduler"]["patience"] == 30 and d["scheduler"]["threshold"] == 1e-3
    assert d["scheduler"]["min_lr"] == 1e-6 and d["epochs"] == 350 and d["batch_size"] == 2


def test_checkpoint_tamper_pickle_and_architecture_refused(tmp_path):
    Trainer(tiny_config(epochs=1), tmp_path, toy_source()).fit()
    ck = tmp_path / "checkpoint_last.pt"
    # architecture mismatch on resume
    other = tiny_config(epochs=1, network={"base_features": 8})
    with pytest.raises(KidneysegError, match="architecture mismatch"):
        Trainer(other, tmp_path, toy_source()).fit(resume=True)
    # tampered bytes
    data = bytearray(ck.read_bytes())
    data[-10] ^= 0xFF
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "checkpoint_last.pt").write_bytes(bytes(data))
    (bad / "checkpoint_last.pt.sha256").write_text((tmp_path / "checkpoint_last.pt.sha256").read_text())
    with pytest.raises(KidneysegError, match="sha256 does not match"):
        load_checkpoint(bad / "checkpoint_last.pt")
    # a crafted pickle that would run code is refused by weights_only, even with a valid sha256
    evil = tmp_path / "evil"
    evil.mkdir()
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"format": "kidneyseg-checkpoint-2", "x": Evil()}, evil / "checkpoint_last.pt")
    from kidneyseg.model.checkpoint import sha256_file
    (evil / "checkpoint_last.pt.sha256").write_text(f"{sha256_file(evil / 'checkpoint_last.pt')}  checkpoint_last.pt\n")
    with pytest.raises(KidneysegError, match="not a safe checkpoint"):
        load_checkpoint(evil / "checkpoint_last.pt")
    assert not marker.exists()
    # no checksum file
    (bad / "checkpoint_last.pt.sha256").unlink()
    with pytest.raises(KidneysegError, match="no checksum file"):
        load_checkpoint(bad / "checkpoint_last.pt")


def test_full_validation_hook_and_hooks(tmp_path):
    calls = []

    class H:
        def on_epoch_end(self, trainer, epoch, metrics):
            calls.append(epoch)
            metrics["extra"] = 1.5

    def full_val(model, epoch):
        assert not model.training
        return {"kidney_dice": np.float64(0.5), "cases": np.int64(3)}  # numpy values must not break loading

    cfg = tiny_config(epochs=2, full_val_every=2)
    Trainer(cfg, tmp_path, toy_source(), full_validation=full_val, hooks=[H()]).fit()
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert calls == [1, 2]
    assert rows[0]["full_kidney_dice"] == "" and rows[1]["full_kidney_dice"] == "0.5"
    assert rows[1]["extra"] == "1.5" and rows[1]["full_cases"] == "3"
    assert load_checkpoint(tmp_path / "checkpoint_last.pt")["history"][1]["full_kidney_dice"] == 0.5


KILL_SCRIPT = r"""
import sys, torch
sys.path.insert(0, {root!r})
from tests.test_train_trainer import tiny_config, toy_source
from kidneyseg.train.trainer import Trainer
torch.set_num_threads(1)
epochs = int(sys.argv[2])
src = toy_source()
def slow(epoch, seed):
    import time
    for b in src(epoch, seed):
        time.sleep(0.15)
        yield b
cfg = tiny_config(epochs=epochs, iterations_per_epoch=3)
Trainer(cfg, sys.argv[1], slow, toy_source(base_seed=1)).fit(resume=sys.argv[3] == "1")
"""


def test_sigkill_then_resume_matches_straight_run(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(KILL_SCRIPT.format(root=str(ROOT)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    subprocess.run([sys.executable, str(script), str(straight), "3", "0"], check=True, env=env, timeout=120)
    proc = subprocess.Popen([sys.executable, str(script), str(killed), "3", "0"], env=env)
    deadline = time.time() + 90
    while not (killed / "checkpoint_last.pt").exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # somewhere inside epoch 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert load_checkpoint(killed / "checkpoint_last.pt")["epoch"] < 3
    subprocess.run([sys.executable, str(script), str(killed), "3", "1"], check=True, env=env, timeout=120)
    a, b = weights(straight / "checkpoint_last.pt"), weights(killed / "checkpoint_last.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not list(killed.glob(".*part*"))


@pytest.mark.slow
def test_cli_trains_both_stages_from_a_phantom_cache(tmp_path):
    """`kidneyseg train` on a real cache (phantoms -> plan -> preprocess), stage 1 then stage 2."""
    pytest.importorskip("kidneyseg.preprocess.cache")
    from kidneyseg.cli import main
    from kidneyseg.data.phantom import write_phantoms
    from kidneyseg.preprocess.cache import preprocess_dataset
    from kidneyseg.preprocess.fit import fit_plan

    manifest = write_phantoms(tmp_path / "ph", 6, 0, size=48, progress=False)  # 5 train, 1 val
    plan = fit_plan(manifest, [2.0, 1.6, 1.6], [4.0, 3.2, 3.2], progress=False)
    plan.save(tmp_path / "plan.json")
    preprocess_dataset(manifest, tmp_path / "plan.json", tmp_path / "cache", progress=False)
    cfg = tmp_path / "cfg.json"
    assert main(["train", "--write-default-config", str(cfg), "--preset", "demo"]) == 0
    data = json.loads(cfg.read_text())
    data.update(epochs=1, iterations_per_epoch=2, val_iterations=1, patch_size=[8, 16, 16], augment={})
    cfg.write_text(json.dumps(data))
    out = tmp_path / "model"
    for stage in ("1", "2"):
        assert main(["train", "--config", str(cfg), "--stage", stage, "--cache", str(tmp_path / "cache"),
                     "--out", str(out), "--no-progress"]) == 0
    assert (out / "plan.json").is_file()
    model, spec = load_stage(StageFolder(out / "stage2", 2))
    assert spec.stage == 2 and spec.network.in_channels == 3
    assert model(torch.zeros(1, 3, 8, 16, 16)).shape == (1, 3, 8, 16, 16)
    rows = list(csv.DictReader(open(out / "stage1" / "metrics.csv")))
    assert len(rows) == 1 and rows[0]["val_dice_kidney"] != ""
    # resume of a finished run is a no-op; extend adds an epoch
    assert main(["train", "--config", str(cfg), "--stage", "1", "--cache", str(tmp_path / "cache"), "--out", str(out),
                 "--extend-epochs", "1", "--no-progress"]) == 0
    assert len(list(csv.DictReader(open(out / "stage1" / "metrics.csv")))) == 2
    # bad config key: one clear line, exit 2
    bad = tmp_path / "bad.json"
    bad.write_text('{"epoch": 3}')
    assert main(["train", "--config", str(bad), "--stage", "1", "--cache", str(tmp_path / "cache"),
                 "--out", str(tmp_path / "m2")]) == 2


@pytest.mark.parametrize("native_bf16", [True, False])
def test_precision_is_printed_once_and_recorded_in_runtime_json(tmp_path, monkeypatch, capsys, native_bf16):
    """auto trains in bf16 (channels-last) where the CPU runs bf16, else in fp32; the choice is
    printed once per run and written to the stage's runtime.json."""
    from kidneyseg import runtime

    monkeypatch.setattr(runtime, "cpu_bf16_support", lambda: "AVX-512 BF16" if native_bf16 else None)
    trainer = Trainer(tiny_config(epochs=2), tmp_path, toy_source())
    trainer.fit()
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("runtime:")]
    want = "bf16" if native_bf16 else "fp32"
    assert len(lines) == 1 and f"precision {want}" in lines[0], lines
    info = json.loads((tmp_path / "runtime.json").read_text())
    assert info["precision"] == want and info["precision_setting"] == "auto"
    assert info["memory_layout"] == ("channels_last_3d" if native_bf16 else "channels_first")
    conv = next(m for m in trainer.model.modules() if isinstance(m, torch.nn.Conv3d) and m.in_channels > 1)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last_3d) == native_bf16
    assert np.isfinite(trainer.history[-1]["train_loss"])


def test_resume_runs_with_todays_precision(tmp_path, monkeypatch):
    """The precision is how a run executes, not part of the model: a resumed run uses the one given now."""
    from kidneyseg import runtime

    monkeypatch.setattr(runtime, "cpu_bf16_support", lambda: "AVX-512 BF16")
    Trainer(tiny_config(epochs=1, precision="fp32"), tmp_path, toy_source()).fit()
    t = Trainer(tiny_config(epochs=2, precision="bf16"), tmp_path, toy_source())
    t.fit(resume=True, extend_epochs=1)
    assert t.runtime.precision == "bf16" and t.config.precision == "bf16" and t.epoch == 2
    assert json.loads((tmp_path / "config.json").read_text())["precision"] == "bf16"
    assert json.loads((tmp_path / "runtime.json").read_text())["precision"] == "bf16"


def test_a_cache_without_plan_is_refused_before_training(tmp_path):
    """Training never starts (or returns silently) on a folder that is not a preprocess cache."""
    from kidneyseg.errors import KidneysegError
    from kidneyseg.train.config import preset
    from kidneyseg.train.stage import train_stage

    cache = tmp_path / "cache"
    cache.mkdir()
    with pytest.raises(KidneysegError, match="plan.json: the cache has no plan.json"):
        train_stage(preset("demo", 1), cache, tmp_path / "model", device="cpu")
    assert not (tmp_path / "model").exists()


def test_resume_rebuilds_metrics_csv_a_kill_left_behind_the_checkpoint(tmp_path):
    """A kill between the checkpoint save and the metrics.csv rewrite leaves the csv an epoch short;
    resuming (even with no epoch left) rebuilds it from the checkpoint's history."""
    Trainer(tiny_config(epochs=2), tmp_path, toy_source()).fit()
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert len(lines) == 3
    (tmp_path / "metrics.csv").write_text("\n".join(lines[:2]) + "\n")   # as after the kill
    Trainer(tiny_config(epochs=2), tmp_path, toy_source()).fit(resume=True)
    assert (tmp_path / "metrics.csv").read_text().splitlines() == lines
