"""Checkpoints that travel between sites: safe loading only, verified hashes, config inside, right network.

The train area's tests (tests/test_train_trainer.py) check the library calls; these check the same
promises where a user meets them: ``kidneyseg predict --model`` and ``kidneyseg train --resume``
with a crafted, tampered or mismatched model folder, plus a source scan that every ``torch.load``
in the package passes ``weights_only=True``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from kidneyseg.cli import main
from kidneyseg.errors import KidneysegError
from kidneyseg.model.checkpoint import load_checkpoint, save_checkpoint, sha256_file
from kidneyseg.model.folder import StageFolder, load_stage
from kidneyseg.train.config import TrainConfig

from . import hardening_helpers as H
from .infer_helpers import make_model_dir

ROOT = Path(__file__).resolve().parents[1]
torch.set_num_threads(2)


class _Payload:
    """Unpickling this object would run ``touch <marker>`` (a classic pickle code-execution payload)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("ck_model"), plan=H.PLAN)


@pytest.fixture
def ct(tmp_path):
    return H.save_nifti(tmp_path / "ct.nii.gz", H.ct_image(), dtype="int16")


def _copy(model_dir: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "model"
    shutil.copytree(model_dir, dst)
    return dst


def _predict(ct: Path, model: Path, out: Path, capsys) -> tuple[int, list[str]]:
    capsys.readouterr()
    rc = main(["predict", "-i", str(ct), "-o", str(out), "--model", str(model), "--no-progress"])
    return rc, H.error_lines(capsys.readouterr().err)


def _evil_checkpoint(path: Path, marker: Path, listed: bool = True) -> None:
    torch.save({"format": "kidneyseg-checkpoint-2", "model": {}, "x": _Payload(marker)}, path)
    sha = path.with_name(path.name + ".sha256")
    if listed:  # an attacker can always write a matching .sha256 beside the file
        sha.write_text(f"{sha256_file(path)}  {path.name}\n")
    else:
        sha.unlink(missing_ok=True)


def test_every_torch_load_in_the_package_is_weights_only():
    assert H.no_torch_load_without_weights_only(ROOT / "kidneyseg") == []


def test_scanner_catches_an_unsafe_call(tmp_path):
    (tmp_path / "m.py").write_text("import torch\nx = torch.load(p, map_location='cpu')\n"
                                   "y = torch.load(p,\n    weights_only=True)\n")
    bad = H.no_torch_load_without_weights_only(tmp_path)
    assert len(bad) == 1 and "m.py:2" in bad[0]


@pytest.mark.parametrize("listed", [True, False], ids=["with-matching-sha256", "without-sha256"])
def test_crafted_pickle_checkpoint_cannot_run_code_in_predict(model_dir, tmp_path, ct, capsys, listed):
    model = _copy(model_dir, tmp_path)
    marker = tmp_path / "pwned"
    _evil_checkpoint(model / "stage1" / "checkpoint_last.pt", marker, listed)
    out = tmp_path / "out" / "pred.nii.gz"
    rc, lines = _predict(ct, model, out, capsys)
    assert not marker.exists(), "the pickle payload ran"
    assert rc == 2 and len(lines) == 1
    assert "stage1/checkpoint_last.pt" in lines[0]
    assert ("not a safe checkpoint" if listed else "no checksum file") in lines[0]
    assert not out.exists() and H.part_files(tmp_path) == []


def test_crafted_pickle_checkpoint_cannot_run_code_on_resume(tmp_path, capsys):
    cache = H.build_cache(tmp_path, n=2)
    cfg = H.tiny_train_config(tmp_path / "cfg.json")
    out = tmp_path / "model"
    (out / "stage1").mkdir(parents=True)
    marker = tmp_path / "pwned"
    _evil_checkpoint(out / "stage1" / "checkpoint_last.pt", marker)
    capsys.readouterr()
    rc = main(["train", "--config", str(cfg), "--cache", str(cache), "--out", str(out), "--resume",
               "--no-progress"])
    lines = H.error_lines(capsys.readouterr().err)
    assert not marker.exists()
    assert rc == 2 and len(lines) == 1, lines
    assert "checkpoint_last.pt" in lines[0] and "not a safe checkpoint" in lines[0], lines


def test_tampered_checkpoint_is_refused(model_dir, tmp_path, ct, capsys):
    model = _copy(model_dir, tmp_path)
    ck = model / "stage2" / "checkpoint_last.pt"
    data = bytearray(ck.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit in the weights
    ck.write_bytes(bytes(data))
    rc, lines = _predict(ct, model, tmp_path / "pred.nii.gz", capsys)
    assert rc == 2 and len(lines) == 1
    assert "stage2/checkpoint_last.pt" in lines[0] and "sha256 does not match" in lines[0]
    assert not (tmp_path / "pred.nii.gz").exists()


def test_checkpoint_carries_its_config_and_a_verified_sha256(model_dir):
    ck = model_dir / "stage1" / "checkpoint_last.pt"
    listed = (model_dir / "stage1" / "checkpoint_last.pt.sha256").read_text().split()
    assert listed[0] == sha256_file(ck) and listed[1] == "checkpoint_last.pt"
    data = load_checkpoint(ck)
    cfg = TrainConfig.from_json(data["config"])
    assert cfg == TrainConfig.from_json((model_dir / "stage1" / "config.json").read_text())
    assert cfg.stage == 1 and cfg.network.in_channels == 1
    net, spec = load_stage(StageFolder(model_dir / "stage1", 1))
    assert spec.network == cfg.network and spec.patch_size == tuple(cfg.patch_size) and not net.training


def test_mismatched_architecture_is_refused_in_predict(model_dir, tmp_path, ct, capsys):
    """Weights of a wider network saved with the config of the narrow one: refused, one clear line."""
    from kidneyseg.model.unet import build_unet

    model = _copy(model_dir, tmp_path)
    stage = model / "stage1"
    cfg = TrainConfig.from_json((stage / "config.json").read_text())
    wider = TrainConfig.from_dict({**cfg.to_dict(), "network": {**cfg.to_dict()["network"], "base_features": 8}})
    save_checkpoint(stage / "checkpoint_last.pt", {"model": build_unet(wider.network).state_dict(),
                                              "config": cfg.to_json(), "epoch": 0})
    rc, lines = _predict(ct, model, tmp_path / "pred.nii.gz", capsys)
    assert rc == 2 and len(lines) == 1
    assert "stage1/checkpoint_last.pt" in lines[0] and "architecture mismatch" in lines[0]
    assert "shape" in lines[0]


def test_config_json_disagreeing_with_checkpoint_is_refused(model_dir, tmp_path, ct, capsys):
    model = _copy(model_dir, tmp_path)
    cfg_path = model / "stage2" / "config.json"
    data = json.loads(cfg_path.read_text())
    data["network"]["residual"] = not data["network"].get("residual", True)
    cfg_path.write_text(json.dumps(data))
    rc, lines = _predict(ct, model, tmp_path / "pred.nii.gz", capsys)
    assert rc == 2 and len(lines) == 1
    assert "stage2/config.json" in lines[0] and "architecture mismatch" in lines[0]


def test_foreign_checkpoint_is_refused(tmp_path):
    ck = tmp_path / "checkpoint_last.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, ck)  # a plain torch file from elsewhere
    (tmp_path / "checkpoint_last.pt.sha256").write_text(f"{sha256_file(ck)}  checkpoint_last.pt\n")
    with pytest.raises(KidneysegError, match="not a kidneyseg checkpoint"):
        load_checkpoint(ck)
