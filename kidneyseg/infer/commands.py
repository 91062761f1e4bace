"""``kidneyseg predict``: cascade inference, files in, files out."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "predict", help="segment CT files with a trained cascade (NIfTI or DICOM in, NIfTI labels out)",
        description="Stage 1 on a coarse volume, an ROI box around the predicted kidneys, stage 2 with the "
                    "stage-1 prior, post-processing; each output has its input's exact shape and affine. "
                    "Outputs are written atomically; existing outputs are skipped.")
    p.add_argument("-i", "--input", required=True,
                   help="CT .nii.gz, DICOM series folder, or folder of cases (*.nii.gz, case_X/imaging.nii.gz, "
                        "DICOM folders)")
    p.add_argument("-o", "--output", required=True, help="output .nii.gz (one input) or folder (<case_id>.nii.gz)")
    p.add_argument("--model", required=True, help="model folder (plan.json, stage1/, stage2/, postprocess.json)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the networks run")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                   help="network precision: auto (default) = bf16 where the CPU (AMX, AVX-512 BF16) or GPU runs it "
                        "natively, fp16 on older GPUs, fp32 otherwise; accumulation and post-processing stay fp32")
    p.add_argument("--tta", action="store_true", help="mirror test-time augmentation in stage 2 (8x slower)")
    p.add_argument("--shard", metavar="i/N", help="predict only the i-th (0-based) of N disjoint subsets")
    p.add_argument("--overlap", type=float, default=0.5, help="sliding-window overlap in [0, 1) (default 0.5)")
    p.add_argument("--batch-size", type=int, default=1, help="windows per network call (default 1)")
    p.add_argument("--postprocess", metavar="NAME",
                   help="override the model's post-processing (anatomy, largest, largest_per_class, none)")
    p.add_argument("--no-body-crop", action="store_true",
                   help="run stage 1 on the whole field of view, not only on the body's bounding box")
    p.add_argument("--overwrite", action="store_true", help="recompute outputs that already exist")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run_predict)


def run_predict(args: argparse.Namespace) -> int:
    from ..errors import KidneysegError
    from .predict import predict_path

    try:
        predict_path(args.input, args.output, args.model, device=args.device, tta=args.tta, shard=args.shard,
                     overlap=args.overlap, batch_size=args.batch_size, overwrite=args.overwrite,
                     postprocess_name=args.postprocess, progress=not args.no_progress,
                     body_crop=not args.no_body_crop, precision=args.precision)
    except ValueError as exc:  # argument errors (overlap, shard, strategy) as one line
        if isinstance(exc, KidneysegError):
            raise
        raise KidneysegError(str(exc)) from None
    return 0
