"""Which cases train and which validate: exclusions and the seeded, tumor-size-balanced split.

The thesis (section 4.1) trains on 190 of KiTS19's 210 cases and validates on 20, and excludes the
one 512 x 796 case (case_00160). :func:`mark_exclusions` finds such in-plane outliers in any
manifest; :func:`assign_split` draws the validation cases so that their tumor sizes span the
training distribution.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd

#: KiTS19: 190 training and 20 validation cases out of 210 (thesis section 4.1).
VAL_FRACTION = 20 / 210

__all__ = ["VAL_FRACTION", "assign_split", "mark_exclusions", "n_validation"]


def mark_exclusions(df: pd.DataFrame) -> pd.DataFrame:
    """Exclude cases whose in-plane shape (y, x) differs from the dataset's majority shape.

    The thesis (section 4.1, Fig. 4.2) excludes KiTS19's one 512 x 796 case (case_00160)
    because it disturbs preprocessing. The rule applies only when one in-plane shape holds a
    strict majority of the cases; otherwise nothing is excluded (no clear outlier).
    """
    df = df.copy()
    df["excluded"] = False
    df["exclude_reason"] = ""
    shapes = list(zip(df["shape_y"].astype(int), df["shape_x"].astype(int)))
    if not shapes:
        return df
    (mode, count), = Counter(shapes).most_common(1)
    if count * 2 <= len(shapes):
        return df
    for i, shp in enumerate(shapes):
        if shp != mode:
            df.iloc[i, df.columns.get_loc("excluded")] = True
            df.iloc[i, df.columns.get_loc("exclude_reason")] = (
                f"in-plane shape {shp[0]}x{shp[1]} differs from the dataset's {mode[0]}x{mode[1]} "
                f"({count} of {len(shapes)} cases)")
    return df


def n_validation(n_cases: int) -> int:
    """Validation cases for ``n_cases``: ``round(n * 20 / 210)``, at least 1 when n >= 5 (210 -> 20)."""
    if n_cases < 0:
        raise ValueError(f"n_cases must be >= 0, got {n_cases!r}")
    n_val = int(round(n_cases * VAL_FRACTION))
    return max(n_val, 1) if n_cases >= 5 else n_val


def assign_split(df: pd.DataFrame, seed: int = 0, n_val: int | None = None) -> pd.Series:
    """Seeded train/val split with tumor sizes balanced across it.

    ``n_val = n_validation(len(df))`` (KiTS19: 190/20). The non-excluded cases are sorted by
    tumor size (``tumor_ml``, else ``tumor_size_cm``, else unsorted) and cut into ``n_val``
    consecutive equal-count bins (quantile bins); one case is drawn at random from each bin,
    so the validation set spans the tumor-size distribution like the training set.
    Excluded cases are never drawn for validation and stay ``train`` (consumers drop them
    through the ``excluded`` column).

    ``n_val`` overrides the number of validation cases (e.g. more for small phantom sets).

    Returns:
        A Series of ``"train"``/``"val"`` aligned with ``df``'s index.
    """
    rng = np.random.default_rng(seed)
    split = pd.Series("train", index=df.index, dtype=object)
    if n_val is None:
        n_val = n_validation(len(df))
    elif not 0 <= int(n_val) < max(len(df), 1):
        raise ValueError(f"n_val must be in [0, {len(df)}), got {n_val!r}")
    pool = df[~df["excluded"].astype(bool)] if "excluded" in df else df
    n_val = min(n_val, len(pool))
    if n_val == 0:
        return split
    key = None
    for col in ("tumor_ml", "tumor_size_cm"):
        if col in pool and pool[col].notna().any():
            key = pool[col].fillna(-1.0).to_numpy(float)
            break
    idx = pool.index.to_numpy()
    if key is None:  # nothing to balance on: a plain seeded draw
        key = rng.random(len(idx))
    # Break ties (e.g. many cases without a tumor) at random but reproducibly.
    order = idx[np.lexsort((rng.random(len(idx)), key))]
    bins = np.array_split(order, n_val)
    chosen = [b[rng.integers(len(b))] for b in bins]
    split.loc[chosen] = "val"
    return split
