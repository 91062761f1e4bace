"""Writing phantom cases to disk: parallel, resumable, atomic, with a progress bar.

``write_phantoms(out, n)`` writes synthetic cases, ``write_phantoms(out, 0, from_labels=DIR)``
paints every label map of a KiTS19-layout folder at its native size. Each case is one task:

* its seed is ``(seed, i)`` for synthetic case ``i`` and ``(seed, crc32(case name))`` for a
  painted case, so a case never depends on the number of cases, their order, or the workers;
* its files are written to temporary names and renamed when complete (``errors.atomic_path``),
  the segmentation first, the image second, then ``case_XXXXX/.phantom.json`` records what
  was made; a case whose record matches the request (seed, options or source file size and
  time, generator version) is skipped, so a killed run resumes where it stopped;
* cases run in ``workers`` processes, largest first, under a tqdm bar.
"""

from __future__ import annotations

import json
import math
import os
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ...errors import ensure_output_dir, fail, write_text_atomic
from ...io import affine_from_spacing
from .generate import painted_scene, synthetic_scene
from .options import PhantomOptions
from .stream import LabelFile, copy_atomic, write_nifti, write_painted

#: Bump when the generator's output changes, so that older cases are made again on resume.
GENERATOR_VERSION = 2
MARKER = ".phantom.json"
IMAGE, LABEL = "imaging.nii.gz", "segmentation.nii.gz"


def _done(case_dir: Path, request: dict) -> dict | None:
    """The marker of a finished case made for ``request``, or ``None``."""
    marker = case_dir / MARKER
    if not ((case_dir / IMAGE).exists() and (case_dir / LABEL).exists() and marker.exists()):
        return None
    try:
        record = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if record.get("request") == request else None


def _source_stamp(path: Path) -> dict:
    st = path.stat()
    return {"path": str(path.resolve()), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


def _clear_partial(case_dir: Path) -> None:
    """Remove temporary files a killed run left in ``case_dir`` (``errors.atomic_path`` names)."""
    if case_dir.is_dir():
        for p in case_dir.glob(".*.part*"):
            p.unlink(missing_ok=True)


def _seconds(t0: float, c0: float) -> dict:
    """Wall and CPU seconds of this case so far (recorded in its marker, for the measured tables)."""
    return {"wall": round(time.perf_counter() - t0, 2), "cpu": round(time.process_time() - c0, 2)}


def synthetic_task(args) -> tuple[str, float | None, bool]:
    """Write synthetic case ``i`` (``args = (out_dir, i, seed, options dict)``); returns (case, diameter, made)."""
    out_dir, i, seed, opts = args
    case = f"case_{i:05d}"
    case_dir = Path(out_dir) / case
    request = {"version": GENERATOR_VERSION, "seed": [seed, i], "options": opts}
    if (rec := _done(case_dir, request)) is not None:
        return case, rec.get("tumor_size_cm"), False
    t0, c0 = time.perf_counter(), time.process_time()
    label, scene, diam = synthetic_scene((seed, i), PhantomOptions.from_json(opts))
    affine = affine_from_spacing(scene.spacing)
    ensure_output_dir(case_dir)
    _clear_partial(case_dir)
    write_nifti(case_dir / LABEL, np.asfortranarray(label), affine)
    write_painted(case_dir / IMAGE, scene.render, scene.shape, affine)
    size = round(diam, 2) if diam > 0 else None
    write_text_atomic(case_dir / MARKER, json.dumps({"request": request, "tumor_size_cm": size,
                                                     "seconds": _seconds(t0, c0)}))
    return case, size, True


def case_seed(seed: int, case_name: str) -> tuple[int, int]:
    """The seed of a painted case: the run's seed and a checksum of the case's folder name."""
    return int(seed), zlib.crc32(case_name.encode())


def painted_task(args) -> tuple[str, float | None, bool]:
    """Paint one label map (``args = (out_dir, source case dir, seed)``); returns (case, None, made)."""
    out_dir, src_dir, seed = args
    src_dir = Path(src_dir)
    case = src_dir.name
    case_dir = Path(out_dir) / case
    src = src_dir / LABEL
    request = {"version": GENERATOR_VERSION, "seed": list(case_seed(seed, case)), "source": _source_stamp(src)}
    if _done(case_dir, request) is not None:
        return case, None, False
    t0, c0 = time.perf_counter(), time.process_time()
    lab = LabelFile(src)
    scene = painted_scene(lab.array, lab.spacing, case_seed(seed, case))
    ensure_output_dir(case_dir)
    _clear_partial(case_dir)
    copy_atomic(src, case_dir / LABEL)
    write_painted(case_dir / IMAGE, scene.render, scene.shape, lab.affine, lab.header, lab.ornt)
    write_text_atomic(case_dir / MARKER, json.dumps({"request": request, "seconds": _seconds(t0, c0)}))
    return case, None, True


def _run(fn, tasks, workers: int, progress: bool, desc: str) -> list:
    results = []
    with tqdm(total=len(tasks), desc=desc, unit="case", disable=not progress) as bar:
        if workers == 1 or len(tasks) <= 1:
            for t in tasks:
                results.append(fn(t))
                bar.update()
        else:
            with ProcessPoolExecutor(max_workers=min(workers, len(tasks))) as pool:
                try:
                    for r in pool.map(fn, tasks, chunksize=1):
                        results.append(r)
                        bar.update()
                except BaseException:
                    pool.shutdown(wait=False, cancel_futures=True)
                    raise
    return results


def write_phantoms(out_dir: os.PathLike | str, n_cases: int = 8, seed: int = 0,
                   from_labels: os.PathLike | str | None = None, *, workers: int = 1,
                   progress: bool = True, n_val: int | None = None, dataset: str | None = None, **opts) -> Path:
    """Write phantom cases in the KiTS layout plus ``OUT_DIR/kits.json`` (KiTS23: ``kits23.json``) and
    ``OUT_DIR/manifest.csv``.

    Args:
        out_dir: output folder (created); ``case_XXXXX/imaging.nii.gz`` + ``segmentation.nii.gz``.
        n_cases: number of synthetic cases; with ``from_labels`` the first ``n_cases`` label
            maps (0 = all).
        seed: the run's seed (see the module docstring for each case's seed).
        from_labels: a KiTS19-layout folder whose label maps are painted at their native size
            (the label file is copied; the image gets its shape, affine and header).
        workers: processes (1 = in this process). Results do not depend on it.
        progress: show a progress bar.
        n_val: validation cases in the manifest (default: the thesis's 20/210 rule).
        dataset: ``"kits19"`` or ``"kits23"`` (cysts, label 3). Default: kits19 for synthetic cases;
            for ``from_labels`` the source's (its metadata file, else its label values).
        **opts: :class:`PhantomOptions` fields for synthetic cases (e.g. ``size=160``).

    Returns:
        The manifest path. ``kits.json`` gives each case's largest tumor diameter
        (``radiographic_size``, cm; the source records for ``from_labels``).
    """
    from ..datasets import DATASETS, dataset_for_labels, detect_dataset, get_dataset
    from ..manifest import build_manifest, find_cases, read_kits_json

    if int(n_cases) < 0 or (from_labels is None and int(n_cases) < 1):
        raise ValueError(f"n_cases must be >= 1, got {n_cases!r}")
    if int(workers) < 1:
        raise ValueError(f"workers must be >= 1, got {workers!r}")
    if from_labels is None:
        popts = PhantomOptions.from_kwargs(**opts, dataset=dataset).as_json()
        data = get_dataset(popts["dataset"])
        out_dir = ensure_output_dir(out_dir)
        tasks = [(str(out_dir), i, int(seed), popts) for i in range(int(n_cases))]
        results = _run(synthetic_task, tasks, int(workers), progress, "phantoms")
        records = [{"case_id": c, "radiographic_size": d} for c, d, _ in results]
    else:
        if opts and any(v is not None for v in opts.values()):
            raise ValueError(f"phantom options {sorted(opts)} apply to synthetic cases, not to from_labels")
        src = Path(from_labels)
        if not src.is_dir():
            raise fail(src, "no such folder")
        cases = [c for c in find_cases(src) if (c / LABEL).exists()]
        if not cases:
            raise fail(src, f"holds no case_XXXXX/{LABEL}")
        if n_cases:
            cases = cases[: int(n_cases)]
        out_dir = ensure_output_dir(out_dir)
        if any(Path(out_dir).resolve() == c.parent.resolve() for c in cases[:1]):
            raise fail(out_dir, "output folder must differ from --from-labels")
        cases.sort(key=lambda c: -(c / LABEL).stat().st_size)  # largest first: workers finish together
        results = _run(painted_task, [(str(out_dir), str(c), int(seed)) for c in cases], int(workers), progress,
                       "painting")
        data = get_dataset(dataset) if dataset is not None else detect_dataset(src)
        if data is None:  # no metadata file: the labels tell (a cyst makes it KiTS23)
            top = max(int(LabelFile(c / LABEL).file_array.max()) for c in cases)
            data = dataset_for_labels(range(top + 1)) or get_dataset(None)
        sizes = read_kits_json(src / data.metadata_file)
        records = [{"case_id": c, "radiographic_size": sizes.get(c)} for c in sorted(r[0] for r in results)]
        records = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()} for r in records]
    made = sum(1 for r in results if r[2])
    if progress and made < len(results):
        tqdm.write(f"{len(results) - made} finished case(s) kept (resume); {made} made")
    for other in DATASETS.values():  # a folder re-used for another dataset keeps one metadata file
        if other is not data:
            (Path(out_dir) / other.metadata_file).unlink(missing_ok=True)
    write_text_atomic(Path(out_dir) / data.metadata_file, json.dumps(records, indent=1))
    return build_manifest(out_dir, Path(out_dir) / "manifest.csv", workers=max(1, int(workers)), seed=int(seed),
                          progress=False, n_val=n_val, dataset=data)
