"""`make lab` in a real headless browser: notebook 01's filter widgets in JupyterLab.

Starts JupyterLab exactly as ``make lab`` does (``kidneyseg.viewer.lab.lab_command``: 127.0.0.1, no
token, offline settings) on a copy of notebook 01, with ``KIDNEYSEG_MANIFEST`` pointing at 8 small
generated phantoms; opens the notebook in Debian's chromium (pip playwright, a fresh profile),
runs all cells from the Run menu, drags the upper handle of the z-spacing slider to the middle,
and checks that the case count, the spacing table (equal to ``stats.spacing_table`` of the cases
the widgets select) and the plot change; no request leaves 127.0.0.1 and the server's news and
update endpoints are empty and its news setting is "Never" (no question to the user). Screenshots go to ``test-artifacts/``.

Skips when /usr/bin/chromium, playwright or jupyterlab is missing, except under ``CI=true``
where it fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import pytest

from kidneyseg.data import stats
from kidneyseg.data.manifest import read_manifest
from kidneyseg.viewer.commands import free_port
from kidneyseg.viewer.lab import ENV_MANIFEST, lab_command

from .browser.chromium import CHROMIUM, CHROMIUM_ARGS, sync_playwright_or_skip
from .browser.fake_run import wait_for_port

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "01_data_statistics.ipynb"
ARTIFACTS = ROOT / "test-artifacts"
RUN_TIMEOUT_MS = 120_000
REDRAW_TIMEOUT_S = 90




@pytest.fixture(scope="module")
def playwright_api():
    return sync_playwright_or_skip("jupyterlab")


@pytest.fixture(scope="module")
def lab(tmp_path_factory, playwright_api):
    """(base URL, manifest) of a JupyterLab serving a copy of notebook 01 (the repo stays untouched)."""
    from kidneyseg.data.phantom import write_phantoms

    root = tmp_path_factory.mktemp("lab")
    manifest = write_phantoms(root / "data", 8, seed=0, progress=False, size=64, slices=(12, 20))
    notebooks = root / "notebooks"
    notebooks.mkdir()
    shutil.copy(NOTEBOOK, notebooks / NOTEBOOK.name)
    # the user's Jupyter settings and state stay out of it; plots must be inline
    base = {k: v for k, v in os.environ.items() if k not in ("MPLBACKEND", "JUPYTER_PATH")}
    for var in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "JUPYTERLAB_SETTINGS_DIR",
                "JUPYTERLAB_WORKSPACES_DIR", "IPYTHONDIR"):
        base[var] = str(root / "jupyter" / var.lower())
    port = free_port(None)
    extra = ["--ServerApp.allow_root=True"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []
    argv, env = lab_command(port, manifest, notebooks, extra, environ=base)
    assert env[ENV_MANIFEST] == str(manifest) and "--ServerApp.ip=127.0.0.1" in argv
    log = open(root / "lab.log", "w+")
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    if not wait_for_port(port, proc, 120):
        log.seek(0)
        pytest.fail(f"jupyterlab did not start:\n{log.read()[-3000:]}")
    yield f"http://127.0.0.1:{port}/", manifest
    proc.terminate()  # shuts its kernels down too
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.seek(0)
    assert "Extension Manager is 'readonly'" in log.read()
    log.close()


def _get_json(url: str):
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def _state(page) -> dict:
    """What the filter output shows (case count text, spacing table cells, plot) and the widgets'
    readouts (``"1.50 – 3.25"`` -> ``[1.5, 3.25]``, two decimals)."""
    state = page.evaluate("""() => {
        const out = document.querySelector('.kidneyseg-filter-output');
        const table = out.querySelector('table');
        const rows = table ? [...table.querySelectorAll('tr')].map(
            r => [...r.querySelectorAll('th, td')].map(c => c.textContent.trim())) : [];
        const img = out.querySelector('img');
        const readout = name => document.querySelector(`.kidneyseg-filter-${name} .widget-readout`).textContent;
        return {text: out.innerText, rows: rows, img: img ? img.src : null,
                split: document.querySelector('.kidneyseg-filter-split select').value,
                spacing_z: readout('spacing_z'), spacing_xy: readout('spacing_xy'), tumor_ml: readout('tumor_ml')};
    }""")
    for name in ("spacing_z", "spacing_xy", "tumor_ml"):
        state[name] = [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?", state[name])]
    return state


def _cases(state: dict) -> int:
    m = re.search(r"(\d+) cases", state["text"])
    assert m, f"no case count in the filter output: {state['text'][:300]!r}"
    return int(m.group(1))


def _shown_table(state: dict) -> dict:
    header, *body = state["rows"]
    return {row[0]: dict(zip(header[1:], (float(v) for v in row[1:]))) for row in body}


def _full_ranges(df) -> dict:
    """The widgets' initial ranges as notebook 01 sets them (every case selected)."""
    return {"spacing_z": (df.spacing_z.min(), df.spacing_z.max()), "spacing_xy": (df.spacing_x.min(), df.spacing_x.max()),
            "tumor_ml": (0.0, df.tumor_ml.max())}


def _expected_tables(df, z_range) -> list[dict]:
    """The spacing table (rounded as shown) of the cases with z spacing in ``z_range`` (read from the
    two-decimal readout) and every other filter at its full range; a case within the readout's
    rounding (0.005 mm) of a bound may fall either way, so both readings are returned."""
    tables = []
    for eps in (0.005, -0.005):
        sub = stats.filter_cases(df, spacing_z=(z_range[0] - eps, z_range[1] + eps))
        table = stats.spacing_table(sub).round(2)
        tables.append({row: {col: float(table.loc[row, col]) for col in table.columns} for row in table.index})
    return tables


def run_all_cells(page) -> None:
    """Run > Run All Cells, once the notebook's kernel is idle; retried while nothing starts (the
    menu entry stays disabled until the notebook panel is the current one)."""
    page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=RUN_TIMEOUT_MS)
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=RUN_TIMEOUT_MS)
    started = "() => [...document.querySelectorAll('.jp-InputArea-prompt')].some(p => /\\[(\\*|\\d+)\\]/.test(p.textContent))"
    for _ in range(4):
        page.locator(".jp-NotebookPanel .jp-Cell").first.click()
        page.click(".lm-MenuBar-itemLabel:text-is('Run')")
        page.locator(".lm-Menu-item:not(.lm-mod-disabled) .lm-Menu-itemLabel:text-is('Run All Cells')").click()
        try:
            page.wait_for_function(started, timeout=15_000)
            return
        except Exception:
            page.keyboard.press("Escape")
    raise AssertionError("Run All Cells did not start the notebook")


def test_notebook_01_filters_redraw_table_and_plot_in_jupyterlab(lab, playwright_api, tmp_path):
    url, manifest = lab
    df = read_manifest(manifest)
    assert _get_json(url + "lab/api/news") == {"news": []}                 # no news feed fetched
    assert _get_json(url + "lab/api/update") == {"notification": None}     # no update check
    notification = _get_json(url + "lab/api/settings/@jupyterlab/apputils-extension:notification")
    defaults = {k: v.get("default") for k, v in notification["schema"]["properties"].items()}
    assert defaults["fetchNews"] == "false" and defaults["checkForUpdates"] is False, defaults  # app/lab/overrides.json
    ARTIFACTS.mkdir(exist_ok=True)
    requests, errors = [], []
    with playwright_api() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=str(CHROMIUM), headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1400, "height": 1000})
        try:
            page = context.new_page()
            page.on("request", lambda r: requests.append(r.url))
            page.on("websocket", lambda ws: requests.append(ws.url))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
            page.goto(url + "lab/tree/" + NOTEBOOK.name, wait_until="domcontentloaded", timeout=RUN_TIMEOUT_MS)
            run_all_cells(page)
            try:
                page.wait_for_selector(".kidneyseg-filter-output table", timeout=RUN_TIMEOUT_MS)
                page.wait_for_selector(".kidneyseg-filter-output img", timeout=RUN_TIMEOUT_MS)
            except Exception:
                page.screenshot(path=str(ARTIFACTS / "lab_notebook01_failed.png"), full_page=True)
                tracebacks = page.locator(".jp-RenderedText[data-mime-type='application/vnd.jupyter.stderr']")
                raise AssertionError("notebook 01 did not draw its filter output; stderr: "
                                     + " | ".join(tracebacks.all_inner_texts())[-2000:]) from None
            before = _state(page)
            page.locator(".kidneyseg-filter-output").scroll_into_view_if_needed()
            page.screenshot(path=str(ARTIFACTS / "lab_notebook01_before.png"))
            full = _full_ranges(df)
            for name, rng in full.items():   # the readouts show every case selected
                assert before[name] == pytest.approx(list(rng), abs=0.006), (name, before[name], rng)
            assert before["split"] == "all" and _cases(before) == len(df), before["text"][:200]
            assert _shown_table(before) in _expected_tables(df, full["spacing_z"])

            # drag the upper handle of the z-spacing slider to the middle of its track
            slider = page.locator(".kidneyseg-filter-spacing_z")
            slider.scroll_into_view_if_needed()
            handle = slider.locator(".noUi-handle-upper").bounding_box()
            track = slider.locator(".noUi-base").bounding_box()
            y = handle["y"] + handle["height"] / 2
            page.mouse.move(handle["x"] + handle["width"] / 2, y)
            page.mouse.down()
            page.mouse.move(track["x"] + 0.5 * track["width"], y, steps=12)
            page.mouse.up()

            deadline = time.monotonic() + REDRAW_TIMEOUT_S
            after = _state(page)
            while time.monotonic() < deadline:
                after = _state(page)
                if after["rows"] and after["img"] and after["img"] != before["img"] and after["rows"] != before["rows"]:
                    break
                page.wait_for_timeout(500)
            page.wait_for_timeout(1000)   # a last redraw may still be on its way: read the settled state
            after = _state(page)
            page.screenshot(path=str(ARTIFACTS / "lab_notebook01_after.png"))
            print("z range", before["spacing_z"], "->", after["spacing_z"], "| cases", _cases(before), "->", _cases(after))
            assert after["spacing_z"][1] < before["spacing_z"][1]
            assert [after[k] for k in ("split", "spacing_xy", "tumor_ml")] == [before[k] for k in ("split", "spacing_xy", "tumor_ml")]
            assert 0 < _cases(after) < _cases(before)
            assert after["img"] and after["img"] != before["img"], "the plot did not change"
            assert _shown_table(after) != _shown_table(before), "the spacing table did not change"
            assert _shown_table(after) in _expected_tables(df, after["spacing_z"]), (_shown_table(after), after)
            assert _shown_table(after)["Max"]["Z-axis (mm)"] <= after["spacing_z"][1] + 0.005
        finally:
            context.close()
    hosts = {urlparse(u).hostname for u in requests if urlparse(u).scheme in ("http", "https", "ws", "wss")}
    assert requests and hosts <= {"127.0.0.1"}, f"requests left localhost: {sorted(hosts)}"
    assert any(u.startswith("ws://127.0.0.1") for u in requests), "kernel websocket not seen"
    assert not errors, f"console errors: {errors[:5]}"
