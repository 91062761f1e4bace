"""Safe checkpoint files: tensors and plain values only, loaded with ``torch.load(weights_only=True)``.

A checkpoint is a dict of tensors, numbers, strings and lists (no pickled objects): the model,
optimizer, scheduler and scaler state dicts, the RNG states as tensors/lists, the epoch, the
metrics history, and the training config as a JSON string. A ``<name>.sha256`` file beside it
(``sha256sum`` format) is verified before every load.

Saving is atomic and kill-safe: the new file is written beside the target, its hash is added to
the ``.sha256`` file (which then lists old and new hashes), the file is renamed into place, and
the ``.sha256`` file is rewritten with the new hash only. A kill at any moment leaves a complete
checkpoint whose hash is listed.

This is the model folder's file format (:mod:`kidneyseg.model.folder`); training writes it and
inference reads it, so it lives here, below both.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path
from typing import Any

import torch

from ..errors import atomic_path, fail, write_text_atomic

__all__ = ["FORMAT", "load_checkpoint", "load_state_checked", "save_checkpoint", "sha256_file", "verify_checkpoint"]

#: Format 2: the training config holds typed ``sampler`` and ``augment`` blocks (kidneyseg 0.2).
FORMAT = "kidneyseg-checkpoint-2"


def sha256_file(path: os.PathLike | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _sha_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _listed_hashes(path: Path) -> set[str]:
    sp = _sha_path(path)
    if not sp.is_file():
        return set()
    return {line.split()[0] for line in sp.read_text(encoding="utf-8").splitlines() if line.strip()}


def checkpoint_digest(path: os.PathLike | str) -> str:
    """The sha256 of a checkpoint: the current hash its ``.sha256`` file lists (the first line),
    else computed from the file. Cheap: it names the weights without reading them."""
    path = Path(path)
    sp = _sha_path(path)
    if sp.is_file():
        lines = [ln.split()[0] for ln in sp.read_text(encoding="utf-8").splitlines() if ln.strip()]
        if lines:
            return lines[0]
    return sha256_file(path)


def save_checkpoint(path: os.PathLike | str, payload: dict[str, Any]) -> str:
    """Write ``payload`` to ``path`` atomically with its ``.sha256``; returns the hash."""
    path = Path(path)
    payload = {"format": FORMAT, **payload}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
        digest = sha256_file(tmp)
        old = sorted(_listed_hashes(path) - {digest})
        lines = [f"{digest}  {path.name}"] + [f"{h}  {path.name}" for h in old]
        write_text_atomic(_sha_path(path), "\n".join(lines) + "\n")
    write_text_atomic(_sha_path(path), f"{digest}  {path.name}\n")
    return digest


def verify_checkpoint(path: os.PathLike | str) -> str:
    """Check ``path`` against its ``.sha256`` file; return the hash or raise :class:`KidneysegError`."""
    path = Path(path)
    if not path.is_file():
        raise fail(path, "checkpoint not found")
    listed = _listed_hashes(path)
    if not listed:
        raise fail(path, f"no checksum file {_sha_path(path).name} beside the checkpoint; refusing to load it")
    digest = sha256_file(path)
    if digest not in listed:
        raise fail(path, "sha256 does not match its .sha256 file (corrupt or modified checkpoint)")
    return digest


def load_checkpoint(path: os.PathLike | str, map_location: str | torch.device = "cpu",
                    verify: bool = True) -> dict[str, Any]:
    """Load a checkpoint with ``torch.load(weights_only=True)`` after verifying its sha256.

    Raises:
        KidneysegError: missing file, checksum mismatch, a file that needs arbitrary pickled objects
            (refused, never executed), or not a kidneyseg checkpoint.
    """
    path = Path(path)
    if verify:
        verify_checkpoint(path)
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unpickling refused"
        raise fail(path, f"not a safe checkpoint: weights_only load refused it ({first})") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise fail(path, f"cannot read checkpoint ({exc})") from None
    if not isinstance(data, dict) or not str(data.get("format", "")).startswith("kidneyseg-checkpoint-"):
        raise fail(path, f"not a kidneyseg checkpoint (expected format {FORMAT!r})")
    if data["format"] != FORMAT:
        raise fail(path, f"checkpoint format {data['format']!r} was written by another kidneyseg version "
                         f"(this one reads {FORMAT!r}); retrain, or use the version that wrote it")
    return data


def load_state_checked(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], source: os.PathLike | str) -> None:
    """``model.load_state_dict`` that refuses a different architecture with one clear line."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    wrong = [f"{k} {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}" for k in own
             if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            parts.append(f"{len(wrong)} shape mismatches (checkpoint vs network), e.g. {wrong[0]}")
        if missing:
            parts.append(f"{len(missing)} tensors missing, e.g. {missing[0]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensors, e.g. {unexpected[0]}")
        raise fail(source, "architecture mismatch: " + "; ".join(parts))
    model.load_state_dict(state_dict, strict=True)
