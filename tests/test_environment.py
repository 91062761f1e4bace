"""environment.yml (conda) must list the same runtime dependencies as pyproject.toml."""

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _name(spec: str) -> str:
    return re.split(r"[<>=!~ \[]", spec.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _pyproject_deps() -> dict[str, str]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        tomllib = pytest.importorskip("tomli")
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return {_name(s): s.replace(" ", "") for s in data["project"]["dependencies"]}


def _environment_deps() -> dict[str, str]:
    deps = {}
    for line in (ROOT / "environment.yml").read_text().splitlines():
        m = re.match(r"^\s+-\s+([A-Za-z0-9_.\-]+)(.*)$", line)
        if not m or m.group(1) in ("python", "pip", "conda-forge"):
            continue
        deps[_name(m.group(1))] = (m.group(1) + m.group(2)).replace(" ", "")
    return deps


def test_environment_yml_matches_pyproject():
    py, env = _pyproject_deps(), _environment_deps()
    assert set(py) == set(env), f"only in pyproject: {set(py) - set(env)}; only in environment.yml: {set(env) - set(py)}"
    for name in py:
        assert py[name].lower() == env[name].lower(), f"{name}: pyproject {py[name]!r} vs environment.yml {env[name]!r}"
