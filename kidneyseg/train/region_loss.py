"""The training loss of region-based outputs (one sigmoid per nested region), and the loss factory.

With ``output="regions"`` (:mod:`kidneyseg.model.outputs`) the network has one channel per
evaluation region of the dataset (KiTS23: kidney_and_masses, masses, tumor), each an independent
sigmoid. The loss keeps the thesis's terms (:mod:`kidneyseg.train.losses`) on those channels:

    loss = 1 - (w_gd * GD + w_sd * SSD) / (w_gd + w_sd)  [+ ce_weight * BCE]

* ``GD``: the Generalized Dice over the region channels (every channel is foreground: there is no
  background channel), class weights ``1 / volume²`` as for labels;
* ``SSD``: the soft surface Dice over every region channel;
* ``BCE``: binary cross-entropy on the logits, averaged over regions and voxels (nnU-Net's
  region-based loss is Dice + BCE; ``ce_weight`` switches it on).

The targets are the region masks of the integer label patch (:func:`labels_to_regions`), made on
the training device at every deep-supervision scale, so the sampler and the augmentation stay
label-based.

>>> import torch
>>> from kidneyseg.model.outputs import OutputSpec
>>> loss = segmentation_loss(LossConfig(), OutputSpec("kits23", "regions"))
>>> target = torch.zeros(1, 1, 8, 8, 8, dtype=torch.long); target[0, 0, 2:6, 2:6, 2:6] = 1
>>> float(loss(torch.randn(1, 3, 8, 8, 8), target)) > 0
True
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..model.outputs import OutputSpec, labels_to_regions
from .losses import LossConfig, SegmentationLoss, generalized_dice, soft_surface_dice

__all__ = ["RegionLoss", "segmentation_loss"]


class RegionLoss(torch.nn.Module):
    """``1 - weighted mean(GD, SSD) + ce_weight * BCE`` on sigmoid region channels (one scale)."""

    def __init__(self, cfg: LossConfig | None = None, output: OutputSpec | None = None):
        super().__init__()
        self.cfg = cfg or LossConfig()
        self.output = output or OutputSpec("kits23", "regions")
        if self.output.kind != "regions":
            raise ValueError(f"RegionLoss needs a regions output, got {self.output.kind!r}")

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        logits = logits.float()
        if target.dim() == logits.dim() - 1:
            target = target[:, None]
        regions = labels_to_regions(target.long(), self.output.data)
        if regions.shape[1] != logits.shape[1]:
            raise ValueError(f"{self.output.data.name} has {regions.shape[1]} regions, the network "
                             f"outputs {logits.shape[1]} channels")
        loss = logits.new_zeros(())
        wsum = cfg.gd_weight + cfg.surface_weight
        if wsum > 0:
            probs = torch.sigmoid(logits)
            score = 0.0
            if cfg.gd_weight:
                score = score + cfg.gd_weight * generalized_dice(probs, regions, cfg.batch_dice)
            if cfg.surface_weight:
                score = score + cfg.surface_weight * soft_surface_dice(probs, regions, cfg.surface_tolerance,
                                                                       cfg.batch_dice, first_channel=0)
            loss = loss + 1 - score / wsum
        if cfg.ce_weight:
            loss = loss + cfg.ce_weight * F.binary_cross_entropy_with_logits(logits, regions)
        return loss


def segmentation_loss(cfg: LossConfig, output: OutputSpec) -> torch.nn.Module:
    """The one-scale loss of an output: :class:`SegmentationLoss` (softmax) or :class:`RegionLoss`."""
    return SegmentationLoss(cfg) if output.kind == "softmax" else RegionLoss(cfg, output)
