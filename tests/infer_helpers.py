"""Helpers for the inference tests: tiny model folders, threshold 'networks', DICOM writing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from kidneyseg.infer.cascade import CascadeModel
from kidneyseg.preprocess.plan import Plan

#: normalized = (clip(HU) - 0) / 100, so the 300 HU "kidney" is 3.0 and soft tissue 0.
PLAN = dict(clip_low_hu=-1000.0, clip_high_hu=1000.0, mean_hu=0.0, std_hu=100.0,
            target_spacing=(2.0, 1.6, 1.6), stage1_spacing=(4.0, 3.2, 3.2), box_size_mm=(40.0, 48.0, 48.0))


def threshold_net(in_channels: int) -> torch.nn.Module:
    """A 1x1x1 conv: class 1 where channel 0 > 1.5 (150 HU), never class 2."""
    net = torch.nn.Conv3d(in_channels, 3, 1)
    with torch.no_grad():
        net.weight.zero_()
        net.bias.zero_()
        net.weight[1, 0] = 10.0
        net.bias[1] = -15.0
        net.bias[2] = -100.0
    return net.eval()


def threshold_model(**plan) -> CascadeModel:
    return CascadeModel(Plan(**{**PLAN, **plan}), threshold_net(1), threshold_net(3), (8, 16, 16), (8, 16, 16),
                        ("anatomy", {"min_component_ml": 0.0}))


def make_model_dir(root: Path, patch=(8, 16, 16), features=4, plan: dict | None = None) -> Path:
    """A model folder with random-weight U-Nets saved through the trainer's checkpoint API."""
    from kidneyseg.model.unet import NetworkConfig
    from kidneyseg.train.checkpoint import write_untrained_model
    from kidneyseg.train.config import TrainConfig

    def net_cfg():  # one per stage: TrainConfig sets the input channels of its own
        return NetworkConfig(n_stages=3, base_features=features, strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2]])

    return write_untrained_model(root, Plan(**{**PLAN, **(plan or {})}),
                                 [TrainConfig(stage=st, network=net_cfg(), patch_size=list(patch)) for st in (1, 2)])


def phantom_ct(shape=(24, 40, 44), seed=0):
    """A (z, y, x) int16 CT in HU: soft tissue 0 +- noise, a bright 300 HU 'kidney' off-centre."""
    rng = np.random.default_rng(seed)
    ct = rng.normal(0, 10, shape).astype(np.float32)
    z, y, x = shape
    ct[z // 3: z // 3 + 6, y // 4: y // 4 + 10, x // 2: x // 2 + 12] = 300.0
    ct[:, :2] = -1000.0  # some air
    return ct.astype(np.int16)


def write_dicom_series(array_zyx: np.ndarray, folder: Path, spacing=(2.5, 0.8, 0.75)) -> Path:
    """Write a (z, y, x) int16 volume as an axial CT DICOM series with SimpleITK, one file per slice."""
    import SimpleITK as sitk

    folder.mkdir(parents=True, exist_ok=True)
    img = sitk.GetImageFromArray(array_zyx)
    img.SetSpacing((spacing[2], spacing[1], spacing[0]))
    img.SetOrigin((-20.0, -30.0, 100.0))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    series = "1.2.826.0.1.3680043.2.1125.1.424242"
    for k in range(img.GetDepth()):
        sl = img[:, :, k]
        pos = img.TransformIndexToPhysicalPoint((0, 0, k))
        for tag, value in (("0008|0060", "CT"), ("0020|000e", series), ("0020|000d", series + ".1"),
                           ("0020|0013", str(k + 1)), ("0020|0032", "\\".join(map(str, pos))),
                           ("0020|0037", "1\\0\\0\\0\\1\\0"), ("0018|0050", str(spacing[0])),
                           ("0008|0018", f"{series}.{k + 1}")):
            sl.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice_{k:03d}.dcm"))
        writer.Execute(sl)
    return folder
