"""Region-based outputs (one sigmoid per nested region) through model, train and infer; KiTS23 prior and post-processing."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
import torch

from kidneyseg.data.datasets import KITS19, KITS23
from kidneyseg.infer.cascade import CascadeModel, predict_volume
from kidneyseg.infer.postprocess import postprocess
from kidneyseg.infer.sliding_window import sliding_window_predict
from kidneyseg.io import new_volume
from kidneyseg.model import inputs as inputs_module
from kidneyseg.model import outputs as outputs_module
from kidneyseg.model.inputs import prior_channels, stage_channels
from kidneyseg.model.outputs import OutputSpec, labels_to_regions, regions_to_labels
from kidneyseg.model.unet import NetworkConfig
from kidneyseg.preprocess.plan import Plan
from kidneyseg.runtime import Runtime
from kidneyseg.train import region_loss as region_loss_module
from kidneyseg.train.config import TrainConfig, preset
from kidneyseg.train.losses import LossConfig, region_counts
from kidneyseg.train.prior import PriorPerturbation, perturb_prior
from kidneyseg.train.region_loss import RegionLoss, segmentation_loss
from kidneyseg.train.sampler import PatchSampler
from kidneyseg.train.trainer import Trainer

TINY_NET = {"n_stages": 3, "base_features": 4, "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]]}


def test_doctests():
    for module in (outputs_module, inputs_module, region_loss_module):
        assert doctest.testmod(module).failed == 0, module.__name__


@pytest.mark.parametrize("dataset", ["kits19", "kits23"])
def test_labels_regions_round_trip_numpy_and_torch(dataset):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4 if dataset == "kits23" else 3, size=(2, 1, 5, 6, 7)).astype(np.uint8)
    regions = labels_to_regions(labels, dataset)
    assert regions.shape == (2, 3 if dataset == "kits23" else 2, 5, 6, 7)
    np.testing.assert_array_equal(regions_to_labels(regions, dataset), labels[:, 0])
    t = torch.from_numpy(labels).long()
    rt = labels_to_regions(t, dataset)
    np.testing.assert_array_equal(rt.numpy(), regions)
    np.testing.assert_array_equal(regions_to_labels(rt, dataset).numpy(), labels[:, 0])
    np.testing.assert_array_equal(labels_to_regions(labels[0, 0], dataset), regions[0])


def test_inner_region_counts_only_inside_its_containing_region():
    # tumor channel on, masses off: not tumor (masses must hold); masses on, k&m off: background
    masks = np.zeros((3, 4), bool)
    masks[:, 0] = [1, 1, 1]
    masks[:, 1] = [1, 0, 1]
    masks[:, 2] = [0, 1, 1]
    masks[:, 3] = [1, 1, 0]
    assert regions_to_labels(masks, KITS23).tolist() == [2, 1, 0, 3]


def test_output_spec_channels_and_train_config_shapes():
    assert OutputSpec("kits23", "regions").channels == 3 and OutputSpec("kits23").channels == 4
    assert OutputSpec().channels == 3 and OutputSpec("kits19", "regions").channels == 2
    cfg = TrainConfig(stage=2, dataset="kits23", output="regions", network=NetworkConfig(**TINY_NET),
                      patch_size=[8, 16, 16])
    assert (cfg.network.in_channels, cfg.network.num_classes) == (2, 3)
    assert (TrainConfig(stage=2).network.in_channels, TrainConfig(stage=2).network.num_classes) == (3, 3)
    with pytest.raises(Exception, match="output must be one of"):
        TrainConfig.from_dict({"output": "sigmoid"})
    with pytest.raises(Exception, match="unknown dataset"):
        TrainConfig.from_dict({"dataset": "kits21"})
    assert preset("demo", 1, {"output": "regions", "dataset": "kits23"}).network.num_classes == 3


def test_prior_channels_follow_the_dataset():
    lab = np.array([[[0, 1, 2, 3]]], np.uint8)
    assert stage_channels(2, "kits23") == 2 and stage_channels(2) == 3
    np.testing.assert_array_equal(prior_channels(lab, dataset="kits23")[:, 0, 0], [[0, 1, 1, 1]])
    t = prior_channels(torch.from_numpy(lab)[None, None], dataset="kits23")
    assert t.shape == (1, 1, 1, 1, 4) and t.flatten().tolist() == [0, 1, 1, 1]
    np.testing.assert_array_equal(prior_channels(lab[:, :, :3])[:, 0, 0], [[0, 1, 0], [0, 0, 1]])  # KiTS19


def test_prior_perturbation_keeps_cysts_and_kits19_results():
    lab = np.zeros((16, 16, 16), np.uint8)
    lab[3:13, 3:13, 3:13] = 1
    lab[5:8, 5:8, 5:8] = 2
    lab[9:11, 9:11, 9:11] = 3
    swap = PriorPerturbation(p_empty=0, p_morph=0, p_drop=0, p_swap=1, p_shift=0, coarsen=1)
    out = perturb_prior(lab, np.random.default_rng(0), swap)
    assert (out[lab == 3] == 3).all() and (out[lab == 1] == 2).all() and (out[lab == 2] == 1).all()
    morph = PriorPerturbation(p_empty=0, p_morph=1, p_drop=0, p_swap=0, p_shift=0, coarsen=1)
    assert (perturb_prior(lab, np.random.default_rng(1), morph) == 3).any()


def test_region_loss_rewards_the_truth_and_trains():
    target = torch.zeros(2, 1, 8, 16, 16, dtype=torch.long)
    target[:, :, 2:6, 4:12, 4:12] = 1
    target[:, :, 3:5, 5:8, 5:8] = 2
    target[:, :, 3:5, 9:11, 9:11] = 3
    out = OutputSpec("kits23", "regions")
    loss = RegionLoss(LossConfig(ce_weight=1.0), out)
    perfect = (labels_to_regions(target, "kits23") * 2 - 1) * 20
    assert float(loss(perfect, target)) < 0.05 < float(loss(-perfect, target))
    assert isinstance(segmentation_loss(LossConfig(), OutputSpec()), torch.nn.Module)
    with pytest.raises(ValueError, match="regions"):
        loss(torch.zeros(2, 4, 8, 16, 16), target)
    counts = region_counts(perfect, target, out)
    assert counts.shape == (3, 3) and (counts[:, 1:] == 0).all() and (counts[:, 0] > 0).all()


class _Case:
    def __init__(self, i):
        rng = np.random.default_rng(i)
        self.case_id = f"c{i}"
        self.label = np.zeros((16, 32, 32), np.uint8)
        self.label[4:12, 8:24, 8:24] = 1
        self.label[5:8, 10:14, 10:14] = 2
        self.label[8:11, 16:21, 16:21] = 3
        self.image = (rng.normal(0, 0.1, self.label.shape) + np.choose(self.label, [0.0, 2.0, 3.0, -1.0])).astype(
            np.float32)


def test_trainer_region_based_kits23_stage2_writes_region_dice(tmp_path):
    cfg = TrainConfig(stage=2, dataset="kits23", output="regions", network=NetworkConfig(**TINY_NET),
                      patch_size=[8, 16, 16], epochs=2, iterations_per_epoch=3, val_iterations=1, batch_size=2,
                      augment=None, progress=False, prefetch=0)
    cases = [_Case(i) for i in range(2)]

    def batches(epoch, seed):
        s = PatchSampler(cases, (8, 16, 16), 2, 0.5, "perturbed-gt", seed=seed, num_workers=0, progress=False,
                         dataset="kits23")
        return s.iterate(0, 3)

    history = Trainer(cfg, tmp_path / "stage2", batches, batches).fit()
    assert len(history) == 2
    for key in ("val_dice_kidney_and_masses", "val_dice_masses", "val_dice_tumor", "val_dice_mean"):
        assert key in history[-1]
    header = (tmp_path / "stage2" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert header[:7] == ["epoch", "train_loss", "val_loss", "val_dice_kidney_and_masses", "val_dice_masses",
                          "val_dice_tumor", "val_dice_mean"]
    image, _ = next(iter(PatchSampler(cases, (8, 16, 16), 2, 1.0, "perturbed-gt", num_batches=1, num_workers=0,
                                      progress=False, dataset="kits23")))
    assert image.shape[1] == 2


def test_sampler_centres_lesion_patches_on_tumor_and_cyst():
    cases = [_Case(i) for i in range(2)]
    sampler = PatchSampler(cases, (4, 8, 8), 4, fg_fraction=1.0, tumor_fraction=1.0, num_batches=10, num_workers=0,
                           progress=False, dataset="kits23")
    centres = set()
    for _, label in sampler:
        centres |= set(label[:, 0, 2, 4, 4].tolist())  # the voxel at each patch's centre
    assert centres == {2, 3}


class _ThresholdRegions(torch.nn.Module):
    """Region logits from channel 0 (HU / 100): k&m above 150 HU, masses above 450, tumor above 750."""

    def forward(self, x):
        c = x[:, :1]
        return torch.cat([10 * (c - 1.5), 10 * (c - 4.5), 10 * (c - 7.5)], 1)


def test_sliding_window_and_cascade_decode_regions_into_three_labels():
    ct = np.zeros((24, 40, 44), np.float32)
    ct[8:16, 10:30, 12:32] = 300.0   # kidney -> k&m only -> 1
    ct[10:13, 14:19, 15:20] = 600.0  # k&m + masses -> 3 (cyst)
    ct[10:13, 22:27, 24:29] = 900.0  # all three -> 2 (tumor)
    ct[20:22, 2:4, 2:4] = 300.0      # an island: kept ("none" post-processing), label 1
    x = torch.from_numpy(ct / 100.0)[None]
    res = sliding_window_predict(x, _ThresholdRegions(), (8, 16, 16), output=OutputSpec("kits23", "regions"))
    expected = np.choose((ct >= 300).astype(int) + (ct >= 600) + (ct >= 900), [0, 1, 3, 2]).astype(np.uint8)
    np.testing.assert_array_equal(res.labels, expected)

    plan = Plan(clip_low_hu=-1000.0, clip_high_hu=1000.0, mean_hu=0.0, std_hu=100.0, target_spacing=(2.0, 1.6, 1.6),
                stage1_spacing=(2.0, 1.6, 1.6), box_size_mm=(48.0, 64.0, 70.4), dataset="kits23")
    regions = OutputSpec("kits23", "regions")
    model = CascadeModel(plan, _ThresholdRegions(), _ThresholdRegions(), (8, 16, 16), (8, 16, 16),
                         ("none", {}), Runtime(torch.device("cpu")), regions, regions)
    labels, _ = predict_volume(new_volume(ct, (2.0, 1.6, 1.6)), model, progress=False, body_crop=False)
    assert set(np.unique(labels)) == {0, 1, 2, 3}
    np.testing.assert_array_equal(labels, expected)


def test_kits23_postprocessing_keeps_regions_consistent():
    lab = np.zeros((10, 20, 40), np.uint8)
    lab[2:8, 4:16, 2:14] = 1     # kidney A (largest)
    lab[3:6, 6:10, 4:8] = 3      # a cyst inside A
    lab[2:7, 4:14, 20:30] = 1    # kidney B
    lab[3:6, 5:9, 22:27] = 2     # a tumor in B
    lab[4:6, 8:10, 34:38] = 2    # a tumor island with no kidney around it
    out = postprocess(lab, (1.0, 1.0, 1.0), "largest_per_class", dataset=KITS23)
    # keep-largest per label dropped kidney B; its tumor (the largest tumor) would float alone: removed
    assert (out[:, :, 20:] == 0).all() and (out == 3).sum() == (lab == 3).sum()
    anat = postprocess(lab, (1.0, 1.0, 1.0), "anatomy", dataset=KITS23, min_component_ml=0.0)
    assert (anat[:, :, 34:] == 0).all() and (anat == 2).sum() == (lab[:, :, :30] == 2).sum()
    assert (postprocess(lab, (1.0, 1.0, 1.0), "none", dataset=KITS23) == lab).all()
    # KiTS19 keeps its old largest_per_class (the floating tumor stays)
    k19 = np.where(lab == 3, 1, lab).astype(np.uint8)
    old = postprocess(k19, (1.0, 1.0, 1.0), "largest_per_class", dataset=KITS19)
    assert (old[:, :, 20:30] == 2).any()
