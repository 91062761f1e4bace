"""kidneyseg.pipeline: order, run-folder records, skip on re-run, stop at the first failing notebook."""

import json

import nbformat
import pytest

from kidneyseg import pipeline
from kidneyseg.errors import KidneysegError


def _notebook(path, body):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("run_dir = ''\nmanifest = ''\noutput_dir = ''\nvalue = 1")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))


@pytest.fixture
def setup(tmp_path, monkeypatch):
    nbdir = tmp_path / "nbs"
    nbdir.mkdir()
    _notebook(nbdir / "a_first.ipynb",
              "import pathlib, json\npathlib.Path(output_dir, 'out.json').write_text(json.dumps({'v': value}))")
    _notebook(nbdir / "b_second.ipynb", "import pathlib\npathlib.Path(output_dir, 'b.txt').write_text('b')")
    _notebook(nbdir / "c_fails.ipynb", "raise RuntimeError('boom in the third step')")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("case_id\n")
    monkeypatch.setattr(pipeline, "prepare_data", lambda out, d, p, prof, m=None: manifest)
    profile = tmp_path / "p.json"
    profile.write_text(json.dumps({"description": "test", "shared": {"value": 7}}))
    return nbdir, profile


def test_runs_in_order_records_and_skips(setup, tmp_path, capfd):
    nbdir, profile = setup
    out = tmp_path / "run"
    res = pipeline.run_pipeline(out, profile=str(profile), notebooks=["a_first", "b_second"],
                                notebook_dir=nbdir, log=lambda s: None)
    assert [r.status for r in res] == ["ran", "ran"]
    # the kernels' own stderr reaches the terminal: no ipykernel warning per notebook
    assert "without encryption" not in capfd.readouterr().err
    assert json.loads((out / "a_first" / "out.json").read_text()) == {"v": 7}
    assert (out / "notebooks" / "a_first.ipynb").exists() and (out / "b_second" / "b.txt").exists()
    for name in ("run.json", "config.json", "version.json"):
        assert (out / name).exists()
    version = json.loads((out / "version.json").read_text())
    assert version["kidneyseg"] and version["git_revision"]
    assert json.loads((out / "config.json").read_text())["profile_settings"]["shared"] == {"value": 7}
    again = pipeline.run_pipeline(out, profile=str(profile), notebooks=["a_first", "b_second"],
                                  notebook_dir=nbdir, log=lambda s: None)
    assert [r.status for r in again] == ["skipped", "skipped"]


def test_stops_at_first_failure_with_name_and_cell_error(setup, tmp_path):
    nbdir, profile = setup
    out = tmp_path / "run"
    with pytest.raises(KidneysegError, match=r"c_fails.ipynb: cell \d+ failed: RuntimeError: boom in the third step"):
        pipeline.run_pipeline(out, profile=str(profile), notebooks=["a_first", "c_fails", "b_second"],
                              notebook_dir=nbdir, log=lambda s: None)
    assert (out / "steps" / "a_first.done").exists()
    assert not (out / "steps" / "c_fails.done").exists()
    assert not (out / "b_second").exists()


def test_profiles_load_and_bad_profile_is_refused(tmp_path):
    for name in pipeline.PROFILES:
        prof = pipeline.load_profile(name)
        assert "description" in prof
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"descripton": "typo"}))
    with pytest.raises(KidneysegError, match="unknown profile keys \\['descripton'\\]"):
        pipeline.load_profile(str(bad))
    with pytest.raises(KidneysegError, match="profile must be one of"):
        pipeline.load_profile("fast")


def test_resources_rows_for_notebooks_and_the_steps_inside_them(setup, tmp_path):
    """resources.json gets one row per notebook (its kernel's memory included in the tree's peak) and the
    rows the package's own steps record inside the kernel, with the notebook as their parent. The kernel
    holds its memory for 3 s: with a short cell the sampler (every 0.2 s, longer when a sample is costly)
    missed the kernel once on the loaded 2-core CI machine (max_processes 1); 3 s gives it many chances."""
    nbdir, profile = setup
    _notebook(nbdir / "d_heavy.ipynb",
              "import numpy as np, pathlib, time\nfrom kidneyseg.resources import record\n"
              "with record('inner step', pathlib.Path(output_dir) / 'x.bin') as rec:\n"
              "    a = np.ones(200 * 2**20, np.uint8)\n"
              "    time.sleep(3.0)\n"
              "    pathlib.Path(output_dir, 'x.bin').write_bytes(a[:1000].tobytes())\n"
              "    rec.details['cases'] = 1")
    out = tmp_path / "run"
    pipeline.run_pipeline(out, profile=str(profile), notebooks=["a_first", "d_heavy"], notebook_dir=nbdir,
                          log=lambda s: None)
    rows = json.loads((out / "resources.json").read_text())
    by = {(r["parent"], r["step"]): r for r in rows}
    assert set(by) == {(None, "a_first"), (None, "d_heavy"), ("d_heavy", "inner step")}
    inner, nb = by[("d_heavy", "inner step")], by[(None, "d_heavy")]
    assert inner["bytes_written"] == 1000 and inner["details"] == {"cases": 1} and inner["target"] == "d_heavy/x.bin"
    assert inner["peak_rss_bytes"] > 200 * 2**20                   # measured inside the kernel
    assert nb["peak_rss_bytes"] > inner["peak_rss_bytes"]          # the pipeline process + the kernel
    assert nb["target"] == "d_heavy" and nb["status"] == "ok" and nb["max_processes"] >= 2


def test_rehearsal_is_the_full_profile_with_only_the_work_capped():
    """Same data settings, plan, network, patch, batch, optimizer and post-processing as `full`; only the
    amounts of work differ (and the device comes from the machine)."""
    full, rehearsal = pipeline.load_profile("full"), pipeline.load_profile("rehearsal")
    work = {"epochs", "iterations_per_epoch", "val_iterations", "seeds", "max_val_cases",
            "single_stage_train_cases", "workers", "threads", "device"}

    def settings(profile):
        flat = {}
        for block, values in profile.items():
            if isinstance(values, dict) and block != "phantoms":
                for k, v in values.items():
                    if k == "overrides":
                        flat.update({(block, "overrides", kk): vv for kk, vv in v.items() if kk not in work})
                    elif k not in work:
                        flat[(block, k)] = v
        return flat

    assert settings(rehearsal) == settings(full)
    assert rehearsal["shared"]["device"] == "auto" and rehearsal["shared"]["max_val_cases"] == 3
    assert rehearsal["03_training"]["patch_size"] == [128, 128, 128]
    for block in ("04_ablation", "05_inference_evaluation"):
        assert rehearsal[block]["overrides"] == {"epochs": 1, "iterations_per_epoch": 2, "val_iterations": 1}
    assert rehearsal["04_ablation"]["seeds"] == [0]
    for block in ("03_training", "04_ablation"):  # one 128^3 training at a time: two need ~15 GiB of RAM
        assert (rehearsal[block]["workers"], rehearsal[block]["threads"]) == (1, 2)
def test_a_profile_setting_no_notebook_declares_is_refused_before_work(setup, tmp_path):
    """A misspelt parameter in a notebook's block (or a shared one nobody reads) is an error, not dropped."""
    nbdir, _ = setup
    _notebook(nbdir / "01_data_statistics.ipynb", "pass")
    out = tmp_path / "run"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"description": "t", "01_data_statistics": {"valeu": 3}}))
    with pytest.raises(KidneysegError,
                       match=r"profile block '01_data_statistics' sets \['valeu'\].*parameters: \[.*'value'"):
        pipeline.run_pipeline(out, profile=str(bad), notebooks=["01_data_statistics"], notebook_dir=nbdir,
                              log=lambda s: None)
    bad.write_text(json.dumps({"description": "t", "shared": {"sed": 1}}))
    with pytest.raises(KidneysegError, match=r"'shared' sets \['sed'\]"):
        pipeline.run_pipeline(out, profile=str(bad), notebooks=["a_first"], notebook_dir=nbdir, log=lambda s: None)
    assert not out.exists()


@pytest.mark.parametrize("profile", pipeline.PROFILES)
def test_every_shipped_profile_sets_only_declared_parameters(profile):
    prof = pipeline.load_profile(profile)
    pipeline.check_profile_parameters(prof, list(pipeline.NOTEBOOKS), pipeline.NOTEBOOK_DIR)


def test_a_subset_of_the_pipeline_accepts_shared_settings_a_later_notebook_declares(setup, tmp_path):
    """Running notebook 01 alone with a profile whose shared block feeds notebook 03 is not refused
    (the profile describes the whole pipeline), while a key no pipeline notebook declares still is."""
    nbdir, _ = setup
    _notebook(nbdir / "01_data_statistics.ipynb", "pass")
    later = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("output_dir = ''\ndevice = 'cpu'")
    params.metadata["tags"] = ["parameters"]
    later.cells = [params]
    later.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(later, str(nbdir / "03_training.ipynb"))
    prof = tmp_path / "p.json"
    prof.write_text(json.dumps({"description": "t", "shared": {"device": "auto"}}))
    res = pipeline.run_pipeline(tmp_path / "run", profile=str(prof), notebooks=["01_data_statistics"],
                                notebook_dir=nbdir, log=lambda s: None)
    assert [r.status for r in res] == ["ran"]
    prof.write_text(json.dumps({"description": "t", "shared": {"devise": "auto"}}))
    with pytest.raises(KidneysegError, match=r"'shared' sets \['devise'\]"):
        pipeline.run_pipeline(tmp_path / "run2", profile=str(prof), notebooks=["01_data_statistics"],
                              notebook_dir=nbdir, log=lambda s: None)
