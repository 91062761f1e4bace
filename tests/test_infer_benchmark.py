"""benchmarks/predict.py --quick and benchmarks/windows.py run end to end and print their RESULT lines."""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .bench_helpers import run_benchmark
from .conftest import ROOT

SHARED_BENCH = Path(os.environ.get("KIDNEYSEG_SHARED_BENCH", ROOT.parent / "shared" / "bench"))


@pytest.mark.skipif(importlib.util.find_spec("nnunetv2") is None, reason="nnunetv2 not installed (make bench)")
@pytest.mark.skipif(not (SHARED_BENCH / "make_volume.py").is_file(), reason="anchor scripts (../shared/bench) absent")
def test_predict_benchmark_quick():
    stdout, last = run_benchmark("predict.py", "--quick", "--threads", "1", threads=None)
    m = re.fullmatch(r"RESULT speedup_vs_nnunet=([0-9.]+) seconds_per_case=([0-9.]+) peak_rss_gib=([0-9.]+) "
                     r"fp32_speedup_vs_nnunet=([0-9.]+|nan) precision=(fp32|bf16) bf16_dice_delta=nan", last)
    assert m, last  # --quick skips the parity check (it trains a model)
    assert float(m.group(2)) > 0 and 0 < float(m.group(3)) < 3
    # 2 alternating runs each in the per-run table (method | precision | ...), then one median row per side
    assert stdout.count("| kidneyseg |") == 2 and stdout.count("| nnunet | fp32 |") == 2
    assert "| ours | 2 |" in stdout and "| nnunet | 2 |" in stdout
    if m.group(5) == "bf16":
        assert stdout.count("| kidneyseg fp32 |") == 2 and "| ours_fp32 | 2 |" in stdout and m.group(4) != "nan"
    assert "load avg" in stdout


@pytest.mark.kits19
def test_windows_benchmark_on_real_geometries(kits19_dir):
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "windows.py"), "--kits19", str(kits19_dir),
                        "--limit", "12", "--workers", "1"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    last = p.stdout.strip().splitlines()[-1]
    m = re.fullmatch(r"RESULT window_ratio=([0-9.]+) median_case_ratio=([0-9.]+) cases=12", last)
    assert m, last
    # every real scan is larger than a patch, and the box is smaller than most scans
    assert 1.0 < float(m.group(1)) < 20 and 1.0 < float(m.group(2)) < 20


def test_windows_benchmark_without_labels_says_so(tmp_path):
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "windows.py"), "--kits19", str(tmp_path)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stdout.strip().splitlines()[-1] == "RESULT skipped=no_kits19"
