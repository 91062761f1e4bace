"""The full-scale rehearsal: paint the KiTS19 label maps, run the pipeline's ``rehearsal`` profile, report.

    python benchmarks/rehearsal.py --labels ../shared/kits19 --cases 210 --out runs/rehearsal

1. **paint** (skipped when ``WORK/data/manifest.csv`` lists every case): ``kidneyseg phantom
   WORK/data --from-labels LABELS --cases N --workers W``, recorded as the ``paint`` row of
   ``OUT/resources.json`` (``python -m kidneyseg.resources`` measures the command's process tree);
2. **pipeline**: ``kidneyseg pipeline --data WORK/data --profile rehearsal --out OUT``: the five
   notebooks at native size, each recorded with the heavy steps inside it (plan, preprocess, each
   training, predict, evaluate). A killed run resumes where it stopped: run the same command again
   (finished notebooks and cached cases are skipped);
3. **report**: one Markdown row per step of ``resources.json`` and a ``RESULT`` line;
4. **clean** (``--clean``): deletes the painted cases (``WORK``) and the run's caches
   (``OUT/02_preprocessing/cache``, ``OUT/05_inference_evaluation/single_stage/cache``), keeping
   the executed notebooks, metrics and ``resources.json``.

The painted data take about 1.2 bytes per voxel (14 GB for 210 cases) and the cache about 20 GB: keep
``WORK`` and ``OUT`` on a disk with 40 GB free. ``KIDNEYSEG_RAM_BUDGET_GIB`` caps what one case or one
training step may plan to use (default: the RAM free at the time).

Last line: ``RESULT steps=<n> wall_h=<hours> max_peak_rss_gib=<g> cache_gb=<GB>``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _run(argv: list[str]) -> None:
    print("+", " ".join(argv), flush=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    code = subprocess.call(argv, env=env)
    if code != 0:
        raise SystemExit(f"rehearsal: step failed with status {code}: {' '.join(argv)} (re-run to resume)")


def painted(data: Path, n: int) -> bool:
    """Whether ``data`` already holds a complete painting of ``n`` cases (its manifest lists them)."""
    manifest = data / "manifest.csv"
    if not manifest.is_file():
        return False
    from kidneyseg.data.manifest import read_manifest

    df = read_manifest(manifest)
    return len(df) >= n and all((data / c / "imaging.nii.gz").is_file() for c in df.case_id)


def report(out: Path) -> str:
    from kidneyseg.resources import latest_rows, read_resources

    rows = latest_rows(read_resources(out))
    g = 2 ** 30
    lines = ["| step | inside | seconds | CPU seconds | peak RSS GiB | written GiB | details |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        det = {k: v for k, v in (r.get("details") or {}).items() if k in ("cases", "workers", "epochs", "iterations_per_epoch",
                                                                         "patch_size", "planned_step_gib")}
        written = "" if r.get("bytes_written") is None else f"{r['bytes_written'] / g:.2f}"
        lines.append(f"| {r['step']} | {r.get('parent') or ''} | {r['seconds']:.0f} | {r.get('cpu_seconds', 0):.0f} | "
                     f"{r['peak_rss_bytes'] / g:.2f} | {written} | {det or ''} |")
    top = [r for r in rows if not r.get("parent")]
    wall = sum(r["seconds"] for r in top)
    peak = max((r["peak_rss_bytes"] for r in rows), default=0)
    cache = sum(f.stat().st_size for f in (out / "02_preprocessing" / "cache").rglob("*") if f.is_file()) \
        if (out / "02_preprocessing" / "cache").is_dir() else 0
    lines.append(f"RESULT steps={len(rows)} wall_h={wall / 3600:.2f} max_peak_rss_gib={peak / g:.2f} "
                 f"cache_gb={cache / 1e9:.1f}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--labels", default=str(ROOT.parent / "shared" / "kits19"), help="KiTS19 label folder")
    ap.add_argument("--cases", type=int, default=210, help="cases to paint (the first N; 0 = all)")
    ap.add_argument("--work", default="/tmp/kidneyseg_rehearsal", help="where the painted cases go")
    ap.add_argument("--out", default=str(ROOT / "runs" / "rehearsal"), help="the run folder")
    ap.add_argument("--workers", type=int, default=2, help="painting processes (2)")
    ap.add_argument("--report-only", action="store_true", help="only print the table of OUT/resources.json")
    ap.add_argument("--clean", action="store_true", help="delete the painted cases and the run's caches at the end")
    args = ap.parse_args()
    out, data = Path(args.out).resolve(), Path(args.work).resolve() / "data"
    py = sys.executable
    if not args.report_only:
        out.mkdir(parents=True, exist_ok=True)
        if not painted(data, args.cases or 1):
            _run([py, "-m", "kidneyseg.resources", "--run-dir", str(out), "--step", "paint", "--target", str(data),
                  "--", py, "-m", "kidneyseg", "phantom", str(data), "--from-labels", args.labels,
                  "--cases", str(args.cases), "--workers", str(args.workers)])
        _run([py, "-m", "kidneyseg", "pipeline", "--data", str(data), "--profile", "rehearsal", "--out", str(out)])
    print(report(out))
    if args.clean:
        for d in (Path(args.work), out / "02_preprocessing" / "cache", out / "05_inference_evaluation" / "single_stage" / "cache"):
            if d.exists():
                print(f"removing {d}")
                shutil.rmtree(d)


if __name__ == "__main__":
    main()
