"""The model folder: one class that knows its layout, and loading a trained stage for inference.

Layout (``MODEL_DIR``)::

    MODEL_DIR/plan.json                the preprocessing plan the stages were trained with
    MODEL_DIR/postprocess.json         the post-processing strategy chosen on validation cases
    MODEL_DIR/stage1/, stage2/         per stage:
        config.json                    the training config (a copy of the one inside each checkpoint)
        checkpoint_last.pt(.sha256)    the last epoch (exact resume)
        checkpoint_best.pt(.sha256)    the best validation epoch (what inference loads)
        metrics.csv                    one row per epoch
        runtime.json                   device, precision and memory layout training ran with
                                       (written by the trainer at each start, see kidneyseg.runtime)

Every module that reads or writes a model folder goes through :class:`ModelFolder` and
:class:`StageFolder` instead of spelling file names. :func:`load_stage` builds a stage's network
from its checkpoint without the training package (inference needs the network config and the
patch size, nothing of the optimizer).

>>> folder = ModelFolder("runs/demo/03_training/model")
>>> folder.stage(2).checkpoint_best.name, folder.plan_path.name
('checkpoint_best.pt', 'plan.json')
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from ..config import from_dict
from ..errors import fail
from ..runtime import Runtime
from .checkpoint import load_checkpoint, load_state_checked
from .outputs import OutputSpec
from .unet import NetworkConfig, UNet, build_unet

__all__ = ["ModelFolder", "StageFolder", "StageSpec", "load_stage"]

STAGES = (1, 2)


@dataclass(frozen=True)
class StageFolder:
    """``MODEL_DIR/stage<N>``: one stage's config, checkpoints, metrics and runtime record."""

    root: Path
    stage: int

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def checkpoint_last(self) -> Path:
        return self.root / "checkpoint_last.pt"

    @property
    def checkpoint_best(self) -> Path:
        return self.root / "checkpoint_best.pt"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.csv"

    @property
    def runtime(self) -> Path:
        return self.root / "runtime.json"

    def checkpoint(self, which: str = "best") -> Path:
        """``"best"`` (the last one when no best exists yet) or ``"last"``."""
        if which not in ("best", "last"):
            raise ValueError(f"which must be 'best' or 'last', got {which!r}")
        if which == "best" and self.checkpoint_best.is_file():
            return self.checkpoint_best
        return self.checkpoint_last

    def has_checkpoint(self) -> bool:
        return self.checkpoint_last.is_file() or self.checkpoint_best.is_file()


@dataclass(frozen=True)
class ModelFolder:
    """``MODEL_DIR``: the plan, the post-processing choice and the stage folders."""

    root: Path

    def __init__(self, root: os.PathLike | str):
        object.__setattr__(self, "root", Path(root))

    @property
    def plan_path(self) -> Path:
        return self.root / "plan.json"

    @property
    def postprocess_path(self) -> Path:
        return self.root / "postprocess.json"

    def stage(self, stage: int) -> StageFolder:
        if stage not in STAGES:
            raise ValueError(f"stage must be 1 or 2, got {stage!r}")
        return StageFolder(self.root / f"stage{stage}", stage)

    def require(self, stages: Sequence[int] = STAGES) -> "ModelFolder":
        """Raise one line naming what is missing (the folder, ``plan.json`` or a stage's checkpoint)."""
        if not self.root.is_dir():
            raise fail(self.root, "model folder not found")
        if not self.plan_path.is_file():
            raise fail(self.plan_path, "missing from the model folder (needs plan.json, stage1/, stage2/)")
        for st in stages:
            sf = self.stage(st)
            if not sf.root.is_dir():
                raise fail(sf.root, "missing from the model folder (needs plan.json, stage1/, stage2/)")
            if not sf.has_checkpoint():
                raise fail(sf.checkpoint_last, "checkpoint not found (train the stage first)")
        return self

    def load_plan(self):
        """The :class:`~kidneyseg.preprocess.plan.Plan` of ``plan.json``."""
        from ..preprocess.plan import Plan

        return Plan.load(self.plan_path)


@dataclass(frozen=True)
class StageSpec:
    """What inference needs of a trained stage.

    Attributes:
        stage: 1 or 2.
        network: the architecture (``in_channels``: 1 for stage 1, 1 + prior channels for stage 2).
        patch_size: the training patch (z, y, x) voxels, used as the sliding window.
        checkpoint: the file it was loaded from.
        output: its dataset and output kind (softmax or regions; configs from before these fields
            read as KiTS19 softmax).
    """

    stage: int
    network: NetworkConfig
    patch_size: tuple[int, int, int]
    checkpoint: Path
    output: OutputSpec = OutputSpec()


def _spec_from_config(text: str, stage: int, source: Path) -> StageSpec:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise fail(source, f"training config is not valid JSON ({exc})") from None
    if not isinstance(data, dict) or "network" not in data or "patch_size" not in data:
        raise fail(source, "training config lacks 'network' or 'patch_size'")
    network = from_dict(NetworkConfig, data["network"], f"{source}: network")
    try:
        output = OutputSpec(data.get("dataset"), data.get("output", "softmax"))
    except ValueError as exc:
        raise fail(source, str(exc)) from None
    if output.channels != network.num_classes:
        raise fail(source, f"network has {network.num_classes} output channels, a {output.dataset} "
                           f"{output.kind} output needs {output.channels}")
    return StageSpec(stage, network, tuple(int(p) for p in data["patch_size"]), source, output)


def load_stage(folder: StageFolder, device: str | torch.device | Runtime = "cpu",
               which: str = "best") -> tuple[UNet, StageSpec]:
    """A trained stage's network in eval mode on ``device`` and its :class:`StageSpec`.

    ``device`` may be a :class:`~kidneyseg.runtime.Runtime`: the network is then also put in its
    memory layout, and in bf16/fp16 its convolution weights are cast once
    (:meth:`~kidneyseg.runtime.Runtime.prepare_inference_model`): run it inside ``Runtime.autocast``.

    The checkpoint is verified (sha256) and loaded with ``weights_only=True``; a ``config.json``
    beside it whose network differs from the checkpoint's is refused (architecture mismatch).
    ``forward`` returns ``[B, num_classes, z, y, x]`` logits.
    """
    runtime = device if isinstance(device, Runtime) else Runtime(torch.device(device))
    path = folder.checkpoint(which)
    data = load_checkpoint(path, map_location=runtime.device)
    spec = _spec_from_config(data["config"], folder.stage, path)
    if folder.config.is_file():
        beside = _spec_from_config(folder.config.read_text(encoding="utf-8"), folder.stage, folder.config)
        if beside.network != spec.network:
            raise fail(folder.config, "network in config.json differs from the checkpoint's; architecture mismatch")
    model = build_unet(spec.network)
    load_state_checked(model, data["model"], path)
    return runtime.prepare_inference_model(model).eval(), spec
