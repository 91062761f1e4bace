"""``kidneyseg train``: train one cascade stage from a preprocessed cache.

    kidneyseg train --config CONFIG --stage 1|2 --cache CACHE --out MODEL_DIR [--resume]
                    [--extend-epochs N] [--device auto|cpu|cuda] [--precision auto|fp32|bf16|fp16]
                    [--no-progress]
    kidneyseg train --config CONFIG --stage 1|2 --dry-run [--device ...] [--precision ...] [--memory-budget GIB]
    kidneyseg train --write-default-config PATH [--preset thesis|demo] [--stage 1|2]
    torchrun --nproc_per_node N -m kidneyseg train ...      (DistributedDataParallel)
"""

from __future__ import annotations

import argparse

#: ``kidneyseg.runtime.PRECISIONS`` and ``DEVICES`` (spelt out: importing runtime loads torch, too slow for ``--help``)
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")

__all__ = ["register"]


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a cascade stage (stage 1 coarse, stage 2 ROI)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="TrainConfig JSON (missing keys take the thesis defaults)")
    p.add_argument("--stage", type=int, choices=(1, 2), help="cascade stage (overrides the config's)")
    p.add_argument("--cache", help="preprocessed cache folder (kidneyseg preprocess --out)")
    p.add_argument("--out", help="model folder; writes OUT/stage<N>/ and OUT/plan.json")
    p.add_argument("--resume", action="store_true", help="continue exactly from OUT/stage<N>/checkpoint_last.pt")
    p.add_argument("--extend-epochs", type=int, metavar="N", help="resume and train N epochs more, no lr jump")
    p.add_argument("--stop-after", type=int, metavar="N", help="stop after N epochs in this call (resume later)")
    p.add_argument("--device", default="cpu", choices=DEVICES,
                   help="training device (default cpu; auto: cuda when a GPU is visible)")
    p.add_argument("--precision", choices=PRECISIONS,
                   help="network precision (default: the config's, normally auto = bf16 where the CPU or GPU runs "
                        "it natively, fp16 + GradScaler on older GPUs, fp32 otherwise); the loss stays fp32")
    p.add_argument("--dry-run", action="store_true", help="print the memory plan of one step, check it, exit")
    p.add_argument("--memory-budget", type=float, metavar="GIB",
                   help="memory one step may use, GiB (default: the GPU's memory, or the RAM free now)")
    p.add_argument("--workers", type=int, default=1, help="patch sampler threads (default 1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--write-default-config", metavar="PATH", help="write a config JSON and exit")
    p.add_argument("--preset", default="thesis", choices=("thesis", "demo"),
                   help="with --write-default-config: thesis defaults or tiny CPU demo settings")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..errors import fail
    from .config import load_config, preset, save_config
    from .stage import train_stage

    if args.write_default_config:
        cfg = preset(args.preset, args.stage or 1)
        save_config(cfg, args.write_default_config)
        print(f"wrote {args.write_default_config}")
        return 0
    if args.memory_budget is not None and not args.memory_budget > 0:
        raise fail(None, f"--memory-budget must be a positive number of GiB, got {args.memory_budget}")
    budget = None if args.memory_budget is None else int(args.memory_budget * 2 ** 30)
    cfg = load_config(args.config) if args.config else preset("thesis", args.stage or 1)
    if args.stage and args.stage != cfg.stage:
        cfg = type(cfg).from_dict({**cfg.to_dict(), "stage": args.stage})
    if args.precision:
        cfg.precision = args.precision
    if args.dry_run:
        from ..runtime import resolve_device
        from .stage import memory_check

        memory_check(cfg, resolve_device(args.device).type, budget_bytes=budget)
        print("dry run: the step fits; nothing trained")
        return 0
    missing = [f"--{n}" for n in ("cache", "out") if not getattr(args, n)]
    if missing:
        raise fail(None, f"missing {' and '.join(missing)} (or use --write-default-config PATH or --dry-run)")
    if args.no_progress:
        cfg.progress = False
    if args.extend_epochs is not None and args.extend_epochs < 1:
        raise fail(None, f"--extend-epochs must be >= 1, got {args.extend_epochs}")
    history = train_stage(cfg, args.cache, args.out, resume=args.resume, extend_epochs=args.extend_epochs,
                          device=args.device, stop_after=args.stop_after, num_workers=args.workers,
                          memory_budget_bytes=budget, full_plan=True)
    if history:
        last = history[-1]
        dice = " ".join(f"{k} {_fmt(v)}" for k, v in last.items() if k.startswith("val_dice_") and k != "val_dice_mean")
        print(f"epoch {last['epoch']}: train_loss {last['train_loss']:.4f} {dice or 'no validation'}")
    return 0


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.4f}"
