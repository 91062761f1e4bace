"""Running a benchmark script as a user would, for the benchmarks' smoke tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_benchmark(script: str, *args: str, threads: int | None = 2, timeout: int = 300) -> tuple[str, str]:
    """Run ``benchmarks/<script>`` with ``args`` in a fresh interpreter; assert it succeeds.

    ``threads``: OMP_NUM_THREADS for the child (None: inherit). Returns (stdout, its last line, the
    ``RESULT ...`` line every benchmark ends with)."""
    env = dict(os.environ) if threads is None else {**os.environ, "OMP_NUM_THREADS": str(threads)}
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], env=env,
                       capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, p.stderr[-2000:]
    return p.stdout, p.stdout.strip().splitlines()[-1]
