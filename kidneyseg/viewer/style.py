"""Colours shared by the 3D view, the slice overlays and the browser test; the CT window presets
are :data:`kidneyseg.preprocess.intensity.WINDOWS` (one definition for the package).

The four label colours have clearly different hues (blue, violet, green, orange) so that a
reader - and the browser test, which counts pixels by hue - can tell ground truth from
prediction and kidney from tumor in a shaded 3D view. CT context is drawn in greys only.

>>> WINDOW_PRESETS["abdomen"]
(400.0, 40.0)
>>> window_limits("abdomen")
(-160.0, 240.0)
"""

from __future__ import annotations

from ..preprocess.intensity import WINDOWS, window_limits  # noqa: F401  (re-exported for the viewer)

#: 3D surface colours (hex) per (source, structure).
MESH_COLOURS = {
    ("gt", "kidney"): "#1f5bff",      # blue
    ("gt", "tumor"): "#b01cff",       # violet
    ("pred", "kidney"): "#16c60c",    # green
    ("pred", "tumor"): "#ff8a00",     # orange
}
#: Slice contours in the thesis's Fig 4.3 style: ground truth blue, prediction green.
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


#: Hue (degrees, HSV) of each mesh colour, used by the browser test's pixel counts.
MESH_HUES = {key: hue_degrees(value) for key, value in MESH_COLOURS.items()}
