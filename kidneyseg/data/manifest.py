"""The data manifest: one CSV row per case of a KiTS19-layout folder.

A KiTS19-layout folder holds ``case_XXXXX/imaging.nii.gz`` (CT, optional),
``case_XXXXX/segmentation.nii.gz`` (labels, optional) and an optional ``kits.json`` (the
clinical records). :func:`build_manifest` scans it and writes one row per case with the
columns of :data:`COLUMNS`:

==================  ===========================================================================
column              meaning
==================  ===========================================================================
case_id             folder name, ``case_00000``
image, label        file paths relative to the manifest's folder (empty when absent)
has_image/has_label whether the file exists
shape_z/_y/_x       array shape in the canonical (z, y, x) layout, voxels (from the header)
spacing_z/_y/_x     voxel size in mm, (z, y, x) (from the header)
kidney_ml           KiTS19's "kidney" region: voxels of label 1 **or** 2 (kidney + tumor), ml
tumor_ml            voxels of label 2, ml
tumor_size_cm       ``radiographic_size`` from ``kits.json`` (largest tumor diameter on CT), cm
split               ``train`` or ``val`` (seeded, stratified by tumor size, see :func:`assign_split`)
excluded            ``True`` for cases whose in-plane shape differs from the dataset's mode
exclude_reason      why (empty when not excluded)
==================  ===========================================================================

``kidney_ml`` follows the KiTS19 evaluation, where "kidney" means kidney *and* tumor
(``label > 0``); the kidney parenchyma alone is ``kidney_ml - tumor_ml``.

Header facts take milliseconds per case; the volumes need every voxel decompressed, so they
are computed in parallel worker processes with a progress bar (``headers_only=True`` skips
them and leaves NaN).

>>> path = build_manifest("data", "data_manifest.csv")            # doctest: +SKIP
>>> df = read_manifest(path)                                        # doctest: +SKIP
>>> image, label = case_paths(df.iloc[0], path)                     # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
import re
import zlib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..errors import KidneysegError, atomic_path, fail, read_json
from ..io import read_header
from .split import assign_split, mark_exclusions, n_validation

#: The manifest's columns, in order (the shared contract).
COLUMNS = (
    "case_id", "image", "label", "has_image", "has_label", "shape_z", "shape_y", "shape_x",
    "spacing_z", "spacing_y", "spacing_x", "kidney_ml", "tumor_ml", "tumor_size_cm", "split",
    "excluded", "exclude_reason",
)
IMAGE_NAME = "imaging.nii.gz"
LABEL_NAME = "segmentation.nii.gz"
CASE_PATTERN = re.compile(r"^case_\d{5}$")
_BOOL_COLUMNS = ("has_image", "has_label", "excluded")
_INT_COLUMNS = ("shape_z", "shape_y", "shape_x")
_FLOAT_COLUMNS = ("spacing_z", "spacing_y", "spacing_x", "kidney_ml", "tumor_ml", "tumor_size_cm")


# ---------------------------------------------------------------------------------- scanning
def find_cases(data_dir: os.PathLike | str) -> list[Path]:
    """The ``case_XXXXX`` folders of a KiTS19-layout folder, sorted by name.

    Raises:
        KidneysegError: the folder is missing, not a folder, or holds no case folder.
    """
    data_dir = Path(data_dir)
    if not data_dir.exists():
        raise fail(data_dir, "no such folder")
    if not data_dir.is_dir():
        raise fail(data_dir, "not a folder (expected a KiTS19-layout folder of case_XXXXX folders)")
    cases = sorted(p for p in data_dir.iterdir() if p.is_dir() and CASE_PATTERN.match(p.name))
    if not cases:
        raise fail(data_dir, "holds no case_XXXXX folders (expected the KiTS19 layout)")
    return cases


def read_kits_json(path: os.PathLike | str) -> dict[str, float]:
    """``case_id -> radiographic_size`` (cm) from a KiTS19 ``kits.json``; {} if the file is absent."""
    path = Path(path)
    if not path.exists():
        return {}
    records = read_json(path, "kits.json (a JSON list of case records)", list)
    sizes = {}
    for rec in records:
        if isinstance(rec, dict) and "case_id" in rec:
            size = rec.get("radiographic_size")
            sizes[str(rec["case_id"])] = float(size) if isinstance(size, (int, float)) else math.nan
    return sizes


def _header_row(case_dir: Path, base: Path) -> dict:
    image, label = case_dir / IMAGE_NAME, case_dir / LABEL_NAME
    has_image, has_label = image.exists(), label.exists()
    if not (has_image or has_label):
        raise fail(case_dir, f"holds neither {IMAGE_NAME} nor {LABEL_NAME}")
    headers = {}
    for name, path, present in (("image", image, has_image), ("label", label, has_label)):
        if present:
            headers[name] = read_header(path)
    if has_image and has_label:
        hi, hl = headers["image"], headers["label"]
        if hi.shape != hl.shape:
            raise fail(label, f"shape {hl.shape} differs from the image's {hi.shape}")
        if not np.allclose(hi.affine, hl.affine, atol=1e-3):
            raise fail(label, "affine differs from the image's (image and label are not on one grid)")
    h = headers.get("label") or headers["image"]
    return {
        "case_id": case_dir.name,
        "image": os.path.relpath(image, base) if has_image else "",
        "label": os.path.relpath(label, base) if has_label else "",
        "has_image": has_image,
        "has_label": has_label,
        "shape_z": h.shape[0], "shape_y": h.shape[1], "shape_x": h.shape[2],
        "spacing_z": h.spacing[0], "spacing_y": h.spacing[1], "spacing_x": h.spacing[2],
    }


def label_volumes_ml(path: os.PathLike | str) -> tuple[float, float]:
    """(kidney_ml, tumor_ml) of a label file: voxels ``> 0`` and ``== 2`` times the voxel volume.

    Checks every voxel is 0, 1 or 2 (one pass per value, no sort: faster than ``np.unique``
    on the 100+ million voxels of a large KiTS19 case, and no int64 copy as ``np.bincount``).

    Raises:
        KidneysegError: unreadable/corrupt file, non-integer values or values outside {0, 1, 2}.
    """
    path = Path(path)
    header = read_header(path)  # existence, NIfTI, 3D, spacing checks
    try:
        data = np.asanyarray(nib.load(str(path)).dataobj)
    except (OSError, EOFError, zlib.error, ValueError) as exc:
        raise fail(path, f"corrupt or truncated voxel data ({exc})") from None
    if np.issubdtype(data.dtype, np.floating):
        if not np.all(np.isfinite(data)):
            raise fail(path, "label map contains NaN or Inf")
        if not np.array_equal(np.rint(data), data):
            raise fail(path, "label map has non-integer (float) values; expected 0, 1, 2")
    counts = [int(np.count_nonzero(data == v)) for v in (0, 1, 2)]
    if sum(counts) != data.size:
        bad = np.unique(data[(data != 0) & (data != 1) & (data != 2)])[:5]
        raise fail(path, f"label values must be in {{0, 1, 2}}, found {[v.item() for v in bad]}")
    voxel_ml = float(np.prod(header.spacing)) / 1000.0
    return (counts[1] + counts[2]) * voxel_ml, counts[2] * voxel_ml


def _volumes_task(path: str) -> tuple[str, tuple[float, float]]:
    return path, label_volumes_ml(path)


def compute_volumes(paths: list[Path], workers: int | None = None, progress: bool = True
                    ) -> dict[str, tuple[float, float]]:
    """``str(path) -> (kidney_ml, tumor_ml)`` for label files, in ``workers`` processes.

    Largest files are started first so the workers finish together. ``workers=1`` runs in
    this process. The first bad file raises its :class:`KidneysegError` (remaining work is
    cancelled).
    """
    workers = (os.cpu_count() or 1) if workers is None else int(workers)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers!r}")
    order = sorted((str(p) for p in paths), key=lambda p: -os.path.getsize(p))
    bar = tqdm(total=len(order), desc="label volumes", unit="case", disable=not progress)
    out = {}
    try:
        if workers == 1 or len(order) <= 1:
            for p in order:
                out[p] = label_volumes_ml(p)
                bar.update()
        else:
            with ProcessPoolExecutor(max_workers=min(workers, len(order))) as pool:
                try:
                    for p, vols in pool.map(_volumes_task, order, chunksize=1):
                        out[p] = vols
                        bar.update()
                except BaseException:
                    pool.shutdown(wait=False, cancel_futures=True)
                    raise
    finally:
        bar.close()
    return out


# ---------------------------------------------------------------------------------- building
def scan_headers(data_dir: os.PathLike | str, base: os.PathLike | str | None = None) -> pd.DataFrame:
    """Header-only manifest rows (volumes NaN, no split yet); paths relative to ``base``."""
    data_dir = Path(data_dir)
    cases = find_cases(data_dir)
    base = Path(base).absolute() if base is not None else data_dir.absolute()
    rows = [_header_row(c.absolute(), base) for c in cases]
    df = pd.DataFrame(rows)
    sizes = read_kits_json(data_dir / "kits.json")
    df["kidney_ml"] = math.nan
    df["tumor_ml"] = math.nan
    df["tumor_size_cm"] = [sizes.get(c, math.nan) for c in df["case_id"]]
    return df


def make_manifest(data_dir: os.PathLike | str, base: os.PathLike | str | None = None, *,
                  headers_only: bool = False, workers: int | None = None, seed: int = 0,
                  progress: bool = True, n_val: int | None = None) -> pd.DataFrame:
    """The manifest of ``data_dir`` as a DataFrame (not written), paths relative to ``base``.

    Args:
        data_dir: KiTS19-layout folder.
        base: folder the ``image``/``label`` paths are made relative to (default ``data_dir``).
        headers_only: skip the voxel pass; ``kidney_ml``/``tumor_ml`` stay NaN.
        workers: processes for the voxel pass (default: CPU count).
        seed: seed of the train/val split.
        progress: show a tqdm bar for the voxel pass.
        n_val: validation cases (default ``round(n * 20 / 210)``, the thesis's 190/20).
    """
    data_dir = Path(data_dir).absolute()
    base = Path(base).absolute() if base is not None else data_dir
    df = scan_headers(data_dir, base)
    if not headers_only:
        labels = [data_dir / c / LABEL_NAME for c, has in zip(df["case_id"], df["has_label"]) if has]
        vols = compute_volumes(labels, workers=workers, progress=progress)
        for i, (c, has) in enumerate(zip(df["case_id"], df["has_label"])):
            if has:
                k, t = vols[str(data_dir / c / LABEL_NAME)]
                df.loc[df.index[i], ["kidney_ml", "tumor_ml"]] = [k, t]
    df = mark_exclusions(df)
    df["split"] = assign_split(df, seed, n_val)
    return df[list(COLUMNS)]


def write_manifest(df: pd.DataFrame, path: os.PathLike | str) -> Path:
    """Write a manifest DataFrame as CSV atomically (validated first)."""
    path = Path(path)
    df = validate_manifest(df.copy(), path)
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, float_format="%.10g")
    return path


def build_manifest(data_dir: os.PathLike | str, out_path: os.PathLike | str, *,
                   headers_only: bool = False, workers: int | None = None, seed: int = 0,
                   progress: bool = True, n_val: int | None = None) -> Path:
    """Scan ``data_dir`` and write the manifest CSV to ``out_path`` (atomically).

    Paths in the CSV are relative to ``out_path``'s folder. See :func:`make_manifest` for the
    arguments. Nothing is written when any case fails.

    Returns:
        ``out_path``.
    """
    out_path = Path(out_path).absolute()
    df = make_manifest(data_dir, out_path.parent, headers_only=headers_only, workers=workers,
                       seed=seed, progress=progress, n_val=n_val)
    return write_manifest(df, out_path)


# ----------------------------------------------------------------------------------- reading
def _as_bool(path, name: str, values: pd.Series) -> pd.Series:
    mapping = {"true": True, "false": False, "1": True, "0": False}
    out = []
    for v in values:
        if isinstance(v, (bool, np.bool_)):
            out.append(bool(v))
            continue
        key = str(v).strip().lower()
        if key not in mapping:
            raise fail(path, f"column {name!r} must hold true/false, found {v!r}")
        out.append(mapping[key])
    return pd.Series(out, index=values.index, dtype=bool)


def validate_manifest(df: pd.DataFrame, path: os.PathLike | str | None = None) -> pd.DataFrame:
    """Check columns, types and values of a manifest DataFrame; return it with clean dtypes."""
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise fail(path, f"manifest lacks columns {missing}; expected {list(COLUMNS)}")
    df = df[list(COLUMNS)].copy()
    if df.empty:
        raise fail(path, "manifest has no rows")
    dup = df["case_id"][df["case_id"].duplicated()].tolist()
    if dup:
        raise fail(path, f"duplicate case ids {dup[:5]}")
    for c in _BOOL_COLUMNS:
        df[c] = _as_bool(path, c, df[c])
    for c in _INT_COLUMNS + _FLOAT_COLUMNS:
        try:
            df[c] = pd.to_numeric(df[c])
        except (ValueError, TypeError):
            raise fail(path, f"column {c!r} must be numeric") from None
    for c in _INT_COLUMNS:
        if df[c].isna().any() or (df[c] < 1).any():
            raise fail(path, f"column {c!r} must hold positive integers")
        df[c] = df[c].astype(int)
    for c in ("spacing_z", "spacing_y", "spacing_x"):
        if df[c].isna().any() or (df[c] <= 0).any():
            raise fail(path, f"column {c!r} must hold positive spacings (mm)")
    bad_split = sorted(set(df["split"].astype(str)) - {"train", "val"})
    if bad_split:
        raise fail(path, f"column 'split' must be train or val, found {bad_split}")
    for c in ("image", "label", "exclude_reason"):
        df[c] = df[c].fillna("").astype(str)
    df["case_id"] = df["case_id"].astype(str)
    return df.reset_index(drop=True)


def read_manifest(path: os.PathLike | str) -> pd.DataFrame:
    """Read and validate a manifest CSV.

    Raises:
        KidneysegError: missing file, not a CSV, missing columns, bad values, duplicate case ids.
    """
    path = Path(path)
    if not path.is_file():
        raise fail(path, "no such manifest file")
    try:
        df = pd.read_csv(path, dtype={"case_id": str, "image": str, "label": str,
                                      "split": str, "exclude_reason": str}, keep_default_na=False,
                         na_values={c: ["", "nan", "NaN"] for c in _FLOAT_COLUMNS})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise fail(path, f"not a readable CSV manifest ({str(exc).splitlines()[0]})") from None
    return validate_manifest(df, path)


def case_paths(row, manifest_path: os.PathLike | str) -> tuple[Path | None, Path | None]:
    """Absolute-ish ``(image_path | None, label_path | None)`` of a manifest row.

    Paths are resolved against the manifest file's folder; ``None`` where the file is absent.
    """
    base = Path(manifest_path).parent
    image = base / row["image"] if bool(row["has_image"]) and row["image"] else None
    label = base / row["label"] if bool(row["has_label"]) and row["label"] else None
    return image, label


def spread_by_size(df: pd.DataFrame, n: int | None) -> pd.DataFrame:
    """At most ``n`` rows of ``df`` spread over the case sizes, always including the largest.

    The rows are ranked by voxel count (``shape_z * shape_y * shape_x``, ties by ``case_id``) and
    ``n`` ranks evenly spaced from the largest to the smallest are kept (``n = 3``: the largest, the
    median and the smallest case); the result keeps ``df``'s order. ``n`` of ``None`` or 0, or at
    least ``len(df)``, returns ``df`` unchanged. Used to cap the work of a rehearsal (predict 3
    validation cases, the largest among them) without naming cases.

    >>> df = pd.DataFrame({"case_id": list("abcde"), "shape_z": [5, 50, 20, 10, 30], "shape_y": 1, "shape_x": 1})
    >>> spread_by_size(df, 3).case_id.tolist()
    ['a', 'b', 'c']
    """
    if n is None or int(n) == 0 or int(n) >= len(df):
        return df
    if int(n) < 0:
        raise ValueError(f"n must be >= 0 (0: all cases), got {n!r}")
    n = int(n)
    vox = df["shape_z"].astype(np.int64) * df["shape_y"].astype(np.int64) * df["shape_x"].astype(np.int64)
    ranked = df.assign(_vox=vox).sort_values(["_vox", "case_id"], ascending=[False, True]).index.tolist()
    picks = {0} if n == 1 else {int(round(i * (len(ranked) - 1) / (n - 1))) for i in range(n)}
    keep = {ranked[i] for i in picks}
    return df[df.index.isin(keep)]


def select_cases(df: pd.DataFrame, split: str | None = None, include_excluded: bool = False) -> pd.DataFrame:
    """Rows of one split (``"train"``, ``"val"`` or ``None`` for all), excluded cases dropped by default."""
    if split not in (None, "train", "val"):
        raise ValueError(f"split must be 'train', 'val' or None, got {split!r}")
    keep = pd.Series(True, index=df.index)
    if not include_excluded:
        keep &= ~df["excluded"].astype(bool)
    if split is not None:
        keep &= df["split"] == split
    return df[keep]


__all__ = [
    "COLUMNS", "KidneysegError", "assign_split", "build_manifest", "case_paths", "compute_volumes",
    "find_cases", "label_volumes_ml", "make_manifest", "mark_exclusions", "n_validation",
    "read_kits_json", "read_manifest", "scan_headers", "select_cases", "spread_by_size", "validate_manifest",
    "write_manifest",
]
