"""Helpers for the hardening tests: tiny valid cases, broken files, output snapshots, a full disk.

Everything here builds small synthetic data under a pytest ``tmp_path``; nothing touches the
real KiTS19 folder. The "full disk" is real: :func:`full_disk` makes every temporary file of
:func:`kidneyseg.errors.atomic_path` a symlink to ``/dev/full``, so the kernel answers the
first write with ``ENOSPC`` exactly as a full file system would (root included).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

from .conftest import kits_affine, tiny_label

#: Spacing (z, y, x) mm of the valid synthetic cases.
SPACING = (3.0, 0.8, 0.8)
#: Shape (z, y, x) of the valid synthetic cases: 48 x 51 x 51 mm, larger than the test plan's box.
SHAPE = (16, 64, 64)
#: The test plan: normalized = HU / 100; boxes fit inside :data:`SHAPE` at :data:`SPACING`.
PLAN = dict(clip_low_hu=-1000.0, clip_high_hu=1000.0, mean_hu=0.0, std_hu=100.0,
            target_spacing=(2.0, 1.6, 1.6), stage1_spacing=(4.0, 3.2, 3.2), box_size_mm=(40.0, 48.0, 48.0))


def ct_image(shape=SHAPE, seed: int = 0, label: np.ndarray | None = None) -> np.ndarray:
    """A (z, y, x) float32 CT in HU: air at -1000, a 30 HU body, kidneys 150 HU, tumor 60 HU, noise."""
    rng = np.random.default_rng(seed)
    lab = tiny_label(shape) if label is None else label
    img = np.full(shape, -1000.0, np.float32)
    img[:, 2:-2, 1:-1] = 30.0
    img[lab == 1] = 150.0
    img[lab == 2] = 60.0
    return img + rng.normal(0, 10, shape).astype(np.float32)


def save_nifti(path: Path, array, affine=None, dtype=None) -> Path:
    """Write ``array`` (file layout) as NIfTI with ``affine`` (default KiTS19 at :data:`SPACING`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.asarray(array) if dtype is None else np.asarray(array).astype(dtype)
    nib.save(nib.Nifti1Image(arr, kits_affine(SPACING) if affine is None else affine), str(path))
    return path


def write_case(root: Path, case_id: str = "case_00000", image=None, label=None, affine=None,
               label_affine=None, shape=SHAPE) -> Path:
    """A KiTS19-layout case folder; ``image``/``label`` default to a valid pair, ``False`` omits one."""
    d = Path(root) / case_id
    lab = tiny_label(shape) if label is None else label
    img = ct_image(shape) if image is None else image
    if img is not False:
        save_nifti(d / "imaging.nii.gz", img, affine, dtype=np.int16 if image is None else None)
    if lab is not False:
        save_nifti(d / "segmentation.nii.gz", lab, label_affine if label_affine is not None else affine,
                   dtype=np.uint8 if label is None else None)
    return d


def write_manifest_for(root: Path, n_train: int | None = None) -> Path:
    """``root/manifest.csv`` over the case folders of ``root`` (headers only), all cases in 'train'."""
    from kidneyseg.data.manifest import make_manifest, write_manifest

    df = make_manifest(root, headers_only=True, workers=1, progress=False)
    df["split"] = "train"
    return write_manifest(df, Path(root) / "manifest.csv")


def oblique_affine(degrees: float, spacing=SPACING) -> np.ndarray:
    """KiTS19 affine rotated by ``degrees`` about the scanner's z axis (a gantry-tilt-like obliquity)."""
    a = np.deg2rad(degrees)
    rot = np.array([[np.cos(a), -np.sin(a), 0, 0], [np.sin(a), np.cos(a), 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    return rot @ kits_affine(spacing)


# ------------------------------------------------------------------------------- broken files
def corrupt_gzip(path: Path) -> Path:
    """Flip bytes in the middle of a valid ``.nii.gz`` (valid gzip header, broken deflate stream)."""
    data = bytearray(Path(path).read_bytes())
    mid = len(data) // 2
    for i in range(mid, min(mid + 64, len(data) - 8)):
        data[i] ^= 0xA5
    Path(path).write_bytes(bytes(data))
    return Path(path)


def truncate(path: Path, keep: float = 0.5) -> Path:
    """Cut a file to ``keep`` of its bytes (an interrupted transfer)."""
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: max(1, int(len(data) * keep))])
    return Path(path)


def not_nifti(path: Path) -> Path:
    """A gzip file that holds text, named like NIfTI."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as f:
        f.write(b"patient_id,kidney\n1,left\n" * 40)
    return Path(path)


def empty_file(path: Path) -> Path:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(b"")
    return Path(path)


def overflow_image(path: Path, shape=SHAPE) -> Path:
    """An int16 CT whose ``scl_slope`` (1e36) scales stored values past float32's range (-> Inf)."""
    img = nib.Nifti1Image(np.clip(ct_image(shape), -1000, 1000).astype(np.int16), kits_affine(SPACING))
    img.header.set_slope_inter(1e36, 0.0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return path


# ------------------------------------------------------------------------------ observations
def snapshot(root: Path) -> dict[str, str]:
    """``relative path -> sha256`` of every file under ``root`` (empty when it does not exist)."""
    root = Path(root)
    if not root.exists():
        return {}
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() or p.is_symlink():
            rel = str(p.relative_to(root))
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "symlink"
    return out


def part_files(root: Path) -> list[str]:
    """Left-over temporary files of atomic writes (``.<name>.<random>.part<suffix>``) under ``root``."""
    return sorted(str(p) for p in Path(root).rglob("*") if ".part" in p.name)


def error_lines(stderr: str) -> list[str]:
    """Non-empty stderr lines."""
    return [ln for ln in stderr.splitlines() if ln.strip()]


def full_disk(monkeypatch, under: Path) -> None:
    """Make atomic writes below ``under`` hit a full disk: their temp file is a symlink to /dev/full.

    The writer opens the temp path and the kernel refuses the data with ``ENOSPC``; kidneyseg
    must then remove the temp file and report the target. Writes elsewhere are untouched.
    """
    import kidneyseg.errors as errors

    real = tempfile.mkstemp
    under = str(Path(under).absolute())

    def mkstemp(suffix=None, prefix=None, dir=None, text=False):
        if dir is None or not str(Path(dir).absolute()).startswith(under):
            return real(suffix=suffix, prefix=prefix, dir=dir, text=text)
        name = os.path.join(dir, f"{prefix or 'tmp'}full{os.getpid()}{suffix or ''}")
        os.symlink("/dev/full", name)
        return os.open(os.devnull, os.O_RDONLY), name

    monkeypatch.setattr(errors.tempfile, "mkstemp", mkstemp)


def no_torch_load_without_weights_only(package_root: Path) -> list[str]:
    """Source lines under ``package_root`` that call ``torch.load`` without ``weights_only=True``."""
    bad = []
    for py in sorted(Path(package_root).rglob("*.py")):
        text = py.read_text()
        start = 0
        while (i := text.find("torch.load(", start)) >= 0:
            depth, j = 0, i + len("torch.load")
            while j < len(text):
                depth += {"(": 1, ")": -1}.get(text[j], 0)
                j += 1
                if depth == 0:
                    break
            call = text[i:j]
            if "weights_only=True" not in call.replace(" ", ""):
                bad.append(f"{py}:{text.count(chr(10), 0, i) + 1}: {call[:80]}")
            start = j
    return bad


def zero_spacing_file(path: Path, array, axis: int = 1) -> Path:
    """A NIfTI whose sform (and pixdim) give 0 mm along file ``axis``.

    nibabel refuses to *write* such an affine, so a valid file is written and its header patched:
    ``pixdim[axis + 1] = 0`` and column ``axis`` of the sform rows (``srow_x/y/z``) zeroed.
    """
    path = Path(path)
    save_nifti(path, array, dtype=np.int16)
    raw = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
    hdr = bytearray(raw)
    struct_fmt = "<f"
    import struct

    struct.pack_into(struct_fmt, hdr, 76 + 4 * (axis + 1), 0.0)  # pixdim
    for row_offset in (280, 296, 312):  # srow_x, srow_y, srow_z: 4 float32 each
        struct.pack_into(struct_fmt, hdr, row_offset + 4 * axis, 0.0)
    struct.pack_into("<h", hdr, 252, 0)  # qform_code 0: the sform is the only geometry
    struct.pack_into("<h", hdr, 254, 1)  # sform_code 1
    data = bytes(hdr)
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


# ---------------------------------------------------------------------- tiny pipeline artifacts
def write_dataset(root: Path, n: int = 3, n_val: int = 1) -> Path:
    """``n`` valid cases (shape :data:`SHAPE`, different noise) and ``root/manifest.csv``; the last
    ``n_val`` cases are in the 'val' split."""
    from kidneyseg.data.manifest import make_manifest, write_manifest

    root = Path(root)
    for i in range(n):
        write_case(root, f"case_{i:05d}", image=np.clip(ct_image(seed=i), -1000, 1000).astype(np.int16))
    df = make_manifest(root, headers_only=True, workers=1, progress=False)
    df["split"] = ["train"] * (n - n_val) + ["val"] * n_val
    return write_manifest(df, root / "manifest.csv")


def write_plan(path: Path) -> Path:
    from kidneyseg.preprocess.plan import Plan

    return Plan(**PLAN).save(path)


def build_cache(root: Path, n: int = 3) -> Path:
    """A preprocessed cache (stages 1 and 2) of :func:`write_dataset` cases under ``root/cache``."""
    from kidneyseg.preprocess.cache import preprocess_dataset

    root = Path(root)
    manifest = write_dataset(root / "data", n)
    preprocess_dataset(manifest, write_plan(root / "plan.json"), root / "cache", progress=False)
    return root / "cache"


def tiny_train_config(path: Path, epochs: int = 2, iterations: int = 2, **over) -> Path:
    """A TrainConfig JSON that trains a 3-level, 4-feature U-Net on 8x16x16 patches in seconds."""
    from kidneyseg.train.config import TrainConfig, save_config

    data = {"stage": 1, "epochs": epochs, "iterations_per_epoch": iterations, "val_iterations": 1,
            "batch_size": 2, "patch_size": [8, 16, 16], "progress": False, "prefetch": 0, "augment": None,
            "precision": "fp32", "channels_last": "off",
            "network": {"n_stages": 3, "base_features": 4, "strides": [[1, 1, 1], [1, 2, 2], [2, 2, 2]]},
            "scheduler": {"patience": 1}}
    data.update(over)
    return save_config(TrainConfig.from_dict(data), path)
