"""The Voila dashboard in a real headless browser (Debian chromium driven by pip's playwright).

Starts ``voila app/viewer.ipynb`` exactly as ``kidneyseg viewer`` does (127.0.0.1, a free port,
the offline template) on a tiny fake run, then checks: the status element reaches
``ready: case_00000``; the 3D canvases really hold the four label colours (pixel counts by hue),
and do not with WebGL switched off (negative control); switching the case updates status and
metrics; on the tall anisotropic case (5 mm x 0.8 mm, kidneys far from the volume's centre) both
kidneys of each scene are drawn whole inside the canvas, plotly keeps the true-shape aspect ratio,
and the slice image is shown undistorted; no request leaves 127.0.0.1; no errors in the console.
A second, one-case KiTS23 run checks that the cysts are drawn: the six label colours (kidney,
tumor, cyst x ground truth, prediction) in the 3D canvases, both cyst colours in the slice
contours, the kits23 protocol's metrics. Screenshots go to ``test-artifacts/``.

Skips when /usr/bin/chromium or playwright is missing, except under ``CI=true`` where it fails.
"""

from __future__ import annotations

import contextlib
import io
import subprocess
import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pandas as pd
import pytest

from kidneyseg.viewer.commands import free_port, voila_command
from kidneyseg.viewer.render import SIDE_BY_SIDE_X, scene_viewport
from kidneyseg.viewer.style import CYST_GT, CYST_PRED, MESH_COLOURS, MESH_HUES, hue_degrees

from .browser.chromium import CHROMIUM, sync_playwright_or_skip
from .browser.fake_run import make_fake_run, wait_for_port

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
READY_TIMEOUT_MS = 150_000
#: A colour counts as present with at least this many pixels in the 3D canvases.
MIN_PIXELS = 150
HUE_TOLERANCE = 14.0
#: The mesh colours of a KiTS19 case (no cyst).
KITS19_KEYS = tuple(k for k in MESH_COLOURS if k[1] != "cyst")




@pytest.fixture(scope="module")
def playwright_api():
    return sync_playwright_or_skip()


def _serve(run, tmp_path_factory):
    """Start voila on ``run`` exactly as ``kidneyseg viewer`` does; yield ``(url, run)``, then stop it."""
    port = free_port(None)
    argv, env = voila_command(run, port)
    log = open(tmp_path_factory.mktemp("voila_log") / "voila.log", "w+")
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    if not wait_for_port(port, proc):
        log.seek(0)
        pytest.fail(f"voila did not start:\n{log.read()[-3000:]}")
    yield f"http://127.0.0.1:{port}/", run
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()


@pytest.fixture(scope="module")
def viewer_url(tmp_path_factory, playwright_api):
    yield from _serve(make_fake_run(tmp_path_factory.mktemp("viewer_run"), n_cases=3, tall=True), tmp_path_factory)


@pytest.fixture(scope="module")
def viewer23_url(tmp_path_factory, playwright_api):
    yield from _serve(make_fake_run(tmp_path_factory.mktemp("viewer_run23"), n_cases=1, dataset="kits23"),
                      tmp_path_factory)


def hue_masks(png: bytes, hues: dict, tolerance: float = HUE_TOLERANCE) -> dict:
    """Boolean images of the vivid pixels near each target hue (degrees) in a PNG; shading changes
    brightness, not hue."""
    from matplotlib.colors import rgb_to_hsv
    from PIL import Image

    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), np.float32) / 255.0
    hsv = rgb_to_hsv(rgb)
    hue, sat, val = hsv[..., 0] * 360.0, hsv[..., 1], hsv[..., 2]
    vivid = (sat > 0.45) & (val > 0.2)
    return {key: vivid & (np.abs((hue - target + 180.0) % 360.0 - 180.0) < tolerance)
            for key, target in hues.items()}


def hue_counts(png: bytes, hues: dict, tolerance: float = HUE_TOLERANCE) -> dict:
    """Vivid pixels per target hue (degrees) in a PNG."""
    return {key: int(np.count_nonzero(m)) for key, m in hue_masks(png, hues, tolerance).items()}


def colour_counts(png: bytes, keys=KITS19_KEYS) -> dict:
    """Pixels per mesh colour (``(source, structure)`` keys of ``MESH_HUES``) in a screenshot."""
    return hue_counts(png, {key: MESH_HUES[key] for key in keys})


def canvas_counts(page, keys=KITS19_KEYS) -> dict:
    """Colour counts summed over the WebGL canvases of the 3D view (legend and titles excluded)."""
    total = {key: 0 for key in keys}
    canvases = page.locator(".kidneyseg-3d canvas")
    for i in range(canvases.count()):
        box = canvases.nth(i).bounding_box()
        if not box or box["width"] < 50 or box["height"] < 50:
            continue
        for key, n in colour_counts(canvases.nth(i).screenshot(), keys).items():
            total[key] += n
    return total


def wait_for_colours(page, timeout_s: float, keys=KITS19_KEYS) -> dict:
    """Poll the canvases until every colour is present or the time is up; return the last counts."""
    deadline = time.monotonic() + timeout_s
    while True:
        counts = canvas_counts(page, keys)
        if min(counts.values()) >= MIN_PIXELS or time.monotonic() > deadline:
            return counts
        page.wait_for_timeout(500)


def kidney_blobs(png: bytes, hue: float, min_pixels: int = 300) -> tuple[int, int]:
    """``(blobs, edge_gap)``: the blobs of at least ``min_pixels`` of one colour in a canvas
    screenshot, and the smallest distance (pixels) from any of their pixels to the border."""
    from scipy import ndimage

    mask = hue_masks(png, {"kidney": hue})["kidney"]
    labels, n = ndimage.label(mask)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    big = np.flatnonzero(sizes[1:] >= min_pixels) + 1
    if not len(big):
        return 0, 0
    rows, cols = np.nonzero(np.isin(labels, big))
    gap = min(rows.min(), cols.min(), mask.shape[0] - 1 - rows.max(), mask.shape[1] - 1 - cols.max())
    return len(big), int(gap)


def scene_layout(page) -> list[dict]:
    """Ranges and aspect ratio of each 3D scene as plotly.js laid them out in the page."""
    return page.evaluate("""() => {
        const gd = document.querySelector('.kidneyseg-3d .js-plotly-plot');
        return Object.keys(gd._fullLayout).filter(k => /^scene\\d*$/.test(k)).map(k => {
            const s = gd._fullLayout[k];
            return {ranges: ['xaxis', 'yaxis', 'zaxis'].map(a => s[a].range), aspect: s.aspectratio};
        });
    }""")


def wait_ready(page, case_id: str) -> None:
    page.wait_for_selector(f".kidneyseg-status:has-text('ready: {case_id}')", timeout=READY_TIMEOUT_MS)


def open_page(browser, url):
    page = browser.new_page(viewport={"width": 1250, "height": 2000})
    log = {"requests": [], "errors": []}
    page.on("request", lambda r: log["requests"].append(r.url))
    page.on("websocket", lambda ws: log["requests"].append(ws.url))
    page.on("console", lambda m: log["errors"].append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: log["errors"].append(f"pageerror: {e}"))
    page.goto(url, wait_until="domcontentloaded", timeout=READY_TIMEOUT_MS)
    return page, log


@contextlib.contextmanager
def dashboard_page(pw, url: str, *chromium_args: str):
    """Headless chromium on the dashboard: yields ``(page, log)`` (see :func:`open_page`), closes the browser."""
    ARTIFACTS.mkdir(exist_ok=True)
    browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox", *chromium_args])
    try:
        yield open_page(browser, url)
    finally:
        browser.close()


def first_case_shows_its_labels(page, screenshot: str, colours=None) -> dict:
    """Wait for case_00000, check that its 3D view shows every label colour, save a screenshot."""
    wait_ready(page, "case_00000")
    counts = wait_for_colours(page, 30) if colours is None else wait_for_colours(page, 30, colours)
    page.screenshot(path=str(ARTIFACTS / screenshot), full_page=True)
    print(f"3D colour pixels, {screenshot}:", counts)
    assert min(counts.values()) >= MIN_PIXELS, f"label colours missing from the 3D view: {counts}"
    return counts


def test_dashboard_renders_labels_in_3d_offline_and_switches_case(viewer_url, playwright_api):
    url, run = viewer_url
    metrics = pd.read_csv(run / "metrics.csv", dtype={"case_id": str}).set_index("case_id")
    with playwright_api() as pw:
        with dashboard_page(pw, url) as (page, log):
            first_case_shows_its_labels(page, "viewer_case_00000.png")
            assert "case_00000" in page.inner_text(".kidneyseg-metrics")

            # switch case: status, metrics and the 3D view follow
            page.select_option(".kidneyseg-case select", "case_00001")
            wait_ready(page, "case_00001")
            text = page.inner_text(".kidneyseg-metrics")
            assert "case_00001" in text
            assert f"{metrics.loc['case_00001', 'mean_dice']:.3f}" in text
            assert f"{metrics.loc['case_00001', 'kidney_dice']:.3f}" in text
            counts1 = wait_for_colours(page, 30)
            page.screenshot(path=str(ARTIFACTS / "viewer_case_00001.png"), full_page=True)
            print("3D colour pixels, case_00001:", counts1)
            assert min(counts1.values()) >= MIN_PIXELS, f"label colours missing after switching: {counts1}"

            # optional NiiVue CT volume view (ipyniivue, JS bundled): GT blue and prediction green overlays
            page.click(".kidneyseg-niivue-toggle input")
            page.wait_for_selector(".kidneyseg-niivue canvas", timeout=60_000)
            nv = {"blue": 0, "green": 0}
            deadline = time.monotonic() + 30
            while min(nv.values()) < MIN_PIXELS and time.monotonic() < deadline:
                page.wait_for_timeout(1000)
                nv = hue_counts(page.locator(".kidneyseg-niivue canvas").first.screenshot(), {"blue": 240.0, "green": 120.0}, 25.0)
            print("NiiVue overlay pixels:", nv)
            page.screenshot(path=str(ARTIFACTS / "viewer_case_00001_niivue.png"), full_page=True)
            assert min(nv.values()) >= MIN_PIXELS, f"NiiVue overlays missing: {nv}"

            # the tall anisotropic case: both kidneys whole inside each scene, true shape, slices undistorted
            page.click(".kidneyseg-niivue-toggle input")
            page.select_option(".kidneyseg-case select", "case_00003")
            wait_ready(page, "case_00003")
            check_tall_case(page)

            hosts = {urlparse(u).hostname for u in log["requests"] if urlparse(u).scheme in ("http", "https", "ws", "wss")}
            assert hosts <= {"127.0.0.1"}, f"requests left localhost: {sorted(hosts)}"
            assert any(u.startswith("ws://127.0.0.1") for u in log["requests"]), "kernel websocket not seen"
            assert log["requests"], "no requests recorded (listener broken?)"
            assert not log["errors"], f"console errors: {log['errors'][:5]}"
            page.close()

        # Negative control: the same page without WebGL must fail the colour check.
        with dashboard_page(pw, url, "--disable-webgl", "--disable-3d-apis") as (page, _):
            wait_ready(page, "case_00000")
            page.wait_for_timeout(4000)
            blind_counts = canvas_counts(page)
            print("3D colour pixels without WebGL:", blind_counts)
            assert max(blind_counts.values()) < MIN_PIXELS, f"colour check passed without WebGL: {blind_counts}"


def test_kits23_case_shows_its_cysts(viewer23_url, playwright_api):
    """A KiTS23 run: cyst surfaces (ground truth teal, prediction rose) in the 3D view beside the
    four KiTS19 colours, both cyst colours in the slice contours, the kits23 protocol's metrics."""
    from kidneyseg.viewer.slices import SLICE_DPI, SLICE_LEGEND_IN, SLICE_LEGEND_ROW_IN

    url, run = viewer23_url
    metrics = pd.read_csv(run / "metrics.csv", dtype={"case_id": str}).set_index("case_id")
    with playwright_api() as pw:
        with dashboard_page(pw, url) as (page, log):
            first_case_shows_its_labels(page, "viewer_kits23_case_00000.png", tuple(MESH_COLOURS))
            # the slice image, above its legend (which holds the cyst colours too)
            png = page.locator(".kidneyseg-slices").screenshot()
            shown = page.evaluate("() => { const im = document.querySelector('.kidneyseg-slices');"
                                  " return [im.getBoundingClientRect().height, im.naturalHeight]; }")
            legend_px = (SLICE_LEGEND_IN + SLICE_LEGEND_ROW_IN) * SLICE_DPI * shown[0] / shown[1]
            panels = hue_counts(_crop_png(png, int(shown[0] - legend_px)),
                                {"gt": hue_degrees(CYST_GT), "pred": hue_degrees(CYST_PRED)}, 12.0)
            print("slice cyst contour pixels:", panels)
            assert min(panels.values()) >= 60, f"cyst contours missing from the slices: {panels}"
            text = page.inner_text(".kidneyseg-metrics")
            assert "kidney and masses" in text
            for col in ("kidney_and_masses_dice", "masses_dice", "tumor_surface_dice"):
                assert f"{metrics.loc['case_00000', col]:.3f}" in text, col
            hosts = {urlparse(u).hostname for u in log["requests"] if urlparse(u).scheme in ("http", "https", "ws", "wss")}
            assert hosts <= {"127.0.0.1"}, f"requests left localhost: {sorted(hosts)}"
            assert not log["errors"], f"console errors: {log['errors'][:5]}"
            page.close()


def _crop_png(png: bytes, height: int) -> bytes:
    """The top ``height`` pixel rows of a PNG, as PNG."""
    from PIL import Image

    image = Image.open(io.BytesIO(png))
    out = io.BytesIO()
    image.crop((0, 0, image.width, max(height, 1))).save(out, "PNG")
    return out.getvalue()


def check_tall_case(page) -> None:
    hues = {"ground truth": MESH_HUES[("gt", "kidney")], "prediction": MESH_HUES[("pred", "kidney")]}
    seen: dict = {}
    sizes = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        page.wait_for_timeout(1000)
        seen, sizes = {}, []
        canvases = page.locator(".kidneyseg-3d canvas")
        for i in range(canvases.count()):
            box = canvases.nth(i).bounding_box()
            if not box or box["width"] < 50 or box["height"] < 50:
                continue
            sizes.append((box["width"], box["height"]))
            png = canvases.nth(i).screenshot()
            for name, hue in hues.items():
                blobs, gap = kidney_blobs(png, hue)
                if blobs:
                    seen[name] = (blobs, gap)
        if len(seen) == 2 and all(b >= 2 for b, _ in seen.values()):
            break
    page.screenshot(path=str(ARTIFACTS / "viewer_case_00003.png"), full_page=True)
    print("tall case, kidney blobs and gap to the canvas border (px):", seen)
    assert set(seen) == set(hues), f"a scene shows no kidney: {seen}"
    # the camera was fitted to this canvas size (side by side: two scenes)
    expected = scene_viewport(SIDE_BY_SIDE_X[0])
    assert sizes and all(abs(w - expected[0]) <= 2 and abs(h - expected[1]) <= 2 for w, h in sizes), (sizes, expected)
    for name, (blobs, gap) in seen.items():
        assert blobs >= 2, f"{name}: both kidneys should be drawn, found {blobs} kidney blobs"
        assert gap >= 4, f"{name}: a kidney touches the canvas border (cut off), gap {gap} px"
    for scene in scene_layout(page):
        extents = np.array([hi - lo for lo, hi in scene["ranges"]])
        aspect = np.array([scene["aspect"][a] for a in "xyz"])
        np.testing.assert_allclose(aspect / aspect.max(), extents / extents.max(), rtol=1e-6)
    shown = page.evaluate("""() => { const im = document.querySelector('.kidneyseg-slices');
        const r = im.getBoundingClientRect();
        return [r.width, r.height, im.naturalWidth, im.naturalHeight]; }""")
    assert shown[0] / shown[1] == pytest.approx(shown[2] / shown[3], rel=0.01), f"slice image distorted: {shown}"


def test_camera_model_matches_plotly(playwright_api, tmp_path):
    """framing.SceneFrame.project (the model the camera is fitted with) against plotly.js: the
    wireframe of a framed box, drawn by plotly in chromium, covers the pixels the model predicts."""
    import plotly.graph_objects as go
    from PIL import Image

    from kidneyseg.viewer.framing import frame_bounds

    boxes = [((-80, -20, -60), (80, 20, 60), (540, 420)), ((-30, -50, -200), (30, 50, 200), (540, 420)),
             ((-100, -30, -40), (100, 30, 40), (1100, 388))]
    with playwright_api() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        try:
            for lo, hi, (width, height) in boxes:
                frame = frame_bounds(lo, hi, (width, height))
                corners = frame.corners()
                line = []
                for i in range(8):
                    for j in range(i + 1, 8):
                        if np.count_nonzero(corners[i] != corners[j]) == 1:  # an edge of the box
                            line += [corners[i], corners[j], [None] * 3]
                xyz = np.array(line, dtype=object)
                fig = go.Figure(go.Scatter3d(x=xyz[:, 0], y=xyz[:, 1], z=xyz[:, 2], mode="lines",
                                             line=dict(color="black", width=2)))
                fig.update_layout(width=width, height=height, margin=dict(l=0, r=0, t=0, b=0), autosize=False)
                fig.update_scenes(xaxis_visible=False, yaxis_visible=False, zaxis_visible=False, **frame.scene_layout())
                html = tmp_path / "box.html"
                fig.write_html(str(html), include_plotlyjs=True)
                page = browser.new_page(viewport={"width": width + 20, "height": height + 20})
                page.goto(html.as_uri())
                page.wait_for_selector(".js-plotly-plot canvas")
                page.wait_for_timeout(1500)
                grey = np.asarray(Image.open(io.BytesIO(page.locator(".js-plotly-plot").screenshot())).convert("L"))
                rows, cols = np.nonzero(grey < 128)
                screen = frame.project(corners)
                px = (screen[:, 0] + 1) / 2 * width
                py = (1 - screen[:, 1]) / 2 * height
                drawn = (cols.min(), cols.max(), rows.min(), rows.max())
                model = (px.min(), px.max(), py.min(), py.max())
                print("box drawn at", drawn, "model", np.round(model, 1))
                assert np.allclose(drawn, model, atol=3), (drawn, model)
                page.close()
        finally:
            browser.close()
