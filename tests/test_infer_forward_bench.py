"""benchmarks/forward.py --quick runs and prints its table and RESULT line (a smoke test, not a timing)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from kidneyseg.runtime import cpu_bf16_support

ROOT = Path(__file__).resolve().parents[1]


def test_forward_benchmark_quick():
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "forward.py"), "--quick"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    last = out.stdout.strip().splitlines()[-1]
    m = re.fullmatch(r"RESULT bf16_vs_fp32=([0-9.]+|nan) bf16_channels_last_vs_fp32=([0-9.]+|nan) "
                     r"fp32_s=[0-9.]+ precision_auto=(fp32|bf16)", last)
    assert m, last
    assert "| fp32 | channels-first |" in out.stdout and "| fp32 | channels_last_3d |" in out.stdout
    if cpu_bf16_support():  # both bf16 rows are timed where the CPU runs bf16
        assert m.group(1) != "nan" and m.group(3) == "bf16" and "| bf16 | channels-first |" in out.stdout
    else:
        assert m.group(1) == "nan" and m.group(3) == "fp32" and "| bf16 |" not in out.stdout
