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
>>> preset("demo", 2, {"epochs": 2, "sampler": {"tumor_fraction": 0.7}}).sampler.tumor_fraction
0.7

Parsing and merging are :mod:`kidneyseg.config`'s (one parser, one merge rule for the whole package).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..config import from_dict, merge, to_dict
from ..errors import fail, write_text_atomic
from ..model.inputs import stage_channels
from ..model.outputs import OUTPUTS, OutputSpec
from ..model.unet import NetworkConfig
from ..runtime import LAYOUTS, PRECISIONS
from .augment import AugmentConfig
from .losses import LossConfig
from .prior import PriorPerturbation

__all__ = ["OptimizerConfig", "PRESETS", "SamplerConfig", "SchedulerConfig", "TrainConfig", "load_config",
           "save_config", "preset"]


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
class SamplerConfig:
    """How training patches are drawn (:class:`kidneyseg.train.sampler.PatchSampler`).

    Args:
        fg_fraction: share of patches centred on a foreground voxel (nnU-Net: 1/3).
        tumor_fraction: probability a foreground patch is centred on tumor (when a case has one).
        max_locations: foreground voxels remembered per class and case.
        prior: how stage 2's prior is simulated from the ground truth (stage 2 only).
    """

    fg_fraction: float = 1 / 3
    tumor_fraction: float = 0.5
    max_locations: int = 10000
    prior: PriorPerturbation = field(default_factory=PriorPerturbation)

    def __post_init__(self) -> None:
        for name in ("fg_fraction", "tumor_fraction"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)!r}")
        if int(self.max_locations) < 1:
            raise ValueError(f"max_locations must be >= 1, got {self.max_locations!r}")


@dataclass
class TrainConfig:
    """Everything that defines one training stage.

    Args:
        stage: 1 (coarse, whole volume) or 2 (fine, ROI box with the stage-1 prior as input channels).
        dataset: ``"kits19"`` or ``"kits23"``; ``None`` (default): the dataset of the cache trained
            on (:func:`kidneyseg.train.stage.train_stage` fills it in; KiTS19 until then).
        output: ``"softmax"`` (one channel per label, the thesis's) or ``"regions"`` (one sigmoid
            per nested evaluation region, as nnU-Net's KiTS23 configuration; see
            :mod:`kidneyseg.model.outputs`).
        network: the architecture (``network.in_channels`` is forced to 1 for stage 1 and 1 + the
            dataset's prior regions for stage 2 (KiTS19 3, KiTS23 2); ``network.num_classes`` to the
            output's channels).
        loss: loss weights (see :mod:`kidneyseg.train.losses`).
        optimizer, scheduler: see their classes.
        epochs: number of epochs (thesis: 350); ``iterations_per_epoch`` training steps each.
        val_iterations: patch batches of the validation split per epoch (fast patch-based Dice).
        full_val_every: run the full-case validation hook every k epochs (0: never).
        batch_size, patch_size: patches per step and their (z, y, x) size in voxels.
        sampler: patch sampling and the stage-2 prior simulation (:class:`SamplerConfig`).
        augment: the augmentation (:class:`~kidneyseg.train.augment.AugmentConfig`; ``None`` = none).
        precision: ``"auto"`` (bf16 where the device runs it natively: a CPU with AMX or AVX-512
            BF16, a GPU with bf16; fp16 + GradScaler on older GPUs; fp32 otherwise), ``"bf16"``,
            ``"fp16"`` (CUDA only) or ``"fp32"``; see :mod:`kidneyseg.runtime`. The loss is float32.
        channels_last: ``"auto"`` (channels_last_3d on CUDA and for bf16 training on a CPU, where
            it was measured faster), ``"on"`` or ``"off"``.
        compile: wrap the network in ``torch.compile``.
        seed: base seed (python, numpy, torch, sampler, augmentation; each epoch and rank derives its own).
        grad_clip: gradient-norm clip (nnU-Net uses 12); 0 disables.
        progress: tqdm progress bars.
        prefetch: batches prepared ahead in a background thread (0: none).
    """

    stage: int = 1
    dataset: str | None = None
    output: str = "softmax"
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
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    augment: AugmentConfig | None = field(default_factory=AugmentConfig)
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
        if self.output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {self.output!r}")
        self.network.in_channels = stage_channels(self.stage, self.dataset)
        self.network.num_classes = self.output_spec.channels
        for name in ("epochs", "iterations_per_epoch", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        for name in ("val_iterations", "full_val_every", "prefetch"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        self.patch_size = [int(p) for p in self.patch_size]
        self.network.check_patch_size(self.patch_size)
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {self.precision!r}")
        if self.channels_last not in LAYOUTS:
            raise ValueError(f"channels_last must be one of {list(LAYOUTS)}, got {self.channels_last!r}")

    @property
    def output_spec(self) -> OutputSpec:
        """The network's output contract (dataset and softmax/regions)."""
        return OutputSpec(self.dataset, self.output)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

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


def load_config(path: os.PathLike | str) -> TrainConfig:
    """Read a :class:`TrainConfig` JSON file (missing keys take their defaults)."""
    path = Path(path)
    if not path.is_file():
        raise fail(path, "config file not found")
    return TrainConfig.from_json(path.read_text(encoding="utf-8"), str(path))


def save_config(cfg: TrainConfig, path: os.PathLike | str) -> Path:
    """Write ``cfg`` as JSON atomically."""
    return write_text_atomic(path, cfg.to_json() + "\n")


#: Named starting points (partial configs merged over the defaults): ``thesis`` (section 4.3: SGD
#: 0.99, 350 epochs, 128^3 patches) and ``demo`` (a tiny network and short epochs for phantoms on a
#: 2-core CPU).
PRESETS: dict[str, dict[str, Any]] = {
    "thesis": {},
    "demo": {
        "epochs": 6, "iterations_per_epoch": 25, "val_iterations": 4,
        "patch_size": [16, 64, 64], "augment": None, "prefetch": 2,
        "optimizer": {"name": "adamw", "lr": 3e-3},
        "loss": {"ce_weight": 1.0},
        "scheduler": {"name": "poly"},
        # p_tumor_missed: stage 1 on the demo's coarse grid misses small tumors; a stage 2 taught that the
        # prior can miss one found the 2 ml tumor of a validation phantom (docs/training.md)
        "sampler": {"fg_fraction": 0.5, "tumor_fraction": 0.7, "prior": {"p_tumor_missed": 0.3}},
        "network": {"n_stages": 4, "base_features": 8, "strides": [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]]},
    },
}


def preset(name: str, stage: int = 1, overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """A named preset (:data:`PRESETS`) for ``stage`` with ``overrides`` merged in.

    The one place where a preset and a user's overrides are combined (notebooks, commands and
    experiments all call it). Nested settings merge key by key (``{"network": {"residual":
    False}}`` changes that flag only); an unknown key at any level raises a one-line error listing
    the valid keys, as does an unknown preset name.
    """
    if name not in PRESETS:
        raise fail("preset", f"unknown preset {name!r}; valid: {', '.join(PRESETS)}")
    base = to_dict(TrainConfig(stage=stage))
    data = merge(merge(base, PRESETS[name], f"preset {name!r}"), overrides, "overrides")
    data["stage"] = stage
    return TrainConfig.from_dict(data)
