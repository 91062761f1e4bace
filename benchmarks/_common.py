"""Shared helpers for kidneyseg benchmarks: fresh-process runs with peak RSS, anchor imports, tables.

Peak RSS is the process's VmHWM reset just before the measured call (Linux ``/proc/self/clear_refs``),
the same method as ``../shared/bench/memtools.py``: ``ru_maxrss`` alone is wrong for a child process,
which inherits its parent's high-water mark.

A benchmark calls :func:`run_worker` to run one measurement in a fresh interpreter: the child runs
``python SCRIPT --worker ARGS...`` and prints one ``RESULT_JSON {...}`` line, which comes back as a dict.
Inside the worker, :func:`measure` times a call and records its peak RSS.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: The anchor scripts (nnU-Net / MONAI baselines), beside the checkout.
SHARED_BENCH = Path(os.environ.get("KIDNEYSEG_SHARED_BENCH", ROOT.parent / "shared" / "bench"))


def _status_mb(key: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def rss_mb() -> float:
    """Current resident set size, MB."""
    v = _status_mb("VmRSS")
    if v is None:
        import psutil
        v = psutil.Process().memory_info().rss / 2**20
    return v


def peak_rss_mb() -> float:
    """Peak resident set size since the last :func:`reset_peak`, MB."""
    v = _status_mb("VmHWM")
    if v is None:
        import resource
        v = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return v


def reset_peak() -> bool:
    """Reset the RSS high-water mark to the current RSS (False where the kernel does not allow it)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def measure(fn, *args, **kwargs) -> tuple[object, dict]:
    """Call ``fn`` and return ``(result, {"seconds", "peak_rss_mb", "baseline_rss_mb"})``."""
    base = rss_mb()
    reset_peak()
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    dt = time.perf_counter() - t0
    return out, {"seconds": round(dt, 3), "peak_rss_mb": round(peak_rss_mb(), 1), "baseline_rss_mb": round(base, 1)}


def emit(result: dict) -> None:
    """Print a worker's result for :func:`run_worker` to pick up."""
    print("RESULT_JSON " + json.dumps(result), flush=True)


def run_worker(script: str | os.PathLike, args: list[str], timeout: float = 900, env: dict | None = None) -> dict:
    """Run ``python script --worker *args`` in a fresh process and return its ``RESULT_JSON`` dict.

    On failure the dict holds ``failed`` (exit code or "timeout") and ``stderr`` (tail).
    """
    cmd = [sys.executable, str(script), "--worker", *map(str, args)]
    full_env = dict(os.environ, **(env or {}))
    full_env.setdefault("OMP_NUM_THREADS", "2")
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env)
    except subprocess.TimeoutExpired:
        return {"failed": "timeout", "stderr": ""}
    lines = [l for l in p.stdout.splitlines() if l.startswith("RESULT_JSON ")]
    if p.returncode != 0 or not lines:
        return {"failed": p.returncode, "stderr": p.stderr[-3000:]}
    r = json.loads(lines[-1][len("RESULT_JSON "):])
    r["process_wall_s"] = round(time.perf_counter() - t0, 2)
    return r


def import_anchor(name: str):
    """Import a module from the shared anchor benchmarks (e.g. ``make_volume``)."""
    if str(SHARED_BENCH) not in sys.path:
        sys.path.insert(0, str(SHARED_BENCH))
    return __import__(name)


def have_module(name: str) -> bool:
    """True when ``name`` imports (e.g. ``nnunetv2`` for the anchor side)."""
    import importlib.util

    return importlib.util.find_spec(name) is not None


def machine_line() -> str:
    """One line describing where the benchmark ran."""
    try:
        import torch
        tv = torch.__version__
        dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    except Exception:  # pragma: no cover
        tv, dev = "n/a", "cpu"
    return (f"# {time.strftime('%Y-%m-%d %H:%M')} host={platform.node()} cpus={os.cpu_count()} "
            f"python={platform.python_version()} torch={tv} device={dev}")


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    """A Markdown table of ``rows`` (dicts) with the given columns."""
    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        out.append("| " + " | ".join(_fmt(r.get(c, "")) for c in columns) + " |")
    return "\n".join(out)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)
