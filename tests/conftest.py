"""Shared fixtures: tiny synthetic volumes, KiTS19 label folder (skips cleanly when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
#: The real KiTS19 label maps live beside the checkout (../shared/kits19); never in the repo.
KITS19_DIR = Path(os.environ.get("KIDNEYSEG_KITS19", ROOT.parent / "shared" / "kits19"))

# Keep torch from fighting over the 2 CI cores.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def kits19_dir() -> Path:
    """The real KiTS19 labels folder; skips the test when it is absent."""
    if not (KITS19_DIR / "case_00000" / "segmentation.nii.gz").exists():
        pytest.skip(f"real KiTS19 labels not found at {KITS19_DIR}")
    return KITS19_DIR


def kits_affine(spacing_zyx) -> np.ndarray:
    """KiTS19's affine: spacing on the anti-diagonal, all signs negative."""
    dz, dy, dx = spacing_zyx
    return np.array([[0, 0, -dx, 0], [0, -dy, 0, 0], [-dz, 0, 0, 0], [0, 0, 0, 1]], float)


def tiny_label(shape=(12, 20, 24), seed=0) -> np.ndarray:
    """A (z, y, x) uint8 label map with two box 'kidneys' (1) and a 'tumor' (2)."""
    lab = np.zeros(shape, np.uint8)
    z, y, x = shape
    lab[z // 4: 3 * z // 4, y // 3: 2 * y // 3, 2: x // 3] = 1
    lab[z // 4: 3 * z // 4, y // 3: 2 * y // 3, 2 * x // 3: x - 2] = 1
    lab[z // 2 - 1: z // 2 + 2, y // 2 - 1: y // 2 + 2, 3: 6] = 2
    return lab


@pytest.fixture
def write_nifti(tmp_path):
    """Write an array + affine as NIfTI under tmp_path; returns the path."""

    def _write(array, affine, name="vol.nii.gz", dtype=None):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        img = nib.Nifti1Image(np.asarray(array) if dtype is None else np.asarray(array).astype(dtype), affine)
        nib.save(img, str(path))
        return path

    return _write
