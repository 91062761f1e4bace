"""``kidneyseg evaluate`` (KiTS19 or KiTS23 metrics per case) and ``kidneyseg choose-postprocess``."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate", help="KiTS19 or KiTS23 Dice, surface Dice (HD95, volumes) per case",
        description="Score every prediction in --pred against the reference with the same case id in --gt "
                    "(case_XXXXX.nii.gz or case_XXXXX/segmentation.nii.gz). Prints a table with a summary row. "
                    "--protocol kits19: kidney (label > 0) and tumor Dice, surface Dice at --tolerance-mm, HD95; "
                    "kits23: the KiTS23 challenge's regions (kidney_and_masses, masses, tumor), Dice and surface "
                    "Dice at the regions' own tolerances, both empty = 1.")
    p.add_argument("--pred", required=True, help="folder of predicted label maps")
    p.add_argument("--gt", required=True, help="folder of reference label maps (e.g. the KiTS19 data folder)")
    p.add_argument("--csv", metavar="OUT", help="write per-case metrics + summary row as CSV")
    p.add_argument("--json", metavar="OUT", help="write per-case metrics + summary as JSON")
    p.add_argument("--protocol", choices=["kits19", "kits23"], default=None,
                   help="evaluation protocol (default: the references' dataset: kits23.json / kits.json in --gt, "
                        "else kits23 when a reference holds a cyst, label 3)")
    p.add_argument("--tolerance-mm", type=float, default=None,
                   help="kits19 protocol: surface Dice tolerance in mm (default 2); kits23 fixes it per region")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)

    c = subparsers.add_parser(
        "choose-postprocess", help="compare post-processing strategies on validation cases; store the best",
        description="Scores every strategy (mean Dice over the dataset's regions: KiTS19 kidney and tumor, "
                    "KiTS23 kidney_and_masses, masses, tumor) on raw predictions "
                    "(made with `predict --postprocess none`) and writes MODEL_DIR/postprocess.json.")
    c.add_argument("--pred", required=True, help="folder of raw predicted label maps")
    c.add_argument("--gt", required=True, help="folder of reference label maps")
    c.add_argument("--model", required=True, help="model folder to write postprocess.json into")
    c.add_argument("--min-component-ml", type=float, default=10.0,
                   help="anatomy strategy: smallest second kidney kept, ml (default 10)")
    c.set_defaults(func=run_choose)


def run(args: argparse.Namespace) -> int:
    from .report import evaluate_folders, format_table, write_csv, write_json

    from ..errors import KidneysegError

    try:
        rows = evaluate_folders(args.pred, args.gt, args.tolerance_mm, progress=not args.no_progress,
                                protocol=args.protocol)
    except ValueError as exc:  # a tolerance the protocol refuses, as one line
        if isinstance(exc, KidneysegError):
            raise
        raise KidneysegError(str(exc)) from None
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
        regions = "  ".join(f"{k[:-5]} {v:.4f}" for k, v in s.items() if k.endswith("_dice") and k != "mean_dice")
        print(f"{name:>18}: {regions}  mean {s['mean_dice']:.4f}")
    print(f"chosen: {best} -> {ModelFolder(args.model).postprocess_path}")
    return 0
