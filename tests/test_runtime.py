"""Device choice: auto follows the machine, CUDA without a GPU and unknown names are one-line errors."""

import pytest
import torch

from kidneyseg.errors import KidneysegError
from kidneyseg.runtime import resolve_device


def test_auto_takes_cuda_only_when_visible(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")


def test_cuda_without_gpu_and_unknown_names_are_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(KidneysegError, match="no CUDA device"):
        resolve_device("cuda")
    with pytest.raises(KidneysegError, match="device must be one of"):
        resolve_device("tpu")
    assert resolve_device(" CPU ") == torch.device("cpu")


def test_ram_budget_from_the_environment_or_the_free_memory(monkeypatch):
    from kidneyseg.runtime import RAM_BUDGET_ENV, ram_budget_bytes

    monkeypatch.setenv(RAM_BUDGET_ENV, "1.5")
    assert ram_budget_bytes() == int(1.5 * 2**30)
    for bad in ("0", "-2", "lots"):
        monkeypatch.setenv(RAM_BUDGET_ENV, bad)
        with pytest.raises(KidneysegError, match=f"{RAM_BUDGET_ENV} must be a positive number of GiB"):
            ram_budget_bytes()
    monkeypatch.delenv(RAM_BUDGET_ENV)
    assert 0 < ram_budget_bytes()

