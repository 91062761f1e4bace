"""``kidneyseg manifest``, ``kidneyseg stats`` and ``kidneyseg phantom``: parse, then call the package."""

from __future__ import annotations

import argparse
import json
import sys


def _manifest(args: argparse.Namespace) -> int:
    from .manifest import build_manifest, read_manifest

    path = build_manifest(args.data_dir, args.output, headers_only=args.headers_only,
                          workers=args.workers, seed=args.seed, progress=not args.no_progress,
                          dataset=args.dataset)
    df = read_manifest(path)
    counts = df["split"].value_counts()
    print(f"wrote {path}: {len(df)} {df['dataset'].iloc[0]} cases (train {counts.get('train', 0)}, "
          f"val {counts.get('val', 0)}, excluded {int(df['excluded'].sum())})")
    return 0


def _stats(args: argparse.Namespace) -> int:
    from .stats import load_cases, spacing_table, stats_json

    df = load_cases(args.source)
    if args.json:
        print(json.dumps(stats_json(df), indent=2))
    else:
        table = spacing_table(df)
        print(f"Spacing statistics of {len(df)} cases (mm; quartiles: linear interpolation)")
        print(table.to_string(float_format=lambda v: f"{v:.2f}"))
    return 0


def _phantom(args: argparse.Namespace) -> int:
    import os

    from .phantom import write_phantoms

    workers = args.workers if args.workers is not None else (os.cpu_count() or 1)
    spacing = None if args.spacing_xy is None else (args.spacing_xy, args.spacing_xy)
    path = write_phantoms(args.out_dir, args.cases, args.seed, from_labels=args.from_labels,
                          size=args.size, spacing_xy=spacing, workers=workers, progress=not args.no_progress,
                          n_val=args.val_cases, dataset=args.dataset)
    print(f"wrote {path}")
    return 0


def register(subparsers) -> None:
    """Add the data subcommands to the ``kidneyseg`` parser."""
    p = subparsers.add_parser("manifest", help="scan a KiTS19- or KiTS23-layout folder into a manifest CSV",
                              description="Scan DATA_DIR (case_XXXXX/imaging.nii.gz, segmentation.nii.gz, "
                                          "optional kits.json or kits23.json) and write one CSV row per case. "
                                          "The dataset (kits19 or kits23) is detected from the metadata file, "
                                          "else from the label values (a cyst, label 3, means kits23).")
    p.add_argument("data_dir", metavar="DATA_DIR")
    p.add_argument("-o", "--output", default="data_manifest.csv", help="manifest CSV to write (default: %(default)s)")
    p.add_argument("--headers-only", action="store_true",
                   help="read headers only (seconds); kidney_ml and tumor_ml are left empty")
    p.add_argument("--workers", type=int, default=None, help="processes for the voxel pass (default: CPU count)")
    p.add_argument("--seed", type=int, default=0, help="seed of the train/val split (default: %(default)s)")
    p.add_argument("--dataset", choices=["kits19", "kits23"], default=None,
                   help="the folder's dataset (default: detected); its label values are the valid ones")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_manifest)

    p = subparsers.add_parser("stats", help="spacing statistics (thesis Table 4.1)",
                              description="Print mean, median, max, min, Q1, Q3 of the x/y/z spacing.")
    p.add_argument("source", metavar="DATA_DIR_OR_MANIFEST")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_stats)

    p = subparsers.add_parser("phantom", help="generate CT-like phantom cases (KiTS layout + manifest)",
                              description="Write OUT_DIR/case_XXXXX/{imaging,segmentation}.nii.gz and "
                                          "OUT_DIR/manifest.csv. Finished cases are kept when the command "
                                          "is run again (resume).")
    p.add_argument("out_dir", metavar="OUT_DIR")
    p.add_argument("--cases", type=int, default=8, help="number of cases (default: %(default)s; "
                                                        "with --from-labels: the first N, 0 = all)")
    p.add_argument("--seed", type=int, default=0, help="seed (default: %(default)s)")
    p.add_argument("--size", type=int, default=None,
                   help="in-plane size in pixels of synthetic cases (default: 512; the body stays 30-40 cm wide, "
                        "so fewer pixels mean a coarser spacing)")
    p.add_argument("--spacing-xy", type=float, default=None, metavar="MM",
                   help="in-plane spacing of synthetic cases, mm (default: the field of view over --size)")
    p.add_argument("--from-labels", metavar="DIR", default=None,
                   help="paint the intensity model into the label maps of this KiTS19-layout folder")
    p.add_argument("--workers", type=int, default=None,
                   help="processes (default: CPU count); the output does not depend on it")
    p.add_argument("--dataset", choices=["kits19", "kits23"], default=None,
                   help="kits23: add renal cysts (label 3) and write kits23.json (default kits19; with "
                        "--from-labels the source's dataset)")
    p.add_argument("--val-cases", type=int, default=None,
                   help="validation cases in the manifest (default: the thesis's 20 of 210, at least 1)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_phantom)


if __name__ == "__main__":  # pragma: no cover
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    a = parser.parse_args()
    sys.exit(a.func(a))
