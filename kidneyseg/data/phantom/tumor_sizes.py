"""The size distribution of the phantoms' tumors, taken from KiTS19's ``kits.json``.

``tumor_sizes.json`` (package data) holds 21 quantiles (0, 5, ..., 100 %) of
``radiographic_size``, the largest tumor's diameter measured on CT (cm), over the 210 KiTS19
training cases; :func:`draw_diameter_cm` samples it by inverse-CDF interpolation, so phantoms
have KiTS19's mix of small (median 4 cm) and very large (up to 16 cm) tumors without the data
set being present. :func:`size_table` rebuilds the table from a ``kits.json`` (a test checks the
shipped one against ``../shared/kits19/kits.json``).

>>> round(float(draw_diameter_cm(np.random.default_rng(0))), 2) > 0
True
"""

from __future__ import annotations

import functools
import json
import math
import os
from importlib import resources

import numpy as np

from ...errors import fail, read_json

PROBS = tuple(i / 20 for i in range(21))


def size_table(kits_json: os.PathLike | str) -> dict:
    """The quantile table (cm) of ``radiographic_size`` in a KiTS19 ``kits.json``."""
    records = read_json(kits_json, "kits.json (a JSON list of case records)", list)
    sizes = [float(r["radiographic_size"]) for r in records
             if isinstance(r, dict) and isinstance(r.get("radiographic_size"), (int, float))
             and math.isfinite(r["radiographic_size"]) and r["radiographic_size"] > 0]
    if len(sizes) < 2:
        raise fail(kits_json, "holds fewer than 2 positive radiographic_size values")
    q = np.quantile(np.asarray(sizes), PROBS)
    return {"source": "KiTS19 kits.json radiographic_size (largest tumor diameter on CT, cm)",
            "n_cases": len(sizes), "probabilities": list(PROBS), "quantiles_cm": [round(float(v), 4) for v in q]}


@functools.lru_cache(maxsize=1)
def shipped_table() -> dict:
    """The table shipped with the package (``tumor_sizes.json``)."""
    text = resources.files(__package__).joinpath("tumor_sizes.json").read_text(encoding="utf-8")
    return json.loads(text)


def draw_diameter_cm(rng: np.random.Generator, table: dict | None = None) -> float:
    """One largest-tumor diameter (cm) from the KiTS19 distribution (linear between quantiles)."""
    t = shipped_table() if table is None else table
    return float(np.interp(rng.uniform(0.0, 1.0), t["probabilities"], t["quantiles_cm"]))
