"""Training-side checkpoint content: the RNG states saved with every checkpoint for exact resume,
and a model folder of untrained (random-weight) stages for benchmarks and tests.

The file format itself (atomic writes, sha256, ``weights_only`` loading) is
:mod:`kidneyseg.model.checkpoint`; the folder layout is :mod:`kidneyseg.model.folder`.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

__all__ = ["get_rng_state", "set_rng_state", "write_untrained_model"]


def get_rng_state() -> dict[str, Any]:
    """RNG states of python, numpy and torch (CPU and CUDA) as tensors and lists."""
    version, py_state, gauss = random.getstate()
    np_state = np.random.get_state()
    state = {
        "python": [int(version), list(py_state), gauss],
        "numpy": [str(np_state[0]), torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`get_rng_state` returned."""
    version, py_state, gauss = state["python"]
    random.setstate((int(version), tuple(int(v) for v in py_state), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def write_untrained_model(root: os.PathLike | str, plan, configs: Sequence) -> Path:
    """A complete model folder whose stages hold random weights: what a benchmark times or a test
    predicts with, where the weights' values do not matter.

    Args:
        root: the model folder to write (created).
        plan: the :class:`~kidneyseg.preprocess.plan.Plan` saved as ``root/plan.json``.
        configs: one :class:`~kidneyseg.train.config.TrainConfig` per stage (``cfg.stage`` names the
            folder); stage ``N``'s weights come from ``torch.manual_seed(N)``, so the folder is the
            same at every call.

    Returns:
        ``root``, with ``plan.json`` and ``stage<N>/config.json`` + ``checkpoint_last.pt`` (epoch 0).
    """
    from ..model import build_unet
    from ..model.checkpoint import save_checkpoint
    from ..model.folder import ModelFolder
    from .config import save_config

    folder = ModelFolder(root)
    folder.root.mkdir(parents=True, exist_ok=True)
    plan.save(folder.plan_path)
    for cfg in configs:
        torch.manual_seed(cfg.stage)
        stage = folder.stage(cfg.stage)
        stage.root.mkdir(exist_ok=True)
        save_config(cfg, stage.config)
        save_checkpoint(stage.checkpoint_last, {"model": build_unet(cfg.network).state_dict(),
                                                "config": cfg.to_json(), "epoch": 0})
    return folder.root
