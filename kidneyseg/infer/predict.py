"""``kidneyseg predict`` on files: inputs found under a path, one output per case, shards, atomic writes.

:func:`predict_path` finds the cases under a file or folder (:func:`list_inputs`), loads each CT,
runs :func:`kidneyseg.infer.cascade.predict_volume` and writes the labels with the input's exact
shape and affine. An existing output is complete by construction (atomic writes) and is skipped.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Sequence

from tqdm.auto import tqdm

from ..errors import fail
from .cascade import CascadeModel, predict_volume
from .postprocess import get_strategy
from .sliding_window import check_overlap


def _is_nifti(p: Path) -> bool:
    return p.is_file() and (p.name.endswith(".nii.gz") or p.name.endswith(".nii"))


def _case_id(p: Path) -> str:
    name = p.name
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


def _has_dicom(folder: Path) -> bool:
    files = [f for f in folder.iterdir() if f.is_file() and not f.name.startswith(".")]
    return bool(files) and not any(_is_nifti(f) for f in files)


def list_inputs(path: os.PathLike | str) -> list[tuple[str, Path]]:
    """The cases under ``path``, sorted by case id.

    ``path`` may be a NIfTI file, a DICOM series folder, or a folder of cases: NIfTI files
    (``<id>.nii.gz``), KiTS19 case folders (``<id>/imaging.nii.gz``) or DICOM series folders
    (``<id>/*.dcm``).

    Raises:
        KidneysegError: nothing usable found.
    """
    path = Path(path)
    if not path.exists():
        raise fail(path, "no such file or folder")
    if path.is_file():
        if not _is_nifti(path):
            raise fail(path, "input must be a .nii/.nii.gz file, a DICOM series folder or a folder of cases")
        return [(_case_id(path), path)]
    entries = sorted(e for e in path.iterdir() if not e.name.startswith("."))
    cases: dict[str, Path] = {}
    for e in entries:
        if _is_nifti(e):
            cases[_case_id(e)] = e
        elif e.is_dir():
            if (e / "imaging.nii.gz").is_file():
                cases[e.name] = e / "imaging.nii.gz"
            elif _has_dicom(e):
                cases[e.name] = e
    if cases:
        return sorted(cases.items())
    if any(e.is_file() for e in entries):  # a folder of DICOM slices: one series
        return [(path.name, path)]
    raise fail(path, "no CT found (expected .nii.gz files, case_XXXXX/imaging.nii.gz or DICOM folders)")


def parse_shard(spec: str | None) -> tuple[int, int]:
    """``"i/N"`` -> ``(i, N)`` with ``0 <= i < N``; ``None`` -> ``(0, 1)``."""
    if spec is None:
        return 0, 1
    try:
        i, n = (int(v) for v in str(spec).split("/"))
    except ValueError:
        raise ValueError(f"shard must look like i/N (e.g. 0/4), got {spec!r}") from None
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"shard i/N needs 0 <= i < N, got {spec!r}")
    return i, n


def shard_cases(cases: Sequence[tuple[str, Path]], spec: str | None) -> list[tuple[str, Path]]:
    """The i-th of N disjoint, deterministic subsets: sorted by case id, every N-th from the i-th."""
    i, n = parse_shard(spec)
    return sorted(cases)[i::n]


def output_path(case_id: str, output: Path, single: bool) -> Path:
    """Where a case's labels go: ``output`` itself for one input named ``*.nii[.gz]``, else ``output/<id>.nii.gz``."""
    if single and (output.name.endswith(".nii.gz") or output.name.endswith(".nii")):
        return output
    return output / f"{case_id}.nii.gz"


def _check_output_location(folder: Path) -> None:
    """Fail before minutes of compute when ``folder`` cannot be created or written (creates nothing)."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise fail(folder, f"cannot create output folder ({existing} is a file)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise fail(folder, "output folder is not writable")


def predict_path(input_path: os.PathLike | str, output: os.PathLike | str, model_dir: os.PathLike | str,
                 device: str = "cpu", tta: bool = False, shard: str | None = None, overlap: float = 0.5,
                 batch_size: int = 1, overwrite: bool = False, postprocess_name: str | None = None,
                 progress: bool = True, log=print, body_crop: bool = True, precision: str = "auto") -> list[dict]:
    """Predict every case under ``input_path`` (file, DICOM folder or folder of cases) into ``output``.

    Outputs are written atomically with the input's exact shape and affine; an existing output is
    skipped (complete by construction) unless ``overwrite``. ``shard="i/N"`` takes the i-th of N
    disjoint subsets. One timing line per case goes to ``log``. ``body_crop``: see
    :func:`predict_volume`. ``precision``: the networks' precision (``auto``, ``fp32``, ``bf16``,
    ``fp16``; see :mod:`kidneyseg.runtime`), logged once with the memory layout.

    Returns:
        One dict per case: ``case_id``, ``output``, ``status`` (``"done"`` or ``"skipped"``), timings.
    """
    from ..io import load_volume, save_like

    check_overlap(overlap)
    parse_shard(shard)
    if postprocess_name is not None:
        get_strategy(postprocess_name)
    cases = list_inputs(input_path)
    output = Path(output)
    single = Path(input_path).is_file() or (len(cases) == 1 and cases[0][1] == Path(input_path))
    if not single and (output.name.endswith(".nii.gz") or output.name.endswith(".nii")):
        raise fail(output, f"{len(cases)} inputs need an output folder, not a file name")
    todo = shard_cases(cases, shard)
    _check_output_location(output.parent if output_path("x", output, single) == output else output)
    model = None
    results = []
    for cid, path in tqdm(todo, desc="predict", unit="case", disable=not progress or len(todo) < 2):
        out = output_path(cid, output, single)
        if out.exists() and not overwrite:
            results.append({"case_id": cid, "output": str(out), "status": "skipped"})
            log(f"{cid}: {out} exists, skipped")
            continue
        if model is None:
            model = CascadeModel.load(model_dir, device, postprocess_name, precision=precision)
            log(model.runtime.describe())
        t0 = time.perf_counter()
        vol = load_volume(path, kind="image")
        t_load = time.perf_counter() - t0
        labels, t = predict_volume(vol, model, overlap=overlap, tta=tta, batch_size=batch_size,
                                   progress=progress, case_id=cid, body_crop=body_crop)
        t1 = time.perf_counter()
        save_like(labels, out, vol, kind="label")
        t_write = time.perf_counter() - t1
        total = time.perf_counter() - t0
        timings = {"load": t_load, **t, "write": t_write, "total": total}
        log(f"{cid}: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()) + f" -> {out}")
        results.append({"case_id": cid, "output": str(out), "status": "done", **timings})
    return results


__all__ = ["list_inputs", "output_path", "parse_shard", "predict_path", "shard_cases"]
