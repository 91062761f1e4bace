"""Dataset statistics: the thesis's spacing table (Table 4.1), size box plot (Fig. 4.2), volumes.

All functions take a manifest DataFrame (see :mod:`kidneyseg.data.manifest`) of KiTS19 or KiTS23;
:func:`load_cases` makes one from a manifest CSV or, header-only, from a KiTS-layout folder.

Quartiles use linear interpolation between order statistics (numpy's and pandas' default,
Hyndman-Fan type 7). On the 210 KiTS19 label maps this reproduces every cell of Table 4.1
to two decimals except the mean z spacing: the files give 3.16 mm, the thesis prints 3.18 mm.

>>> df = load_cases("data_manifest.csv")                     # doctest: +SKIP
>>> spacing_table(df).round(2)                                # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import fail

#: Row order of Table 4.1.
STAT_ROWS = ("Mean", "Median", "Max", "Min", "Q1", "Q3")
#: Table 4.1's columns: (label, manifest column).
AXES = (("X-axis (mm)", "spacing_x"), ("Y-axis (mm)", "spacing_y"), ("Z-axis (mm)", "spacing_z"))
QUANTILE_METHOD = "linear"
#: Table 4.1 as printed in the thesis (mm). The real files give a mean z spacing of 3.16, not 3.18.
THESIS_TABLE_4_1 = {
    "X-axis (mm)": {"Mean": 0.80, "Median": 0.78, "Max": 1.04, "Min": 0.44, "Q1": 0.72, "Q3": 0.87},
    "Y-axis (mm)": {"Mean": 0.80, "Median": 0.78, "Max": 1.04, "Min": 0.44, "Q1": 0.72, "Q3": 0.87},
    "Z-axis (mm)": {"Mean": 3.18, "Median": 3.00, "Max": 5.00, "Min": 0.50, "Q1": 1.25, "Q3": 5.00},
}


def load_cases(source: os.PathLike | str) -> pd.DataFrame:
    """A manifest DataFrame from a manifest CSV, or header-only from a KiTS19-layout folder."""
    from .manifest import make_manifest, read_manifest

    source = Path(source)
    if source.is_dir():
        return make_manifest(source, headers_only=True, progress=False)
    if not source.exists():
        raise fail(source, "no such manifest file or data folder")
    return read_manifest(source)


def describe(values, method: str = QUANTILE_METHOD) -> dict[str, float]:
    """Mean, median, max, min, Q1, Q3 of 1D values (NaN dropped).

    >>> describe([1, 2, 3, 4])["Q1"]
    1.75
    """
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {k: float("nan") for k in STAT_ROWS}
    q1, med, q3 = np.percentile(v, [25, 50, 75], method=method)
    return {"Mean": float(v.mean()), "Median": float(med), "Max": float(v.max()), "Min": float(v.min()),
            "Q1": float(q1), "Q3": float(q3)}


def spacing_table(df: pd.DataFrame, method: str = QUANTILE_METHOD) -> pd.DataFrame:
    """Table 4.1: rows Mean/Median/Max/Min/Q1/Q3, columns X/Y/Z-axis spacing in mm (unrounded)."""
    return pd.DataFrame({label: describe(df[col], method) for label, col in AXES}, index=list(STAT_ROWS))


def size_table(df: pd.DataFrame) -> pd.DataFrame:
    """Like :func:`spacing_table` for the array sizes (voxels) along x, y, z."""
    cols = (("X-axis (voxels)", "shape_x"), ("Y-axis (voxels)", "shape_y"), ("Z-axis (voxels)", "shape_z"))
    return pd.DataFrame({label: describe(df[col]) for label, col in cols}, index=list(STAT_ROWS))


def stats_json(df: pd.DataFrame, decimals: int = 2) -> dict:
    """The JSON printed by ``kidneyseg stats --json``: Table 4.1 rounded to ``decimals``.

    Keys: ``n_cases``, ``quantile_method``, ``spacing_mm`` (``x``/``y``/``z`` -> statistic ->
    value, statistics named ``mean, median, max, min, q1, q3``), ``size_voxels`` (same for sizes).
    """
    def pack(table: pd.DataFrame) -> dict:
        return {col.split("-")[0].lower(): {row.lower(): round(float(table.loc[row, col]), decimals)
                                            for row in STAT_ROWS} for col in table.columns}

    return {"n_cases": int(len(df)), "quantile_method": QUANTILE_METHOD,
            "spacing_mm": pack(spacing_table(df)), "size_voxels": pack(size_table(df))}


def compare_with_thesis(df: pd.DataFrame) -> pd.DataFrame:
    """Our Table 4.1 beside the thesis's: columns ``<axis> ours``, ``<axis> thesis``, ``<axis> diff``."""
    ours = spacing_table(df).round(2)
    thesis = pd.DataFrame(THESIS_TABLE_4_1).loc[list(STAT_ROWS)]
    out = {}
    for col in ours.columns:
        axis = col.split(" ")[0]
        out[f"{axis} ours"] = ours[col]
        out[f"{axis} thesis"] = thesis[col]
        out[f"{axis} diff"] = (ours[col] - thesis[col]).round(2)
    return pd.DataFrame(out)


# ------------------------------------------------------------------------------------ figures
def _xyz_boxplot(df: pd.DataFrame, prefix: str, ylabel: str, ax, title: str):
    """Box plots of the ``<prefix>_x``, ``_y``, ``_z`` columns; returns the Axes."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 4))
    _boxplot(ax, [df[f"{prefix}_{a}"].to_numpy() for a in "xyz"], ["x", "y", "z"])
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return ax


def plot_size_boxplot(df: pd.DataFrame, ax=None, title: str = "Dimension sizes"):
    """Fig. 4.2: box plots of the array sizes (voxels) along x, y and z; returns the Axes."""
    return _xyz_boxplot(df, "shape", "size (voxels)", ax, title)


def plot_spacing_boxplot(df: pd.DataFrame, ax=None, title: str = "Voxel spacing"):
    """Box plots of the x, y, z spacing (mm); returns the Axes."""
    return _xyz_boxplot(df, "spacing", "spacing (mm)", ax, title)


def plot_volumes(df: pd.DataFrame, ax=None, title: str | None = None):
    """Per-case volumes in ml, sorted by the outermost region's volume (``kidney_ml``).

    KiTS19: kidney region (label > 0) and tumor (label 2); KiTS23 (a ``dataset`` column saying
    so): kidney and masses (label > 0), tumor (label 2) and cyst (label 3) stacked on it.
    Validation cases are marked with a triangle; returns the Axes.
    """
    import matplotlib.pyplot as plt

    kits23 = "dataset" in df.columns and (df["dataset"] == "kits23").any()
    if title is None:
        title = "Kidney, tumor and cyst volume per case" if kits23 else "Kidney and tumor volume per case"
    if ax is None:
        _, ax = plt.subplots(figsize=(9, 3.5))
    d = df.sort_values("kidney_ml", na_position="last").reset_index(drop=True)
    x = np.arange(len(d))
    outer = "kidney + tumor + cyst (ml)" if kits23 else "kidney + tumor (ml)"
    ax.bar(x, d["kidney_ml"].fillna(0), color="tab:blue", label=outer, width=1.0)
    ax.bar(x, d["tumor_ml"].fillna(0), color="tab:red", label="tumor (ml)", width=1.0)
    if kits23:
        ax.bar(x, d["cyst_ml"].fillna(0), bottom=d["tumor_ml"].fillna(0), color="tab:orange", label="cyst (ml)",
               width=1.0)
    val = (d["split"] == "val").to_numpy()
    if val.any():
        ax.scatter(x[val], d.loc[val, "kidney_ml"].fillna(0), marker="v", color="k", s=14, label="val case")
    ax.set_xlabel("case (sorted by kidney volume)")
    ax.set_ylabel("volume (ml)")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    return ax


def summary_figure(df: pd.DataFrame, title: str = ""):
    """One figure: size box plot (Fig. 4.2), spacing box plot, per-case volumes; returns it."""
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(12, 7))
    grid = fig.add_gridspec(2, 2, height_ratios=(1, 1))
    plot_size_boxplot(df, fig.add_subplot(grid[0, 0]))
    plot_spacing_boxplot(df, fig.add_subplot(grid[0, 1]))
    plot_volumes(df, fig.add_subplot(grid[1, :]))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def save_figures(df: pd.DataFrame, output_dir: os.PathLike | str, dpi: int = 100) -> dict[str, Path]:
    """Write ``size_boxplot.png``, ``spacing_boxplot.png``, ``volumes.png`` and ``spacing_table.csv``.

    Each file is written atomically. Returns ``name -> path``.
    """
    import matplotlib.pyplot as plt

    from ..errors import atomic_path, ensure_output_dir

    output_dir = ensure_output_dir(output_dir)
    out = {}
    for name, draw, size in (("size_boxplot", plot_size_boxplot, (5, 4)),
                             ("spacing_boxplot", plot_spacing_boxplot, (5, 4)),
                             ("volumes", plot_volumes, (9, 3.5))):
        fig, ax = plt.subplots(figsize=size)
        draw(df, ax)
        fig.tight_layout()
        path = output_dir / f"{name}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, format="png")
        plt.close(fig)
        out[name] = path
    path = output_dir / "spacing_table.csv"
    with atomic_path(path) as tmp:
        spacing_table(df).round(4).to_csv(tmp)
    out["spacing_table"] = path
    return out


def _boxplot(ax, data, names) -> None:
    """``ax.boxplot`` across matplotlib versions (``labels`` was renamed ``tick_labels`` in 3.9)."""
    import matplotlib

    major, minor = (int(p) for p in matplotlib.__version__.split(".")[:2])
    key = "tick_labels" if (major, minor) >= (3, 9) else "labels"
    ax.boxplot(data, **{key: names})


def filter_cases(df: pd.DataFrame, split: str = "all", spacing_z: tuple[float, float] | None = None,
                 spacing_xy: tuple[float, float] | None = None, tumor_ml: tuple[float, float] | None = None,
                 include_excluded: bool = True) -> pd.DataFrame:
    """Rows matching a split (``all``/``train``/``val``) and closed ranges (None = no limit).

    ``tumor_ml`` ranges keep cases whose volume is unknown (NaN) only when no range is given.
    """
    if split not in ("all", "train", "val"):
        raise ValueError(f"split must be 'all', 'train' or 'val', got {split!r}")
    keep = pd.Series(True, index=df.index)
    if split != "all":
        keep &= df["split"] == split
    if not include_excluded:
        keep &= ~df["excluded"].astype(bool)
    for col, rng in (("spacing_z", spacing_z), ("spacing_x", spacing_xy), ("tumor_ml", tumor_ml)):
        if rng is not None:
            lo, hi = rng
            keep &= df[col].between(lo, hi)
    return df[keep]


__all__ = [
    "AXES", "QUANTILE_METHOD", "STAT_ROWS", "THESIS_TABLE_4_1", "compare_with_thesis", "describe",
    "filter_cases", "load_cases",
    "plot_size_boxplot", "plot_spacing_boxplot", "plot_volumes", "save_figures", "size_table",
    "spacing_table", "stats_json", "summary_figure",
]
