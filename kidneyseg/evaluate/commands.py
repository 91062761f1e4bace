"""``kidneyseg evaluate``: score predicted label maps against references (KiTS19 metrics)."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate", help="KiTS19 Dice, surface Dice, HD95 and volumes per case",
        description="Score every prediction in --pred against the reference with the same case id in --gt "
                    "(case_XXXXX.nii.gz or case_XXXXX/segmentation.nii.gz). Prints a table with a summary row.")
    p.add_argument("--pred", required=True, help="folder of predicted label maps")
    p.add_argument("--gt", required=True, help="folder of reference label maps (e.g. the KiTS19 data folder)")
    p.add_argument("--csv", metavar="OUT", help="write per-case metrics + summary row as CSV")
    p.add_argument("--json", metavar="OUT", help="write per-case metrics + summary as JSON")
    p.add_argument("--tolerance-mm", type=float, default=2.0, help="surface Dice tolerance in mm (default 2)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .report import evaluate_folders, format_table, write_csv, write_json

    rows = evaluate_folders(args.pred, args.gt, args.tolerance_mm, progress=not args.no_progress)
    print(format_table(rows, args.tolerance_mm))
    if args.csv:
        write_csv(rows, args.csv, args.tolerance_mm)
    if args.json:
        write_json(rows, args.json, args.tolerance_mm)
    return 0
