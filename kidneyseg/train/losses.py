"""Training losses: Generalized Dice, a soft surface Dice, cross-entropy, deep supervision.

The thesis (section 3.3) scores a segmentation by the *average* of the Generalized Dice
coefficient (class imbalance) and the Surface Dice (boundaries). The training loss follows it:

    loss = 1 - (w_gd * GD + w_sd * SSD) / (w_gd + w_sd)  [+ ce_weight * CE]

with ``w_gd = w_sd = 1`` by default, i.e. ``1 - mean(GD, SSD)``.

* ``GD`` is the Generalized Dice of Sudre et al. (2017) on softmax probabilities, class weights
  ``w_l = 1 / (sum_i g_il)^2``; a class absent from the reference gets the largest weight of the
  present classes (its infinite weight would otherwise swamp the score).
* ``SSD`` is a differentiable surface Dice at a tolerance of ``tolerance`` voxels. Boundaries are
  morphological gradients (soft dilation minus soft erosion, by 3x3x3 max-pooling); the tolerance
  band of a boundary is its dilation by ``tolerance`` voxels. Then, as in the Surface Dice of
  Nikolov et al., ``SSD = (|B_pred ∩ band(B_gt)| + |B_gt ∩ band(B_pred)|) / (|B_pred| + |B_gt|)``,
  per foreground class, averaged over the classes present in the reference or the prediction.
  We chose it over a boundary loss on signed distance maps because it runs on the training device
  with pooling only (no per-batch ``scipy.ndimage.distance_transform_edt`` on the CPU) and matches
  the metric the thesis reports; on binary inputs it is exactly the voxel-based surface Dice.

All functions take logits ``[B, C, z, y, x]`` and integer targets ``[B, 1, z, y, x]`` or
``[B, z, y, x]`` (class indices). Computation is in float32 even under autocast.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = ["LossConfig", "generalized_dice", "soft_surface_dice", "SegmentationLoss", "DeepSupervisionLoss",
           "deep_supervision_weights", "one_hot", "downsample_target", "region_counts", "dice_from_counts"]


def one_hot(target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``[B, 1, *S]`` or ``[B, *S]`` class indices -> float ``[B, C, *S]`` one-hot."""
    if target.dim() >= 2 and target.shape[1] == 1:
        target = target[:, 0]
    oh = F.one_hot(target.long(), num_classes)
    return oh.movedim(-1, 1).float()


def generalized_dice(probs: torch.Tensor, onehot: torch.Tensor, batch_dice: bool = True,
                     include_background: bool = True, eps: float = 1e-6) -> torch.Tensor:
    """Generalized Dice *score* (Sudre et al. 2017), in [0, 1].

    Args:
        probs: probabilities ``[B, C, *S]``.
        onehot: reference one-hot ``[B, C, *S]``.
        batch_dice: sum over the whole batch (one score) or per sample (mean of per-sample scores).
        include_background: include class 0 (Sudre et al. do).

    Returns:
        Scalar tensor. Example: a perfect prediction scores 1.
    """
    if not include_background:
        probs, onehot = probs[:, 1:], onehot[:, 1:]
    dims = (0, *range(2, probs.dim())) if batch_dice else tuple(range(2, probs.dim()))
    ref_vol = onehot.sum(dims)
    inter = (probs * onehot).sum(dims)
    total = (probs + onehot).sum(dims)
    w = 1.0 / ref_vol.clamp_min(eps) ** 2
    present = ref_vol > 0
    # absent classes: the largest weight among present ones (finite, keeps false positives penalised)
    w_max = torch.where(present, w, torch.zeros_like(w)).amax(-1, keepdim=True)
    w = torch.where(present, w, w_max.expand_as(w))
    num = 2 * (w * inter).sum(-1)
    den = (w * total).sum(-1)
    return (num / den.clamp_min(eps)).mean()


def _dilate(x: torch.Tensor, radius: int = 1) -> torch.Tensor:
    k = 2 * radius + 1
    pool = F.max_pool3d if x.dim() == 5 else F.max_pool2d
    return pool(x, k, 1, radius)


def soft_boundary(x: torch.Tensor) -> torch.Tensor:
    """Morphological gradient ``dilate(x) - erode(x)`` (3x3x3): 1 on both sides of a binary edge.

    Computed as ``dilate(x) + dilate(-x)`` (``erode(x) = -dilate(-x)``): the same values with one
    negation fewer.
    """
    return _dilate(x) + _dilate(-x)


def soft_surface_dice(probs: torch.Tensor, onehot: torch.Tensor, tolerance: int = 1, batch_dice: bool = True,
                      eps: float = 1e-6, first_channel: int = 1) -> torch.Tensor:
    """Differentiable surface Dice at ``tolerance`` voxels over the foreground classes, in [0, 1].

    Classes with an empty reference and an empty prediction are skipped; if every class is
    skipped the score is 1 (nothing to find, nothing found). Channels before ``first_channel``
    are left out (1: the softmax's background; 0: region channels, which have none).
    """
    # contiguous copies: max-pooling a channel slice in place is slower on CPU (measured 20 vs 9 ms)
    p, g = probs[:, first_channel:].contiguous(), onehot[:, first_channel:].contiguous()
    bp, bg = soft_boundary(p), soft_boundary(g)
    band_p = _dilate(bp, tolerance) if tolerance > 0 else bp
    band_g = _dilate(bg, tolerance) if tolerance > 0 else bg
    dims = (0, *range(2, p.dim())) if batch_dice else tuple(range(2, p.dim()))
    num = (bp * band_g).sum(dims) + (bg * band_p).sum(dims)
    den = bp.sum(dims) + bg.sum(dims)
    valid = den > eps
    score = num / den.clamp_min(eps)
    if not bool(valid.any()):
        return probs.sum() * 0 + 1.0
    return score[valid].mean()


@dataclass
class LossConfig:
    """Weights of the loss terms. ``gd_weight``/``surface_weight`` weight the average of the scores."""

    gd_weight: float = 1.0
    surface_weight: float = 1.0
    ce_weight: float = 0.0
    surface_tolerance: int = 1
    batch_dice: bool = True

    def __post_init__(self) -> None:
        for name in ("gd_weight", "surface_weight", "ce_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.gd_weight + self.surface_weight + self.ce_weight <= 0:
            raise ValueError("at least one loss weight must be positive")
        if self.surface_tolerance < 0:
            raise ValueError(f"surface_tolerance must be >= 0, got {self.surface_tolerance!r}")


class SegmentationLoss(torch.nn.Module):
    """``1 - weighted mean(GD, SSD) + ce_weight * CE`` for one scale (see module docstring)."""

    def __init__(self, cfg: LossConfig | None = None):
        super().__init__()
        self.cfg = cfg or LossConfig()

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        logits = logits.float()
        if target.dim() == logits.dim():
            target = target[:, 0]
        target = target.long()
        loss = logits.new_zeros(())
        wsum = cfg.gd_weight + cfg.surface_weight
        if wsum > 0:
            probs = torch.softmax(logits, 1)
            oh = one_hot(target, logits.shape[1])
            score = 0.0
            if cfg.gd_weight:
                score = score + cfg.gd_weight * generalized_dice(probs, oh, cfg.batch_dice)
            if cfg.surface_weight:
                score = score + cfg.surface_weight * soft_surface_dice(probs, oh, cfg.surface_tolerance, cfg.batch_dice)
            loss = loss + 1 - score / wsum
        if cfg.ce_weight:
            loss = loss + cfg.ce_weight * F.cross_entropy(logits, target)
        return loss


def deep_supervision_weights(n_scales: int, zero_lowest: bool = False) -> list[float]:
    """Weights ``2**-i`` for scale ``i`` (0 = full resolution), normalized to sum 1.

    >>> [round(w, 4) for w in deep_supervision_weights(3)]
    [0.5714, 0.2857, 0.1429]
    """
    if n_scales < 1:
        raise ValueError(f"n_scales must be >= 1, got {n_scales!r}")
    w = [0.5 ** i for i in range(n_scales)]
    if zero_lowest and n_scales > 1:
        w[-1] = 0.0
    s = sum(w)
    return [v / s for v in w]


def downsample_target(target: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Nearest-neighbour downsampling of ``[B, 1, *S]`` class indices to spatial ``shape``."""
    if tuple(target.shape[2:]) == tuple(shape):
        return target
    return F.interpolate(target.float(), size=tuple(shape), mode="nearest").to(target.dtype)


class DeepSupervisionLoss(torch.nn.Module):
    """Sum of ``weights[i] * loss(outputs[i], target at scale i)``; a single tensor passes through.

    Every one of the thesis's five scales (L1..L5) contributes; the weights halve per scale and are
    normalized (:func:`deep_supervision_weights`).
    """

    def __init__(self, loss: torch.nn.Module, zero_lowest: bool = False):
        super().__init__()
        self.loss, self.zero_lowest = loss, zero_lowest

    def forward(self, outputs, target: torch.Tensor) -> torch.Tensor:
        if target.dim() == 4:
            target = target[:, None]
        if isinstance(outputs, torch.Tensor):
            return self.loss(outputs, target)
        weights = deep_supervision_weights(len(outputs), self.zero_lowest)
        total = outputs[0].new_zeros((), dtype=torch.float32)
        for w, out in zip(weights, outputs):
            if w:
                total = total + w * self.loss(out, downsample_target(target, out.shape[2:]))
        return total


@torch.no_grad()
def region_counts(logits: torch.Tensor, target: torch.Tensor, output=None) -> torch.Tensor:
    """Hard TP, FP, FN voxel counts ``[R, 3]`` of the dataset's evaluation regions, for fast
    patch-based validation: accumulate over batches, then Dice = ``2TP / (2TP + FP + FN)``
    (:func:`dice_from_counts`).

    ``output`` (a :class:`~kidneyseg.model.outputs.OutputSpec`) says how the logits become labels
    and which regions count; default KiTS19 softmax: kidney = label > 0 (kidney + tumor), tumor =
    label 2.
    """
    from ..model.outputs import OutputSpec

    output = output or OutputSpec()
    pred = logits.argmax(1) if output.kind == "softmax" else output.labels(output.probabilities(logits))
    if target.dim() == logits.dim():
        target = target[:, 0]
    rows = []
    for region in output.data.regions:
        lo, hi = min(region.labels), max(region.labels)  # nested KiTS regions are label ranges
        p, g = (pred >= lo) & (pred <= hi), (target >= lo) & (target <= hi)
        if region.labels != tuple(range(lo, hi + 1)):
            values = torch.tensor(region.labels, device=pred.device)
            p, g = torch.isin(pred, values.to(pred.dtype)), torch.isin(target, values.to(target.dtype))
        rows.append(torch.stack([(p & g).sum(), (p & ~g).sum(), (~p & g).sum()]))
    return torch.stack(rows).double().cpu()


def dice_from_counts(counts: torch.Tensor) -> list[float]:
    """Dice per row of TP/FP/FN counts; NaN where reference and prediction are both empty."""
    out = []
    for tp, fp, fn in counts.tolist():
        den = 2 * tp + fp + fn
        out.append(2 * tp / den if den > 0 else float("nan"))
    return out
