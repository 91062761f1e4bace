"""kidneyseg.train: configuration, losses, sampling, augmentation and the resumable (DDP-ready) trainer.

>>> from kidneyseg.train import TrainConfig, Trainer, preset   # doctest: +SKIP
"""

from .config import TrainConfig, load_config, preset, save_config
from .trainer import Trainer

__all__ = ["TrainConfig", "Trainer", "load_config", "preset", "save_config"]
