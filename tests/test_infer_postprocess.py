"""kidneyseg.infer.postprocess: strategies on hand-built label maps, comparison, stored choice."""

import json

import numpy as np
import pytest

from kidneyseg.errors import KidneysegError
from kidneyseg.infer.postprocess import STRATEGIES, get_strategy, load_choice, postprocess, save_choice

SP = (1.0, 1.0, 1.0)  # 1 voxel = 0.001 ml


def anatomy_case():
    """Two kidneys (1000 and 512 voxels), a tumor inside the first, a tumor island, a kidney island."""
    lab = np.zeros((20, 20, 40), np.uint8)
    lab[2:12, 2:12, 2:12] = 1          # left kidney, 1000 voxels
    lab[5:8, 5:8, 10:14] = 2           # tumor touching/inside it
    lab[2:10, 2:10, 26:34] = 1         # right kidney, 512 voxels
    lab[15:17, 15:17, 18:20] = 2       # tumor island away from kidneys (8 voxels)
    lab[15:18, 2:5, 20:23] = 1         # kidney island (27 voxels)
    return lab


def test_anatomy_keeps_two_kidneys_and_attached_tumor():
    lab = anatomy_case()
    out = postprocess(lab, SP, "anatomy", min_component_ml=0.1)
    assert out[15:17, 15:17, 18:20].sum() == 0 and out[15:18, 2:5, 20:23].sum() == 0
    np.testing.assert_array_equal(out[:, :, :16], lab[:, :, :16] * (np.arange(20)[:, None, None] < 14))
    assert (out == 2).sum() == (lab[5:8, 5:8, 10:14] == 2).sum()
    assert (out[2:10, 2:10, 26:34] == 1).all()
    # a second kidney smaller than the threshold goes
    out = postprocess(lab, SP, "anatomy", min_component_ml=0.6)
    assert out[:, :, 24:].sum() == 0 and (out == 2).sum() == 36
    assert lab[15, 15, 18] == 2  # input untouched


def test_thesis_largest_and_nnunet_per_class():
    lab = anatomy_case()
    largest = postprocess(lab, SP, "largest")
    assert largest[:, :, 24:].sum() == 0 and (largest > 0).sum() == 1000 + 36 - 18  # tumor overlaps 18 kidney voxels
    per_class = postprocess(lab, SP, "largest_per_class")
    assert (per_class == 1).sum() == (lab[:, :, :16] == 1).sum()  # largest kidney-label component only
    assert (per_class == 2).sum() == 36 and per_class[15, 15, 18] == 0
    np.testing.assert_array_equal(postprocess(lab, SP, "none"), lab)
    empty = np.zeros((4, 4, 4), np.uint8)
    for name in STRATEGIES:
        assert postprocess(empty, SP, name).sum() == 0


def test_unknown_strategy_lists_valid_names():
    with pytest.raises(ValueError, match="valid: anatomy, largest, largest_per_class, none"):
        get_strategy("biggest")


def test_load_choice_default_and_errors(tmp_path):
    assert load_choice(tmp_path)[0] == "anatomy"
    save_choice(tmp_path, "largest")
    assert load_choice(tmp_path) == ("largest", {})
    save_choice(tmp_path, "anatomy", min_component_ml=3.0)
    assert load_choice(tmp_path) == ("anatomy", {"min_component_ml": 3.0, "max_kidneys": 2})
    (tmp_path / "postprocess.json").write_text(json.dumps({"strategy": "nope"}))
    with pytest.raises(KidneysegError, match="unknown post-processing strategy 'nope'"):
        load_choice(tmp_path)
    (tmp_path / "postprocess.json").write_text(json.dumps({"strategy": "none", "colour": 1}))
    with pytest.raises(KidneysegError, match="postprocess.json: unknown key 'colour'; valid keys: strategy, options, scores"):
        load_choice(tmp_path)
    # a misspelt option is refused, not ignored
    (tmp_path / "postprocess.json").write_text(json.dumps({"strategy": "anatomy", "options": {"min_component": 5}}))
    with pytest.raises(KidneysegError, match="has no option 'min_component'; valid options: min_component_ml, max_kidneys"):
        load_choice(tmp_path)


def test_unknown_options_are_refused_for_every_strategy():
    lab = anatomy_case()
    for name in STRATEGIES:
        with pytest.raises(ValueError, match=f"strategy {name!r} has no option 'min_component_mll'"):
            postprocess(lab, SP, name, min_component_mll=1.0)


@pytest.mark.parametrize("dataset", ["kits19", "kits23"])
def test_anatomy_memory_is_bounded_per_voxel_of_the_box(dataset):
    """Noise across the volume makes the box the whole volume: the component counts used int64 and
    float64 copies of it (22 bytes per voxel; 6.49 GiB on a noisy case_00151); now ~6."""
    import tracemalloc

    from scipy import ndimage
    rng = np.random.default_rng(0)
    shape = (80, 128, 128)
    lab = np.zeros(shape, np.uint8)
    lab[30:50, 40:80, 40:70] = 1
    lab[35:40, 50:60, 50:60] = 2
    noise = ndimage.binary_dilation(rng.random(shape) < 0.001)
    noise[25:55, 35:85, 35:75] = False  # no speck touches the kidney
    lab[noise] = 1
    tracemalloc.start()
    try:
        out = postprocess(lab, (2.5, 0.8, 0.8), "anatomy", dataset=dataset)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert np.count_nonzero(out) == 20 * 40 * 30  # the kidney and its tumor; the noise is gone
    assert peak / lab.size < 12, f"{peak / lab.size:.1f} bytes per voxel"
