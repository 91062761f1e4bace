"""kidneyseg.viewer.style: the label colours are told apart by hue (what a reader and the browser test rely on)."""

from __future__ import annotations

import doctest
import itertools

import pytest

from kidneyseg.viewer import style
from kidneyseg.viewer.style import (CONTOUR_GT, CONTOUR_PRED, CYST_GT, CYST_PRED, FN_COLOUR, FP_COLOUR, MESH_COLOURS,
                                    MESH_HUES, MIN_HUE_SEPARATION, SWAP_COLOUR, hue_degrees, hue_distance)


def _hue_rgb(rgb) -> float:
    return hue_degrees("#" + "".join(f"{round(c * 255):02x}" for c in rgb))


def test_six_mesh_colours_one_per_source_and_structure():
    assert set(MESH_COLOURS) == {(s, k) for s in ("gt", "pred") for k in ("kidney", "tumor", "cyst")}
    assert len(set(MESH_COLOURS.values())) == 6
    # the KiTS19 four are unchanged
    assert [MESH_COLOURS[("gt", "kidney")], MESH_COLOURS[("gt", "tumor")], MESH_COLOURS[("pred", "kidney")],
            MESH_COLOURS[("pred", "tumor")]] == ["#1f5bff", "#b01cff", "#16c60c", "#ff8a00"]
    assert (MESH_COLOURS[("gt", "cyst")], MESH_COLOURS[("pred", "cyst")]) == (CYST_GT, CYST_PRED)


def test_every_pair_of_label_colours_is_far_apart_in_hue():
    for (a, ha), (b, hb) in itertools.combinations(MESH_HUES.items(), 2):
        assert hue_distance(ha, hb) >= MIN_HUE_SEPARATION, (a, b, ha, hb)
    assert MIN_HUE_SEPARATION >= 2 * 14.0 + 10  # the browser test's hue windows (+-14 degrees) never overlap
    # the cysts sit in the widest gaps: each is >= 50 degrees from all four KiTS19 colours
    for cyst in (CYST_GT, CYST_PRED):
        others = [h for k, h in MESH_HUES.items() if k[1] != "cyst"]
        assert min(hue_distance(hue_degrees(cyst), h) for h in others) >= 50.0


def test_cyst_contours_differ_from_the_other_slice_colours():
    """The slice figure's cyst contours (top row) against its kidney/tumor contours, and against the
    error map's colours (bottom row), so a cyst is never read as an error."""
    slice_hues = [hue_degrees(CONTOUR_GT), hue_degrees(CONTOUR_PRED)]
    error_hues = [_hue_rgb(FP_COLOUR), _hue_rgb(FN_COLOUR), _hue_rgb(SWAP_COLOUR)]
    for cyst in (CYST_GT, CYST_PRED):
        assert min(hue_distance(hue_degrees(cyst), h) for h in slice_hues) >= MIN_HUE_SEPARATION
        assert min(hue_distance(hue_degrees(cyst), h) for h in error_hues) >= 20.0


@pytest.mark.parametrize("a, b, expected", [(0, 0, 0), (350, 10, 20), (10, 350, 20), (0, 180, 180), (90, 300, 150)])
def test_hue_distance_wraps_around(a, b, expected):
    assert hue_distance(a, b) == pytest.approx(expected)


def test_doctests_of_the_viewer_modules():
    from kidneyseg.viewer import catalog, metrics, niivue, render, slices

    for module in (style, catalog, metrics, render, slices, niivue):
        assert doctest.testmod(module).failed == 0, module.__name__
