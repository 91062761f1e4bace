"""kidneyseg.train.prior: one-hot prior channels and the ground-truth perturbation for stage 2."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from kidneyseg.model.inputs import prior_channels
from kidneyseg.train.prior import PriorPerturbation, perturb_prior

from .conftest import tiny_label

OFF = dict(p_empty=0.0, p_morph=0.0, p_drop=0.0, p_swap=0.0, p_shift=0.0, coarsen=1)


def only(**kwargs) -> PriorPerturbation:
    return PriorPerturbation(**{**OFF, **kwargs})


def two_kidneys(shape=(20, 24, 30), scale=1) -> np.ndarray:
    """Two separate kidney boxes, a tumor inside the left one (``scale`` multiplies every size)."""
    lab = np.zeros(tuple(s * scale for s in shape), np.uint8)
    k = scale
    lab[4 * k:16 * k, 6 * k:18 * k, 3 * k:12 * k] = 1
    lab[4 * k:16 * k, 6 * k:18 * k, 18 * k:27 * k] = 1
    lab[8 * k:12 * k, 9 * k:14 * k, 5 * k:9 * k] = 2
    return lab


def dice(a, b) -> float:
    return float(2 * np.logical_and(a, b).sum() / (a.sum() + b.sum()))


def test_prior_channels_numpy_and_torch():
    lab = np.array([[[0, 1, 2, 1]]], np.uint8)
    out = prior_channels(lab)
    assert out.dtype == np.float32 and out.shape == (2, 1, 1, 4)
    np.testing.assert_array_equal(out[:, 0, 0], [[0, 1, 0, 1], [0, 0, 1, 0]])
    batch = torch.from_numpy(np.stack([lab, 2 - lab])[:, None].astype(np.int64))  # [2, 1, 1, 1, 4]
    t = prior_channels(batch)
    assert t.dtype == torch.float32 and t.shape == (2, 2, 1, 1, 4)
    assert t[1, :, 0, 0].tolist() == [[0, 1, 0, 1], [1, 0, 0, 0]]  # 2 - [0,1,2,1] = [2,1,0,1]
    assert torch.equal(t[0], torch.from_numpy(out))
    with pytest.raises(ValueError, match="labels must be"):
        prior_channels(np.zeros((2, 3, 4, 5), np.uint8))


def test_all_off_is_identity_and_empty_prior():
    lab = tiny_label()
    rng = np.random.default_rng(0)
    assert np.array_equal(perturb_prior(lab, rng, only()), lab)
    assert not perturb_prior(lab, rng, only(p_empty=1.0)).any()
    assert not perturb_prior(np.zeros((6, 6, 6), np.uint8), rng).any()


def test_drop_and_swap_act_on_components():
    lab = two_kidneys()
    rng = np.random.default_rng(0)
    assert not perturb_prior(lab, rng, only(p_drop=1.0)).any()
    swapped = perturb_prior(lab, rng, only(p_swap=1.0))
    np.testing.assert_array_equal(swapped, np.where(lab > 0, 3 - lab, 0))
    # With p = 0.5 over many draws, single components are dropped: 1 or 2 kidneys remain.
    kept = [ndimage.label(perturb_prior(lab, rng, only(p_drop=0.5)) > 0)[1] for _ in range(30)]
    assert set(kept) == {0, 1, 2}


def test_missed_tumor_becomes_kidney_per_component():
    lab = two_kidneys()
    lab[8:12, 9:14, 20:24] = 2  # a second tumor, in the right kidney
    out = perturb_prior(lab, np.random.default_rng(0), only(p_tumor_missed=1.0))
    np.testing.assert_array_equal(out, np.minimum(lab, 1))  # every tumor reads kidney, kidneys intact
    rng = np.random.default_rng(1)
    left = [int((perturb_prior(lab, rng, only(p_tumor_missed=0.5)) == 2).sum()) for _ in range(30)]
    one = int((lab[:, :, :15] == 2).sum())
    assert set(left) == {0, one, 2 * one}  # each tumor is missed on its own
    assert np.array_equal(perturb_prior(lab, rng, only(p_tumor_missed=0.0)), lab)
    with pytest.raises(ValueError, match="p_tumor_missed must be a probability"):
        PriorPerturbation(p_tumor_missed=1.5)


def test_morphology_moves_boundaries_by_a_few_voxels():
    lab = two_kidneys()
    rng = np.random.default_rng(1)
    volumes = set()
    for _ in range(20):
        out = perturb_prior(lab, rng, only(p_morph=1.0, max_iterations=2))
        assert set(np.unique(out)) <= {0, 1, 2}
        volumes.add(int((out > 0).sum()))
        grown = ndimage.binary_dilation(lab > 0, iterations=2)
        shrunk = ndimage.binary_erosion(lab > 0, iterations=2)
        assert not ((out > 0) & ~grown).any() and not (shrunk & ~(out > 0)).any()
    assert min(volumes) < (lab > 0).sum() < max(volumes)


def test_shift_is_a_translation_with_replicated_edges():
    lab = two_kidneys()
    out = perturb_prior(lab, np.random.default_rng(2), only(p_shift=1.0, max_shift=2))
    matches = [s for s in np.ndindex(5, 5, 5)
               if np.array_equal(out[3:-3, 3:-3, 3:-3],
                                 np.roll(lab, np.array(s) - 2, axis=(0, 1, 2))[3:-3, 3:-3, 3:-3])]
    assert len(matches) == 1 and matches[0] != (2, 2, 2)


def test_coarse_prior_is_blocky_close_and_full_size():
    lab = two_kidneys((21, 25, 31))  # odd sizes: the coarse grid must still cover the patch
    out = perturb_prior(lab, np.random.default_rng(3), only(coarsen=2))
    assert out.shape == lab.shape and out.dtype == np.uint8
    assert dice(out > 0, lab > 0) > 0.9 and dice(out == 2, lab == 2) > 0.6
    assert np.array_equal(out[0:20:2], out[1:20:2])  # pairs of slices repeat one coarse slice


def test_default_perturbation_is_plausible_and_seeded():
    lab = two_kidneys(scale=3)  # kidneys ~36 voxels across, as in a stage-2 box at ~1 mm
    dices = [dice(perturb_prior(lab, np.random.default_rng(s)) > 0, lab > 0) for s in range(40)]
    assert np.median(dices) > 0.75  # usually close to the truth ...
    assert min(dices) < 0.7  # ... and sometimes badly wrong, as stage 1 can be
    a = perturb_prior(lab, np.random.default_rng(5))
    assert np.array_equal(a, perturb_prior(lab, np.random.default_rng(5)))


def test_bad_settings():
    with pytest.raises(ValueError, match="p_drop must be a probability"):
        PriorPerturbation(p_drop=2)
    with pytest.raises(ValueError, match="coarsen must be >= 1"):
        PriorPerturbation(coarsen=0)
    with pytest.raises(ValueError, match=r"label must be \(z, y, x\)"):
        perturb_prior(np.zeros((4, 4), np.uint8), np.random.default_rng(0))
