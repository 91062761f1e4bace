"""The data manifest: one CSV row per case of a KiTS19- or KiTS23-layout folder.

A KiTS-layout folder holds ``case_XXXXX/imaging.nii.gz`` (CT, optional),
``case_XXXXX/segmentation.nii.gz`` (labels, optional) and optionally the clinical records,
``kits.json`` (KiTS19) or ``kits23.json`` (KiTS23). :func:`build_manifest` scans it and writes one
row per case with the columns of :data:`COLUMNS`:

==================  ===========================================================================
column              meaning
==================  ===========================================================================
case_id             folder name, ``case_00000``
image, label        file paths relative to the manifest's folder (empty when absent)
has_image/has_label whether the file exists
shape_z/_y/_x       array shape in the canonical (z, y, x) layout, voxels (from the header)
spacing_z/_y/_x     voxel size in mm, (z, y, x) (from the header)
kidney_ml           the outermost region (``label > 0``): KiTS19's "kidney" (kidney + tumor),
                    KiTS23's kidney-and-masses (kidney + tumor + cyst), ml
tumor_ml            voxels of label 2, ml
tumor_size_cm       ``radiographic_size`` from ``kits.json``/``kits23.json`` (largest tumor
                    diameter on CT), cm
split               ``train`` or ``val`` (seeded, stratified by tumor size, see :func:`assign_split`)
excluded            ``True`` for cases whose in-plane shape differs from the dataset's mode
exclude_reason      why (empty when not excluded)
cyst_ml             voxels of label 3 (KiTS23's cyst), ml; empty for KiTS19
dataset             ``kits19`` or ``kits23`` (:mod:`kidneyseg.data.datasets`), the same on every row
==================  ===========================================================================

``kidney_ml`` follows the official evaluations, where "kidney" means kidney *and* its masses
(``label > 0``); the kidney parenchyma alone is ``kidney_ml - tumor_ml - cyst_ml``.

**Which dataset.** ``kits23.json`` in the folder means KiTS23, ``kits.json`` KiTS19 (both: refused
as ambiguous; ``dataset=`` overrides). Without either, the voxel pass decides: a cyst (label 3) in
any case means KiTS23, else KiTS19 (``headers_only`` cannot look and says KiTS19). A value outside
the dataset's labels is refused, naming the file. Manifests written before the ``cyst_ml`` and
``dataset`` columns existed read as KiTS19 (the tool refused label 3 then).

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
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import KidneysegError, atomic_path, fail, read_json
from ..io import read_header
from .datasets import DATASETS, DEFAULT_DATASET, Dataset, dataset_for_labels, detect_dataset, get_dataset
from .split import assign_split, mark_exclusions, n_validation
from .volumes import ALL_LABEL_VALUES, compute_volumes, label_counts, label_volumes_ml

#: The manifest's columns, in order (the shared contract; ``cyst_ml`` and ``dataset`` came last).
COLUMNS = (
    "case_id", "image", "label", "has_image", "has_label", "shape_z", "shape_y", "shape_x",
    "spacing_z", "spacing_y", "spacing_x", "kidney_ml", "tumor_ml", "tumor_size_cm", "split",
    "excluded", "exclude_reason", "cyst_ml", "dataset",
)
#: Columns a manifest written before them may lack, and the value they then take.
LATER_COLUMNS = {"cyst_ml": math.nan, "dataset": DEFAULT_DATASET}

IMAGE_NAME = "imaging.nii.gz"
LABEL_NAME = "segmentation.nii.gz"
CASE_PATTERN = re.compile(r"^case_\d{5}$")
_BOOL_COLUMNS = ("has_image", "has_label", "excluded")
_INT_COLUMNS = ("shape_z", "shape_y", "shape_x")
_FLOAT_COLUMNS = ("spacing_z", "spacing_y", "spacing_x", "kidney_ml", "tumor_ml", "tumor_size_cm", "cyst_ml")


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
    """``case_id -> radiographic_size`` (cm) from a ``kits.json`` or ``kits23.json``; {} if the file is absent."""
    path = Path(path)
    if not path.exists():
        return {}
    records = read_json(path, f"{path.name} (a JSON list of case records)", list)
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


# ---------------------------------------------------------------------------------- building
def scan_headers(data_dir: os.PathLike | str, base: os.PathLike | str | None = None,
                 dataset: str | Dataset | None = None) -> pd.DataFrame:
    """Header-only manifest rows (volumes NaN, no split yet); paths relative to ``base``.

    ``tumor_size_cm`` comes from the metadata file of ``dataset`` (default: the one the folder
    holds, :func:`~kidneyseg.data.datasets.detect_dataset`).
    """
    data_dir = Path(data_dir)
    cases = find_cases(data_dir)
    base = Path(base).absolute() if base is not None else data_dir.absolute()
    rows = [_header_row(c.absolute(), base) for c in cases]
    df = pd.DataFrame(rows)
    declared = get_dataset(dataset) if dataset is not None else detect_dataset(data_dir)
    sizes = read_kits_json(data_dir / (declared or get_dataset(None)).metadata_file)
    df["kidney_ml"] = math.nan
    df["tumor_ml"] = math.nan
    df["cyst_ml"] = math.nan
    df["tumor_size_cm"] = [sizes.get(c, math.nan) for c in df["case_id"]]
    return df


def make_manifest(data_dir: os.PathLike | str, base: os.PathLike | str | None = None, *,
                  headers_only: bool = False, workers: int | None = None, seed: int = 0,
                  progress: bool = True, n_val: int | None = None,
                  dataset: str | Dataset | None = None) -> pd.DataFrame:
    """The manifest of ``data_dir`` as a DataFrame (not written), paths relative to ``base``.

    Args:
        data_dir: KiTS19- or KiTS23-layout folder.
        base: folder the ``image``/``label`` paths are made relative to (default ``data_dir``).
        headers_only: skip the voxel pass; ``kidney_ml``/``tumor_ml``/``cyst_ml`` stay NaN.
        workers: processes for the voxel pass (default: CPU count).
        seed: seed of the train/val split.
        progress: show a tqdm bar for the voxel pass.
        n_val: validation cases (default ``round(n * 20 / 210)``, the thesis's 190/20).
        dataset: ``"kits19"`` or ``"kits23"``; default: detected (see the module docstring).
    """
    data_dir = Path(data_dir).absolute()
    base = Path(base).absolute() if base is not None else data_dir
    declared = get_dataset(dataset) if dataset is not None else detect_dataset(data_dir)
    df = scan_headers(data_dir, base, declared)
    found: Dataset | None = declared
    if not headers_only:
        labels = [data_dir / c / LABEL_NAME for c, has in zip(df["case_id"], df["has_label"]) if has]
        allowed = declared.label_values if declared is not None else ALL_LABEL_VALUES
        vols = compute_volumes(labels, workers=workers, progress=progress, label_values=allowed)
        present = {v for counts, _ in vols.values() for v, n in counts.items() if n}
        found = declared or dataset_for_labels(present | {0})
        for i, (c, has) in enumerate(zip(df["case_id"], df["has_label"])):
            if has:
                counts, voxel_ml = vols[str(data_dir / c / LABEL_NAME)]
                row = [sum(counts.values()) * voxel_ml, counts.get(2, 0) * voxel_ml,
                       counts.get(3, 0) * voxel_ml if 3 in found.label_values else math.nan]
                df.loc[df.index[i], ["kidney_ml", "tumor_ml", "cyst_ml"]] = row
    df["dataset"] = (found or get_dataset(None)).name
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
                   progress: bool = True, n_val: int | None = None,
                   dataset: str | Dataset | None = None) -> Path:
    """Scan ``data_dir`` and write the manifest CSV to ``out_path`` (atomically).

    Paths in the CSV are relative to ``out_path``'s folder. See :func:`make_manifest` for the
    arguments. Nothing is written when any case fails.

    Returns:
        ``out_path``.
    """
    out_path = Path(out_path).absolute()
    df = make_manifest(data_dir, out_path.parent, headers_only=headers_only, workers=workers,
                       seed=seed, progress=progress, n_val=n_val, dataset=dataset)
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
    """Check columns, types and values of a manifest DataFrame; return it with clean dtypes.

    The :data:`LATER_COLUMNS` may be absent (a manifest from before them) and take their defaults.
    """
    df = df.copy()
    for c, default in LATER_COLUMNS.items():
        if c not in df.columns:
            df[c] = default
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
    names = sorted(set(df["dataset"].astype(str)))
    if len(names) != 1 or names[0] not in DATASETS:
        raise fail(path, f"column 'dataset' must hold one of {list(DATASETS)} on every row, found {names}")
    return df.reset_index(drop=True)


def manifest_dataset(df: pd.DataFrame) -> Dataset:
    """The :class:`~kidneyseg.data.datasets.Dataset` of a validated manifest (its ``dataset`` column)."""
    return get_dataset(str(df["dataset"].iloc[0]) if "dataset" in df.columns else None)


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
                                      "split": str, "exclude_reason": str, "dataset": str}, keep_default_na=False,
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
    "ALL_LABEL_VALUES", "COLUMNS", "KidneysegError", "LATER_COLUMNS", "assign_split", "build_manifest", "case_paths",
    "compute_volumes", "find_cases", "label_counts", "label_volumes_ml", "make_manifest", "manifest_dataset",
    "mark_exclusions", "n_validation",
    "read_kits_json", "read_manifest", "scan_headers", "select_cases", "spread_by_size", "validate_manifest",
    "write_manifest",
]
