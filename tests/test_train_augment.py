"""kidneyseg.train.augment: alignment under spatial transforms, probabilities, determinism, config."""

import json
import math

import numpy as np
import pytest
import torch

from kidneyseg.errors import KidneysegError
from kidneyseg.train.augment import (TRANSFORMS, AugmentConfig, apply_params, augment_batch, draw_params,
                                     in_plane_only, sample_size_for)
from kidneyseg.train.augment.spatial import affine_grid

torch.set_num_threads(2)

INTENSITY = ("p_noise", "p_blur", "p_brightness", "p_contrast", "p_low_resolution", "p_gamma", "p_gamma_inverted")


def only(**kwargs) -> AugmentConfig:
    """A config with every probability 0 except the ones given."""
    cfg = AugmentConfig.none()
    for k, v in kwargs.items():
        setattr(cfg, k, v)
    cfg.__post_init__()
    return cfg


def blobs(b=2, shape=(24, 28, 32), seed=0):
    """A batch of label maps with an off-center kidney box and a tumor ball (1, 2), asymmetric."""
    rng = np.random.default_rng(seed)
    lab = np.zeros((b, 1, *shape), np.int64)
    z, y, x = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    for i in range(b):
        c = rng.integers(8, 14, 3)
        lab[i, 0, 4:18, 5:16, 6:22] = 1
        lab[i, 0][(z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 <= 16] = 2
    return torch.from_numpy(lab)


def dice(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def test_config_json_round_trip_and_unknown_keys(tmp_path):
    cfg = AugmentConfig(p_rotation=0.5, rotation_deg=(-10, 20), mirror_axes=(1, 2))
    path = tmp_path / "augment.json"
    cfg.save(path)
    assert json.loads(path.read_text())["rotation_deg"] == [-10, 20]
    assert AugmentConfig.load(path) == cfg
    path.write_text(json.dumps({"p_rotation": 0.1, "p_rotate": 0.3}))
    with pytest.raises(KidneysegError, match=r"augment.json: unknown key 'p_rotate'; valid keys: p_rotation, "):
        AugmentConfig.load(path)
    with pytest.raises(ValueError, match="p_gamma must be a probability in"):
        AugmentConfig(p_gamma=1.5)
    with pytest.raises(ValueError, match="scaling_range must be a range"):
        AugmentConfig(scaling_range=(1.4, 0.7))


def test_p_zero_is_identity_and_crop_is_centered():
    g = torch.Generator().manual_seed(0)
    image = torch.randn(2, 3, 10, 12, 14)
    label = blobs(2, (10, 12, 14))
    out_image, out_label = augment_batch(image, label, AugmentConfig.none(), g)
    assert torch.equal(out_image, image) and torch.equal(out_label, label)
    out_image, out_label = augment_batch(image, label, AugmentConfig.none(), g, out_shape=(6, 7, 9))
    assert torch.equal(out_image, image[:, :, 2:8, 2:9, 2:11])
    assert torch.equal(out_label, label[:, :, 2:8, 2:9, 2:11])


SPATIAL_CASES = {
    "rotation": dict(p_rotation=1.0, rotation_deg=(15.0, 30.0)),
    "rotation_in_plane": dict(p_rotation=1.0, rotation_deg=(15.0, 30.0), rotation_in_plane_only=True),
    "zoom_in": dict(p_scaling=1.0, scaling_range=(1.3, 1.4)),
    "zoom_out": dict(p_scaling=1.0, scaling_range=(0.7, 0.75)),
    "mirror": dict(p_mirror=1.0),
    "all_spatial": dict(p_rotation=1.0, p_scaling=1.0, p_mirror=0.5),
}


@pytest.mark.parametrize("name", list(SPATIAL_CASES))
def test_image_label_and_prior_stay_aligned(name):
    label = blobs(4)
    prior = torch.cat([(label == 1), (label == 2)], dim=1).float()
    image = torch.cat([label.float() * 100, prior], dim=1)  # CT == label * 100, prior == one-hot(label)
    g = torch.Generator().manual_seed(1)
    out_image, out_label = augment_batch(image, label, only(**SPATIAL_CASES[name]), g, out_shape=(20, 24, 28))
    crop = label[:, :, 2:22, 2:26, 2:30]
    for i in range(4):
        assert not torch.equal(out_label[i], crop[i]), "the transform did nothing"
        # Prior channels use the label's (nearest) sampling: exactly the one-hot of the label.
        assert torch.equal(out_image[i, 1], (out_label[i, 0] == 1).float())
        assert torch.equal(out_image[i, 2], (out_label[i, 0] == 2).float())
        # The trilinear CT agrees with the nearest label except on boundary voxels.
        ct = out_image[i, 0]
        for c in (1, 2):
            assert dice((ct - 100 * c).abs() < 50, out_label[i, 0] == c) > 0.9
        # Negative control: the same check fails for a label shifted by 3 voxels.
        shifted = torch.roll(out_label[i, 0], 3, dims=2)
        assert dice((ct - 200).abs() < 50, shifted == 2) < 0.75
    assert set(out_label.unique().tolist()) <= {0, 1, 2}


def test_rotation_is_a_true_rotation_of_the_label():
    """A 90-degree in-plane rotation of a cube patch equals torch.rot90 (label and image)."""
    label = blobs(1, (16, 16, 16))
    image = label.float() * 100
    cfg = only(p_rotation=1.0, rotation_deg=(90.0, 90.0), rotation_in_plane_only=True)
    out_image, out_label = augment_batch(image, label, cfg, torch.Generator().manual_seed(0))
    options = [torch.rot90(label, k, dims=(3, 4)) for k in (1, 3)]
    assert any(torch.equal(out_label, o) for o in options)
    assert any(torch.allclose(out_image, o.float() * 100, atol=1e-3) for o in options)


def test_larger_sample_means_no_padding_in_rotations():
    cfg = only(p_rotation=1.0, rotation_deg=(-30.0, 30.0))
    patch = (12, 12, 12)
    size = sample_size_for(patch, cfg)
    assert all(s > p for s, p in zip(size, patch))
    g = torch.Generator().manual_seed(3)
    padded = []
    for sample in (size, patch):
        label = torch.ones(4, 1, *sample, dtype=torch.int64)
        _, out = augment_batch(label.float(), label, cfg, g, out_shape=patch)
        padded.append(bool((out == 0).any()))
    assert padded == [False, True]  # the larger sample covers the rotated patch; the control does not


def test_broadcast_grid_equals_affine_grid():
    theta = torch.randn(3, 3, 4, generator=torch.Generator().manual_seed(0))
    expected = torch.nn.functional.affine_grid(theta, [3, 1, 5, 6, 7], align_corners=True)
    assert torch.allclose(affine_grid(theta, (5, 6, 7)), expected, atol=1e-5)


def test_sample_size_rules():
    cfg = AugmentConfig()
    assert in_plane_only(cfg, (16, 128, 128)) and not in_plane_only(cfg, (64, 128, 128))
    assert sample_size_for((16, 128, 128), cfg)[0] == 16
    # 45 degrees in a plane: the diagonal of a square patch.
    size = sample_size_for((8, 64, 64), only(p_rotation=1.0, rotation_deg=(-45.0, 45.0), rotation_in_plane_only=True))
    assert size[0] == 8 and size[1] == math.ceil(63 * math.sqrt(2) + 1 - 1e-6)


@pytest.mark.parametrize("p_name", [p for p in INTENSITY] + ["p_rotation", "p_scaling"])
def test_probability_one_always_applies_and_zero_never(p_name):
    label = blobs(4, (12, 14, 16))
    image = torch.cat([torch.randn(4, 1, 12, 14, 16) + label.float(), (label == 1).float(), (label == 2).float()], 1)
    g = torch.Generator().manual_seed(5)
    record = {}
    cfg = only(**{p_name: 1.0}, low_resolution_zoom=(0.5, 0.6))  # a 0.95 zoom of 12 voxels rounds to 12
    out_image, out_label = augment_batch(image, label, cfg, g, record=record)
    name = p_name[2:]
    assert bool(record[name].all())
    for i in range(4):
        assert not torch.equal(out_image[i, 0], image[i, 0])
    if name in ("rotation", "scaling"):
        assert not torch.equal(out_label, label)
    else:  # intensity transforms: the prior channels and the label are untouched
        assert torch.equal(out_image[:, 1:], image[:, 1:]) and torch.equal(out_label, label)
    record = {}
    out_image, out_label = augment_batch(image, label, only(), g, record=record)
    assert not any(bool(v.any()) for v in record.values()) and torch.equal(out_image, image)


def test_empirical_rates_follow_probabilities():
    p = 0.3
    cfg = only(**{name: p for name in INTENSITY}, p_rotation=p, p_scaling=p, p_mirror=p)
    g = torch.Generator().manual_seed(11)
    counts = {name: 0.0 for name in TRANSFORMS}
    n = 0
    image, label = torch.randn(16, 1, 4, 4, 4), torch.zeros(16, 1, 4, 4, 4, dtype=torch.int64)
    for _ in range(40):
        record = {}
        augment_batch(image, label, cfg, g, record=record)
        for name in TRANSFORMS:
            counts[name] += float(record[name].float().mean())
        n += 1
    # 640 draws per transform (1920 for mirror): 3 standard deviations is about 0.055.
    for name in TRANSFORMS:
        assert abs(counts[name] / n - p) < 0.06, (name, counts[name] / n)
    # The record is truthful: brightness changes exactly the recorded samples.
    record = {}
    out, _ = augment_batch(image, label, only(p_brightness=0.5), g, record=record)
    changed = (out != image).flatten(1).any(1)
    assert torch.equal(changed, record["brightness"]) and 0 < int(changed.sum()) < 16


def test_seed_makes_it_deterministic_and_inputs_untouched():
    label = blobs(3, (12, 14, 16))
    image = torch.randn(3, 3, 12, 14, 16)
    before = image.clone(), label.clone()
    cfg = only(**{name: 0.7 for name in INTENSITY}, p_rotation=0.7, p_scaling=0.7, p_mirror=0.5)
    a = augment_batch(image, label, cfg, torch.Generator().manual_seed(42), out_shape=(10, 10, 10))
    b = augment_batch(image, label, cfg, torch.Generator().manual_seed(42), out_shape=(10, 10, 10))
    c = augment_batch(image, label, cfg, torch.Generator().manual_seed(43), out_shape=(10, 10, 10))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    assert torch.equal(image, before[0]) and torch.equal(label, before[1])
    assert a[0].shape == (3, 3, 10, 10, 10) and a[1].shape == (3, 1, 10, 10, 10)
    assert a[0].dtype == torch.float32 and a[1].dtype == torch.int64
    assert set(a[1].unique().tolist()) <= {0, 1, 2}


def test_intensity_transforms_keep_their_promises():
    g = torch.Generator().manual_seed(0)
    image = torch.randn(8, 1, 10, 10, 10) * 2 + 1
    label = torch.zeros(8, 1, 10, 10, 10, dtype=torch.int64)
    out, _ = augment_batch(image, label, only(p_gamma=1.0), g)  # gamma keeps mean and std
    assert torch.allclose(out.mean(dim=(2, 3, 4)), image.mean(dim=(2, 3, 4)), atol=1e-4)
    assert torch.allclose(out.std(dim=(2, 3, 4)), image.std(dim=(2, 3, 4)), atol=1e-4)
    out, _ = augment_batch(image, label, only(p_contrast=1.0), g)  # contrast keeps the range
    assert bool((out.amin(dim=(2, 3, 4)) >= image.amin(dim=(2, 3, 4)) - 1e-6).all())
    assert bool((out.amax(dim=(2, 3, 4)) <= image.amax(dim=(2, 3, 4)) + 1e-6).all())
    out, _ = augment_batch(image, label, only(p_blur=1.0), g)  # blur lowers the variance
    assert bool((out.std(dim=(2, 3, 4)) < image.std(dim=(2, 3, 4))).all())
    record = {}
    out, _ = augment_batch(image, label, only(p_brightness=1.0, brightness_range=(1.2, 1.2)), g, record=record)
    assert torch.allclose(out, image * 1.2)


def test_bad_arguments():
    g = torch.Generator()
    with pytest.raises(ValueError, match="image must be"):
        augment_batch(torch.zeros(1, 8, 8, 8), torch.zeros(1, 1, 8, 8, 8), AugmentConfig(), g)
    with pytest.raises(ValueError, match="out_shape must be"):
        augment_batch(torch.zeros(1, 1, 8, 8, 8), torch.zeros(1, 1, 8, 8, 8), AugmentConfig(), g, out_shape=(9, 8, 8))


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"))]


@pytest.mark.parametrize("device", DEVICES)
def test_runs_on_device_with_same_draws(device):
    label = blobs(2, (12, 14, 16))
    image = torch.cat([label.float() * 100, (label == 1).float(), (label == 2).float()], 1)
    cfg = only(**{name: 1.0 for name in INTENSITY if name != "p_noise"}, p_rotation=1.0, p_scaling=1.0, p_mirror=0.5)
    ref = augment_batch(image, label, cfg, torch.Generator().manual_seed(7), out_shape=(10, 12, 12))
    out = augment_batch(image.to(device), label.to(device), cfg, torch.Generator().manual_seed(7), out_shape=(10, 12, 12))
    assert out[0].device.type == device and out[1].device.type == device
    assert torch.allclose(out[0].cpu(), ref[0], atol=1e-3)
    assert (out[1].cpu() == ref[1]).float().mean() > 0.999


def test_benchmark_quick_mode_runs():
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    out = subprocess.run([sys.executable, str(root / "benchmarks" / "augment.py"), "--quick"], capture_output=True,
                         text=True, timeout=120, env=env, check=True).stdout.strip().splitlines()
    assert out[-1].startswith("RESULT patches_per_s=") and "speedup_vs_scipy=" in out[-1] and out[-1].endswith("patch=64")
    assert "| ours spatial" in "\n".join(out)


def test_drawn_params_replay_exactly_and_are_the_only_randomness():
    """Draw once, apply twice: the same batch (apply is deterministic); the recorded masks are the
    drawn ones; and a different draw gives a different batch (the test can fail)."""
    cfg = AugmentConfig(p_rotation=0.5, p_noise=1.0, p_blur=0.5, p_gamma=0.5, p_mirror=0.5)
    image, label = torch.randn(4, 1, 12, 12, 12), blobs(4, (12, 12, 12))
    params = draw_params(cfg, 4, (10, 10, 10), torch.Generator().manual_seed(5))
    a = apply_params(image, label, params, (10, 10, 10))
    b = apply_params(image, label, params, (10, 10, 10))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    record = {}
    c = augment_batch(image, label, cfg, torch.Generator().manual_seed(5), out_shape=(10, 10, 10), record=record)
    assert torch.equal(a[0], c[0]) and list(record) == list(TRANSFORMS)
    assert torch.equal(record["noise"], params.noise) and torch.equal(record["mirror"], params.mirror)
    other = apply_params(image, label, draw_params(cfg, 4, (10, 10, 10), torch.Generator().manual_seed(6)), (10, 10, 10))
    assert not torch.equal(a[0], other[0])
    with pytest.raises(ValueError, match="params are for 4 samples"):
        apply_params(image[:2], label[:2], params, (10, 10, 10))
