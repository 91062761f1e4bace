"""benchmarks/forward.py --quick runs and prints its table and RESULT line (a smoke test, not a timing)."""

from __future__ import annotations

import re

from kidneyseg.runtime import cpu_bf16_support

from .bench_helpers import run_benchmark


def test_forward_benchmark_quick():
    stdout, last = run_benchmark("forward.py", "--quick")
    m = re.fullmatch(r"RESULT bf16_vs_fp32=([0-9.]+|nan) bf16_channels_last_vs_fp32=([0-9.]+|nan) "
                     r"fp32_s=[0-9.]+ precision_auto=(fp32|bf16) weights_cast_once_gain=([0-9.]+|nan)", last)
    assert m, last
    assert "| fp32 | channels-first |" in stdout and "| fp32 | channels_last_3d |" in stdout
    if cpu_bf16_support():  # both bf16 rows are timed where the CPU runs bf16
        assert m.group(1) != "nan" and m.group(3) == "bf16" and m.group(4) != "nan"
        assert "| bf16 | channels-first, weights cast once |" in stdout
        assert "| bf16 | channels-first, weights cast per window |" in stdout
    else:
        assert m.group(1) == "nan" and m.group(3) == "fp32" and m.group(4) == "nan" and "| bf16 |" not in stdout
