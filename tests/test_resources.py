"""kidneyseg.resources: rows of wall time, CPU time, peak RSS of the process tree and bytes written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kidneyseg import resources as R

ROOT = Path(__file__).resolve().parents[1]
ALLOC = "import time, numpy as np; a = np.ones({n}, np.uint8); time.sleep({s})"


def test_without_a_run_folder_nothing_is_measured(monkeypatch):
    monkeypatch.delenv(R.ENV_RUN_DIR, raising=False)
    with R.record("x") as rec:
        rec.details["k"] = 1
    assert rec.row is None


def test_row_fields_bytes_written_and_seconds(tmp_path):
    out = tmp_path / "out"
    with R.record("write", out, run_dir=tmp_path, parent="nb") as rec:
        out.mkdir()
        (out / "a.bin").write_bytes(b"x" * 123_456)
        rec.details["cases"] = 2
    rows = R.read_resources(tmp_path)
    assert rows == [rec.row]
    row = rows[0]
    assert row["step"] == "write" and row["parent"] == "nb" and row["target"] == "out" and row["status"] == "ok"
    assert row["bytes_written"] == 123_456 and row["details"] == {"cases": 2}
    assert row["seconds"] >= 0 and row["cpu_seconds"] >= 0 and row["peak_rss_bytes"] > 10 * 2**20


def test_peak_counts_a_child_process_that_has_ended(tmp_path):
    """The tree: a child holding 300 MB for a moment is in the peak even though it has exited by the end
    (sampling, or its own high-water mark)."""
    n = 300 * 2**20
    with R.record("child", run_dir=tmp_path) as rec:
        base = R.TreeMonitor().sample()
        subprocess.run([sys.executable, "-c", ALLOC.format(n=n, s=1.5)], check=True)  # 1.5 s: sampled many times even under load
    assert rec.row["peak_rss_bytes"] >= base + 0.9 * n
    assert rec.row["max_processes"] >= 2
    assert rec.row["cpu_seconds"] > 0  # the reaped child's CPU time is counted


def test_failure_is_recorded_and_raised(tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        with R.record("bad", run_dir=tmp_path):
            raise RuntimeError("boom")
    assert R.read_resources(tmp_path)[0]["status"] == "failed"


def test_environment_variables_route_rows_and_rows_from_processes_interleave(tmp_path):
    """Two processes appending at once (a notebook kernel and the pipeline) lose no row."""
    code = ("import sys; from kidneyseg.resources import record\n"
            "for i in range(15):\n    with record(f'{sys.argv[1]}{i}'):\n        pass\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT), **{R.ENV_RUN_DIR: str(tmp_path), R.ENV_PARENT: "nb"})
    procs = [subprocess.Popen([sys.executable, "-c", code, tag], env=env) for tag in ("a", "b")]
    assert all(p.wait() == 0 for p in procs)
    rows = R.read_resources(tmp_path)
    assert sorted(r["step"] for r in rows) == sorted(f"{t}{i}" for t in "ab" for i in range(15))
    assert {r["parent"] for r in rows} == {"nb"}


def test_run_command_records_a_command_and_its_exit_status(tmp_path):
    target = tmp_path / "made"
    code = R.main(["--run-dir", str(tmp_path), "--step", "paint", "--target", str(target), "--",
                   sys.executable, "-c", f"import pathlib; p = pathlib.Path({str(target)!r}); p.mkdir(); "
                                         "(p / 'f').write_bytes(b'1' * 1000)"])
    assert code == 0
    bad = R.main(["--run-dir", str(tmp_path), "--step", "fails", "--", sys.executable, "-c", "raise SystemExit(3)"])
    assert bad == 3
    rows = {r["step"]: r for r in R.read_resources(tmp_path)}
    assert rows["paint"]["bytes_written"] == 1000 and rows["paint"]["status"] == "ok"
    assert rows["fails"]["status"] == "failed" and rows["fails"]["details"]["exit_status"] == 3


def test_latest_rows_and_a_corrupt_file(tmp_path):
    rows = [{"step": "a", "parent": None, "target": None, "seconds": 1},
            {"step": "a", "parent": None, "target": None, "seconds": 2},
            {"step": "b", "parent": "nb", "target": None, "seconds": 3}]
    assert [r["seconds"] for r in R.latest_rows(rows)] == [2, 3]
    # a resumed step that found its work done does not hide the row that did the work
    skipped = {"step": "a", "parent": None, "target": None, "seconds": 0.5, "details": {"no_work": "already trained"}}
    assert [r["seconds"] for r in R.latest_rows([*rows, skipped])] == [2, 3]
    assert [r["seconds"] for r in R.latest_rows([skipped])] == [0.5]  # alone, it is all there is
    (tmp_path / R.RESOURCES_FILE).write_text("{not json")
    with pytest.raises(R.KidneysegError, match="not a readable resources file"):
        R.read_resources(tmp_path)
    (tmp_path / R.RESOURCES_FILE).write_text(json.dumps({"a": 1}))
    with pytest.raises(R.KidneysegError, match="JSON list"):
        R.read_resources(tmp_path)


def test_a_costly_sample_stretches_the_interval():
    """Sampling a big tree is expensive (smaps_rollup): the sampler's CPU share stays bounded."""
    from kidneyseg.resources import COST_FACTOR, TreeMonitor

    mon = TreeMonitor(interval=0.2)
    assert mon.next_wait(0.0) == 0.2 and mon.next_wait(0.001) == 0.2
    assert mon.next_wait(0.17) == pytest.approx(0.17 * COST_FACTOR) and COST_FACTOR >= 20
    mon.start()
    peak = mon.stop()
    assert peak > 0
