"""Losses against values computed by hand on tiny arrays."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from kidneyseg.train.losses import (DeepSupervisionLoss, LossConfig, SegmentationLoss, deep_supervision_weights,
                                    dice_from_counts, generalized_dice, one_hot, region_counts, soft_surface_dice)


def line(values, classes=2):
    """Class-1 probabilities along x -> probs [1, C, 1, 1, n] (class 0 = 1 - p)."""
    p1 = torch.tensor(values, dtype=torch.float32)
    return torch.stack([1 - p1, p1])[None, :, None, None, :] if classes == 2 else None


def target(values):
    return torch.tensor(values)[None, None, None, None, :]


def test_generalized_dice_hand_values():
    g = one_hot(target([1, 1, 0, 0]), 2)
    # hard: w0 = w1 = 1/4; inter 2 and 1; totals 5 and 3 -> 2 * 0.75 / 2
    assert float(generalized_dice(line([1, 0, 0, 0]), g)) == pytest.approx(0.75)
    # soft, equal weights: 2 * (1.4 + 1.8) / (3.6 + 4.4) = 0.8
    assert float(generalized_dice(line([0.8, 0.6, 0.2, 0.0]), g)) == pytest.approx(0.8)
    # unequal weights w1 = 1, w0 = 1/9: 2 (0.8 + 2.2/9) / (2.6 + 5.4/9)
    g = one_hot(target([1, 0, 0, 0]), 2)
    want = 2 * (0.8 + 2.2 / 9) / (2.6 + 5.4 / 9)
    assert float(generalized_dice(line([0.8, 0.6, 0.2, 0.0]), g)) == pytest.approx(want)
    assert float(generalized_dice(one_hot(target([1, 0, 0, 0]), 2), g)) == pytest.approx(1.0)


def test_generalized_dice_absent_class_gets_largest_weight():
    # 3 classes, class 2 absent from the reference but predicted at one voxel
    probs = torch.zeros(1, 3, 1, 1, 4)
    probs[0, 0, ..., 1:] = 1
    probs[0, 1, ..., 0] = 1
    g = one_hot(target([1, 0, 0, 0]), 3)
    assert float(generalized_dice(probs, g)) == pytest.approx(1.0)
    probs2 = probs.clone()
    probs2[0, 0, ..., 3] = 0
    probs2[0, 2, ..., 3] = 1  # a false-positive tumor voxel
    # w = [1/9, 1, 1 (max of present)]; inter = [2, 1, 0]; total = [5, 2, 1]
    want = 2 * (2 / 9 + 1) / (5 / 9 + 2 + 1)
    assert float(generalized_dice(probs2, g)) == pytest.approx(want)
    assert math.isfinite(float(generalized_dice(probs2, g)))


def test_soft_surface_dice_hand_values():
    g = one_hot(target([0, 0, 1, 1, 1, 0, 0, 0]), 2)
    p = one_hot(target([0, 0, 0, 1, 1, 1, 0, 0]), 2)
    # boundaries (dilation - erosion): gt at x = 1, 2, 4, 5; prediction at x = 2, 3, 5, 6
    assert float(soft_surface_dice(p, g, tolerance=0)) == pytest.approx(0.5)  # 2 * 2 shared / 8
    assert float(soft_surface_dice(p, g, tolerance=1)) == pytest.approx(1.0)  # all within 1 voxel
    far = one_hot(target([0, 0, 0, 0, 0, 1, 1, 1]), 2)  # boundary x = 4, 5 (x = 7 is the border)
    # prediction boundary x = 4, 5 (erosion treats outside as inside); vs gt 1, 2, 4, 5 at tol 0
    assert float(soft_surface_dice(far, g, tolerance=0)) == pytest.approx(4 / 6)
    assert float(soft_surface_dice(g, g, tolerance=0)) == pytest.approx(1.0)


def test_soft_surface_dice_is_differentiable():
    logits = torch.randn(2, 3, 6, 8, 8, requires_grad=True)
    y = torch.randint(0, 3, (2, 1, 6, 8, 8))
    score = soft_surface_dice(torch.softmax(logits, 1), one_hot(y, 3))
    score.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_combined_loss_is_one_minus_mean_and_ce_optional():
    logits = torch.randn(2, 3, 4, 6, 6)
    y = torch.randint(0, 3, (2, 1, 4, 6, 6))
    probs, oh = torch.softmax(logits, 1), one_hot(y, 3)
    gd, sd = generalized_dice(probs, oh), soft_surface_dice(probs, oh)
    assert float(SegmentationLoss()(logits, y)) == pytest.approx(1 - (float(gd) + float(sd)) / 2, rel=1e-5)
    ce = F.cross_entropy(logits, y[:, 0])
    loss = SegmentationLoss(LossConfig(gd_weight=0, surface_weight=0, ce_weight=1))(logits, y)
    assert float(loss) == pytest.approx(float(ce), rel=1e-6)
    with pytest.raises(ValueError, match="ce_weight must be >= 0"):
        LossConfig(ce_weight=-1)
    # a perfect prediction has (near) zero loss
    perfect = oh * 40 - 20
    assert float(SegmentationLoss()(perfect, y)) < 1e-3


def test_deep_supervision_weights_halve_and_normalize():
    w = deep_supervision_weights(5)
    assert w == pytest.approx([16 / 31, 8 / 31, 4 / 31, 2 / 31, 1 / 31])
    assert deep_supervision_weights(3, zero_lowest=True) == pytest.approx([2 / 3, 1 / 3, 0])


def test_deep_supervision_loss_sums_scales():
    class Const(torch.nn.Module):  # loss = mean label value of the (downsampled) target
        def forward(self, logits, t):
            assert t.shape[2:] == logits.shape[2:]
            return t.float().mean()

    y = torch.zeros(1, 1, 4, 8, 8, dtype=torch.long)
    y[..., :4] = 1  # left half of x is 1 at every scale -> mean 0.5 everywhere
    outs = [torch.zeros(1, 3, 4, 8, 8), torch.zeros(1, 3, 4, 4, 4), torch.zeros(1, 3, 2, 2, 2)]
    assert float(DeepSupervisionLoss(Const())(outs, y)) == pytest.approx(0.5)
    assert float(DeepSupervisionLoss(Const())(outs[0], y)) == pytest.approx(0.5)


def test_region_counts_kits_regions():
    y = target([0, 1, 1, 2, 2, 0])
    pred = target([0, 1, 2, 2, 0, 1])
    logits = one_hot(pred, 3)
    counts = region_counts(logits, y)
    # kidney region (>0): gt {1,2,3,4}, pred {1,2,3,5} -> TP 3, FP 1, FN 1; tumor: gt {3,4}, pred {2,3}
    assert counts.tolist() == [[3, 1, 1], [1, 1, 1]]
    assert dice_from_counts(counts) == pytest.approx([6 / 8, 2 / 4])
    assert math.isnan(dice_from_counts(torch.zeros(1, 3))[0])
