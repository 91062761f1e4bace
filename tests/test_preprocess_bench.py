"""benchmarks/resample.py --quick and benchmarks/load.py --quick run and print their RESULT lines."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("nnunetv2") is None, reason="nnunetv2 not installed (make bench)")
@pytest.mark.skipif(not (ROOT.parent / "shared" / "bench" / "make_volume.py").exists(),
                    reason="anchor benchmarks (../shared/bench) not found")
def test_resample_benchmark_quick(tmp_path):
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "resample.py"), "--quick",
                        "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    last = p.stdout.strip().splitlines()[-1]
    assert last.startswith("RESULT speedup_vs_nnunet=")
    fields = dict(kv.split("=") for kv in last.split()[1:])
    assert float(fields["max_abs_diff_vs_scipy"]) < 0.01      # cubic B-spline == scipy order 3
    assert float(fields["speedup_vs_nnunet"]) > 1


@pytest.mark.slow
@pytest.mark.skipif(not (ROOT.parent / "shared" / "bench" / "make_volume.py").exists(),
                    reason="anchor benchmarks (../shared/bench) not found")
def test_load_benchmark_quick(tmp_path):
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "load.py"), "--quick", "--repeat", "1",
                        "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.strip().splitlines()[-1].startswith("RESULT speedup_vs_nibabel=")
