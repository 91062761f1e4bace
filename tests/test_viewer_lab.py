"""`make lab` (kidneyseg.viewer.lab): the JupyterLab command line, the run's manifest, notebook 01's use of it."""

from __future__ import annotations

import json
import sys

import nbformat
import pytest

from kidneyseg.errors import KidneysegError
from kidneyseg.viewer import lab as lab_mod
from kidneyseg.viewer.lab import ENV_MANIFEST, OFFLINE_ARGS, SETTINGS_DIR, lab_command, main, run_manifest

from .browser.fake_run import make_fake_run
from .conftest import ROOT

NOTEBOOK = ROOT / "notebooks" / "01_data_statistics.ipynb"


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory):
    return make_fake_run(tmp_path_factory.mktemp("run"), n_cases=2)


def test_lab_command_is_local_offline_and_points_at_the_manifest(tmp_path):
    argv, env = lab_command(8899, tmp_path / "m.csv", tmp_path, ["--x=1"], environ={ENV_MANIFEST: "old", "A": "b"})
    assert argv[:3] == [sys.executable, "-m", "jupyterlab"]
    for arg in ("--ServerApp.ip=127.0.0.1", "--ServerApp.port=8899", "--ServerApp.port_retries=0",
                "--ServerApp.open_browser=False", f"--ServerApp.root_dir={tmp_path}", "--IdentityProvider.token=",
                "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
                "--LabApp.extension_manager=readonly", f"--LabApp.app_settings_dir={SETTINGS_DIR}"):
        assert arg in argv
    assert argv[-1] == "--x=1" and set(OFFLINE_ARGS) <= set(argv)
    assert env[ENV_MANIFEST] == str(tmp_path / "m.csv") and env["A"] == "b"
    assert ENV_MANIFEST not in lab_command(8899, None, tmp_path, environ={ENV_MANIFEST: "old"})[1]
    overrides = json.loads((SETTINGS_DIR / "overrides.json").read_text())
    assert overrides["@jupyterlab/apputils-extension:notification"] == {"fetchNews": "false", "checkForUpdates": False}
    with pytest.raises(ValueError, match="port must be"):
        lab_command(0, None, tmp_path)
    with pytest.raises(KidneysegError, match="notebook folder not found"):
        lab_command(8899, None, tmp_path / "nowhere")


def test_lab_settings_overrides_name_real_settings():
    schemas = sys.prefix + "/share/jupyter/lab/schemas"
    overrides = json.loads((SETTINGS_DIR / "overrides.json").read_text())
    for plugin, values in overrides.items():
        package, name = plugin.rsplit(":", 1)
        schema_file = f"{schemas}/{package}/{name}.json"
        try:
            schema = json.loads(open(schema_file).read())
        except FileNotFoundError:
            pytest.skip(f"jupyterlab schemas not installed ({schema_file})")
        assert set(values) <= set(schema["properties"]), (plugin, set(values) - set(schema["properties"]))


def test_run_manifest_from_run_folder_csv_and_errors(fake_run, tmp_path):
    manifest = (fake_run.parent / "data" / "manifest.csv").resolve()
    assert run_manifest(fake_run) == manifest
    assert run_manifest(fake_run / "run.json") == manifest
    assert run_manifest(manifest) == manifest
    with pytest.raises(KidneysegError, match="no such run folder"):
        run_manifest(tmp_path / "missing")
    (tmp_path / "run.json").write_text(json.dumps({"predictions_dir": "p"}))
    with pytest.raises(KidneysegError, match="manifest"):
        run_manifest(tmp_path)


def test_lab_main_starts_jupyterlab_with_the_run_manifest(fake_run, monkeypatch, tmp_path, capsys):
    calls = []
    monkeypatch.setattr(lab_mod.subprocess, "call", lambda argv, env: calls.append((argv, env)) or 0)
    assert main([str(fake_run), "--LabApp.foo=1"]) == 0
    argv, env = calls[0]
    assert env[ENV_MANIFEST] == str((fake_run.parent / "data" / "manifest.csv").resolve())
    assert argv[-1] == "--LabApp.foo=1" and "--ServerApp.ip=127.0.0.1" in argv
    # a missing runs/demo is not an error: notebook 01 makes phantoms; another missing source is
    monkeypatch.setattr(lab_mod, "DEFAULT_RUN", tmp_path / "runs" / "demo")
    assert main([]) == 0 and ENV_MANIFEST not in calls[-1][1]
    assert "does not exist yet" in capsys.readouterr().err
    assert main([str(tmp_path / "elsewhere")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no such run folder" in err[0]


def test_notebook_01_reads_the_manifest_that_make_lab_sets(tmp_path, monkeypatch):
    nb = nbformat.read(str(NOTEBOOK), as_version=4)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert f'os.environ.get("{ENV_MANIFEST}"' in code
    for name in ("split", "spacing_z", "spacing_xy", "tumor_ml"):   # the browser test's hooks
        assert name + "=W." in code
    assert 'add_class(f"kidneyseg-filter-{name}")' in code and 'add_class("kidneyseg-filter-output")' in code
    papermill = pytest.importorskip("papermill")
    from kidneyseg.data.phantom import write_phantoms

    manifest = write_phantoms(tmp_path / "data", 3, seed=1, progress=False, size=48, slices=(8, 12))
    monkeypatch.setenv(ENV_MANIFEST, str(manifest))
    out = tmp_path / "executed.ipynb"
    params = {"output_dir": str(tmp_path / "out"), "widgets": False}
    papermill.execute_notebook(str(NOTEBOOK), str(out), parameters=params,
                               cwd=str(tmp_path), kernel_name="python3", progress_bar=False,
                               execution_timeout=600)  # widgets: see tests/test_data_notebook.py
    text = "\n".join(o.get("text", "") for c in nbformat.read(str(out), as_version=4).cells for o in c.get("outputs", []))
    assert f"3 cases from {manifest}" in text
    assert not (tmp_path / "out" / "phantoms").exists()          # used the manifest, made no phantoms
