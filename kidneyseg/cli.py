"""The one ``kidneyseg`` command. Each area of the package registers its own subcommands.

Subcommands only parse arguments and call the package. A :class:`~kidneyseg.errors.KidneysegError`
(bad input, bad argument) is printed as one line ``kidneyseg <cmd>: error: <message>`` and the
process exits with status 2; nothing half-written is left behind because outputs are atomic.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings

from . import __version__
from .errors import KidneysegError

#: Modules that each define ``register(subparsers)``; every subparser sets ``func=callable(args)``.
COMMAND_MODULES = (
    "kidneyseg.data.commands",        # manifest, stats, phantom
    "kidneyseg.preprocess.commands",  # plan, preprocess
    "kidneyseg.train.commands",       # train
    "kidneyseg.infer.commands",       # predict
    "kidneyseg.evaluate.commands",    # evaluate, choose-postprocess
    "kidneyseg.pipeline_commands",    # pipeline
    "kidneyseg.viewer.commands",      # viewer
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kidneyseg",
        description="Cascade 3D U-Net segmentation of kidneys and kidney tumors in CT (KiTS19).",
    )
    parser.add_argument("--version", action="version", version=f"kidneyseg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        # every area must be there: a missing command module is a broken install, never skipped
        importlib.import_module(name).register(sub)
    return parser


def _showwarning(message, category, filename, lineno, file=None, line=None):
    print(f"kidneyseg: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    warnings.showwarning = _showwarning
    try:
        result = args.func(args)
    except KidneysegError as exc:
        print(f"kidneyseg {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"kidneyseg {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
