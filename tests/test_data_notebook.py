"""notebooks/01_data_statistics.ipynb runs under papermill on phantoms and on the real labels."""

from __future__ import annotations

import json

import nbformat
import pytest

from .conftest import ROOT

NOTEBOOK = ROOT / "notebooks" / "01_data_statistics.ipynb"


def _execute(tmp_path, **params):
    papermill = pytest.importorskip("papermill")
    out_nb = tmp_path / "executed.ipynb"
    papermill.execute_notebook(str(NOTEBOOK), str(out_nb), parameters=params, cwd=str(tmp_path),
                               kernel_name="python3", progress_bar=False)
    return nbformat.read(str(out_nb), as_version=4)


def _text(nb) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", ""))
            parts.extend(str(v) for v in out.get("data", {}).values())
    return "\n".join(parts)


def test_notebook_has_thin_parameters_cell():
    nb = nbformat.read(str(NOTEBOOK), as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    for name in ("data_dir", "manifest", "output_dir"):
        assert f"{name} =" in tagged[0].source
    assert any("3.16" in c.source and "3.18" in c.source for c in nb.cells if c.cell_type == "markdown")
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "def redraw" in code and code.count("\ndef ") <= 1  # logic lives in kidneyseg.data.stats


def test_notebook_on_phantoms(tmp_path):
    out = tmp_path / "out"
    nb = _execute(tmp_path, output_dir=str(out), n_phantoms=6, seed=2, phantom_size=96)
    for name in ("size_boxplot.png", "spacing_boxplot.png", "volumes.png", "spacing_table.csv"):
        assert (out / name).stat().st_size > 0
    assert (out / "phantoms" / "manifest.csv").exists()
    text = _text(nb)
    assert "6 cases from" in text and "Median" in text
    assert sum(1 for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})) >= 2


def test_notebook_on_real_labels(kits19_dir, tmp_path):
    out = tmp_path / "out"
    nb = _execute(tmp_path, data_dir=str(kits19_dir), output_dir=str(out), headers_only=True)
    text = _text(nb)
    assert "210 cases from" in text and "excluded 1" in text and "case_00160" in text
    table = (out / "spacing_table.csv").read_text()
    assert "3.1619" in table
    assert json.dumps(nb.metadata.get("papermill", {}).get("parameters", {})).count("kits19") == 1
