"""The demo profile: realistic-scale phantoms on a coarse grid, a task no HU window solves, and a
recipe whose pieces fit together (patches inside the network's strides, the ablation on the cascade)."""

from __future__ import annotations

import json
from importlib import resources

import numpy as np
import pytest

from kidneyseg.data.phantom import make_phantom
from kidneyseg.train.config import preset

from .test_data_phantom import _best_threshold_dice


@pytest.fixture(scope="module")
def demo():
    return json.loads(resources.files("kidneyseg.profiles").joinpath("demo.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def demo_phantoms(demo):
    opts = {k: (tuple(v) if isinstance(v, list) else v) for k, v in demo["phantoms"].items()
            if k not in ("cases", "seed", "n_val")}
    return [make_phantom(seed, **opts) for seed in range(6)]


def test_demo_phantoms_are_a_life_size_abdomen_on_a_coarse_grid(demo, demo_phantoms):
    for img, lab in demo_phantoms:
        field_of_view = img.shape[1] * img.spacing[1]
        assert 300 <= field_of_view <= 560                      # mm: a 30-40 cm body, not an 11 cm crop
        assert 2.0 <= img.spacing[1] <= 4.0                     # the coarse grid that keeps the demo fast
        assert img.spacing[0] in demo["phantoms"]["spacing_z"]
    target = demo["02_preprocessing"]["target_spacing"]
    median = np.median([img.spacing for img, _ in demo_phantoms], axis=0)
    assert np.all(np.asarray(target) >= 0.75 * median)          # no resampling far below the data's resolution


def test_demo_phantoms_keep_the_difficulty_floor(demo_phantoms):
    images = [img.array for img, _ in demo_phantoms]
    assert _best_threshold_dice(images, [lab.array == 2 for _, lab in demo_phantoms]) < 0.5
    assert _best_threshold_dice(images, [lab.array > 0 for _, lab in demo_phantoms]) < 0.85


def test_demo_recipe_builds(demo):
    train = demo["03_training"]
    for stage, patch in ((1, train["stage1_patch_size"]), (2, train["patch_size"])):
        cfg = preset(demo["04_ablation"]["preset_name"], stage, {"patch_size": patch, "epochs": train["epochs"]})
        assert cfg.sampler.tumor_fraction > 0.5                 # tumor-aware sampling
        assert cfg.precision == "auto"                          # bf16 where the CPU has it
    preset("demo", 2, demo["04_ablation"]["overrides"])
    preset("demo", 1, demo["05_inference_evaluation"]["overrides"])
    assert len(demo["04_ablation"]["seeds"]) >= 3               # a spread over seeds, and an interval from it


def test_demo_trains_and_validates_on_enough_phantoms(demo):
    """Tumor variety comes from the number of phantoms (painting one costs about 0.15 s): with 12
    training phantoms the cascade's tumor Dice on 15 unseen phantoms was 0.21, with 84 it was 0.36
    (docs/training.md). And a validation mean over 4 cases moved by 0.2 with one 2 ml tumor."""
    ph = demo["phantoms"]
    assert ph["n_val"] >= 10
    assert ph["cases"] - ph["n_val"] >= 60
