"""``kidneyseg evaluate`` (KiTS19 metrics per case) and ``kidneyseg choose-postprocess``."""

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

    c = subparsers.add_parser(
        "choose-postprocess", help="compare post-processing strategies on validation cases; store the best",
        description="Scores every strategy (mean of KiTS19 kidney and tumor Dice) on raw predictions "
                    "(made with `predict --postprocess none`) and writes MODEL_DIR/postprocess.json.")
    c.add_argument("--pred", required=True, help="folder of raw predicted label maps")
    c.add_argument("--gt", required=True, help="folder of reference label maps")
    c.add_argument("--model", required=True, help="model folder to write postprocess.json into")
    c.add_argument("--min-component-ml", type=float, default=10.0,
                   help="anatomy strategy: smallest second kidney kept, ml (default 10)")
    c.set_defaults(func=run_choose)


def run(args: argparse.Namespace) -> int:
    from .report import evaluate_folders, format_table, write_csv, write_json

    rows = evaluate_folders(args.pred, args.gt, args.tolerance_mm, progress=not args.no_progress)
    print(format_table(rows, args.tolerance_mm))
    if args.csv:
        write_csv(rows, args.csv, args.tolerance_mm)
    if args.json:
        write_json(rows, args.json, args.tolerance_mm)
    return 0


def run_choose(args: argparse.Namespace) -> int:
    from ..model.folder import ModelFolder
    from .postprocess_choice import choose_postprocessing

    best, scores = choose_postprocessing(args.model, args.pred, args.gt,
                                         options={"anatomy": {"min_component_ml": args.min_component_ml}})
    for name, s in scores.items():
        print(f"{name:>18}: kidney {s['kidney_dice']:.4f}  tumor {s['tumor_dice']:.4f}  mean {s['mean_dice']:.4f}")
    print(f"chosen: {best} -> {ModelFolder(args.model).postprocess_path}")
    return 0
