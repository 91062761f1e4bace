"""benchmarks/predict.py --quick runs end to end and prints its RESULT line (needs nnunetv2)."""

import importlib.util
import re
import subprocess
import sys

import pytest

from .conftest import ROOT


@pytest.mark.skipif(importlib.util.find_spec("nnunetv2") is None, reason="nnunetv2 not installed (make bench)")
def test_predict_benchmark_quick():
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "predict.py"), "--quick", "--threads", "1"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    last = p.stdout.strip().splitlines()[-1]
    m = re.fullmatch(r"RESULT speedup_vs_nnunet=([0-9.]+) seconds_per_case=([0-9.]+) peak_rss_gib=([0-9.]+)", last)
    assert m, last
    assert float(m.group(2)) > 0 and 0 < float(m.group(3)) < 3
    assert "| kidneyseg |" in p.stdout and "| nnunet |" in p.stdout
