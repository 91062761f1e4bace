"""benchmarks/demo_holdout.py: the demo's phantom options, and a clear refusal without a trained run."""

from __future__ import annotations

import importlib.util
import json
from importlib import resources
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "demo_holdout.py"


def _bench():
    spec = importlib.util.spec_from_file_location("demo_holdout", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_holdout_paints_with_the_demo_options_but_not_its_seed_or_count():
    demo = json.loads(resources.files("kidneyseg.profiles").joinpath("demo.json").read_text(encoding="utf-8"))
    opts = _bench().demo_phantom_options()
    assert opts == {k: v for k, v in demo["phantoms"].items() if k not in ("cases", "seed", "n_val")}
    assert opts["size"] == demo["phantoms"]["size"]


def test_holdout_refuses_a_folder_without_a_model(tmp_path, capsys):
    assert _bench().main([str(tmp_path)]) == 2
    assert "no trained cascade here" in capsys.readouterr().err


def test_holdout_refuses_fewer_than_two_phantoms(tmp_path, capsys):
    assert _bench().main([str(tmp_path), "--cases", "1"]) == 2
    assert "--cases must be at least 2" in capsys.readouterr().err
