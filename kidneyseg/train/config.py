"""Training configuration as data: :class:`TrainConfig` <-> JSON, unknown keys refused.

The defaults are the thesis's recipe (section 4.3): SGD with momentum 0.99 (Nesterov), weight decay
3e-5, learning rate 1e-2, ReduceLROnPlateau (threshold 1e-3, patience 30, minimum 1e-6), 350
epochs, batch 2. A copy is saved as ``config.json`` beside every checkpoint and inside it.

>>> cfg = TrainConfig.from_dict({"epochs": 4, "network": {"base_features": 8}})
>>> cfg.network.base_features, cfg.optimizer.momentum
(8, 0.99)
>>> TrainConfig.from_dict({"epoch": 4})
Traceback (most recent call last):
...
kidneyseg.errors.KidneysegError: config: unknown key 'epoch'; valid keys: ...
"""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import KidneysegError, fail, write_text_atomic
from ..model.unet import NetworkConfig
from .losses import LossConfig

__all__ = ["OptimizerConfig", "SchedulerConfig", "TrainConfig", "from_dict", "load_config", "save_config", "preset"]


@dataclass
class OptimizerConfig:
    """Optimizer: ``"sgd"`` (thesis 4.3: momentum 0.99, Nesterov) or ``"adamw"`` (uses ``lr`` and
    ``weight_decay`` only; converges in fewer steps, handy for tiny CPU runs)."""

    name: str = "sgd"
    lr: float = 1e-2
    momentum: float = 0.99
    nesterov: bool = True
    weight_decay: float = 3e-5

    def __post_init__(self) -> None:
        if self.name not in ("sgd", "adamw"):
            raise ValueError(f"optimizer name must be 'sgd' or 'adamw', got {self.name!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum!r}")


@dataclass
class SchedulerConfig:
    """Learning-rate schedule: ``"plateau"`` (thesis: ReduceLROnPlateau on the validation loss),
    ``"poly"`` (nnU-Net: ``lr * (1 - epoch / epochs) ** exponent``) or ``"constant"``."""

    name: str = "plateau"
    factor: float = 0.2
    patience: int = 30
    threshold: float = 1e-3
    min_lr: float = 1e-6
    poly_exponent: float = 0.9

    def __post_init__(self) -> None:
        if self.name not in ("plateau", "poly", "constant"):
            raise ValueError(f"scheduler name must be 'plateau', 'poly' or 'constant', got {self.name!r}")
        if not 0 < self.factor < 1:
            raise ValueError(f"factor must be in (0, 1), got {self.factor!r}")


@dataclass
class TrainConfig:
    """Everything that defines one training stage.

    Args:
        stage: 1 (coarse, whole volume) or 2 (fine, ROI box with the stage-1 prior as input channels).
        network: the architecture (``network.in_channels`` is forced to 1 for stage 1 and 3 for stage 2).
        loss: loss weights (see :mod:`kidneyseg.train.losses`).
        optimizer, scheduler: see their classes.
        epochs: number of epochs (thesis: 350); ``iterations_per_epoch`` training steps each.
        val_iterations: patch batches of the validation split per epoch (fast patch-based Dice).
        full_val_every: run the full-case validation hook every k epochs (0: never).
        batch_size, patch_size: patches per step and their (z, y, x) size in voxels.
        fg_fraction: share of patches centered on foreground (sampler).
        augment: keyword arguments of the sampler developer's ``AugmentConfig`` ({} = its defaults;
            ``None`` = no augmentation).
        precision: ``"auto"`` (bf16 on CUDA where supported, else fp16 + GradScaler; fp32 on CPU),
            ``"bf16"``, ``"fp16"`` or ``"fp32"``.
        channels_last: ``"auto"`` (on CUDA), ``"on"`` or ``"off"``: channels_last_3d memory format.
        compile: wrap the network in ``torch.compile``.
        seed: base seed (python, numpy, torch, sampler, augmentation; each epoch and rank derives its own).
        grad_clip: gradient-norm clip (nnU-Net uses 12); 0 disables.
        progress: tqdm progress bars.
        prefetch: batches prepared ahead in a background thread (0: none).
    """

    stage: int = 1
    network: NetworkConfig = field(default_factory=NetworkConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    epochs: int = 350
    iterations_per_epoch: int = 250
    val_iterations: int = 50
    full_val_every: int = 0
    batch_size: int = 2
    patch_size: list[int] = field(default_factory=lambda: [128, 128, 128])
    fg_fraction: float = 1 / 3
    augment: dict[str, Any] | None = field(default_factory=dict)
    precision: str = "auto"
    channels_last: str = "auto"
    compile: bool = False
    seed: int = 0
    grad_clip: float = 12.0
    progress: bool = True
    prefetch: int = 2

    def __post_init__(self) -> None:
        if self.stage not in (1, 2):
            raise ValueError(f"stage must be 1 or 2, got {self.stage!r}")
        self.network.in_channels = 1 if self.stage == 1 else 3
        for name in ("epochs", "iterations_per_epoch", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        for name in ("val_iterations", "full_val_every", "prefetch"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        self.patch_size = [int(p) for p in self.patch_size]
        self.network.check_patch_size(self.patch_size)
        if not 0 <= self.fg_fraction <= 1:
            raise ValueError(f"fg_fraction must be in [0, 1], got {self.fg_fraction!r}")
        if self.precision not in ("auto", "bf16", "fp16", "fp32"):
            raise ValueError(f"precision must be 'auto', 'bf16', 'fp16' or 'fp32', got {self.precision!r}")
        if self.channels_last not in ("auto", "on", "off"):
            raise ValueError(f"channels_last must be 'auto', 'on' or 'off', got {self.channels_last!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        return from_dict(cls, data)

    @classmethod
    def from_json(cls, text: str, source: str = "config") -> "TrainConfig":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise fail(source, f"not valid JSON ({exc})") from None
        return from_dict(cls, data, source)


def from_dict(cls, data: Any, where: str = "config"):
    """Build dataclass ``cls`` from ``data``; nested dataclasses recursively; unknown keys raise
    :class:`KidneysegError` listing the valid keys; bad values raise it with the field's message."""
    if not isinstance(data, dict):
        raise fail(where, f"expected a JSON object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise fail(where, f"unknown key {key!r}; valid keys: {', '.join(names)}")
        sub = hints[key]
        if dataclasses.is_dataclass(sub):
            value = from_dict(sub, value, f"{where}.{key}")
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, KidneysegError):
            raise
        raise fail(where, str(exc)) from None


def load_config(path: os.PathLike | str) -> TrainConfig:
    """Read a :class:`TrainConfig` JSON file (missing keys take their defaults)."""
    path = Path(path)
    if not path.is_file():
        raise fail(path, "config file not found")
    return TrainConfig.from_json(path.read_text(encoding="utf-8"), str(path))


def save_config(cfg: TrainConfig, path: os.PathLike | str) -> Path:
    """Write ``cfg`` as JSON atomically."""
    return write_text_atomic(path, cfg.to_json() + "\n")


def preset(name: str, stage: int = 1) -> TrainConfig:
    """Named starting points: ``"thesis"`` (section 4.3 defaults, 350 epochs, 128^3 patches) or
    ``"demo"`` (a tiny network and few short epochs that train on phantoms on a 2-core CPU)."""
    if name == "thesis":
        return TrainConfig(stage=stage)
    if name == "demo":
        return TrainConfig.from_dict({
            "stage": stage, "epochs": 6, "iterations_per_epoch": 25, "val_iterations": 4,
            "patch_size": [16, 64, 64], "augment": None, "prefetch": 2,
            "optimizer": {"name": "adamw", "lr": 3e-3},
            "loss": {"ce_weight": 1.0},
            "scheduler": {"name": "poly"},
            "network": {"n_stages": 4, "base_features": 8, "strides": [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]]},
        })
    raise ValueError(f"preset must be 'thesis' or 'demo', got {name!r}")
