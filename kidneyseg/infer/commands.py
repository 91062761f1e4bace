"""``kidneyseg predict``: cascade inference, files in, files out."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "predict", help="segment CT files with a trained cascade (NIfTI, NRRD, MHA or DICOM in; NIfTI, Slicer "
                        "NRRD or DICOM SEG labels out; statistics, previews)",
        description="Stage 1 on a coarse volume, an ROI box around the predicted kidneys, stage 2 with the "
                    "stage-1 prior, post-processing; each output has its input's exact shape and affine. "
                    "Outputs are written atomically; existing outputs are skipped.")
    p.add_argument("-i", "--input", required=True,
                   help="CT .nii.gz/.nrrd/.mha, a DICOM folder or .zip, or a folder of cases (*.nii.gz, *.nrrd, "
                        "*.zip, case_X/imaging.nii.gz, DICOM folders)")
    p.add_argument("-o", "--output",
                   help="output file (one input: .nii.gz, .seg.nrrd or .seg.dcm after --format) or folder "
                        "(<case_id>.<ext>); required unless --list-series")
    p.add_argument("--model", help="model folder (plan.json, stage1/, stage2/, postprocess.json); "
                                   "required unless --list-series")
    p.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"],
                   help="where the networks run (auto: cuda when a GPU is visible)")
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
    out = p.add_argument_group("output formats, statistics, previews, DICOM series")
    out.add_argument("--format", default="nifti", choices=["nifti", "nrrd", "dicom-seg"],
                     help="label file: NIfTI (default), 3D Slicer .seg.nrrd, or a DICOM SEG referencing the input "
                          "series (DICOM input only)")
    out.add_argument("--statistics", action="store_true",
                     help="write <case>.statistics.json (kidney volumes and HU per side, tumors with diameters; "
                          "statistics.csv for a folder)")
    out.add_argument("--preview", action="store_true",
                     help="write <case>.preview.png (axial/coronal/sagittal through the tumor, outlines)")
    out.add_argument("--save-probabilities", action="store_true",
                     help="write <case>.probabilities.npz: float16 kidney and tumor probabilities in the ROI box")
    out.add_argument("--series", metavar="UID", help="the DICOM SeriesInstanceUID to read (default: the largest "
                                                     "axial CT series)")
    out.add_argument("--list-series", action="store_true",
                     help="list the DICOM series of the input (* = the default choice) and exit")
    p.set_defaults(func=run_predict)


def run_predict(args: argparse.Namespace) -> int:
    from ..errors import KidneysegError
    from ..resources import record
    from .predict import predict_path

    if args.list_series:
        return _list_series(args.input)
    missing = [flag for flag, value in (("-o/--output", args.output), ("--model", args.model)) if not value]
    if missing:
        raise KidneysegError(f"predict needs {' and '.join(missing)} (only --list-series runs without them)")
    try:
        with record("predict", args.output):  # a row in $KIDNEYSEG_RESOURCES/resources.json when set
            predict_path(args.input, args.output, args.model, device=args.device, tta=args.tta, shard=args.shard,
                         overlap=args.overlap, batch_size=args.batch_size, overwrite=args.overwrite,
                         postprocess_name=args.postprocess, progress=not args.no_progress,
                         body_crop=not args.no_body_crop, fmt=args.format, statistics=args.statistics,
                         preview=args.preview, save_probabilities=args.save_probabilities, series=args.series,
                         precision=args.precision)
    except ValueError as exc:  # argument errors (overlap, shard, strategy) as one line
        if isinstance(exc, KidneysegError):
            raise
        raise KidneysegError(str(exc)) from None
    return 0


def _list_series(path: str) -> int:
    """Print the DICOM series of each DICOM case under ``path``; ``*`` marks the default choice."""
    from ..io import input_format
    from ..io.dicom_files import list_series
    from .predict import list_inputs

    cases = [(cid, p) for cid, p in list_inputs(path) if input_format(p) == "dicom"]
    if not cases:
        from ..errors import fail

        raise fail(path, "--list-series needs DICOM input (a folder or .zip of DICOM files)")
    for cid, p in cases:
        series, chosen = list_series(p)
        print(f"{cid}: {len(series)} series in {p}" + ("" if chosen else "  (no default: choose with --series UID)"))
        for s in series:
            print(("* " if s is chosen else "  ") + s.describe())
    return 0
