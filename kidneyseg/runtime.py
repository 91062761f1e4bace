"""Where the networks run: the device, chosen once from the user's setting and the machine.

This module is the one home of run-time hardware choices (device now; precision and memory layout
belong here too). Every command and the pipeline resolve their ``device`` setting through it.

>>> resolve_device("cpu")
device(type='cpu')
"""

from __future__ import annotations

import torch

from .errors import KidneysegError

__all__ = ["DEVICES", "RAM_BUDGET_ENV", "ram_budget_bytes", "resolve_device"]

#: Accepted ``device`` settings: ``auto`` takes CUDA when a GPU is visible, the CPU otherwise.
DEVICES = ("auto", "cpu", "cuda")


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
