"""``kidneyseg predict`` on files: inputs found under a path, outputs per case, shards, atomic writes.

:func:`predict_path` finds the cases under a file or folder (:func:`list_inputs`), loads each CT
(NIfTI, NRRD/MHA, a DICOM series folder or ``.zip``), runs
:func:`kidneyseg.infer.cascade.predict_volume` and writes the labels with the input's exact shape
and geometry in the chosen format, plus the requested sidecars (statistics, preview,
probabilities; :mod:`kidneyseg.infer.outputs`). A case whose requested outputs all exist is
complete by construction (atomic writes) and is skipped.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Sequence

from tqdm.auto import tqdm

from ..errors import fail
from ..io import input_format, is_zip_name
from ..io.itk_files import is_itk_name
from ..io.nifti import is_nifti_name
from .cascade import CascadeModel, predict_volume
from .outputs import (STATISTICS_CSV, OutputOptions, case_outputs, is_label_file_name, write_labels,
                      write_statistics, write_statistics_csv)
from .postprocess import get_strategy
from .sliding_window import check_overlap

#: File endings read as one case each (besides DICOM folders).
CASE_FILE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".zip")


def _is_seg_output(p: Path) -> bool:
    """A label file kidneyseg writes beside its inputs' kind (``.seg.nrrd``), never a CT to predict."""
    return p.name.lower().endswith(".seg.nrrd")


def _case_id(p: Path) -> str:
    name = p.name
    for ext in CASE_FILE_SUFFIXES:
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name


def _dicom_study(folder: Path) -> str | None:
    """The ``StudyInstanceUID`` of the first DICOM file below ``folder`` (``None``: no DICOM there)."""
    import pydicom

    from ..io.dicom_files import first_dicom_file

    first = first_dicom_file(folder)
    if first is None:
        return None
    try:
        return str(pydicom.dcmread(first, stop_before_pixels=True, specific_tags=["StudyInstanceUID"])
                   .get("StudyInstanceUID", "") or "?")
    except Exception:  # noqa: BLE001 - unreadable: reported when the case is read
        return "?"


def list_inputs(path: os.PathLike | str) -> list[tuple[str, Path]]:
    """The cases under ``path``, sorted by case id.

    ``path`` may be one case (a NIfTI/NRRD/MHA file, a ``.zip`` of a DICOM series, a folder
    holding DICOM files) or a folder of cases: such files (``<id>.nii.gz``, ``<id>.nrrd``,
    ``<id>.zip`` ...), KiTS19 case folders (``<id>/imaging.nii.gz``) or folders with DICOM files
    anywhere below them (``<id>/...``). A DICOM case is one study: its series is picked by
    :func:`kidneyseg.io.dicom.pick_series`. A folder holding DICOM files directly, or whose
    subfolders all hold series of the same study (``study/series_1/``, ``study/series_2/``), is
    one case.

    Raises:
        KidneysegError: nothing usable found.
    """
    from ..io.dicom_files import is_dicom_file

    path = Path(path)
    if not path.exists():
        raise fail(path, "no such file or folder")
    if path.is_file():
        if not (is_nifti_name(path) or is_itk_name(path) or is_zip_name(path)):
            raise fail(path, "input must be a .nii/.nii.gz, .nrrd or .mha file, a .zip or folder of DICOM files, "
                             "or a folder of cases")
        return [(_case_id(path), path)]
    entries = sorted(e for e in path.iterdir() if not e.name.startswith("."))
    if any(e.is_file() and is_dicom_file(e) for e in entries):  # a folder of DICOM slices: one study
        return [(path.name, path)]
    cases: dict[str, Path] = {}
    studies: dict[str, str | None] = {}
    for e in entries:
        if e.is_file() and (is_nifti_name(e) or is_itk_name(e) or is_zip_name(e)) and not _is_seg_output(e):
            cases[_case_id(e)] = e
        elif e.is_dir():
            if (e / "imaging.nii.gz").is_file():
                cases[e.name] = e / "imaging.nii.gz"
            else:
                study = _dicom_study(e)
                if study is not None:
                    cases[e.name], studies[e.name] = e, study
    if len(studies) > 1 and len(studies) == len(cases) and len(set(studies.values())) == 1:
        return [(path.name, path)]  # series folders of one study
    if cases:
        return sorted(cases.items())
    raise fail(path, "no CT found (expected .nii.gz/.nrrd/.mha files, case_XXXXX/imaging.nii.gz, DICOM folders "
                     "or .zip files)")


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


def output_path(case_id: str, output: Path, single: bool, fmt: str = "nifti") -> Path:
    """Where a case's labels go: ``output`` itself for one input given a file name, else ``output/<id>.<ext>``."""
    return case_outputs(case_id, output, single, OutputOptions(fmt)).labels


def _check_output_location(folder: Path) -> None:
    """Fail before minutes of compute when ``folder`` cannot be created or written (creates nothing)."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise fail(folder, f"cannot create output folder ({existing} is a file)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise fail(folder, "output folder is not writable")


def _check_combinations(todo: list[tuple[str, Path]], options: OutputOptions, series: str | None) -> None:
    """Refuse impossible requests before any compute (one line each)."""
    if options.format == "dicom-seg":
        for _, path in todo:
            if input_format(path) != "dicom":
                raise fail(path, "--format dicom-seg needs a DICOM series as input (a folder or .zip of DICOM "
                                 "files); this input is not DICOM: use --format nifti or nrrd")
    if series is not None:
        if len(todo) != 1:
            raise fail(None, f"--series picks a series of one DICOM input, got {len(todo)} cases")
        if input_format(todo[0][1]) != "dicom":
            raise fail(todo[0][1], "--series applies to DICOM input (a folder or .zip) only")


def predict_path(input_path: os.PathLike | str, output: os.PathLike | str, model_dir: os.PathLike | str,
                 device: str = "cpu", tta: bool = False, shard: str | None = None, overlap: float = 0.5,
                 batch_size: int = 1, overwrite: bool = False, postprocess_name: str | None = None,
                 progress: bool = True, log=print, body_crop: bool = True, fmt: str = "nifti",
                 statistics: bool = False, preview: bool = False, save_probabilities: bool = False,
                 series: str | None = None, precision: str = "auto") -> list[dict]:
    """Predict every case under ``input_path`` (file, DICOM folder or .zip, folder of cases) into ``output``.

    Outputs are written atomically with the input's exact shape and geometry; a case whose
    requested outputs all exist is skipped (complete by construction) unless ``overwrite``.
    ``shard="i/N"`` takes the i-th of N disjoint subsets. One timing line per case goes to ``log``.
    ``body_crop``: see :func:`predict_volume`.

    Args:
        fmt: label format, ``"nifti"``, ``"nrrd"`` (Slicer ``.seg.nrrd``) or ``"dicom-seg"``
            (DICOM input only).
        statistics: write ``<case>.statistics.json`` (and ``statistics.csv`` for a folder of cases).
        preview: write ``<case>.preview.png``.
        save_probabilities: write ``<case>.probabilities.npz`` (stage-2 probabilities in the ROI box).
        series: ``SeriesInstanceUID`` to read from a DICOM input holding several series.
        precision: the networks' precision (``auto``, ``fp32``, ``bf16``, ``fp16``; see
            :mod:`kidneyseg.runtime`), logged once with the memory layout.

    Returns:
        One dict per case: ``case_id``, ``output``, ``status`` (``"done"`` or ``"skipped"``), the
        sidecar paths, timings.
    """
    from ..io import load_volume, read_header
    from ..io.nifti import is_nifti_name
    from ..measure.statistics import case_statistics
    from ..runtime import ram_budget_bytes
    from .memory import check_predict_memory

    options = OutputOptions(fmt, statistics, preview, save_probabilities)
    check_overlap(overlap)
    parse_shard(shard)
    if postprocess_name is not None:
        get_strategy(postprocess_name)
    cases = list_inputs(input_path)
    output = Path(output)
    single = Path(input_path).is_file() or (len(cases) == 1 and cases[0][1] == Path(input_path))
    if not single and is_label_file_name(output):
        raise fail(output, f"{len(cases)} inputs need an output folder, not a file name")
    todo = shard_cases(cases, shard)
    _check_combinations(todo, options, series)
    first = case_outputs("x", output, single, options).labels
    _check_output_location(output.parent if first == output else output)
    model = None
    results = []
    for cid, path in tqdm(todo, desc="predict", unit="case", disable=not progress or len(todo) < 2):
        outs = case_outputs(cid, output, single, options)
        paths = {"output": str(outs.labels), "statistics": outs.statistics, "preview": outs.preview,
                 "probabilities": outs.probabilities}
        paths = {k: str(v) for k, v in paths.items() if v is not None}
        if outs.complete() and not overwrite:
            results.append({"case_id": cid, "status": "skipped", **paths})
            log(f"{cid}: {outs.labels} exists, skipped")
            continue
        if model is None:
            model = CascadeModel.load(model_dir, device, postprocess_name, precision=precision)
            log(model.runtime.describe())
        if path.is_file() and is_nifti_name(path):  # a NIfTI CT too large for the RAM budget: refused unread
            head = read_header(path)
            check_predict_memory(path, head.shape, head.spacing, model, ram_budget_bytes())
        t0 = time.perf_counter()
        vol = load_volume(path, kind="image", series_uid=series)
        t_load = time.perf_counter() - t0
        res = predict_volume(vol, model, overlap=overlap, tta=tta, batch_size=batch_size, progress=progress,
                             case_id=cid, body_crop=body_crop, probabilities=save_probabilities)
        labels, t = res[0], res[1]
        t1 = time.perf_counter()
        stats = None
        if statistics or preview:  # the preview prints the statistics' summary line
            stats = case_statistics(labels, vol.affine, vol.array)
        if statistics:
            write_statistics(stats, outs.statistics, cid, vol, outs.labels)
        if preview:
            from .preview import save_preview

            save_preview(vol, labels, outs.preview, cid, stats)
        if save_probabilities:
            res[2].save(outs.probabilities)
        t_extra = time.perf_counter() - t1
        t1 = time.perf_counter()
        write_labels(labels, outs.labels, vol, options.format)  # last: its presence marks the case done
        t_write = time.perf_counter() - t1
        total = time.perf_counter() - t0
        timings = {"load": t_load, **t, **({"outputs": t_extra} if t_extra > 0.05 else {}), "write": t_write,
                   "total": total}
        log(f"{cid}: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()) + f" -> {outs.labels}")
        results.append({"case_id": cid, "status": "done", **paths, **timings})
        del vol, labels, res
    if statistics and not single:
        jsons = [case_outputs(cid, output, single, options).statistics for cid, _ in cases]
        jsons = [p for p in jsons if p.exists()]
        if jsons:
            write_statistics_csv(jsons, output / STATISTICS_CSV)
    return results


__all__ = ["list_inputs", "output_path", "parse_shard", "predict_path", "shard_cases"]
