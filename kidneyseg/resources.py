"""What a step cost: wall time, peak RSS of its whole process tree, bytes written; one row per step.

Rows go into ``RUN_DIR/resources.json`` (a JSON list, rewritten atomically under a file lock), so
the pipeline's notebook rows and the rows of the heavy sub-steps inside them (which run in the
notebook's kernel process) land in the same file:

* :func:`record` measures a block of code and appends its row. The run folder comes from the
  ``run_dir`` argument or from the environment variable :data:`ENV_RUN_DIR`; without either it
  measures nothing and costs nothing, so library calls can always wrap their heavy work in it.
  ``kidneyseg pipeline`` sets the variable (and :data:`ENV_PARENT`, the notebook's name) before
  it starts each notebook's kernel, so the package's own calls inside the notebook record
  themselves: ``plan``, ``preprocess``, ``train stage N``, ``predict``, ``evaluate``.
* ``python -m kidneyseg.resources --run-dir RUN --step paint --target DIR -- CMD ...`` runs any
  command as a child process and records it the same way (the rehearsal script paints with it).

A row::

    {"step": "preprocess", "parent": "02_preprocessing", "target": "02_preprocessing/cache",
     "status": "ok", "started": "2026-12-06T20:01:02+0000", "seconds": 812.4, "cpu_seconds": 1490.2,
     "peak_rss_bytes": 3011231744, "peak_rss_gib": 2.804, "bytes_written": 1934113216,
     "written_gib": 1.801, "max_processes": 3, "details": {...}}

How the figures are taken (Linux; elsewhere the same without the high-water marks):

* **seconds**: wall clock of the block; **cpu_seconds**: CPU time (user + system) of the measuring
  process and of the child processes that ended inside the block (preprocessing workers, notebook
  kernels): on a shared machine it moves less with the load than the wall clock.
* **peak RSS of the tree**: a background thread sums the resident memory of the process and all its
  descendants (psutil, recursively: notebook kernels and preprocessing workers included) every
  ``interval`` seconds (longer when a sample is costly, below) and keeps the largest sum. Each process counts its proportional set size
  (``Pss`` of ``/proc/PID/smaps_rollup``: a page shared by n processes counts 1/n in each), so the
  pages a forked worker shares with its parent are not counted twice; RSS where PSS is unavailable.
  Spikes shorter than the interval inside one process are caught by that process's kernel
  high-water mark (``VmHWM``, not inherited through fork), counted for processes born during the
  step and for the measuring process when its mark rose during the step. Both include file pages a
  process has mapped (memory-mapped cache arrays read by training count while resident; the kernel
  can drop them under pressure). Reading ``smaps_rollup`` walks a process's page tables: one sample
  of the 210-case rehearsal's 8 GiB tree cost 0.17 CPU s, so a fixed 0.2 s interval kept the sampler
  busy for a fifth to half of a core of this 2-core machine. The sampler therefore waits at least
  ``COST_FACTOR`` (25) times the CPU time its last sample took, at most about 4 % of a core; the
  high-water marks still catch the peaks between samples.
* **bytes written**: the growth in apparent size (sum of file sizes) of ``target`` (a folder or a
  file) between the start and the end of the step; ``None`` without a target. Files a step writes
  and deletes again (temporary files) are not counted.

>>> with record("demo step") as rec:          # no run folder configured: measures nothing
...     rec.details["cases"] = 3
>>> rec.row is None
True
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from .errors import KidneysegError, ensure_output_dir, write_text_atomic

__all__ = ["ENV_PARENT", "ENV_RUN_DIR", "RESOURCES_FILE", "Recording", "TreeMonitor", "append_row", "folder_bytes",
           "latest_rows", "read_resources", "record", "run_command"]

#: The file, inside the run folder.
RESOURCES_FILE = "resources.json"
#: Environment variable naming the run folder that package steps record into.
ENV_RUN_DIR = "KIDNEYSEG_RESOURCES"
#: Environment variable naming the enclosing step (the notebook) of recorded sub-steps.
ENV_PARENT = "KIDNEYSEG_RESOURCES_PARENT"
GIB = 1024 ** 3


# ------------------------------------------------------------------------------ measuring
def _proc_kib_field(path: str, field: str) -> int | None:
    """The ``field:`` line of a ``/proc`` file given in kB, as bytes; ``None`` if absent or unreadable."""
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _pss_bytes(pid: int) -> int | None:
    """Proportional set size of one process (shared pages split between their sharers), ``None`` if unknown."""
    return _proc_kib_field(f"/proc/{pid}/smaps_rollup", "Pss")


def _hwm_bytes(pid: int) -> int:
    """The kernel's peak-RSS mark of one process (``VmHWM``), 0 where unavailable."""
    return _proc_kib_field(f"/proc/{pid}/status", "VmHWM") or 0


#: The sampler waits at least this many times the CPU time of its last sample (see the module docstring).
COST_FACTOR = 25.0


class TreeMonitor:
    """Samples the summed RSS of a process and all its descendants in a daemon thread.

    Args:
        pid: the root process (default: this one).
        interval: seconds between samples.

    >>> mon = TreeMonitor(interval=0.05).start()
    >>> peak = mon.stop()
    >>> peak > 0
    True
    """

    def __init__(self, pid: int | None = None, interval: float = 0.2):
        import psutil

        if interval <= 0:
            raise ValueError(f"interval must be > 0 s, got {interval!r}")
        self.root = psutil.Process(pid or os.getpid())
        self.interval = float(interval)
        self.peak = 0
        self.max_processes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kidneyseg-resources", daemon=True)
        self._root_hwm0 = _hwm_bytes(self.root.pid)
        self._hwm_floor = 0

    def sample(self) -> int:
        """One sample: the tree's memory now (bytes, summed PSS, else RSS); updates :attr:`peak`."""
        import psutil

        try:
            procs = [self.root] + self.root.children(recursive=True)
        except psutil.Error:
            return 0
        total = 0
        alive = 0
        for p in procs:
            pss = _pss_bytes(p.pid)
            try:
                total += pss if pss is not None else p.memory_info().rss
                alive += 1
            except psutil.Error:
                continue
            if p.pid != self.root.pid:
                # a child born during the step: its high-water mark is a peak inside the step
                self._hwm_floor = max(self._hwm_floor, _hwm_bytes(p.pid))
        self.peak = max(self.peak, total)
        self.max_processes = max(self.max_processes, alive)
        return total

    def next_wait(self, sample_cpu_seconds: float) -> float:
        """Seconds to wait after a sample that took ``sample_cpu_seconds`` of CPU: ``interval``, or
        ``COST_FACTOR`` times the sample's cost when that is longer (the sampler's share of a core
        stays under 1 / COST_FACTOR).

        >>> TreeMonitor(interval=0.2).next_wait(0.001), TreeMonitor(interval=0.2).next_wait(0.17)
        (0.2, 4.25)
        """
        return max(self.interval, COST_FACTOR * float(sample_cpu_seconds))

    def _run(self) -> None:
        while not self._stop.is_set():
            t = time.thread_time()
            self.sample()
            self._stop.wait(self.next_wait(time.thread_time() - t))

    def start(self) -> "TreeMonitor":
        self.sample()
        self._thread.start()
        return self

    def stop(self) -> int:
        """Stop sampling; return the peak of the tree (bytes)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.sample()
        root_hwm = _hwm_bytes(self.root.pid)
        if root_hwm > self._root_hwm0:  # the measuring process itself set a new record inside the step
            self._hwm_floor = max(self._hwm_floor, root_hwm)
        self.peak = max(self.peak, self._hwm_floor)
        return self.peak


def _cpu_seconds(proc) -> float:
    """CPU seconds (user + system) of a process and of its children that have ended and were reaped."""
    try:
        t = proc.cpu_times()
    except Exception:  # psutil.Error: the process is gone
        return 0.0
    return float(t.user + t.system + getattr(t, "children_user", 0.0) + getattr(t, "children_system", 0.0))


def folder_bytes(path: os.PathLike | str | None) -> int:
    """Apparent size (sum of file sizes, bytes) of a file or of every file under a folder; 0 if absent."""
    if path is None:
        return 0
    path = Path(path)
    try:
        if path.is_file():
            return path.stat().st_size
    except OSError:
        return 0
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue
    return total


# ------------------------------------------------------------------------------ the file
@contextlib.contextmanager
def _locked(run_dir: Path) -> Iterator[None]:
    lock = run_dir / (RESOURCES_FILE + ".lock")
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on Linux/macOS: single writer assumed
        yield
        return
    with open(lock, "a", encoding="utf-8") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def read_resources(run_dir: os.PathLike | str) -> list[dict[str, Any]]:
    """The rows of ``RUN_DIR/resources.json`` in the order they were recorded ([] when absent).

    Raises:
        KidneysegError: the file exists but is not a JSON list.
    """
    path = Path(run_dir) / RESOURCES_FILE
    if not path.is_file():
        return []
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise KidneysegError(f"{path}: not a readable resources file ({exc})") from None
    if not isinstance(rows, list):
        raise KidneysegError(f"{path}: must hold a JSON list of rows")
    return rows


def append_row(run_dir: os.PathLike | str, row: dict[str, Any]) -> Path:
    """Append ``row`` to ``RUN_DIR/resources.json`` (atomic rewrite under a lock; safe across processes)."""
    run_dir = ensure_output_dir(run_dir)
    with _locked(run_dir):
        rows = read_resources(run_dir)
        rows.append(row)
        return write_text_atomic(run_dir / RESOURCES_FILE, json.dumps(rows, indent=1) + "\n")


def latest_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per ``(parent, step, target)``: the last recorded (a resumed run records re-runs again),
    except that a row whose ``details`` say ``no_work`` (a resumed step that found its work done:
    a finished training, a fully cached preprocessing) does not replace the row that did the work."""
    last: dict[tuple, dict[str, Any]] = {}
    for row in rows:
        key = (row.get("parent"), row.get("step"), row.get("target"))
        if key in last and (row.get("details") or {}).get("no_work"):
            continue
        last[key] = row
    return list(last.values())


# ------------------------------------------------------------------------------ recording
@dataclass
class Recording:
    """What :func:`record` yields: add facts to ``details``, set ``failed`` to record a failure
    without raising; ``row`` is set when the block ends (``None`` when nothing is recorded)."""

    step: str
    details: dict[str, Any] = field(default_factory=dict)
    failed: bool = False
    row: dict[str, Any] | None = None


def _relative(path: os.PathLike | str | None, run_dir: Path) -> str | None:
    if path is None:
        return None
    p = Path(path).resolve()
    try:
        return p.relative_to(run_dir.resolve()).as_posix()
    except ValueError:
        return str(p)


@contextlib.contextmanager
def record(step: str, target: os.PathLike | str | None = None, *, run_dir: os.PathLike | str | None = None,
           parent: str | None = None, interval: float = 0.2, pid: int | None = None) -> Iterator[Recording]:
    """Measure the block and append its row to the run folder's ``resources.json``.

    Args:
        step: the row's name (``"preprocess"``, ``"train stage 2"``, ``"02_preprocessing"``).
        target: file or folder whose growth is the step's ``bytes_written``.
        run_dir: the run folder (default: ``$KIDNEYSEG_RESOURCES``; neither: nothing is measured).
        parent: the enclosing step (default: ``$KIDNEYSEG_RESOURCES_PARENT``).
        interval: seconds between RSS samples.
        pid: the root of the measured tree (default: this process).

    A block that raises is recorded with ``"status": "failed"`` and the exception propagates.
    """
    rec = Recording(step)
    run_dir = run_dir if run_dir is not None else os.environ.get(ENV_RUN_DIR) or None
    if run_dir is None:
        yield rec
        return
    run_dir = Path(run_dir)
    parent = parent if parent is not None else os.environ.get(ENV_PARENT) or None
    before = folder_bytes(target) if target is not None else 0
    monitor = TreeMonitor(pid, interval).start()
    cpu0 = _cpu_seconds(monitor.root)
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    t0 = time.perf_counter()
    status = "failed"
    try:
        yield rec
        status = "failed" if rec.failed else "ok"
    finally:
        seconds = time.perf_counter() - t0
        peak = monitor.stop()
        cpu = _cpu_seconds(monitor.root) - cpu0
        written = folder_bytes(target) - before if target is not None else None
        rec.row = {
            "step": step, "parent": parent, "target": _relative(target, run_dir), "status": status,
            "started": started, "seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2),
            "peak_rss_bytes": int(peak),
            "peak_rss_gib": round(peak / GIB, 3), "bytes_written": written,
            "written_gib": None if written is None else round(written / GIB, 3),
            "max_processes": monitor.max_processes, "details": rec.details,
        }
        append_row(run_dir, rec.row)


def run_command(argv: Sequence[str], run_dir: os.PathLike | str, step: str,
                target: os.PathLike | str | None = None, interval: float = 0.2) -> int:
    """Run ``argv`` as a child process and record it as ``step``; returns its exit status.

    The child's own environment gets :data:`ENV_RUN_DIR` and :data:`ENV_PARENT`, so a kidneyseg
    command inside records its sub-steps into the same file.
    """
    if not argv:
        raise KidneysegError("no command given (put it after --)")
    env = dict(os.environ, **{ENV_RUN_DIR: str(Path(run_dir).resolve()), ENV_PARENT: step})
    with record(step, target, run_dir=run_dir, parent=os.environ.get(ENV_PARENT) or None,
                interval=interval) as rec:
        rec.details["command"] = " ".join(argv)
        code = subprocess.call(list(argv), env=env)
        rec.details["exit_status"] = code
        rec.failed = code != 0
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m kidneyseg.resources --run-dir RUN --step NAME [--target PATH] -- CMD ...``"""
    import argparse

    args = list(sys.argv[1:] if argv is None else argv)
    if "--" not in args:
        print("usage: python -m kidneyseg.resources --run-dir RUN --step NAME [--target PATH] -- CMD ...",
              file=sys.stderr)
        return 2
    cut = args.index("--")
    parser = argparse.ArgumentParser(prog="python -m kidneyseg.resources",
                                     description="Run a command and record its wall time, peak RSS of its "
                                                 "process tree and bytes written into RUN/resources.json.")
    parser.add_argument("--run-dir", required=True, help="run folder holding resources.json")
    parser.add_argument("--step", required=True, help="the row's name, e.g. paint")
    parser.add_argument("--target", help="file or folder whose growth counts as bytes written")
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between RSS samples (0.2)")
    opts = parser.parse_args(args[:cut])
    try:
        return run_command(args[cut + 1:], opts.run_dir, opts.step, opts.target, opts.interval)
    except KidneysegError as exc:
        print(f"kidneyseg resources: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
