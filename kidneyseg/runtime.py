"""How the networks run: the device, the numeric precision and the memory layout, chosen once.

This module is the one home of run-time hardware choices. Training and prediction resolve their
``device``, ``precision`` and ``channels_last`` settings through :func:`resolve_runtime`, and run
the network inside :meth:`Runtime.autocast`. The CPU memory a step may plan to use (a case being
preprocessed or predicted, one training step) is :func:`ram_budget_bytes`
(``$KIDNEYSEG_RAM_BUDGET_GIB``, else the RAM available now).

Precision (``--precision``; ``precision`` in a training config):

* ``auto`` (the default): ``bf16`` where the device runs it natively (a CPU with AMX or AVX-512
  BF16, detected at run time; a CUDA GPU with bf16 support), ``fp16`` with a gradient scaler on
  older GPUs, ``fp32`` otherwise.
* ``bf16`` / ``fp16``: autocast the *network* to that type. Only the network runs in low
  precision: losses, sliding-window accumulation (Gaussian weights and sums), post-processing and
  metrics stay float32. ``bf16`` on a device without native support and ``fp16`` on a CPU are
  refused with a one-line error.
* ``fp32``: no autocast.

Memory layout (``channels_last``: ``auto``/``on``/``off``): ``channels_last_3d`` (z, y, x, C in
memory) for the network and its inputs. ``auto`` takes it on CUDA, and on a CPU for bf16
*training*, where it was measured faster (oneDNN's bf16 convolutions run on channels-last data; the
instance norm of :mod:`kidneyseg.model.blocks` keeps that layout). CPU *prediction* stays
channels-first: torch's channels-last norm kernel sums per thread, so its predictions would depend
on the number of threads, and kidneyseg's results must not (CPU training already depends on it in
the last bits through the convolutions' backward pass, in fp32 too).

>>> rt = resolve_runtime("cpu", "fp32")
>>> rt.precision, rt.channels_last, rt.dtype
('fp32', False, torch.float32)
"""

from __future__ import annotations

import contextlib
import functools
import platform
from dataclasses import dataclass
from typing import Any

import torch

from .errors import KidneysegError

__all__ = ["DEVICES", "LAYOUTS", "PRECISIONS", "RAM_BUDGET_ENV", "Runtime", "cpu_bf16_support", "ram_budget_bytes",
           "resolve_device", "resolve_runtime"]

#: Accepted ``device`` settings: ``auto`` takes CUDA when a GPU is visible, the CPU otherwise.
DEVICES = ("auto", "cpu", "cuda")
#: Accepted ``precision`` settings.
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: Accepted ``channels_last`` settings.
LAYOUTS = ("auto", "on", "off")

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str | torch.device) -> torch.device:
    """The torch device for a ``device`` setting (``auto``, ``cpu``, ``cuda`` or ``cuda:N``).

    Raises:
        KidneysegError: an unknown name, or CUDA asked for on a machine without a usable GPU.
    """
    if isinstance(name, torch.device):
        dev = name
    else:
        text = str(name).strip().lower()
        if text == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if text.split(":")[0] not in ("cpu", "cuda"):
            raise KidneysegError(f"device must be one of {list(DEVICES)} (or cuda:N), got {name!r}")
        try:
            dev = torch.device(text)
        except RuntimeError:
            raise KidneysegError(f"device must be one of {list(DEVICES)} (or cuda:N), got {name!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise KidneysegError(f"device {str(name)!r} requested but no CUDA device is available")
    return dev


def _cpuinfo_flags() -> set[str]:
    """The CPU feature flags of ``/proc/cpuinfo`` (empty where there is none, e.g. macOS)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _torch_says(name: str) -> bool:
    fn = getattr(torch.cpu, name, None)  # private probes of torch's own CPU feature detection
    try:
        return bool(fn()) if fn is not None else False
    except Exception:  # pragma: no cover - a torch without the probe
        return False


@functools.lru_cache(maxsize=1)
def _detect_cpu_bf16() -> str | None:
    if not torch.backends.mkldnn.is_available():
        return None  # no oneDNN: no native bf16 convolutions
    flags = _cpuinfo_flags()
    if _torch_says("_is_amx_tile_supported") or "amx_bf16" in flags:
        return "AMX"
    if _torch_says("_is_avx512_bf16_supported") or "avx512_bf16" in flags:
        return "AVX-512 BF16"
    return None


def cpu_bf16_support() -> str | None:
    """The CPU's native bf16 matrix instructions (``"AMX"``, ``"AVX-512 BF16"``) or ``None``.

    Detected once per process from torch's CPU feature probes and the ``/proc/cpuinfo`` flags
    (``amx_bf16``, ``avx512_bf16``). Tests replace this function to simulate a CPU without bf16.
    """
    return _detect_cpu_bf16()


def _cuda_bf16(device: torch.device) -> bool:
    with torch.cuda.device(device):
        return bool(torch.cuda.is_bf16_supported())


def _device_text(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()}, torch {torch.backends.cpu.get_cpu_capability()})"


def _resolve_precision(setting: str, device: torch.device) -> tuple[str, str]:
    """``(precision, reason)`` for a setting on a device; refuses what the device cannot run."""
    if setting not in PRECISIONS:
        raise KidneysegError(f"precision must be one of {list(PRECISIONS)}, got {setting!r}")
    if device.type == "cuda":
        bf16 = _cuda_bf16(device)
        if setting == "auto":
            return ("bf16", "auto: GPU with bf16") if bf16 else ("fp16", "auto: GPU without bf16, fp16 + GradScaler")
        if setting == "bf16" and not bf16:
            raise KidneysegError(f"--precision bf16 on an unsupported device: {torch.cuda.get_device_name(device)} "
                                 "has no bf16; use fp16, fp32 or auto")
        return setting, "requested"
    isa = cpu_bf16_support()
    if setting == "auto":
        return ("bf16", f"auto: CPU with {isa}") if isa else ("fp32", "auto: CPU without native bf16")
    if setting == "bf16" and not isa:
        raise KidneysegError("--precision bf16 on an unsupported device: this CPU has neither AMX nor AVX-512 BF16 "
                             "(no native bf16); use fp32 or auto")
    if setting == "fp16":
        raise KidneysegError("--precision fp16 on an unsupported device: fp16 runs on CUDA GPUs only; "
                             "use bf16, fp32 or auto on the CPU")
    return setting, "requested"


def _resolve_layout(setting: str | bool, device: torch.device, precision: str, training: bool) -> bool:
    if isinstance(setting, bool):
        return setting
    if setting not in LAYOUTS:
        raise KidneysegError(f"channels_last must be one of {list(LAYOUTS)}, got {setting!r}")
    if setting != "auto":
        return setting == "on"
    # measured in docs/training.md and docs/inference.md; CPU prediction channels-first for
    # thread-count independent results (see the module docstring)
    return device.type == "cuda" or (training and precision == "bf16")


@dataclass(frozen=True)
class Runtime:
    """Where and how a network runs; build it with :func:`resolve_runtime`.

    Attributes:
        device: the torch device.
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"`` (resolved, never ``"auto"``).
        channels_last: networks and inputs in ``torch.channels_last_3d``.
        requested: the precision setting it was resolved from (``"auto"`` ...).
        reason: why this precision (``"auto: CPU with AVX-512 BF16"``, ``"requested"``).
    """

    device: torch.device
    precision: str = "fp32"
    channels_last: bool = False
    requested: str = "fp32"
    reason: str = "requested"

    @property
    def dtype(self) -> torch.dtype:
        """The autocast dtype of the network (``torch.float32``: no autocast)."""
        return _DTYPES[self.precision]

    @property
    def grad_scaler(self) -> bool:
        """Training needs a GradScaler (fp16's narrow exponent range)."""
        return self.precision == "fp16"

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last_3d if self.channels_last else torch.contiguous_format

    def autocast(self):
        """The context the network's forward runs in (a no-op for fp32)."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """``model`` on the device in the memory layout (weights stay float32; autocast casts them)."""
        return model.to(self.device, memory_format=self.memory_format)

    def prepare_inference_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """``model`` for prediction only: :meth:`prepare_model`, then, in low precision, its convolution
        weights cast to that type once (in place; never for a model that still trains).

        Under autocast, prediction (``inference_mode``, the context entered per window) re-cast all
        31.8 M float32 weights at every window: 42 ``aten::_to_copy`` calls, 8 % of a bf16 window in a
        profile (an outer autocast context around the windows left the count unchanged). Autocast passes a
        weight already in its type through, and the cast is the same rounding, so the logits are
        bit-identical (tested). The norms and everything outside the network stay float32; the
        network must run inside :meth:`autocast`.
        """
        model = self.prepare_model(model)
        if self.precision != "fp32":
            for m in model.modules():
                if isinstance(m, torch.nn.modules.conv._ConvNd):
                    m.to(self.dtype)
        return model

    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        """A 5-D ``[B, C, z, y, x]`` batch in the memory layout (on whatever device it is on)."""
        if self.channels_last and x.dim() == 5:
            return x.contiguous(memory_format=torch.channels_last_3d)
        return x

    def to_dict(self) -> dict[str, Any]:
        """What was chosen, for ``runtime.json`` files (model folder, run folder)."""
        return {"device": str(self.device), "device_name": _device_text(self.device), "precision": self.precision,
                "precision_setting": self.requested, "reason": self.reason,
                "memory_layout": "channels_last_3d" if self.channels_last else "channels_first",
                "cpu_bf16": cpu_bf16_support() if self.device.type == "cpu" else None,
                "torch": torch.__version__}

    def describe(self) -> str:
        """One line for the log: ``runtime: cpu, precision bf16 (auto: CPU with AVX-512 BF16), channels_last_3d``."""
        layout = "channels_last_3d" if self.channels_last else "channels-first"
        scaler = " + GradScaler" if self.grad_scaler else ""
        return f"runtime: {self.device}, precision {self.precision}{scaler} ({self.reason}), {layout}"


def resolve_runtime(device: str | torch.device = "auto", precision: str = "auto",
                    channels_last: str | bool = "auto", training: bool = False) -> Runtime:
    """Resolve the three settings for this machine (see the module docstring for the rules).

    ``training`` selects the automatic memory layout for training (else for prediction).

    Raises:
        KidneysegError: an unknown setting, CUDA without a GPU, bf16 on a device without native
            bf16, fp16 on a CPU (one line each).
    """
    dev = resolve_device(device)
    prec, reason = _resolve_precision(str(precision).strip().lower(), dev)
    layout = _resolve_layout(channels_last, dev, prec, training)
    return Runtime(dev, prec, layout, str(precision).strip().lower(), reason)


#: Environment variable capping the RAM (GiB) that one case or one training step may plan to use.
RAM_BUDGET_ENV = "KIDNEYSEG_RAM_BUDGET_GIB"


def ram_budget_bytes() -> int:
    """The CPU memory a step may plan to use: ``$KIDNEYSEG_RAM_BUDGET_GIB`` when set, else the RAM
    available now (psutil's ``available``: free plus reclaimable page cache).

    Raises:
        KidneysegError: the variable is set but not a positive number.
    """
    import os

    text = os.environ.get(RAM_BUDGET_ENV, "").strip()
    if text:
        try:
            gib = float(text)
        except ValueError:
            gib = -1.0
        if not gib > 0:
            raise KidneysegError(f"{RAM_BUDGET_ENV} must be a positive number of GiB, got {text!r}")
        return int(gib * 1024 ** 3)
    import psutil

    return int(psutil.virtual_memory().available)
