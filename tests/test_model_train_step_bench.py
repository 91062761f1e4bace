"""benchmarks/train_step.py --quick runs and prints its RESULT line (a smoke test, not a timing)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_train_step_benchmark_quick():
    pytest.importorskip("dynamic_network_architectures")
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "train_step.py"), "--quick"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    last = out.stdout.strip().splitlines()[-1]
    m = re.fullmatch(r"RESULT speedup_vs_nnunet=[0-9.]+ device=\S+ patch=32 precision=(fp32|bf16|fp16) "
                     r"fp32_speedup_vs_nnunet=[0-9.]+", last)
    assert m, last
    assert "| kidneyseg PM (residual + DS) |" in out.stdout and "| nnU-Net PlainConvUNet |" in out.stdout
    if m.group(1) != "fp32":  # the like-for-like fp32 row is there too
        assert "| kidneyseg PM, fp32 |" in out.stdout
    assert "load avg" in out.stdout
