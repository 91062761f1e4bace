"""Tiny synthetic CT + label cases in the KiTS19 layout, with a manifest (for the preprocess tests)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from .conftest import kits_affine, tiny_label

SPACINGS = [(3.0, 0.8, 0.8), (1.5, 0.7, 0.7), (5.0, 0.9, 0.9), (2.0, 0.78, 0.78)]


def make_case(seed: int, shape=(12, 20, 24), empty: bool = False):
    """(image float32 HU, label uint8): air, a body, two kidneys at 150 HU, a tumor at 60 HU, noise."""
    rng = np.random.default_rng(seed)
    lab = tiny_label(shape)
    if empty:
        lab[:] = 0
    img = np.full(shape, -1000.0, np.float32)
    img[:, 2:-2, 1:-1] = 30.0
    img[lab == 1] = 150.0
    img[lab == 2] = 60.0
    img += rng.normal(0, 10, shape).astype(np.float32)
    return img, lab


def write_dataset(root: Path, n: int = 4, labels_only: bool = False, empty_case: int | None = None,
                  shape=(12, 20, 24)) -> Path:
    """Write ``n`` cases under ``root`` and ``root/manifest.csv``; the last case is 'val'."""
    from kidneyseg.data.manifest import make_manifest, write_manifest

    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img, lab = make_case(i, shape, empty=(i == empty_case))
        d = root / f"case_{i:05d}"
        d.mkdir(exist_ok=True)
        aff = kits_affine(SPACINGS[i % len(SPACINGS)])
        if not labels_only:
            nib.save(nib.Nifti1Image(img.astype(np.int16), aff), str(d / "imaging.nii.gz"))
        nib.save(nib.Nifti1Image(lab, aff), str(d / "segmentation.nii.gz"))
    df = make_manifest(root, headers_only=True, workers=1, progress=False)
    df["split"] = ["train"] * (n - 1) + ["val"]
    return write_manifest(df, root / "manifest.csv")
