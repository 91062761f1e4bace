"""kidneyseg.data.stats: Table 4.1 on hand values and on the real KiTS19 labels, the Fig. 4.2 plot."""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from kidneyseg.cli import main  # noqa: E402
from kidneyseg.data import stats  # noqa: E402


def _df(spacing_z, spacing_xy, shapes_z=None):
    n = len(spacing_z)
    return pd.DataFrame({
        "spacing_z": spacing_z, "spacing_y": spacing_xy, "spacing_x": spacing_xy,
        "shape_z": shapes_z or [100] * n, "shape_y": [512] * n, "shape_x": [512] * n,
        "kidney_ml": np.linspace(100, 200, n), "tumor_ml": np.linspace(1, 50, n),
        "split": ["train"] * (n - 1) + ["val"], "excluded": [False] * n,
    })


def test_describe_hand_values():
    d = stats.describe([1.0, 2.0, 3.0, 4.0, np.nan])
    assert d == {"Mean": 2.5, "Median": 2.5, "Max": 4.0, "Min": 1.0, "Q1": 1.75, "Q3": 3.25}


def test_spacing_table_layout():
    t = stats.spacing_table(_df([1.0, 3.0, 5.0], [0.5, 0.7, 0.9]))
    assert list(t.index) == ["Mean", "Median", "Max", "Min", "Q1", "Q3"]
    assert list(t.columns) == ["X-axis (mm)", "Y-axis (mm)", "Z-axis (mm)"]
    assert t.loc["Q1", "Z-axis (mm)"] == 2.0 and t.loc["Q3", "X-axis (mm)"] == pytest.approx(0.8)


def test_size_boxplot_draws_three_boxes():
    ax = stats.plot_size_boxplot(_df([1.0, 3.0, 5.0], [0.5, 0.7, 0.9], shapes_z=[50, 100, 600]))
    assert [t.get_text() for t in ax.get_xticklabels()] == ["x", "y", "z"]
    assert len(ax.lines) >= 3 * 5  # whiskers, caps, medians of three boxes
    import matplotlib.pyplot as plt

    plt.close("all")


def test_filter_cases():
    df = _df([1.0, 3.0, 5.0, 5.0], [0.5, 0.7, 0.9, 0.8])
    assert len(stats.filter_cases(df, spacing_z=(2.0, 5.0))) == 3
    assert len(stats.filter_cases(df, split="val")) == 1
    assert len(stats.filter_cases(df, spacing_xy=(0.6, 0.85), tumor_ml=(0.0, 30.0))) == 1
    with pytest.raises(ValueError, match="split must be"):
        stats.filter_cases(df, split="test")


def test_save_figures(tmp_path):
    paths = stats.save_figures(_df([1.0, 3.0, 5.0], [0.5, 0.7, 0.9]), tmp_path / "figs")
    for name in ("size_boxplot", "spacing_boxplot", "volumes"):
        assert paths[name].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert pd.read_csv(paths["spacing_table"], index_col=0).shape == (6, 3)


# ------------------------------------------------------------------------------- real labels
def test_table_4_1_on_real_labels(kits19_dir, capsys):
    assert main(["stats", str(kits19_dir), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["n_cases"] == 210 and got["quantile_method"] == "linear"
    for axis, col in (("x", "X-axis (mm)"), ("y", "Y-axis (mm)"), ("z", "Z-axis (mm)")):
        for stat, printed in stats.THESIS_TABLE_4_1[col].items():
            value = got["spacing_mm"][axis][stat.lower()]
            if (axis, stat) == ("z", "Mean"):
                assert value == 3.16  # the files; the thesis prints 3.18
                assert printed == 3.18
            else:
                assert value == pytest.approx(printed, abs=0.01), (axis, stat)
    assert got["size_voxels"]["x"]["max"] == 796  # the excluded outlier


def test_stats_text_from_committed_manifest(kits19_dir, capsys):
    from .conftest import ROOT

    assert main(["stats", str(ROOT / "data_manifest.csv")]) == 0
    out = capsys.readouterr().out
    assert "Mean           0.80         0.80         3.16" in out
    assert "Q1             0.72         0.72         1.25" in out


def test_stats_bad_source(tmp_path, capsys):
    assert main(["stats", str(tmp_path / "nothing")]) == 2
    assert "no such manifest file or data folder" in capsys.readouterr().err
