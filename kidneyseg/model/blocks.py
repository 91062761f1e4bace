"""Network building blocks that receive their operations as arguments.

Every block takes the op *classes* (``conv_op``, ``norm_op``, ``nonlin``) and their keyword
arguments; passing ``None`` for ``norm_op`` or ``nonlin`` switches that op off. The blocks are
dimension-agnostic: a 2D network follows from ``conv_op=nn.Conv2d, norm_op=nn.InstanceNorm2d``.
Tensors are ``[B, C, z, y, x]`` for 3D, in either memory layout (channels-first or
``torch.channels_last_3d``); the default norm, :class:`ChannelsLastInstanceNorm3d`, keeps the layout.

>>> import torch, torch.nn as nn
>>> ops = Ops()
>>> block = ResidualBlock(1, 8, kernel_size=3, stride=(1, 2, 2), ops=ops)
>>> block(torch.zeros(1, 1, 4, 8, 8)).shape
torch.Size([1, 8, 4, 4, 4])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
import torch.nn as nn

__all__ = ["ChannelsLastInstanceNorm3d", "Ops", "ConvNormAct", "ResidualBlock", "StackedBlocks", "same_padding"]


class _ChannelsLastInstanceNorm(torch.autograd.Function):
    """Instance norm of a channels-last ``[B, C, z, y, x]`` tensor: torch's batch-norm kernels on
    each sample, written straight into one channels-last output (and gradient), no copies."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
        n, c = x.shape[:2]
        y = torch.empty_like(x, memory_format=torch.channels_last_3d)
        # statistics in the parameters' dtype: float32 for a bf16 input with float32 parameters
        mean = x.new_empty((n, c), dtype=weight.dtype)
        invstd = x.new_empty((n, c), dtype=weight.dtype)
        for i in range(n):
            torch.ops.aten.native_batch_norm.out(x[i:i + 1], weight, bias, None, None, True, 0.0, eps,
                                                 out=y[i:i + 1], save_mean=mean[i], save_invstd=invstd[i])
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.eps = eps
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y: torch.Tensor):
        x, weight, mean, invstd = ctx.saved_tensors
        grad_y = grad_y.contiguous(memory_format=torch.channels_last_3d)
        n, c = x.shape[:2]
        mask = [bool(m) for m in ctx.needs_input_grad[:3]]
        grad_x = torch.empty_like(x, memory_format=torch.channels_last_3d)
        grad_w = weight.new_empty((n, c))
        grad_b = weight.new_empty((n, c))
        for i in range(n):
            torch.ops.aten.native_batch_norm_backward.out(
                grad_y[i:i + 1], x[i:i + 1], weight, None, None, mean[i], invstd[i], True, ctx.eps, mask,
                out0=grad_x[i:i + 1], out1=grad_w[i], out2=grad_b[i])
        return (grad_x if mask[0] else None, grad_w.sum(0) if mask[1] else None,
                grad_b.sum(0) if mask[2] else None, None)


class ChannelsLastInstanceNorm3d(nn.InstanceNorm3d):
    """``nn.InstanceNorm3d`` that keeps a ``channels_last_3d`` CPU input in that layout.

    torch's instance norm reshapes ``[B, C, z, y, x]`` to ``[1, B*C, z, y, x]``, which for a
    channels-last tensor is a full copy into channels-first, and the next convolution copies it
    back: two transposing copies per norm (the largest cost after the convolutions in a bf16
    training step on the CPU, measured). Here each sample ``[1, C, z, y, x]`` is normalized by
    torch's batch-norm kernel in training mode, which on one sample computes exactly the instance
    statistics (per channel, over z, y, x; float32 sums also for bf16 inputs) and runs natively on
    channels-last data, writing into one channels-last output. Same parameters (``weight``,
    ``bias``), same state dict, same values up to float rounding. Channels-first inputs, CUDA
    tensors and the non-affine variant go through torch's own implementation.

    Note: torch's channels-last batch-norm kernel sums per thread, so its last bits depend on the
    number of threads (the channels-first kernel's do not); :mod:`kidneyseg.runtime` therefore
    uses channels-last for CPU training only, never for prediction.

    >>> x = torch.randn(2, 4, 3, 5, 6).contiguous(memory_format=torch.channels_last_3d)
    >>> y = ChannelsLastInstanceNorm3d(4, affine=True)(x)
    >>> y.is_contiguous(memory_format=torch.channels_last_3d)
    True
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.dim() != 5 or x.device.type != "cpu" or self.track_running_stats or not self.affine
                or x.is_contiguous() or not x.is_contiguous(memory_format=torch.channels_last_3d)):
            return super().forward(x)
        return _ChannelsLastInstanceNorm.apply(x, self.weight, self.bias, self.eps)


@dataclass
class Ops:
    """The three operations a block is made of, with their keyword arguments.

    Args:
        conv_op: convolution class, e.g. ``nn.Conv3d``.
        norm_op: normalization class (:class:`ChannelsLastInstanceNorm3d`, i.e. instance norm) or
            ``None`` for no normalization.
        nonlin: activation class (``nn.LeakyReLU``) or ``None`` for none.

    A convolution followed by a normalization has no bias (the norm subtracts the mean, so a bias
    would be a wasted parameter); without a norm it has one. ``conv_kwargs={"bias": ...}`` overrides.
    """

    conv_op: type[nn.Module] = nn.Conv3d
    conv_kwargs: dict[str, Any] = field(default_factory=dict)
    norm_op: type[nn.Module] | None = ChannelsLastInstanceNorm3d
    norm_kwargs: dict[str, Any] = field(default_factory=lambda: {"eps": 1e-5, "affine": True})
    nonlin: type[nn.Module] | None = nn.LeakyReLU
    nonlin_kwargs: dict[str, Any] = field(default_factory=lambda: {"negative_slope": 1e-2, "inplace": True})

    def norm(self, channels: int) -> nn.Module:
        return nn.Identity() if self.norm_op is None else self.norm_op(channels, **self.norm_kwargs)

    def act(self) -> nn.Module:
        return nn.Identity() if self.nonlin is None else self.nonlin(**self.nonlin_kwargs)

    def conv(self, in_channels: int, out_channels: int, kernel_size, stride, padding, normalized: bool) -> nn.Module:
        """A convolution; ``normalized``: a norm follows it (then no bias unless ``conv_kwargs`` says so)."""
        kwargs = {"bias": not (normalized and self.norm_op is not None), **self.conv_kwargs}
        return self.conv_op(in_channels, out_channels, kernel_size, stride, padding, **kwargs)


def _tuple(value: int | Sequence[int], ndim: int) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * ndim
    value = tuple(int(v) for v in value)
    if len(value) != ndim:
        raise ValueError(f"expected {ndim} values, got {value!r}")
    return value


#: Spatial dimensions of the convolution classes a block can be built from.
CONV_NDIM = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3}


def _ndim(conv_op: type[nn.Module]) -> int:
    try:
        return CONV_NDIM[conv_op]
    except KeyError:
        raise ValueError(f"conv_op must be one of {[c.__name__ for c in CONV_NDIM]}, got {conv_op!r}") from None


def same_padding(kernel_size: Sequence[int]) -> tuple[int, ...]:
    """Padding that keeps the size for odd kernels: ``(k - 1) // 2`` per axis."""
    return tuple((k - 1) // 2 for k in kernel_size)


class ConvNormAct(nn.Module):
    """``conv -> norm -> nonlin``; norm and nonlin are skipped when their op is ``None``.

    Args:
        in_channels, out_channels: channel counts.
        kernel_size: int or per-axis (z, y, x) sizes (odd).
        stride: int or per-axis strides; ``(1, 2, 2)`` halves y and x only.
        ops: the operations (see :class:`Ops`).
        activate: apply the nonlinearity (False inside a residual block before the addition).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | Sequence[int] = 3,
                 stride: int | Sequence[int] = 1, ops: Ops | None = None, activate: bool = True):
        super().__init__()
        ops = ops or Ops()
        nd = _ndim(ops.conv_op)
        k, s = _tuple(kernel_size, nd), _tuple(stride, nd)
        self.conv = ops.conv(in_channels, out_channels, k, s, same_padding(k), normalized=True)
        self.norm = ops.norm(out_channels)
        self.act = ops.act() if activate else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class ResidualBlock(nn.Module):
    """Two convolutions with an identity (or 1x1x1 projection) shortcut, as in ResNet.

    ``out = nonlin(norm(conv(nonlin(norm(conv(x))))) + shortcut(x))``. The first convolution carries
    the stride; the shortcut becomes a strided 1x1x1 conv + norm when the shape changes.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | Sequence[int] = 3,
                 stride: int | Sequence[int] = 1, ops: Ops | None = None):
        super().__init__()
        ops = ops or Ops()
        nd = _ndim(ops.conv_op)
        s = _tuple(stride, nd)
        self.conv1 = ConvNormAct(in_channels, out_channels, kernel_size, s, ops)
        self.conv2 = ConvNormAct(out_channels, out_channels, kernel_size, 1, ops, activate=False)
        if in_channels != out_channels or any(v != 1 for v in s):
            self.shortcut = nn.Sequential(ops.conv(in_channels, out_channels, 1, s, 0, normalized=True),
                                          ops.norm(out_channels))
        else:
            self.shortcut = nn.Identity()
        self.act = ops.act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.conv1(x)) + self.shortcut(x))


class StackedBlocks(nn.Sequential):
    """``n_blocks`` blocks of two convolutions each; the first block applies ``stride``.

    With ``residual=True`` each block is a :class:`ResidualBlock`, otherwise two plain
    :class:`ConvNormAct`. Both variants have the same 3x3x3 convolutions, so the ablation "without
    Res" changes only the shortcuts.
    """

    def __init__(self, n_blocks: int, in_channels: int, out_channels: int, kernel_size: int | Sequence[int] = 3,
                 stride: int | Sequence[int] = 1, ops: Ops | None = None, residual: bool = True):
        if n_blocks < 1:
            raise ValueError(f"n_blocks must be >= 1, got {n_blocks!r}")
        ops = ops or Ops()
        layers: list[nn.Module] = []
        for i in range(n_blocks):
            c_in, st = (in_channels, stride) if i == 0 else (out_channels, 1)
            if residual:
                layers.append(ResidualBlock(c_in, out_channels, kernel_size, st, ops))
            else:
                layers.append(ConvNormAct(c_in, out_channels, kernel_size, st, ops))
                layers.append(ConvNormAct(out_channels, out_channels, kernel_size, 1, ops))
        super().__init__(*layers)
