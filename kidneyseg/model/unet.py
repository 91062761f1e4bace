"""Configurable 3D U-Net of the thesis (section 3.2): residual encoder/decoder, deep supervision.

The encoder is a list of stages (Conv3d + InstanceNorm + LeakyReLU blocks, the first block of each
stage downsampling with a strided convolution). The decoder is built *from the encoder* (it reads
its channels and strides): transposed-conv upsampling (+ norm + nonlin, as in the thesis's Fig 3.2),
concatenation with the skip, then blocks. A 1x1x1 segmentation head sits on every decoder stage and
is always built, so one checkpoint loads with deep supervision on or off.

The thesis's ablation variants are flags of :class:`NetworkConfig`:

================================  ==========================================
Table 4.2 row                     flags
================================  ==========================================
PM                                ``residual=True,  deep_supervision=True``
PM without Res                    ``residual=False, deep_supervision=True``
PM without Res and DS             ``residual=False, deep_supervision=False``
================================  ==========================================

>>> import torch
>>> net = build_unet(NetworkConfig(n_stages=3, base_features=4, strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2]]))
>>> net.eval()(torch.zeros(1, 1, 8, 16, 16)).shape
torch.Size([1, 3, 8, 16, 16])
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from .blocks import Ops, StackedBlocks

__all__ = ["NetworkConfig", "UNet", "Encoder", "Decoder", "build_unet", "count_parameters"]


def _default_strides() -> list[list[int]]:
    return [[1, 1, 1]] + [[2, 2, 2]] * 5


@dataclass
class NetworkConfig:
    """Architecture of the U-Net; saved inside the training config JSON.

    Args:
        in_channels: 1 for stage 1 (image); 3 for stage 2 (image + one-hot kidney, tumor prior).
        num_classes: output classes (background, kidney, tumor).
        n_stages: encoder stages (resolutions); the decoder has ``n_stages - 1``, which is the number
            of deep-supervision scales (5 for the default 6 stages).
        base_features: features of stage 0; stage ``i`` has ``min(base * 2**i, max_features)``.
        max_features: the cap (320, as nnU-Net).
        features: explicit per-stage features (overrides base/max) or ``None``.
        strides: per-stage (z, y, x) strides, the first usually ``[1, 1, 1]``; anisotropic stages such
            as ``[1, 2, 2]`` keep z for thick-slice data.
        kernel_sizes: per-stage (z, y, x) kernels or ``None`` for 3x3x3 everywhere.
        encoder_blocks: blocks (of two convolutions) per encoder stage, an int or a list.
        decoder_blocks: blocks per decoder stage.
        residual: residual blocks (the "Res" of Table 4.2) or plain conv pairs.
        deep_supervision: return the 5 scales' logits in training mode (the "DS" of Table 4.2).
        upsample_norm: InstanceNorm + LeakyReLU after each transposed convolution (thesis Fig 3.2).
    """

    in_channels: int = 1
    num_classes: int = 3
    n_stages: int = 6
    base_features: int = 32
    max_features: int = 320
    features: list[int] | None = None
    strides: list[list[int]] = field(default_factory=_default_strides)
    kernel_sizes: list[list[int]] | None = None
    encoder_blocks: int | list[int] = 1
    decoder_blocks: int | list[int] = 1
    residual: bool = True
    deep_supervision: bool = True
    upsample_norm: bool = True

    def __post_init__(self) -> None:
        self.strides = [list(map(int, s)) for s in self.strides]
        for name in ("in_channels", "num_classes", "n_stages", "base_features", "max_features"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if len(self.strides) != self.n_stages or any(len(s) != 3 or min(s) < 1 for s in self.strides):
            raise ValueError(f"strides must be {self.n_stages} lists of 3 positive ints, got {self.strides!r}")
        if self.features is not None and len(self.features) != self.n_stages:
            raise ValueError(f"features must have {self.n_stages} entries, got {self.features!r}")
        if self.kernel_sizes is not None:
            self.kernel_sizes = [list(map(int, k)) for k in self.kernel_sizes]
            if len(self.kernel_sizes) != self.n_stages or any(len(k) != 3 or min(k) < 1 or min(k) % 2 == 0
                                                              for k in self.kernel_sizes):
                raise ValueError(f"kernel_sizes must be {self.n_stages} lists of 3 odd ints, got {self.kernel_sizes!r}")
        for name in ("encoder_blocks", "decoder_blocks"):
            n = self.n_stages if name == "encoder_blocks" else self.n_stages - 1
            value = getattr(self, name)
            if not isinstance(value, int) and len(value) != n:
                raise ValueError(f"{name} must be an int or {n} ints, got {value!r}")

    def stage_features(self) -> list[int]:
        if self.features is not None:
            return [int(f) for f in self.features]
        return [min(self.base_features * 2 ** i, self.max_features) for i in range(self.n_stages)]

    def stage_kernels(self) -> list[list[int]]:
        return self.kernel_sizes or [[3, 3, 3]] * self.n_stages

    def total_stride(self) -> list[int]:
        """Product of the strides per axis: patch sizes must be multiples of it."""
        out = [1, 1, 1]
        for s in self.strides:
            out = [a * b for a, b in zip(out, s)]
        return out

    def check_patch_size(self, patch_size) -> None:
        """Raise ``ValueError`` unless every axis of ``patch_size`` (z, y, x) divides by the total stride."""
        total = self.total_stride()
        if len(patch_size) != 3 or any(int(p) % t for p, t in zip(patch_size, total)):
            raise ValueError(f"patch_size must be 3 multiples of the network's total stride {total}, got {list(patch_size)!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _per_stage(value: int | list[int], n: int) -> list[int]:
    return [int(value)] * n if isinstance(value, int) else [int(v) for v in value]


class Encoder(nn.Module):
    """Stages of :class:`StackedBlocks`; ``forward`` returns every stage's output (the skips)."""

    def __init__(self, cfg: NetworkConfig, ops: Ops):
        super().__init__()
        feats, kernels = cfg.stage_features(), cfg.stage_kernels()
        blocks = _per_stage(cfg.encoder_blocks, cfg.n_stages)
        stages, c_in = [], cfg.in_channels
        for i in range(cfg.n_stages):
            stages.append(StackedBlocks(blocks[i], c_in, feats[i], kernels[i], cfg.strides[i], ops, cfg.residual))
            c_in = feats[i]
        self.stages = nn.ModuleList(stages)
        self.features, self.strides, self.kernels = feats, cfg.strides, kernels

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        skips = []
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        return skips


class Decoder(nn.Module):
    """Mirror of an :class:`Encoder`: upsample, concatenate the skip, blocks, 1x1x1 head per stage."""

    def __init__(self, encoder: Encoder, cfg: NetworkConfig, ops: Ops):
        super().__init__()
        n = len(encoder.features)
        blocks = _per_stage(cfg.decoder_blocks, n - 1)
        transp = {nn.Conv3d: nn.ConvTranspose3d, nn.Conv2d: nn.ConvTranspose2d, nn.Conv1d: nn.ConvTranspose1d}[ops.conv_op]
        ups, stages, heads = [], [], []
        for j, s in enumerate(range(n - 1, 0, -1)):  # s: the encoder stage we come from
            c_below, c_skip = encoder.features[s], encoder.features[s - 1]
            stride = encoder.strides[s]
            up: list[nn.Module] = [transp(c_below, c_skip, stride, stride, bias=not cfg.upsample_norm)]
            if cfg.upsample_norm:
                up += [ops.norm(c_skip), ops.act()]
            ups.append(nn.Sequential(*up))
            stages.append(StackedBlocks(blocks[j], 2 * c_skip, c_skip, encoder.kernels[s - 1], 1, ops, cfg.residual))
            heads.append(ops.conv_op(c_skip, cfg.num_classes, 1, 1, 0, bias=True))
        self.ups, self.stages, self.heads = nn.ModuleList(ups), nn.ModuleList(stages), nn.ModuleList(heads)
        self.deep_supervision = cfg.deep_supervision

    def forward(self, skips: list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
        x = skips[-1]
        want_all = self.deep_supervision and self.training
        outs = []
        for j, (up, stage) in enumerate(zip(self.ups, self.stages)):
            x = up(x)
            x = stage(torch.cat((x, skips[-(j + 2)]), dim=1))
            if want_all:
                outs.append(self.heads[j](x))
        if not want_all:
            return self.heads[-1](x)
        return outs[::-1]  # full resolution first


class UNet(nn.Module):
    """Encoder + decoder. ``forward(x)`` maps ``[B, in_channels, z, y, x]`` to logits.

    Returns ``[B, num_classes, z, y, x]`` in eval mode or when deep supervision is off, and in
    training with deep supervision a list of ``n_stages - 1`` logits, full resolution first, each
    scale downsampled by the next stage's stride.
    """

    def __init__(self, cfg: NetworkConfig, ops: Ops | None = None):
        super().__init__()
        self.config = cfg
        ops = ops or Ops()
        self.encoder = Encoder(cfg, ops)
        self.decoder = Decoder(self.encoder, cfg, ops)
        self.apply(_init_weights)

    @property
    def deep_supervision(self) -> bool:
        return self.decoder.deep_supervision

    @deep_supervision.setter
    def deep_supervision(self, value: bool) -> None:
        self.decoder.deep_supervision = bool(value)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        return self.decoder(self.encoder(x))


def _init_weights(module: nn.Module) -> None:
    """He (Kaiming) normal init for every (transposed) convolution, matched to LeakyReLU's slope 0.01,
    so activations keep their variance through the depth; biases start at 0. Norm layers keep
    PyTorch's defaults (weight 1, bias 0). nnU-Net initialises its networks the same way."""
    if isinstance(module, (nn.Conv3d, nn.ConvTranspose3d, nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.kaiming_normal_(module.weight, a=1e-2)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def build_unet(cfg: NetworkConfig | dict) -> UNet:
    """Build the network from a :class:`NetworkConfig` (or its dict form)."""
    if isinstance(cfg, dict):
        cfg = NetworkConfig(**cfg)
    return UNet(cfg)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
