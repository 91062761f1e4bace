"""The slice overlays of one case: axial, coronal and sagittal planes (matplotlib, a PNG).

Three planes through one point, each at its physical aspect ratio (pixel height/width = row/column
spacing); the top row draws ground-truth contours in blue and prediction contours in green on the
windowed CT (the thesis's Fig 4.3 style: kidney region solid, tumor dashed) and, for KiTS23, the
cysts (label 3) in their own colours (ground truth teal, prediction rose,
:data:`~kidneyseg.viewer.style.CYST_GT` / :data:`~kidneyseg.viewer.style.CYST_PRED`); the bottom
row colours false positives red, false negatives yellow and label swaps (kidney/tumor, and
cyst for KiTS23) magenta. The structures are those of the case's dataset
(:func:`kidneyseg.viewer.render.structures`).
"""

from __future__ import annotations

import io

import numpy as np

from ..measure.focus import focus_point as labels_focus
from .catalog import CaseData
from .render import structure_mask, structures
from .style import (CONTOUR_GT, CONTOUR_PRED, CYST_GT, CYST_PRED, FN_COLOUR, FP_COLOUR, SWAP_COLOUR,
                    window_limits)

PANEL_NAMES = ("axial", "coronal", "sagittal")
#: Contour (colour, line style) per (source, structure) in the top row.
CONTOURS = {
    ("gt", "kidney"): (CONTOUR_GT, "solid"), ("gt", "tumor"): (CONTOUR_GT, "dashed"),
    ("gt", "cyst"): (CYST_GT, "solid"),
    ("pred", "kidney"): (CONTOUR_PRED, "solid"), ("pred", "tumor"): (CONTOUR_PRED, "dashed"),
    ("pred", "cyst"): (CYST_PRED, "solid"),
}
#: Without a CT the panels show the label map itself in greys (fraction of the window) per label
#: value: background, kidney, tumor, cyst.
LABEL_GREYS = (0.0, 0.45, 0.8, 0.25)


def focus_point(case: CaseData) -> tuple[int, int, int]:
    """Voxel (z, y, x) the slices start at: :func:`kidneyseg.measure.focus.focus_point` of the ground
    truth (largest tumor, else the labelled voxels), else of the prediction, else the middle."""
    for vol in (case.label, case.prediction):
        if vol is not None and (point := labels_focus(vol.array)) is not None:
            return point
    return tuple(s // 2 for s in case.shape)  # type: ignore[return-value]


def _plane(array: np.ndarray | None, axis: int, index: int):
    if array is None:
        return None
    return np.take(array, index, axis=axis)


#: Slice figure: width (inches), resolution, most height of one row of panels (inches), and the
#: space for the titles above, between the two rows and for the legend below (inches).
SLICE_WIDTH_IN, SLICE_DPI, SLICE_MAX_ROW_IN = 12.0, 80, 5.0
SLICE_TOP_IN, SLICE_GAP_IN, SLICE_LEGEND_IN = 0.32, 0.12, 0.42
#: Height (inches) of each further legend row (a KiTS23 legend has two rows: its cyst entries).
SLICE_LEGEND_ROW_IN = 0.2
SLICE_SIDE, SLICE_WSPACE = 0.01, 0.04


def slice_panels(shape, spacing) -> list[tuple[int, float, float, float]]:
    """The three planes as ``(axis, aspect, width_mm, height_mm)``: axial, coronal, sagittal.

    ``aspect`` is the row spacing over the column spacing, the height/width of one displayed pixel
    (matplotlib's ``imshow(aspect=...)``), so every panel shows its physical extent undistorted.

    >>> [p[1] for p in slice_panels((10, 20, 30), (3.0, 0.8, 0.8))]
    [1.0, 3.75, 3.75]
    """
    (nz, ny, nx), (dz, dy, dx) = shape, spacing
    return [(0, dy / dx, nx * dx, ny * dy), (1, dz / dx, nx * dx, nz * dz), (2, dz / dy, ny * dy, nz * dz)]


def slice_grid(panels) -> tuple[list[float], float]:
    """Column width ratios and row height (inches) of the slice figure for :func:`slice_panels`.

    At one scale that fits the three planes' widths into the figure, the row is as tall as the
    tallest plane, capped at ``SLICE_MAX_ROW_IN``; a plane taller than the row is shown smaller
    (height-limited), and its column narrows to its shown width so the others get the space.
    """
    axes_width_in = SLICE_WIDTH_IN * (1 - 2 * SLICE_SIDE) / (1 + SLICE_WSPACE * (len(panels) - 1) / len(panels))
    scale = axes_width_in / sum(p[2] for p in panels)                       # inches per mm
    row_in = min(max(p[3] for p in panels) * scale, SLICE_MAX_ROW_IN)
    return [min(p[2] * scale, row_in * p[2] / p[3]) for p in panels], row_in


def slice_figure(case: CaseData, point: tuple[int, int, int], window="abdomen", dpi: int = SLICE_DPI):
    """The matplotlib ``Figure`` of the three orthogonal planes through ``point`` (z, y, x).

    Top row: ground-truth and prediction contours on the windowed CT (cysts in their own colours
    for KiTS23); bottom row: the error map.
    Each panel is drawn at its physical aspect ratio (pixel height/width = row/column spacing);
    all panels share one mm scale unless a long volume's row hits ``SLICE_MAX_ROW_IN`` (then the
    coronal and sagittal planes are shown smaller, see :func:`slice_grid`).

    Args:
        case: loaded case.
        point: voxel indices (z, y, x), clipped to the volume.
        window: preset name (``"abdomen"``, ``"kidney"``, ``"bone"``) or ``(width, level)`` HU.
        dpi: resolution of the figure.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    lo, hi = window_limits(window)
    drawn = structures(case.dataset)
    handles, ncol = _legend(drawn)
    legend_in = SLICE_LEGEND_IN + SLICE_LEGEND_ROW_IN * (-(-len(handles) // ncol) - 1)
    shape = case.shape
    point = tuple(int(np.clip(p, 0, s - 1)) for p, s in zip(point, shape))
    image = case.image.array if case.image is not None else None
    label = case.label.array if case.label is not None else None
    pred = case.prediction.array if case.prediction is not None else None
    panels = slice_panels(shape, case.spacing)
    widths, row_in = slice_grid(panels)
    height_in = SLICE_TOP_IN + 2 * row_in + SLICE_GAP_IN + legend_in
    fig = Figure(figsize=(SLICE_WIDTH_IN, height_in), dpi=dpi, facecolor="white")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(2, 3, width_ratios=widths, hspace=SLICE_GAP_IN / row_in,
                            wspace=SLICE_WSPACE, left=SLICE_SIDE, right=1 - SLICE_SIDE,
                            top=1 - SLICE_TOP_IN / height_in, bottom=legend_in / height_in)
    for col, ((axis, aspect, _, _), name) in enumerate(zip(panels, PANEL_NAMES)):
        ct = _plane(image, axis, point[axis])
        gt = _plane(label, axis, point[axis])
        pr = _plane(pred, axis, point[axis])
        if ct is not None:
            background = ct
        else:  # no CT (e.g. KiTS19 labels only): grey levels of the label map itself
            labels_plane = gt if gt is not None else pr
            background = lo + (hi - lo) * np.array(LABEL_GREYS, np.float32)[labels_plane]
        for row in range(2):
            ax = fig.add_subplot(grid[row, col])
            ax.imshow(background, cmap="gray", vmin=lo, vmax=hi, aspect=aspect, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_label(f"{name} {'contours' if row == 0 else 'errors'}")
            if row == 0:
                ax.set_title(f"{name} {point[axis]}", fontsize=10)
                for mask_plane, source in ((gt, "gt"), (pr, "pred")):
                    if mask_plane is None:
                        continue
                    for structure in drawn:
                        colour, style = CONTOURS[(source, structure)]
                        m = structure_mask(mask_plane, structure, case.dataset)
                        if m.any() and not m.all():
                            ax.contour(m.astype(np.float32), levels=[0.5], colors=[colour],
                                       linewidths=1.3, linestyles=style)
            else:
                ax.imshow(error_rgba(gt, pr), aspect=aspect, interpolation="nearest")
            # contours must not change the view: the panel shows exactly the plane's pixels
            ax.set_xlim(-0.5, background.shape[1] - 0.5)
            ax.set_ylim(background.shape[0] - 0.5, -0.5)
    fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=9, frameon=False)
    return fig


def _legend(drawn: tuple[str, ...]) -> tuple[list, int]:
    """The slice legend's handles and columns: one row for KiTS19, two with the cyst entries."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [Line2D([], [], color=CONTOUR_GT, label="ground truth (dashed: tumor)"),
               Line2D([], [], color=CONTOUR_PRED, label="prediction (dashed: tumor)")]
    if "cyst" in drawn:
        handles += [Line2D([], [], color=CYST_GT, label="ground-truth cyst"),
                    Line2D([], [], color=CYST_PRED, label="predicted cyst")]
    swapped = "/".join(drawn) + " swapped"
    handles += [Patch(color=FP_COLOUR, label="false positive"), Patch(color=FN_COLOUR, label="false negative"),
                Patch(color=SWAP_COLOUR, label=swapped)]
    return handles, 5 if len(handles) <= 5 else 4


def slice_figure_png(case: CaseData, point: tuple[int, int, int], window="abdomen",
                     dpi: int = SLICE_DPI) -> bytes:
    """PNG bytes of :func:`slice_figure` (what the dashboard shows)."""
    buf = io.BytesIO()
    slice_figure(case, point, window, dpi).savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def error_rgba(gt: np.ndarray | None, pred: np.ndarray | None, alpha: float = 0.75) -> np.ndarray:
    """RGBA float image of false positives, false negatives and label swaps (transparent elsewhere).

    A swap is foreground in both with different labels (kidney/tumor; with KiTS23 also cyst).

    >>> e = error_rgba(np.array([[0, 1, 2]]), np.array([[1, 0, 1]]))
    >>> e[0, :, :3].astype(float).round(2).tolist()
    [[1.0, 0.1, 0.1], [1.0, 0.9, 0.0], [1.0, 0.0, 1.0]]
    """
    ref = gt if gt is not None else pred
    out = np.zeros(ref.shape + (4,), np.float32)
    if gt is None or pred is None:
        return out
    fp = (pred > 0) & (gt == 0)
    fn = (gt > 0) & (pred == 0)
    swap = (gt > 0) & (pred > 0) & (gt != pred)
    for mask, colour in ((fp, FP_COLOUR), (fn, FN_COLOUR), (swap, SWAP_COLOUR)):
        out[mask, :3] = colour
        out[mask, 3] = alpha
    return out


__all__ = ["CONTOURS", "LABEL_GREYS", "PANEL_NAMES", "error_rgba", "focus_point", "slice_figure",
           "slice_figure_png", "slice_grid", "slice_panels"]
