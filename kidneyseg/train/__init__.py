"""kidneyseg.train: configuration, losses, the resumable (DDP-ready) trainer and safe checkpoints.

>>> from kidneyseg.train import TrainConfig, Trainer, load_model   # doctest: +SKIP
"""

from .checkpoint import load_model
from .config import TrainConfig, load_config, preset, save_config
from .trainer import Trainer

__all__ = ["TrainConfig", "Trainer", "load_config", "load_model", "preset", "save_config"]
