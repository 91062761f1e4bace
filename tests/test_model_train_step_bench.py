"""benchmarks/train_step.py --quick runs and prints its RESULT line (a smoke test, not a timing)."""

from __future__ import annotations

import re

import pytest

from .bench_helpers import run_benchmark


def test_train_step_benchmark_quick():
    pytest.importorskip("dynamic_network_architectures")
    stdout, last = run_benchmark("train_step.py", "--quick")
    m = re.fullmatch(r"RESULT speedup_vs_nnunet=[0-9.]+ device=\S+ patch=32 precision=(fp32|bf16|fp16) "
                     r"fp32_speedup_vs_nnunet=[0-9.]+", last)
    assert m, last
    assert "| kidneyseg PM (residual + DS) |" in stdout and "| nnU-Net PlainConvUNet |" in stdout
    if m.group(1) != "fp32":  # the like-for-like fp32 row is there too
        assert "| kidneyseg PM, fp32 |" in stdout
    assert "load avg" in stdout
