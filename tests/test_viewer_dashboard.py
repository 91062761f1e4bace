"""kidneyseg.viewer.dashboard and render: the widget logic, driven without a browser."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kidneyseg.io import new_volume
from kidneyseg.viewer import dashboard as dash_mod
from kidneyseg.viewer.catalog import CaseData, CaseEntry, open_catalog
from kidneyseg.viewer.dashboard import Dashboard, build_dashboard, resolve_source
from kidneyseg.viewer.render import mask_surface, pool_mask, surfaces_figure
from kidneyseg.viewer.slices import error_rgba, slice_figure_png
from kidneyseg.viewer.style import MESH_COLOURS, window_limits

from .browser.fake_run import make_fake_run


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory):
    return make_fake_run(tmp_path_factory.mktemp("run"), n_cases=2)


def test_dashboard_shows_first_case_and_switches(fake_run):
    dash = Dashboard(open_catalog(fake_run))
    assert "ready: case_00000" in dash.status.value
    assert list(dash.case_picker.options) == ["case_00000", "case_00001"]
    assert "kidneyseg-status" in dash.status._dom_classes
    assert "from the run's metrics CSV" in dash.metrics.value
    fig = dash.view3d.children[0]
    names = {t.name for t in fig.data}
    assert {"ground truth kidney", "ground truth tumor", "prediction kidney", "prediction tumor", "CT bone"} <= names
    assert dash.slices.value[:8] == b"\x89PNG\r\n\x1a\n"
    csv = pd.read_csv(fake_run / "metrics.csv", dtype={"case_id": str}).set_index("case_id")
    dash.case_picker.value = "case_00001"
    assert "ready: case_00001" in dash.status.value
    assert f"{csv.loc['case_00001', 'kidney_dice']:.3f}" in dash.metrics.value
    assert dash.view3d.children[0] is not fig            # a new FigureWidget per case
    before = dash.slices.value
    dash.window.value = "bone"
    assert dash.slices.value != before
    dash.mode.value = "overlay"
    assert len({t.scene for t in dash.view3d.children[0].data}) == 1


def test_dashboard_refuses_unlisted_case_without_touching_files(fake_run):
    dash = Dashboard(open_catalog(fake_run))
    dash.select("../../etc/passwd")
    assert "error:" in dash.status.value and "not listed" in dash.status.value
    assert dash.case.case_id == "case_00000"              # the shown case is unchanged


def test_manifest_only_dashboard_computes_volumes(fake_run):
    dash = Dashboard(open_catalog(fake_run.parent / "data" / "manifest.csv"))
    assert "ready: case_00000" in dash.status.value
    assert "computed by the viewer (kidneyseg evaluate), surface Dice at 2 mm" in dash.metrics.value
    assert {t.name for t in dash.view3d.children[0].data} >= {"ground truth kidney"}
    assert not any(t.name.startswith("prediction") for t in dash.view3d.children[0].data)


def test_build_dashboard_without_a_run_says_so(monkeypatch, tmp_path):
    monkeypatch.delenv(dash_mod.ENV_SOURCE, raising=False)
    monkeypatch.setattr(dash_mod, "DEFAULT_RUN", tmp_path / "runs" / "demo")
    widget, dash = build_dashboard()
    assert dash is None
    text = widget.children[1].value
    assert "no run:" in text and "make demo" in text
    widget, dash = build_dashboard(tmp_path / "nothing")
    assert dash is None and "error:" in widget.children[1].value


def test_source_comes_from_argument_then_environment_then_demo(monkeypatch, tmp_path):
    monkeypatch.setattr(dash_mod, "DEFAULT_RUN", tmp_path / "demo")
    assert resolve_source("x", {}) == type(tmp_path)("x")
    assert resolve_source(None, {dash_mod.ENV_SOURCE: "/r"}) == type(tmp_path)("/r")
    assert resolve_source(None, {}) is None
    (tmp_path / "demo").mkdir()
    assert resolve_source(None, {}) == tmp_path / "demo"


def test_pool_and_surface_geometry():
    m = np.zeros((20, 10, 10), bool)
    m[19, 9, 9] = True
    pooled, f = pool_mask(m, 8)
    assert f == (3, 2, 2) and pooled.shape == (7, 5, 5) and pooled[6, 4, 4]
    box = np.zeros((10, 12, 14), bool)
    box[2:6, 3:9, 4:12] = True
    verts, faces = mask_surface(box, (2.0, 1.0, 0.5), smooth=0)
    # RAS mm = canonical (I, P, L) mm negated; x first: x = -0.5 * col, y = -1 * row, z = -2 * slice
    assert verts[:, 0].min() == pytest.approx(-0.5 * 11.5, abs=0.3) and verts[:, 0].max() == pytest.approx(-0.5 * 3.5, abs=0.3)
    assert verts[:, 2].min() == pytest.approx(-2.0 * 5.5, abs=0.6) and verts[:, 2].max() == pytest.approx(-2.0 * 1.5, abs=0.6)
    assert faces.max() < len(verts)
    assert mask_surface(np.zeros((4, 4, 4), bool), (1, 1, 1)) is None


def test_figure_modes_and_colours():
    lab = np.zeros((16, 16, 16), np.uint8)
    lab[4:12, 4:12, 4:12] = 1
    lab[6:9, 6:9, 6:9] = 2
    from kidneyseg.viewer.render import label_surfaces
    s = label_surfaces(lab, (1, 1, 1))
    surfaces = {("gt", k): v for k, v in s.items()} | {("pred", k): v for k, v in s.items()}
    side = surfaces_figure(surfaces)
    assert {t.scene for t in side.data} == {"scene", "scene2"}
    assert {t.color for t in side.data} == {c for (_, structure), c in MESH_COLOURS.items() if structure != "cyst"}
    assert {t.scene for t in surfaces_figure(surfaces, "overlay").data} == {"scene"}
    with pytest.raises(ValueError, match="mode must be"):
        surfaces_figure(surfaces, "sideways")


def test_slices_without_ct_and_error_map():
    lab = np.zeros((6, 20, 20), np.uint8)
    lab[2:5, 5:15, 5:15] = 1
    vol = new_volume(lab, (3.0, 1.0, 1.0))
    case = CaseData(CaseEntry("c", None, None, None), None, vol, vol.with_array(np.roll(lab, 2, axis=2)))
    png = slice_figure_png(case, (3, 10, 10), (300, 50))
    assert png[:4] == b"\x89PNG"
    rgba = error_rgba(lab[3], np.roll(lab, 2, axis=2)[3])
    assert rgba[10, 5, :3].tolist() == pytest.approx([1.0, 0.9, 0.0])    # missed: false negative
    assert rgba[10, 15, :3].tolist() == pytest.approx([1.0, 0.1, 0.1])   # extra: false positive
    assert rgba[10, 10, 3] == 0.0


def test_window_presets():
    assert window_limits("abdomen") == (-160.0, 240.0)
    assert window_limits((100, 0)) == (-50.0, 50.0)
    with pytest.raises(ValueError, match="window preset must be one of"):
        window_limits("lung")
    with pytest.raises(ValueError, match="width must be > 0"):
        window_limits((0, 40))


def test_niivue_view_is_built_on_request_with_listed_files_only(fake_run):
    dash = Dashboard(open_catalog(fake_run))
    assert dash.niivue_box.children == ()                 # nothing sent to the browser by default
    dash.niivue_toggle.value = True
    nv = dash.niivue_box.children[0]
    entry = dash.catalog.entry("case_00000")
    assert [v.path for v in nv.volumes] == [str(entry.image), str(entry.label), str(entry.prediction)]
    assert [v.colormap for v in nv.volumes] == ["gray", "blue", "green"]
    assert nv.volumes[0].cal_min == -160.0 and nv.volumes[0].cal_max == 240.0     # abdomen window
    assert nv.opts.is_radiological_convention                      # patient right on screen left
    dash.case_picker.value = "case_00001"
    assert dash.niivue_box.children[0].volumes[1].path == str(dash.catalog.entry("case_00001").label)
    dash.niivue_toggle.value = False
    assert dash.niivue_box.children == ()


def test_dashboard_on_a_phantom_run(tmp_path):
    pytest.importorskip("kidneyseg.data.phantom")
    run = make_fake_run(tmp_path, n_cases=1, phantom=True)
    dash = Dashboard(open_catalog(run))
    assert "ready: case_00000" in dash.status.value
    assert {"ground truth tumor", "prediction tumor"} <= {t.name for t in dash.view3d.children[0].data}
    assert dash.case.image.array.min() <= -1000                      # the phantom's CT, air in HU


# ------------------------------------------------------------------------------------ KiTS23
def _hue_pixels(png: bytes, colour: str, tolerance: float = 12.0, rows: slice = slice(None)) -> int:
    """Vivid pixels within ``tolerance`` degrees of a colour's hue in (a band of rows of) a PNG."""
    import io

    from matplotlib.colors import rgb_to_hsv
    from PIL import Image

    from kidneyseg.viewer.style import hue_degrees, hue_distance

    hsv = rgb_to_hsv(np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), np.float32)[rows] / 255.0)
    vivid = (hsv[..., 1] > 0.45) & (hsv[..., 2] > 0.2)
    return int(np.count_nonzero(vivid & (hue_distance(hsv[..., 0] * 360.0, hue_degrees(colour)) < tolerance)))


@pytest.fixture(scope="module")
def fake_run23(tmp_path_factory):
    return make_fake_run(tmp_path_factory.mktemp("run23"), n_cases=2, dataset="kits23")


def test_kits23_dashboard_draws_cysts_and_shows_the_kits23_metrics(fake_run23):
    from kidneyseg.viewer.style import CYST_GT, CYST_PRED

    dash = Dashboard(open_catalog(fake_run23))
    assert "ready: case_00000" in dash.status.value and "kits23 labels" in dash.widget.children[0].value
    traces = {t.name: t for t in dash.view3d.children[0].data if t.name != "CT bone"}
    assert set(traces) == {f"{s} {k}" for s in ("ground truth", "prediction") for k in ("kidney", "tumor", "cyst")}
    assert traces["ground truth cyst"].color == CYST_GT and traces["prediction cyst"].color == CYST_PRED
    assert traces["ground truth cyst"].showlegend and traces["prediction cyst"].showlegend   # the legend names them
    assert traces["ground truth cyst"].scene == "scene" and traces["prediction cyst"].scene == "scene2"
    csv = pd.read_csv(fake_run23 / "metrics.csv", dtype={"case_id": str}).set_index("case_id")
    html = dash.metrics.value
    assert "from the run's metrics CSV" in html and "kidney and masses" in html and "masses = labels 2, 3" in html
    for col in ("kidney_and_masses_dice", "masses_dice", "tumor_dice", "masses_surface_dice", "mean_dice",
                "mean_surface_dice"):
        assert f"{csv.loc['case_00000', col]:.3f}" in html, col
    assert "1.1329 mm" in html and "kits23.json" in html and "HD95" not in html
    dash.mode.value = "overlay"
    assert {t.scene for t in dash.view3d.children[0].data} == {"scene"}
    assert "ground truth cyst" in {t.name for t in dash.view3d.children[0].data}


def test_kits23_slices_draw_cyst_contours_in_their_colours(fake_run23, fake_run):
    """The top row of a KiTS23 case holds both cyst colours; a KiTS19 case of the same shape none."""
    from kidneyseg.viewer.slices import SLICE_DPI, focus_point, slice_figure
    from kidneyseg.viewer.style import CYST_GT, CYST_PRED

    cat = open_catalog(fake_run23)
    case = cat.load_case("case_00000")
    fig = slice_figure(case, focus_point(case))
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend[2:4] == ["ground-truth cyst", "predicted cyst"] and legend[-1] == "kidney/tumor/cyst swapped"
    png = slice_figure_png(case, focus_point(case))
    top_row = slice(0, int(fig.get_figheight() * SLICE_DPI) // 2)        # the contour panels, not the legend
    counts = {c: _hue_pixels(png, c, rows=top_row) for c in (CYST_GT, CYST_PRED)}
    assert min(counts.values()) >= 150, counts                           # measured 246-290
    case19 = open_catalog(fake_run).load_case("case_00000")
    fig19 = slice_figure(case19, focus_point(case19))
    assert [t.get_text() for t in fig19.legends[0].get_texts()][-1] == "kidney/tumor swapped"
    assert fig19.get_figheight() == pytest.approx(fig.get_figheight() - 0.2)   # KiTS19: one legend row as before
    png19 = slice_figure_png(case19, focus_point(case19))
    # no cyst colour; only anti-aliased fringes where blue and green contours meet come near teal (26 px)
    counts19 = {c: _hue_pixels(png19, c) for c in (CYST_GT, CYST_PRED)}
    assert counts19[CYST_PRED] == 0 and counts19[CYST_GT] < 50, counts19


def test_kits23_manifest_alone_computes_the_kits23_metrics(fake_run23):
    dash = Dashboard(open_catalog(fake_run23.parent / "data" / "manifest.csv"))
    assert "ready: case_00000" in dash.status.value
    assert "computed by the viewer (kidneyseg evaluate, kits23 protocol)" in dash.metrics.value
    assert {t.name for t in dash.view3d.children[0].data} >= {"ground truth kidney", "ground truth cyst"}
    assert not any(t.name.startswith("prediction") for t in dash.view3d.children[0].data)


def test_structures_follow_the_dataset():
    from kidneyseg.viewer.render import label_surfaces, structure_mask, structures

    lab = np.zeros((12, 12, 12), np.uint8)
    lab[2:10, 2:10, 2:10] = 1
    lab[3:6, 3:6, 3:6] = 2
    lab[6:9, 6:9, 6:9] = 3
    assert structures("kits19") == ("kidney", "tumor") and structures("kits23") == ("kidney", "tumor", "cyst")
    np.testing.assert_array_equal(structure_mask(lab, "kidney", "kits23"), lab > 0)
    np.testing.assert_array_equal(structure_mask(lab, "cyst", "kits23"), lab == 3)
    with pytest.raises(ValueError, match="structure must be one of"):
        structure_mask(lab, "cyst", "kits19")
    assert set(label_surfaces(lab, (1, 1, 1), dataset="kits23")) == {"kidney", "tumor", "cyst"}
    assert set(label_surfaces(lab, (1, 1, 1))) == {"kidney", "tumor"}
