"""Determinism: one seed, one result — phantoms, the preprocessed cache and a CPU training run.

Hashes are over array bytes (and affines), not over ``.nii.gz`` bytes: gzip stores a time stamp,
so two identical volumes written a second apart differ as files but not as data.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from kidneyseg.cli import main

from . import hardening_helpers as H

torch.set_num_threads(2)


def _h(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str((a.dtype, a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _nifti_hashes(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*.nii.gz")):
        img = nib.load(str(p))
        out[str(p.relative_to(root))] = _h(np.asanyarray(img.dataobj), img.affine)
    return out


def _file_hashes(root: Path, pattern: str) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob(pattern))}


def test_same_seed_same_phantom_in_memory():
    from kidneyseg.data.phantom import make_phantom

    a_img, a_lab = make_phantom(7, size=48)
    b_img, b_lab = make_phantom(7, size=48)
    c_img, _ = make_phantom(8, size=48)
    assert _h(a_img.array, a_img.affine, a_lab.array) == _h(b_img.array, b_img.affine, b_lab.array)
    assert _h(a_img.array) != _h(c_img.array)  # the seed matters (the test can fail)


def test_same_seed_same_phantom_files(tmp_path, capsys):
    for name in ("a", "b"):
        assert main(["phantom", str(tmp_path / name), "--cases", "2", "--seed", "3", "--size", "48",
                     "--no-progress"]) == 0
    a, b = _nifti_hashes(tmp_path / "a"), _nifti_hashes(tmp_path / "b")
    assert len(a) == 4 and a == b
    assert (tmp_path / "a" / "manifest.csv").read_text() == (tmp_path / "b" / "manifest.csv").read_text()


def test_identical_preprocessing_outputs(tmp_path):
    """Two runs into two folders give byte-identical .npy arrays (and the same properties)."""
    from kidneyseg.preprocess.cache import preprocess_dataset

    manifest = H.write_dataset(tmp_path / "data", n=2)
    plan = H.write_plan(tmp_path / "plan.json")
    for name in ("c1", "c2"):
        preprocess_dataset(manifest, plan, tmp_path / name, progress=False)
    a, b = _file_hashes(tmp_path / "c1", "*.npy"), _file_hashes(tmp_path / "c2", "*.npy")
    assert len(a) == 8 and a == b  # 2 cases x 2 stages x (image, label)
    for p in (tmp_path / "c1").rglob("properties.json"):
        assert p.read_text() == (tmp_path / "c2" / p.relative_to(tmp_path / "c1")).read_text()


def test_same_cpu_training_result(tmp_path):
    """`kidneyseg train` twice with one seed on one cache: equal weights (and equal metrics)."""
    from kidneyseg.model.checkpoint import load_checkpoint

    cache = H.build_cache(tmp_path, n=2)
    cfg = H.tiny_train_config(tmp_path / "cfg.json", epochs=1, iterations=2)
    for name in ("m1", "m2"):
        assert main(["train", "--config", str(cfg), "--cache", str(cache), "--out", str(tmp_path / name),
                     "--no-progress"]) == 0
    a = load_checkpoint(tmp_path / "m1" / "stage1" / "checkpoint_last.pt")["model"]
    b = load_checkpoint(tmp_path / "m2" / "stage1" / "checkpoint_last.pt")["model"]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    other = H.tiny_train_config(tmp_path / "cfg_seed1.json", epochs=1, iterations=2, seed=1)
    assert main(["train", "--config", str(other), "--cache", str(cache), "--out", str(tmp_path / "m3"),
                 "--no-progress"]) == 0
    c = load_checkpoint(tmp_path / "m3" / "stage1" / "checkpoint_last.pt")["model"]
    assert any(not torch.equal(a[k], c[k]) for k in a)  # another seed, other weights: the test can fail
    m1 = (tmp_path / "m1" / "stage1" / "metrics.csv").read_text().splitlines()
    m2 = (tmp_path / "m2" / "stage1" / "metrics.csv").read_text().splitlines()
    assert m1[0] == m2[0]
    strip = lambda rows: [",".join(c for i, c in enumerate(r.split(",")) if i not in _time_cols(m1[0])) for r in rows]
    assert strip(m1[1:]) == strip(m2[1:])


def _time_cols(header: str) -> set[int]:
    return {i for i, c in enumerate(header.split(",")) if "time" in c or "second" in c or c.endswith("_s")}
