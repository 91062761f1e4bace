"""The package's shape: a step imports only from steps before it (ARCHITECTURE.md), checked on the source.

Every ``import`` of a kidneyseg module (top-level or inside a function, absolute or relative) is
resolved and compared by layer; a module may import its own area and any earlier layer.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "kidneyseg"

#: Area -> layer. Base modules first; then the pipeline's steps in order; the front ends last.
LAYERS = {
    "__init__": 0, "errors": 0, "config": 0,
    "io": 1, "measure": 1, "runtime": 1, "resources": 1,
    "data": 2,
    "preprocess": 3,
    "model": 4,
    "train": 5,
    "infer": 6,
    "evaluate": 7,
    "experiments": 8,
    "pipeline": 9, "pipeline_commands": 9, "profiles": 9,
    "viewer": 10,
    "cli": 11, "__main__": 12,
}


def _area(module: str) -> str:
    parts = module.split(".")
    if len(parts) < 2:
        return "__init__"
    root = PACKAGE / parts[1]
    if not (root.with_suffix(".py").exists() or root.is_dir()):
        return "__init__"  # a name defined in kidneyseg/__init__.py (``from . import __version__``)
    return parts[1]


def _imports(path: Path) -> list[tuple[int, str]]:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    here = list(rel.parts if rel.name != "__init__" else rel.parts[:-1])
    pkg = here if path.name == "__init__.py" else here[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "kidneyseg"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[: len(pkg) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] == "kidneyseg":
                if mod == "kidneyseg":  # `from .. import x`: x is the area
                    out += [(node.lineno, f"kidneyseg.{a.name}") for a in node.names]
                else:
                    out.append((node.lineno, mod))
    return out


def _violations(package: Path | None = None) -> list[str]:
    global PACKAGE
    if package is not None:
        saved, PACKAGE = PACKAGE, package
        try:
            return _violations()
        finally:
            PACKAGE = saved
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        me = ".".join(rel.parts)
        area = _area(me)
        if area not in LAYERS:
            bad.append(f"{me}: area {area!r} has no layer in tests/test_architecture.py")
            continue
        for line, target in _imports(path):
            t_area = _area(target)
            if t_area == area:
                continue
            if t_area not in LAYERS:
                bad.append(f"{me}:{line} imports unknown area {target}")
            elif LAYERS[t_area] > LAYERS[area]:
                bad.append(f"{me}:{line} imports {target} (layer {LAYERS[t_area]} > {LAYERS[area]})")
    return bad


def test_every_step_imports_only_from_steps_before_it():
    assert _violations() == []


def test_the_checker_finds_an_upward_import(tmp_path):
    """The rule can fail: an infer module importing evaluate (even inside a function) is reported."""
    fake = tmp_path / "kidneyseg"
    for sub in ("infer", "evaluate"):
        (fake / sub).mkdir(parents=True)
        (fake / sub / "__init__.py").write_text("")
    (fake / "__init__.py").write_text("")
    (fake / "evaluate" / "metrics.py").write_text("def dice():\n    pass\n")
    (fake / "infer" / "bad.py").write_text("def f():\n    from ..evaluate.metrics import dice\n")
    assert _violations(fake) == ["kidneyseg.infer.bad:2 imports kidneyseg.evaluate.metrics (layer 7 > 6)"]


@pytest.mark.parametrize("module", ["kidneyseg.cli"])
def test_a_missing_command_module_is_an_error_not_a_skip(module, monkeypatch):
    from kidneyseg import cli

    monkeypatch.setattr(cli, "COMMAND_MODULES", cli.COMMAND_MODULES + ("kidneyseg.nothing_here.commands",))
    with pytest.raises(ModuleNotFoundError, match="kidneyseg.nothing_here"):
        cli.build_parser()
