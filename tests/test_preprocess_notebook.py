"""notebooks/02_preprocessing.ipynb runs end to end on phantoms (papermill) and writes its figures."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_notebook_runs_on_phantoms(tmp_path):
    papermill = pytest.importorskip("papermill")
    out = tmp_path / "out"
    papermill.execute_notebook(str(ROOT / "notebooks" / "02_preprocessing.ipynb"), str(tmp_path / "nb.ipynb"),
                               parameters={"output_dir": str(out), "n_phantoms": 3, "workers": 1},
                               progress_bar=False, kernel_name="python3")
    for name in ("fig3_3_foreground_histogram.png", "fig3_4_normalisation.png", "stages.png",
                 "roi_comparison.png", "roi_comparison.csv", "plan.json"):
        assert (out / name).stat().st_size > 0, name
