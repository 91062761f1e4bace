"""kidneyseg.train.sampler: patch placement, foreground oversampling, padding, determinism, priors."""

import types

import numpy as np
import pytest
import torch

from kidneyseg.train.augment import AugmentConfig
from kidneyseg.train.sampler import PatchSampler, class_locations, extract_patch

torch.set_num_threads(2)


def make_case(case_id, shape=(30, 40, 50), kidney=True, tumor=True, seed=0):
    """A case with a small kidney box and a smaller tumor box in a large background."""
    rng = np.random.default_rng(seed)
    image = rng.standard_normal(shape).astype(np.float32)
    label = np.zeros(shape, np.uint8)
    if kidney:
        label[5:9, 6:11, 30:36] = 1
    if tumor:
        label[20:22, 25:27, 10:12] = 2
    image += 3 * label  # image agrees with the label, so patch alignment is checkable
    return types.SimpleNamespace(case_id=case_id, image=image, label=label)


def centers(sampler, n_batches):
    """The label at the center voxel of every patch drawn."""
    out = []
    for image, label in sampler.iterate(0, n_batches):
        z, y, x = (s // 2 for s in label.shape[2:])
        out += label[:, 0, z, y, x].tolist()
    return np.array(out)


def test_extract_patch_pads_outside_the_volume():
    vol = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    out = extract_patch(vol, (-1, 1, 2), (3, 3, 3), pad_value=-5)
    expected = np.full((3, 3, 3), -5, np.float32)
    expected[1:3, 0:2, 0:2] = vol[0:2, 1:3, 2:4]
    np.testing.assert_array_equal(out, expected)
    assert (extract_patch(vol, (5, 0, 0), (2, 2, 2), 7) == 7).all()


def test_class_locations_are_subsampled_and_correct():
    case = make_case("a")
    locs = class_locations(case.label, np.random.default_rng(0), max_locations=50)
    assert len(locs[1]) == 50 and len(locs[2]) == 8
    assert (case.label[tuple(locs[1].T)] == 1).all() and (case.label[tuple(locs[2].T)] == 2).all()
    assert len(class_locations(np.zeros((3, 3, 3), np.uint8), np.random.default_rng(0))[2]) == 0


def test_batches_have_the_contract_shapes_and_types():
    cases = [make_case("a"), make_case("b", seed=1)]
    sampler = PatchSampler(cases, (8, 10, 12), batch_size=3, num_batches=2, progress=False)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 2
    image, label = batches[0]
    assert image.shape == (3, 1, 8, 10, 12) and image.dtype == torch.float32
    assert label.shape == (3, 1, 8, 10, 12) and label.dtype == torch.int64
    stage2 = PatchSampler(cases, (8, 10, 12), batch_size=2, prior="perturbed-gt", num_batches=1, progress=False)
    image, label = next(iter(stage2))
    assert image.shape == (2, 3, 8, 10, 12)
    prior = image[:, 1:]
    assert set(prior.unique().tolist()) <= {0.0, 1.0} and prior.sum(1).max() <= 1


def test_foreground_share_and_tumor_at_least_as_often_as_kidney():
    cases = [make_case("a"), make_case("b", tumor=False, seed=1), make_case("c", kidney=False, tumor=False, seed=2)]
    sampler = PatchSampler(cases, (4, 4, 4), batch_size=3, fg_fraction=1 / 3, num_batches=100, num_workers=0,
                           progress=False)
    c = centers(sampler, 100)
    fg = [sampler.is_foreground_patch(k) for k in range(300)]
    assert sum(fg) == 100  # exactly a third, spread evenly
    assert all(sum(fg[i:i + 3]) == 1 for i in range(0, 300, 3))
    # Foreground patches are centered on foreground, half of them on tumor (the fg volume is tiny:
    # random patches almost never hit it).
    assert 95 <= (c > 0).sum() <= 105
    assert (c == 2).sum() >= (c == 1).sum() - 15 and 35 <= (c == 2).sum() <= 65
    none = PatchSampler(cases, (4, 4, 4), batch_size=3, fg_fraction=0.0, num_batches=30, progress=False)
    assert (centers(none, 30) > 0).sum() <= 3


def test_cases_without_foreground_give_random_patches():
    cases = [make_case("a", kidney=False, tumor=False)]
    with pytest.warns(UserWarning, match="no case has foreground"):
        sampler = PatchSampler(cases, (4, 4, 4), batch_size=2, num_batches=3, progress=False)
    assert len(list(sampler)) == 3


def test_patches_match_the_volume_and_pad_with_its_minimum():
    shape = (6, 7, 8)
    case = make_case("a", shape=shape)
    case.image = np.arange(1, case.label.size + 1, dtype=np.float32).reshape(shape)  # unique values, min 1
    sampler = PatchSampler([case], (10, 10, 10), batch_size=4, num_batches=5, fg_fraction=0.0, progress=False)
    for image, label in sampler:
        for i in range(4):
            img, lab = image[i, 0].numpy(), label[i, 0].numpy()
            end = np.argwhere(img == case.image.max())[0] + 1  # where the volume's last voxel landed
            block = tuple(slice(e - s, e) for e, s in zip(end, shape))
            np.testing.assert_array_equal(img[block], case.image)
            np.testing.assert_array_equal(lab[block], case.label)
            outside = np.ones(img.shape, bool)
            outside[block] = False
            assert outside.any() and (img[outside] == 1).all() and (lab[outside] == 0).all()
    with_value = PatchSampler([case], (10, 10, 10), 1, 0.0, num_batches=1, pad_value=-9.0, progress=False)
    assert next(iter(with_value))[0].min() == -9.0


def test_image_and_label_are_aligned_in_patches():
    case = make_case("a")
    case.image = case.label.astype(np.float32) * 10  # the image is the label, scaled
    for prior in (None, "perturbed-gt"):
        sampler = PatchSampler([case], (8, 8, 8), batch_size=4, num_batches=10, prior=prior, fg_fraction=0.5,
                               pad_value=0.0, progress=False)
        for image, label in sampler:
            assert torch.equal(image[:, :1], label.float() * 10)


def test_deterministic_resumable_and_thread_independent():
    cases = [make_case("a"), make_case("b", seed=1)]
    kw = dict(patch_size=(8, 8, 8), batch_size=2, prior="perturbed-gt", num_batches=6, progress=False)
    a = list(PatchSampler(cases, seed=3, num_workers=0, **kw))
    b = list(PatchSampler(cases, seed=3, num_workers=2, **kw))
    c = list(PatchSampler(cases, seed=4, **kw))
    resumed = list(PatchSampler(cases, seed=3, **kw).iterate(start=4, stop=6))
    for x, y in zip(a, b):
        assert torch.equal(x[0], y[0]) and torch.equal(x[1], y[1])
    assert not all(torch.equal(x[0], y[0]) for x, y in zip(a, c))
    assert torch.equal(resumed[0][0], a[4][0]) and torch.equal(resumed[1][1], a[5][1])


def test_ranks_draw_the_global_stream_in_turn():
    cases = [make_case("a")]
    kw = dict(patch_size=(6, 6, 6), batch_size=2, num_batches=2, progress=False)
    single = list(PatchSampler(cases, num_batches=4, patch_size=(6, 6, 6), batch_size=2, progress=False))
    for rank in (0, 1):
        for k, (image, _) in enumerate(PatchSampler(cases, rank=rank, world_size=2, **kw)):
            assert torch.equal(image, single[2 * k + rank][0])


def test_larger_sample_is_centered_on_the_same_patch():
    cases = [make_case("a"), make_case("b", seed=1)]
    kw = dict(batch_size=2, num_batches=4, seed=5, progress=False)
    small = list(PatchSampler(cases, (7, 8, 9), **kw))
    big = list(PatchSampler(cases, (7, 8, 9), sample_size=(12, 15, 13), **kw))
    cropped = list(PatchSampler(cases, (7, 8, 9), sample_size=(12, 15, 13), augment=AugmentConfig.none(), **kw))
    for (si, sl), (bi, bl), (ci, cl) in zip(small, big, cropped):
        assert bi.shape == (2, 1, 12, 15, 13) and ci.shape == (2, 1, 7, 8, 9)
        # augment_batch's center crop of the big sample is exactly the small patch
        assert torch.equal(bi[:, :, 2:9, 3:11, 2:11], si) and torch.equal(bl[:, :, 2:9, 3:11, 2:11], sl)
        assert torch.equal(ci, si) and torch.equal(cl, sl)


def test_augmenting_sampler_and_label_dtype():
    cases = [make_case("a")]
    sampler = PatchSampler(cases, (8, 8, 8), batch_size=2, sample_size=(12, 12, 12), augment=AugmentConfig(),
                           prior="perturbed-gt", num_batches=3, label_dtype=torch.uint8, progress=False)
    for image, label in sampler:
        assert image.shape == (2, 3, 8, 8, 8) and label.dtype == torch.uint8
        assert set(label.unique().tolist()) <= {0, 1, 2}


def test_bad_arguments():
    cases = [make_case("a")]
    with pytest.raises(ValueError, match="prior must be one of"):
        PatchSampler(cases, (8, 8, 8), 2, prior="oof")
    with pytest.raises(ValueError, match="sample_size must be >= patch_size"):
        PatchSampler(cases, (8, 8, 8), 2, sample_size=(4, 8, 8))
    with pytest.raises(ValueError, match="patch_size must be 3 positive sizes"):
        PatchSampler(cases, (8, 8), 2)
    with pytest.raises(ValueError, match="fg_fraction must be in"):
        PatchSampler(cases, (8, 8, 8), 2, fg_fraction=1.5)
    bad = types.SimpleNamespace(case_id="x", image=np.zeros((4, 4, 4), np.float32), label=np.zeros((4, 4, 5), np.uint8))
    with pytest.raises(ValueError, match="case 'x': image"):
        PatchSampler([bad], (8, 8, 8), 2, progress=False)
    with pytest.raises(ValueError, match="cases must not be empty"):
        PatchSampler([], (8, 8, 8), 2)


def test_with_seed_shares_locations_and_changes_the_stream():
    cases = [make_case("a"), make_case("b", seed=1)]
    base = PatchSampler(cases, (8, 8, 8), 2, seed=0, num_batches=3, progress=False)
    other = base.with_seed(9, num_batches=2)
    assert other.locations is base.locations and len(other) == 2 and len(base) == 3
    fresh = list(PatchSampler(cases, (8, 8, 8), 2, seed=9, num_batches=2, progress=False))
    for (a, b), (c, d) in zip(other, fresh):
        assert torch.equal(a, c) and torch.equal(b, d)
    assert not torch.equal(next(iter(base))[0], fresh[0][0])


def test_cached_cases_are_located_from_file_reads_and_padded_with_the_recorded_minimum(tmp_path):
    """Memory-mapped cache arrays: the labels are located from plain reads (identical locations, no
    pages left mapped) and the pad value comes from properties.image_min, not a pass over the image."""
    cases, mapped = [], []
    for i in range(2):
        case = make_case(f"c{i}", seed=i)
        np.save(tmp_path / f"l{i}.npy", case.label)
        np.save(tmp_path / f"i{i}.npy", case.image)
        cases.append(case)
        props = types.SimpleNamespace(image_min=-123.0)
        mapped.append(types.SimpleNamespace(case_id=case.case_id, properties=props,
                                            image=np.load(tmp_path / f"i{i}.npy", mmap_mode="r"),
                                            label=np.load(tmp_path / f"l{i}.npy", mmap_mode="r")))
    a = PatchSampler(cases, (8, 16, 16), 2, num_batches=2, progress=False)
    b = PatchSampler(mapped, (8, 16, 16), 2, num_batches=2, progress=False)
    for la, lb in zip(a.locations, b.locations):
        for c in la:
            np.testing.assert_array_equal(la[c], lb[c])
    assert b._case_pad(0) == -123.0 and a._case_pad(0) == float(cases[0].image.min())
