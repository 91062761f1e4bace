"""The 3D view is framed on every label mesh at true shape; the slice panels keep the physical aspect."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from kidneyseg.io import new_volume
from kidneyseg.viewer.catalog import CaseData, CaseEntry
from kidneyseg.viewer.framing import SceneFrame, crop_surface, frame_bounds, surfaces_bounds
from kidneyseg.viewer.render import case_surfaces, label_surfaces, scene_viewport, surfaces_figure
from kidneyseg.viewer.slices import PANEL_NAMES, SLICE_MAX_ROW_IN, focus_point, slice_figure, slice_grid, slice_panels

from .browser.fake_run import TALL_SPACING, perturb, synth_case, tall_case

LABEL_TRACES = ("ground truth kidney", "ground truth tumor", "prediction kidney", "prediction tumor")


def _case(ct, label, spacing) -> CaseData:
    return CaseData(CaseEntry("c", None, None, None), new_volume(ct, spacing), new_volume(label, spacing),
                    new_volume(perturb(label, 0), spacing))


@pytest.fixture(scope="module")
def tall():
    ct, label = tall_case(3)
    return _case(ct, label, TALL_SPACING)


def _scene_frame(fig, scene: str) -> SceneFrame:
    """The SceneFrame a figure's scene layout describes (what plotly receives)."""
    sc = fig.layout[scene]
    ranges = tuple(tuple(sc[f"{a}axis"].range) for a in "xyz")
    eye = (sc.camera.eye.x, sc.camera.eye.y, sc.camera.eye.z)
    aspect = (sc.aspectratio.x, sc.aspectratio.y, sc.aspectratio.z)
    return SceneFrame(ranges, aspect, eye, scene_viewport(tuple(sc.domain.x)))


def _kidney_components(label: np.ndarray) -> int:
    return ndimage.label(label > 0)[1]


@pytest.mark.parametrize("mode", ["side by side", "overlay"])
def test_3d_frame_holds_both_kidneys_of_both_sources_at_true_shape(tall, mode):
    assert _kidney_components(tall.label.array) == 2 and _kidney_components(tall.prediction.array) == 2
    fig = surfaces_figure(case_surfaces(tall), mode)
    scenes = ["scene", "scene2"] if mode == "side by side" else ["scene"]
    labels = [t for t in fig.data if t.name in LABEL_TRACES]
    assert {t.name for t in labels} == set(LABEL_TRACES)
    frames = [_scene_frame(fig, s) for s in scenes]
    assert len({f.ranges for f in frames}) == 1                    # both scenes show the same box
    for scene, frame in zip(scenes, frames):
        sc = fig.layout[scene]
        assert sc.aspectmode == "manual"
        extents = np.array([hi - lo for lo, hi in frame.ranges])
        np.testing.assert_allclose(frame.aspectratio, extents / extents.max(), rtol=1e-9)  # 1 mm = 1 mm
        for trace in fig.data:
            if trace.scene != scene:
                continue
            verts = np.stack([trace.x, trace.y, trace.z], axis=1)
            assert frame.contains(verts), f"{trace.name} outside the scene ranges"   # bone cropped too
            if trace.name in LABEL_TRACES:
                screen = frame.project(verts)
                assert np.abs(screen).max() < 0.97, f"{trace.name} touches the viewport edge"
    # framed on the kidneys, not on the 480 mm spine: the z range is the label's plus margins
    z_label = np.concatenate([t.z for t in labels])
    z_range = frames[0].ranges[2]
    assert z_range[1] - z_range[0] < (z_label.max() - z_label.min()) + 2 * 0.08 * 130
    assert z_range[1] - z_range[0] < 0.5 * tall.shape[0] * TALL_SPACING[0]


def test_frame_bounds_fits_the_box_in_the_viewport_and_checks_input():
    lo, hi = np.array([-90.0, -30, -260]), np.array([60.0, 25, -120])
    for viewport in ((539, 418), (1100, 418), (300, 900)):
        f = frame_bounds(lo, hi, viewport)
        corners = f.corners()
        assert f.contains(np.stack([lo, hi])) and f.fits_viewport(corners)
        screen = np.abs(f.project(corners))
        assert 0.9 < screen.max() <= 1.0       # tight: the box fills the view along one direction
        assert f.eye[1] > 0 and f.eye[0] == 0  # seen from the front (anterior, RAS +y)
    with pytest.raises(ValueError, match="hi >= lo"):
        frame_bounds(hi, lo, (500, 400))
    with pytest.raises(ValueError, match="viewport must be"):
        frame_bounds(lo, hi, (0, 400))


def test_crop_surface_and_bounds():
    lab = np.zeros((20, 20, 20), np.uint8)
    lab[2:18, 2:18, 2:18] = 1
    surf = label_surfaces(lab, (1.0, 1.0, 1.0))["kidney"]
    lo, hi = surfaces_bounds([surf, None])
    assert surfaces_bounds([None]) is None
    f = frame_bounds(lo, (lo + hi) / 2, (400, 400), margin_fraction=0, min_margin_mm=0)
    verts, faces = crop_surface(surf, f)
    assert f.contains(verts) and 0 < len(faces) < len(surf[1]) and faces.max() < len(verts)
    far = frame_bounds(hi + 100, hi + 110, (400, 400), margin_fraction=0, min_margin_mm=0)
    assert crop_surface(surf, far) is None and crop_surface(None, f) is None


def _panel_boxes(fig):
    fig.canvas.draw()
    return {ax.get_label(): ax for ax in fig.axes if ax.get_label().split()[0] in PANEL_NAMES}


@pytest.mark.parametrize("shape, spacing", [((40, 96, 128), (3.0, 0.8, 0.8)),     # 3 mm x 0.8 mm
                                            ((96, 128, 160), TALL_SPACING),        # 480 mm long: row capped
                                            ((40, 96, 96), (2.5, 1.6, 1.6))])
def test_slice_panels_keep_the_physical_aspect_ratio(shape, spacing):
    if shape == (40, 96, 96):
        ct, label = synth_case(1)
    elif shape[0] == 96:
        ct, label = tall_case(1)
    else:
        label = np.zeros(shape, np.uint8)
        label[10:30, 30:70, 20:50] = 1
        label[15:25, 40:60, 30:45] = 2
        ct = np.where(label > 0, 150.0, 0.0).astype(np.float32)
    case = _case(ct, label, spacing)
    fig = slice_figure(case, focus_point(case))
    axes = _panel_boxes(fig)
    assert len(axes) == 6
    px_per_mm = []
    for (axis, _, width_mm, height_mm), name in zip(slice_panels(shape, spacing), PANEL_NAMES):
        for row in ("contours", "errors"):
            ax = axes[f"{name} {row}"]
            plane_shape = tuple(n for i, n in enumerate(shape) if i != axis)
            # the panel shows exactly the plane's pixels ...
            assert ax.get_xlim() == (-0.5, plane_shape[1] - 0.5)
            assert ax.get_ylim() == (plane_shape[0] - 0.5, -0.5)
            # ... at its physical aspect ratio (width/height on screen = width/height in mm)
            box = ax.get_window_extent()
            assert box.width / box.height == pytest.approx(width_mm / height_mm, rel=0.012), (name, row)
            px_per_mm.append(box.width / width_mm)
    panels = slice_panels(shape, spacing)
    capped = slice_grid(panels)[1] == SLICE_MAX_ROW_IN
    assert capped == (spacing == TALL_SPACING)
    spread = max(px_per_mm) / min(px_per_mm)
    if not capped:   # one mm scale for all six panels
        assert spread == pytest.approx(1.0, abs=0.015)
    else:            # the long planes are shown smaller, never stretched
        assert spread > 1.5
