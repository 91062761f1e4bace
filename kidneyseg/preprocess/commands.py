"""``kidneyseg plan`` and ``kidneyseg preprocess``: parse arguments, call the package."""

from __future__ import annotations

import argparse


def _spacing(values: list[str]):
    if values == ["median"]:
        return "median"
    try:
        out = tuple(float(v) for v in values)
    except ValueError:
        raise argparse.ArgumentTypeError(f"spacing must be 3 numbers (z y x mm) or 'median', got {values}") from None
    if len(out) != 3 or min(out) <= 0:
        raise argparse.ArgumentTypeError(f"spacing must be 3 positive numbers (z y x mm), got {values}")
    return out


def _run_plan(args) -> int:
    from .fit import fit_plan
    from .plan import DEFAULT_STAGE1_SPACING, DEFAULT_TARGET_SPACING

    try:
        target = _spacing(args.target_spacing) if args.target_spacing else DEFAULT_TARGET_SPACING
        stage1 = _spacing(args.stage1_spacing) if args.stage1_spacing else DEFAULT_STAGE1_SPACING
    except argparse.ArgumentTypeError as exc:
        raise ValueError(str(exc)) from None
    if stage1 == "median":
        raise ValueError("--stage1-spacing must be 3 numbers (z y x mm)")
    plan = fit_plan(args.manifest, target, stage1, margin_mm=args.margin_mm, samples_per_case=args.samples,
                    seed=args.seed, workers=args.workers, progress=not args.no_progress)
    plan.save(args.output)
    print(f"wrote {args.output} (hash {plan.hash()}): clip {plan.clip_low_hu:.1f}..{plan.clip_high_hu:.1f} HU, "
          f"mean {plan.mean_hu:.1f} sd {plan.std_hu:.1f} HU, target {plan.target_spacing} mm, "
          f"stage1 {plan.stage1_spacing} mm, box {tuple(round(b, 1) for b in plan.box_size_mm)} mm "
          f"from {plan.n_train_cases} training cases")
    return 0


def _run_preprocess(args) -> int:
    from .cache import preprocess_dataset

    stages = tuple(int(s) for s in args.stages.split(","))
    s = preprocess_dataset(args.manifest, args.plan, args.out, workers=args.workers, force=args.force,
                           stages=stages, progress=not args.no_progress)
    print(f"{args.out}: {len(s['processed'])} case(s) preprocessed, {len(s['up_to_date'])} up to date, "
          f"{len(s['skipped'])} stage skip(s)")
    return 0


def _wrap(fn):
    def run(args):
        from ..errors import KidneysegError

        try:
            return fn(args)
        except ValueError as exc:
            if isinstance(exc, KidneysegError):
                raise
            raise KidneysegError(str(exc)) from None
    return run


def register(subparsers) -> None:
    """Add ``plan`` and ``preprocess`` to the ``kidneyseg`` command."""
    p = subparsers.add_parser("plan", help="fit the preprocessing plan (intensity, spacing, ROI box) on the training split",
                              description="Fit clip/mean/std on training foreground voxels (needs the CT images) "
                                          "and the fixed ROI box size (labels only); write plan.json.")
    p.add_argument("manifest", help="manifest CSV (kidneyseg manifest)")
    p.add_argument("-o", "--output", default="plan.json", help="plan file to write (default plan.json)")
    p.add_argument("--target-spacing", nargs="+", metavar="MM",
                   help="stage-2 spacing z y x in mm, or 'median' (default 1.0 0.78 0.78)")
    p.add_argument("--stage1-spacing", nargs="+", metavar="MM", help="stage-1 spacing z y x in mm (default 2.5 1.95 1.95)")
    p.add_argument("--margin-mm", type=float, default=10.0, help="margin around the largest foreground extent (10)")
    p.add_argument("--samples", type=int, default=10000, help="foreground voxels sampled per case (10000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_wrap(_run_plan))

    q = subparsers.add_parser("preprocess", help="build the preprocessed cache (stage 1 and stage 2 arrays)",
                              description="Normalise, resample and crop every case of MANIFEST with PLAN into CACHE "
                                          "(.npy + properties.json per case). Up-to-date cases are skipped; a kill "
                                          "leaves no partial file and a re-run resumes.")
    q.add_argument("manifest", help="manifest CSV")
    q.add_argument("--plan", required=True, help="plan.json from `kidneyseg plan`")
    q.add_argument("--out", required=True, help="cache folder")
    q.add_argument("--workers", type=int, default=1, help="parallel processes (default 1)")
    q.add_argument("--stages", default="1,2", help="stages to build, e.g. 1,2 (default) or 2")
    q.add_argument("--force", action="store_true",
                   help="rebuild every case; required to rebuild a cache made with a different plan")
    q.add_argument("--no-progress", action="store_true")
    q.set_defaults(func=_wrap(_run_preprocess))
