"""``kidneyseg pipeline``: run the notebooks end to end (what ``make demo`` calls)."""

from __future__ import annotations

import argparse

from .pipeline import NOTEBOOKS, PROFILES


def _run(args: argparse.Namespace) -> int:
    from .pipeline import run_pipeline

    results = run_pipeline(args.out, data_dir=args.data, phantoms=args.phantoms, manifest=args.manifest, profile=args.profile,
                           notebooks=args.notebooks, force=args.force)
    ran = sum(r.status == "ran" for r in results)
    print(f"kidneyseg pipeline: {ran} step(s) ran, {len(results) - ran} skipped; run folder {args.out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pipeline", help="run the papermill notebooks end to end into a run folder",
                       description="Execute notebooks/01..05 in order with papermill into OUT. "
                                   "Without --data, phantoms are generated first.")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--data", metavar="DIR", help="KiTS19- or KiTS23-layout folder with images and labels (the dataset is detected)")
    src.add_argument("--manifest", metavar="CSV", help="an existing manifest (e.g. from `kidneyseg manifest`)")
    src.add_argument("--phantoms", type=int, metavar="N", help="generate N phantom cases (default: profile's)")
    p.add_argument("--profile", default="demo", help=f"one of {', '.join(PROFILES)} or a profile .json (default demo)")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder, e.g. runs/demo")
    p.add_argument("--notebooks", nargs="+", metavar="NAME", help=f"subset of {', '.join(NOTEBOOKS)}")
    p.add_argument("--force", action="store_true", help="re-run steps that are already complete")
    p.set_defaults(func=_run)
