"""The memory one training step needs, worked out before training starts (``kidneyseg train --dry-run``).

A step of :class:`~kidneyseg.train.trainer.Trainer` holds, at its peak (the start of the backward pass):

* **weights, gradients and optimizer state**: ``P`` parameters x 4 bytes each, times 2 + the
  optimizer's slots (SGD with momentum: 1, AdamW: 2); with autocast, the low-precision weight copies
  are not counted (``P`` x 2 bytes, small beside the activations at training patch sizes);
* **activations**: every tensor autograd keeps for the backward pass, in the network (conv inputs,
  norm inputs, activation outputs of every stage of the encoder and decoder) and in the loss
  (softmax, one-hot, pooled boundaries of each deep-supervision scale);
* **the batch**: ``B x C x patch`` float32 images and ``B x patch`` int64 labels;
* **a backward workspace**: the gradients in flight while a layer's backward runs, estimated as
  :data:`WORKSPACE_MAPS` times the largest feature map (the first stage's output).

How the activations are counted: the network is fully convolutional and the patch divides by its
total stride, so every feature map holds ``patch_voxels / (stride product up to its stage)`` voxels
and the saved bytes are exactly proportional to ``B x patch voxels``. They are measured once at the
smallest valid patch (twice the total stride on each axis, batch 1) with autograd's saved-tensor
hooks, each storage counted once: the network on PyTorch's ``meta`` device (no memory, no compute;
exact for float32), the loss on a tiny real CPU tensor; then scaled. With mixed precision
(``bf16``/``fp16`` autocast) the network pass runs for real on the training device at that smallest
patch, because autocast decides per operation what it keeps in which precision.

:meth:`MemoryPlan.table` also lists each encoder stage's feature maps (channels x spatial size), the
figure dynamic-network-architectures computes for nnU-Net's plans.

>>> from kidneyseg.train.config import preset
>>> plan = training_memory_plan(preset("demo", 1, {"patch_size": [16, 64, 64]}))
>>> plan.total_bytes > plan.activation_bytes > 0
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from ..errors import KidneysegError
from ..model.unet import NetworkConfig, build_unet
from ..runtime import Runtime, resolve_runtime
from .config import TrainConfig

__all__ = ["MemoryPlan", "StageMaps", "WORKSPACE_MAPS", "check_memory_plan", "training_memory_plan"]

GIB = 1024 ** 3
#: Feature maps of the first stage's size assumed in flight during the backward pass (gradient of a
#: block's output and input, the convolution's weight-gradient scratch); calibrated on CPU against
#: measured peaks (tests/test_train_memory_plan.py).
WORKSPACE_MAPS = 3
#: Optimizer state slots per parameter.
OPTIMIZER_SLOTS = {"sgd": 1, "adamw": 2}


@dataclass
class StageMaps:
    """One encoder stage's output: ``channels`` x ``shape`` (z, y, x) voxels per sample."""

    stage: int
    channels: int
    shape: tuple[int, int, int]

    @property
    def elements(self) -> int:
        return int(self.channels * np.prod(self.shape))


@dataclass
class MemoryPlan:
    """The estimate of one training step's peak memory (bytes)."""

    batch_size: int
    patch_size: tuple[int, int, int]
    precision: str
    device: str
    parameters: int
    weight_bytes: int
    gradient_bytes: int
    optimizer_bytes: int
    network_activation_bytes: int
    loss_activation_bytes: int
    batch_bytes: int
    workspace_bytes: int
    stages: list[StageMaps] = field(default_factory=list)

    @property
    def activation_bytes(self) -> int:
        return self.network_activation_bytes + self.loss_activation_bytes

    @property
    def total_bytes(self) -> int:
        """The peak: weights and optimizer state always; then either the forward/backward working set
        (activations, batch, workspace: the backward starts with every activation kept and few
        gradients yet) or, during the optimizer step, the gradients, whichever is larger."""
        working = self.activation_bytes + self.batch_bytes + self.workspace_bytes
        return self.weight_bytes + self.optimizer_bytes + max(working, self.gradient_bytes)

    def table(self) -> str:
        """A few lines for the console: per-stage feature maps and the byte budget."""
        g = lambda b: f"{b / GIB:7.2f} GiB"  # noqa: E731
        lines = [f"memory plan: batch {self.batch_size} x patch {list(self.patch_size)} (z, y, x), "
                 f"{self.precision}, {self.parameters / 1e6:.1f} M parameters, on {self.device}"]
        for s in self.stages:
            lines.append(f"  stage {s.stage}: {s.channels:4d} x {'x'.join(map(str, s.shape)):>11} = "
                         f"{s.elements / 1e6:8.2f} M values per sample")
        lines += [f"  weights + optimizer state        {g(self.weight_bytes + self.optimizer_bytes)} "
                  f"(+ gradients {g(self.gradient_bytes).strip()}, made while activations are freed)",
                  f"  activations kept for backward    {g(self.network_activation_bytes)} network, "
                  f"{g(self.loss_activation_bytes).strip()} loss",
                  f"  batch + backward workspace       {g(self.batch_bytes + self.workspace_bytes)}",
                  f"  total                            {g(self.total_bytes)}"]
        return "\n".join(lines)


def _stage_maps(net: NetworkConfig, patch: Sequence[int]) -> list[StageMaps]:
    out, size = [], list(int(p) for p in patch)
    for i, (c, s) in enumerate(zip(net.stage_features(), net.strides)):
        size = [a // b for a, b in zip(size, s)]
        out.append(StageMaps(i, int(c), tuple(size)))  # type: ignore[arg-type]
    return out


def _saved_bytes(fn, exclude: set[int], weight_shapes: frozenset = frozenset()) -> int:
    """Bytes of the distinct storages autograd saves while ``fn()`` runs (storages in ``exclude`` skipped,
    and tensors shaped like a weight: autocast's low-precision copies of the parameters, which do not
    grow with the patch and must not be scaled with the activations)."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor):
        st = t.untyped_storage()
        key = st._cdata if t.device.type == "meta" else st.data_ptr()
        if key not in exclude and tuple(t.shape) not in weight_shapes:
            seen[key] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def _storage_keys(module: torch.nn.Module) -> set[int]:
    keys = set()
    for p in module.parameters():
        st = p.untyped_storage()
        keys.add(st._cdata if p.device.type == "meta" else st.data_ptr())
    return keys


def _min_patch(net: NetworkConfig) -> list[int]:
    return [2 * t for t in net.total_stride()]


def _network_bytes_per_voxel(config: TrainConfig, runtime: Runtime) -> float:
    """Saved activation bytes of the network per (sample x patch voxel)."""
    net_cfg = config.network
    patch = _min_patch(net_cfg)
    real = runtime.precision != "fp32"
    where = runtime.device if real else torch.device("meta")
    with torch.device(where):
        net = build_unet(NetworkConfig(**net_cfg.to_dict())).train()
        x = torch.zeros((1, net_cfg.in_channels, *patch))
    if real:
        net, x = runtime.prepare_model(net), runtime.prepare_input(x)

    def forward():
        with runtime.autocast():
            return net(x)

    shapes = frozenset(tuple(p.shape) for p in net.parameters()) if real else frozenset()
    nbytes = _saved_bytes(forward, _storage_keys(net), shapes)
    return nbytes / float(np.prod(patch))


def _loss_bytes_per_voxel(config: TrainConfig) -> float:
    """Saved activation bytes of the deep-supervision loss per (sample x patch voxel), on CPU."""
    from .losses import DeepSupervisionLoss, SegmentationLoss

    net = config.network
    # the smallest patch whose every deep-supervision scale has 2 voxels per axis (the loss sees
    # decoder outputs down to stage n - 2)
    down = [1, 1, 1]
    for s in net.strides[:-1]:
        down = [a * b for a, b in zip(down, s)]
    patch = [2 * d for d in down]
    k = net.num_classes
    g = torch.Generator().manual_seed(0)
    shapes = []
    size = list(patch)
    for s in net.strides[1:] if net.deep_supervision else []:
        shapes.append(list(size))
        size = [a // b for a, b in zip(size, s)]
    outs = [torch.randn((1, k, *s), generator=g, requires_grad=True) for s in (shapes or [patch])]
    target = torch.randint(0, k, (1, 1, *patch), generator=g)
    loss = DeepSupervisionLoss(SegmentationLoss(config.loss))
    arg = outs if net.deep_supervision else outs[0]
    exclude = {o.untyped_storage().data_ptr() for o in outs}  # the logits: the network's outputs
    return _saved_bytes(lambda: loss(arg, target), exclude) / float(np.prod(patch))


def training_memory_plan(config: TrainConfig, device: str | torch.device = "cpu") -> MemoryPlan:
    """Estimate the peak memory of one training step of ``config`` on ``device`` (nothing is allocated
    at full size; a few seconds on a CPU).

    Args:
        config: the stage's training config (network, patch, batch, optimizer, loss, precision).
        device: where training runs (``auto``/``cpu``/``cuda``); with ``config.precision`` and
            ``config.channels_last`` it decides the runtime the step runs with
            (:func:`kidneyseg.runtime.resolve_runtime`, as the trainer resolves it).

    Raises:
        KidneysegError: a precision the device cannot run (bf16 on a CPU without it, ...).
    """
    runtime = resolve_runtime(device, config.precision, config.channels_last, training=True)
    dev, precision = runtime.device, runtime.precision
    net = config.network
    patch = tuple(int(p) for p in config.patch_size)
    vox = int(np.prod(patch))
    b = int(config.batch_size)
    with torch.device("meta"):
        n_params = sum(p.numel() for p in build_unet(NetworkConfig(**net.to_dict())).parameters())
    weights = 4 * n_params
    stages = _stage_maps(net, patch)
    largest = max(s.elements for s in stages) * 4 * b
    return MemoryPlan(
        batch_size=b, patch_size=patch, precision=precision, device=dev.type, parameters=n_params,
        weight_bytes=weights, gradient_bytes=weights,
        optimizer_bytes=OPTIMIZER_SLOTS[config.optimizer.name] * weights,
        network_activation_bytes=int(math.ceil(_network_bytes_per_voxel(config, runtime) * b * vox)),
        loss_activation_bytes=int(math.ceil(_loss_bytes_per_voxel(config) * b * vox)),
        batch_bytes=b * vox * (4 * net.in_channels + 8),
        workspace_bytes=WORKSPACE_MAPS * largest,
        stages=stages)


def check_memory_plan(plan: MemoryPlan, budget_bytes: int, what: str) -> None:
    """Refuse, in one line naming the settings to change, a step that does not fit ``budget_bytes``.

    Args:
        plan: from :func:`training_memory_plan`.
        budget_bytes: memory the step may use (GPU memory, or the CPU RAM budget).
        what: names the budget in the message (``"GPU memory"``, ``"the RAM budget"``).

    Raises:
        KidneysegError: ``plan.total_bytes > budget_bytes``.
    """
    if plan.total_bytes <= budget_bytes:
        return
    fixed = plan.weight_bytes + plan.gradient_bytes + plan.optimizer_bytes
    share = max(0.0, (budget_bytes - fixed) / max(plan.total_bytes - fixed, 1))
    raise KidneysegError(
        f"one training step needs about {plan.total_bytes / GIB:.1f} GiB ({plan.activation_bytes / GIB:.1f} GiB "
        f"of activations for batch_size {plan.batch_size} x patch_size {list(plan.patch_size)}, {plan.precision}) "
        f"but {what} is {budget_bytes / GIB:.1f} GiB; lower batch_size or patch_size in the training config "
        f"(about {share:.0%} of today's batch_size x patch voxels would fit)")
