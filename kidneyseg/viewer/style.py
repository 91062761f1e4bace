"""Colours shared by the 3D view, the slice overlays and the browser test; the CT window presets
are :data:`kidneyseg.preprocess.intensity.WINDOWS` (one definition for the package).

The label colours have clearly different hues so that a reader - and the browser test, which
counts pixels by hue - can tell ground truth from prediction and kidney from tumor from cyst in a
shaded 3D view: kidney blue / green, tumor violet / orange (ground truth / prediction), and for
KiTS23's cysts (label 3) teal / rose, placed in the two widest hue gaps the first four leave, so
every pair of the six is at least :data:`MIN_HUE_SEPARATION` degrees apart. The slice overlays
draw cyst contours in the same two colours. CT context is drawn in greys only.

>>> WINDOW_PRESETS["abdomen"]
(400.0, 40.0)
>>> window_limits("abdomen")
(-160.0, 240.0)
"""

from __future__ import annotations

from ..preprocess.intensity import WINDOWS, window_limits  # noqa: F401  (re-exported for the viewer)

#: Cyst colours (KiTS23, label 3): ground truth teal (hue 169), prediction rose (hue 335).
CYST_GT = "#00d6b0"
CYST_PRED = "#ff1476"
#: 3D surface colours (hex) per (source, structure); a KiTS19 case uses the first four.
MESH_COLOURS = {
    ("gt", "kidney"): "#1f5bff",      # blue
    ("gt", "tumor"): "#b01cff",       # violet
    ("pred", "kidney"): "#16c60c",    # green
    ("pred", "tumor"): "#ff8a00",     # orange
    ("gt", "cyst"): CYST_GT,          # teal
    ("pred", "cyst"): CYST_PRED,      # rose
}
#: Every pair of mesh colours differs in hue by at least this many degrees (tested).
MIN_HUE_SEPARATION = 45.0
#: Slice contours in the thesis's Fig 4.3 style: ground truth blue, prediction green (kidney
#: solid, tumor dashed); cysts in their own colours, :data:`CYST_GT` and :data:`CYST_PRED`.
CONTOUR_GT = "#1f5bff"
CONTOUR_PRED = "#16c60c"
#: False-positive / false-negative map colours (RGB 0..1) and the class-swap colour.
FP_COLOUR = (1.0, 0.1, 0.1)        # predicted foreground where the reference is background
FN_COLOUR = (1.0, 0.9, 0.0)        # reference foreground the prediction missed
SWAP_COLOUR = (1.0, 0.0, 1.0)      # kidney <-> tumor confusion inside the foreground
BONE_COLOUR = "#c8c8c8"

#: CT display windows as (width, level) in HU: the package's one definition.
WINDOW_PRESETS = WINDOWS


def hex_to_rgb(colour: str) -> tuple[int, int, int]:
    """``"#1f5bff"`` -> ``(31, 91, 255)``."""
    colour = colour.lstrip("#")
    return tuple(int(colour[i:i + 2], 16) for i in (0, 2, 4))  # type: ignore[return-value]


def hue_degrees(colour: str) -> float:
    """HSV hue of a hex colour in degrees [0, 360)."""
    import colorsys

    r, g, b = (c / 255.0 for c in hex_to_rgb(colour))
    return colorsys.rgb_to_hsv(r, g, b)[0] * 360.0


def hue_distance(a: float, b: float) -> float:
    """Distance of two hues in degrees on the colour circle, in [0, 180].

    >>> hue_distance(350.0, 10.0)
    20.0
    """
    return abs((a - b + 180.0) % 360.0 - 180.0)


#: Hue (degrees, HSV) of each mesh colour, used by the browser test's pixel counts.
MESH_HUES = {key: hue_degrees(value) for key, value in MESH_COLOURS.items()}
