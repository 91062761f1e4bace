"""Pictures of one case: 3D label surfaces (plotly) and orthogonal slice overlays (matplotlib).

3D: each structure (kidney = label > 0, tumor = label == 2) of the ground truth and of the
prediction becomes a ``Mesh3d`` surface from scikit-image's marching cubes, computed on a
block-max-pooled copy of the mask (at most ``max_dim`` voxels per axis, so small tumors survive
and a 1059-slice case stays light) and lightly smoothed. Coordinates are mm in RAS (the
canonical (I, P, L) axes negated), so the scene is not mirrored. The CT adds context as a faint
grey bone surface.

The 3D scenes are framed on the union of the label surfaces at their true shape
(:mod:`kidneyseg.viewer.framing`).

Slices: axial, coronal and sagittal planes through one point, each at its physical aspect ratio
(pixel height/width = row/column spacing); the top row draws ground-truth contours in blue and
prediction contours in green on the windowed CT (the thesis's Fig 4.3 style); the bottom row
colours false positives red, false negatives yellow and kidney/tumor swaps magenta.
"""

from __future__ import annotations

import io
import math

import numpy as np
from scipy import ndimage

from .catalog import CaseData
from .framing import SceneFrame, crop_surface, frame_bounds, surfaces_bounds
from .style import (BONE_COLOUR, CONTOUR_GT, CONTOUR_PRED, FN_COLOUR, FP_COLOUR, MESH_COLOURS,
                    SWAP_COLOUR, window_limits)

STRUCTURES = ("kidney", "tumor")
BONE_HU = 250.0
PANEL_NAMES = ("axial", "coronal", "sagittal")


# --------------------------------------------------------------------------------------- 3D
def pool_mask(mask: np.ndarray, max_dim: int) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Block-max-pool a (z, y, x) boolean mask so no axis exceeds ``max_dim`` voxels.

    Returns:
        ``(pooled, factors)`` with integer pooling ``factors`` per axis (1 = unchanged).

    >>> m = np.zeros((10, 4, 4), bool); m[9, 0, 0] = True
    >>> p, f = pool_mask(m, 5); p.shape, f, bool(p[4, 0, 0])
    ((5, 4, 4), (2, 1, 1), True)
    """
    if max_dim < 2:
        raise ValueError(f"max_dim must be >= 2, got {max_dim!r}")
    factors = tuple(max(1, math.ceil(s / max_dim)) for s in mask.shape)
    if factors == (1, 1, 1):
        return mask.astype(bool, copy=False), factors  # type: ignore[return-value]
    padded_shape = [math.ceil(s / f) * f for s, f in zip(mask.shape, factors)]
    padded = np.zeros(padded_shape, bool)
    padded[: mask.shape[0], : mask.shape[1], : mask.shape[2]] = mask
    (a, fa), (b, fb), (c, fc) = ((p // f, f) for p, f in zip(padded_shape, factors))
    pooled = padded.reshape(a, fa, b, fb, c, fc).any(axis=(1, 3, 5))
    return pooled, factors  # type: ignore[return-value]


def mask_surface(mask: np.ndarray, spacing, max_dim: int = 96, smooth: float = 0.6):
    """Triangle surface of a (z, y, x) boolean mask in RAS mm.

    Args:
        mask: boolean (z, y, x) array.
        spacing: voxel size (z, y, x) in mm.
        max_dim: most voxels per axis before marching cubes (block max-pooling above it).
        smooth: Gaussian sigma (pooled voxels) applied before the 0.5 iso-surface.

    Returns:
        ``(vertices [N, 3] (x=R, y=A, z=S) mm, faces [M, 3] int)`` or ``None`` for an empty mask.
    """
    from skimage.measure import marching_cubes

    mask = np.asarray(mask, bool)
    if not mask.any():
        return None
    # Crop to the mask's bounding box first: meshes of a kidney in a 512^2 slab stay cheap.
    idx = np.argwhere(mask)
    lo, hi = idx.min(0), idx.max(0) + 1
    crop = mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    pooled, factors = pool_mask(crop, max_dim)
    field = np.pad(pooled.astype(np.float32), 2)
    if smooth > 0:
        field = ndimage.gaussian_filter(field, smooth)
    level = min(0.5, 0.5 * float(field.max()))
    step_mm = np.asarray(spacing, float) * np.asarray(factors, float)
    verts, faces, _, _ = marching_cubes(field, level=level, spacing=tuple(step_mm))
    # pooled voxel i covers original voxels [i*f, (i+1)*f): its centre is i*f + (f-1)/2
    offset = (lo + (np.asarray(factors) - 1) / 2.0) * np.asarray(spacing, float) - 2 * step_mm
    verts_zyx = verts + offset
    return -verts_zyx[:, ::-1], faces.astype(np.int32)  # (I, P, L) -> (R, A, S), x first


def structure_mask(label: np.ndarray, name: str) -> np.ndarray:
    """KiTS19 regions: ``"kidney"`` = label > 0 (kidney and tumor), ``"tumor"`` = label == 2."""
    if name == "kidney":
        return label > 0
    if name == "tumor":
        return label == 2
    raise ValueError(f"structure must be 'kidney' or 'tumor', got {name!r}")


def label_surfaces(label: np.ndarray, spacing, max_dim: int = 96) -> dict:
    """``{"kidney": surface|None, "tumor": surface|None}`` of a label map (see :func:`mask_surface`)."""
    return {name: mask_surface(structure_mask(label, name), spacing, max_dim) for name in STRUCTURES}


def bone_surface(image: np.ndarray, spacing, max_dim: int = 64, threshold_hu: float = BONE_HU):
    """Surface of CT voxels above ``threshold_hu`` (bone), coarse: context for the 3D view."""
    return mask_surface(image > threshold_hu, spacing, max_dim, smooth=0.8)


def case_surfaces(case: CaseData, max_dim: int = 96) -> dict:
    """All surfaces of a case: ``{("gt"|"pred", "kidney"|"tumor"): surface, ("ct", "bone"): ...}``."""
    out: dict = {}
    for source, vol in (("gt", case.label), ("pred", case.prediction)):
        if vol is not None:
            for name, surf in label_surfaces(vol.array, vol.spacing, max_dim).items():
                out[(source, name)] = surf
    if case.image is not None:
        out[("ct", "bone")] = bone_surface(case.image.array, case.image.spacing, max(32, max_dim * 2 // 3))
    return out


def _mesh_trace(surface, colour: str, name: str, opacity: float, scene: str, legend: bool):
    import plotly.graph_objects as go

    verts, faces = surface
    return go.Mesh3d(
        x=verts[:, 0], y=verts[:, 1], z=verts[:, 2], i=faces[:, 0], j=faces[:, 1], k=faces[:, 2],
        color=colour, opacity=opacity, name=name, showlegend=legend, scene=scene, flatshading=False,
        lighting=dict(ambient=0.55, diffuse=0.6, specular=0.05, roughness=0.9, fresnel=0.05),
        hoverinfo="name",
    )


#: 3D figure size and margins (pixels; the title and scene names above, the legend below, so
#: plotly never shrinks the plot area) and the scenes' places in it: the camera is fitted to these.
FIGURE_WIDTH, FIGURE_HEIGHT, TOP_MARGIN, BOTTOM_MARGIN = 1100, 480, 56, 36
SCENE_Y = (0.0, 1.0)
SIDE_BY_SIDE_X = ((0.0, 0.49), (0.51, 1.0))


def scene_viewport(domain_x: tuple[float, float]) -> tuple[float, float]:
    """(width, height) in pixels of a scene spanning ``domain_x`` of the figure's plot area."""
    plot_h = FIGURE_HEIGHT - TOP_MARGIN - BOTTOM_MARGIN
    return FIGURE_WIDTH * (domain_x[1] - domain_x[0]), plot_h * (SCENE_Y[1] - SCENE_Y[0])


def label_frame(surfaces: dict, viewport: tuple[float, float]) -> SceneFrame | None:
    """The frame around every label surface (ground truth and prediction, kidney and tumor) of
    :func:`case_surfaces` output; the bone's when there is no label; ``None`` when empty."""
    labels = [s for (source, _), s in surfaces.items() if source in ("gt", "pred")]
    bounds = surfaces_bounds(labels)
    if bounds is None:
        bounds = surfaces_bounds(surfaces.values())
    return None if bounds is None else frame_bounds(*bounds, viewport=viewport)


def surfaces_figure(surfaces: dict, mode: str = "side by side", title: str = ""):
    """A plotly ``Figure`` of ground truth and prediction surfaces.

    Every scene is framed on the union of all label surfaces (both kidneys, tumors, both sources;
    :mod:`kidneyseg.viewer.framing`), at the true shape (1 mm equally long on every axis); the CT
    bone is cropped to that box.

    Args:
        surfaces: output of :func:`case_surfaces`.
        mode: ``"side by side"`` (two scenes with the same frame: ground truth | prediction) or
            ``"overlay"`` (one scene, both semi-transparent).
        title: figure title.
    """
    import plotly.graph_objects as go

    if mode not in ("side by side", "overlay"):
        raise ValueError(f"mode must be 'side by side' or 'overlay', got {mode!r}")
    has_pred = any(k[0] == "pred" for k in surfaces)
    sources = [s for s in ("gt", "pred") if any(k[0] == s for k in surfaces)]
    two = mode == "side by side" and len(sources) == 2
    domains = SIDE_BY_SIDE_X if two else ((0.0, 1.0),)
    frame = label_frame(surfaces, scene_viewport(domains[0]))
    scenes = {"gt": "scene", "pred": "scene2" if two else "scene"}
    traces = []
    bone = surfaces.get(("ct", "bone"))
    if bone is not None and frame is not None:
        bone = crop_surface(bone, frame)
    for scene in sorted(set(scenes[s] for s in sources)) or ["scene"]:
        if bone is not None:
            traces.append(_mesh_trace(bone, BONE_COLOUR, "CT bone", 0.12, scene, scene == "scene"))
    label_names = {"gt": "ground truth", "pred": "prediction"}
    for source in sources:
        for structure in ("kidney", "tumor"):
            surf = surfaces.get((source, structure))
            if surf is None:
                continue
            opacity = 1.0 if two or not has_pred else (0.55 if source == "gt" else 0.5)
            traces.append(_mesh_trace(surf, MESH_COLOURS[(source, structure)],
                                      f"{label_names[source]} {structure}", opacity, scenes[source], True))
    hidden = dict(visible=False)
    scene_style = dict(xaxis=dict(hidden), yaxis=dict(hidden), zaxis=dict(hidden), bgcolor="white")
    if frame is not None:
        for key, value in frame.scene_layout().items():
            scene_style[key] = {**scene_style.get(key, {}), **value} if key.endswith("axis") else value
    else:
        scene_style.update(aspectmode="data", camera=dict(eye=dict(x=0.0, y=1.9, z=0.5), up=dict(x=0, y=0, z=1)))
    layout = go.Layout(
        title=dict(text=title, x=0.5, y=0.985, yanchor="top", font=dict(size=14)), height=FIGURE_HEIGHT, width=FIGURE_WIDTH,
        autosize=False, margin=dict(l=0, r=0, t=TOP_MARGIN, b=BOTTOM_MARGIN),
        legend=dict(orientation="h", y=-0.01, yanchor="top", x=0.5, xanchor="center"), paper_bgcolor="white",
        scene=dict(domain=dict(x=list(domains[0]), y=list(SCENE_Y)), **scene_style),
    )
    if two:
        layout.scene2 = dict(domain=dict(x=list(domains[1]), y=list(SCENE_Y)), **scene_style)
        layout.annotations = [
            dict(text=text, x=sum(domain) / 2, y=1.0, yanchor="bottom", xref="paper", yref="paper", showarrow=False)
            for text, domain in zip(("ground truth", "prediction"), domains)
        ]
    return go.Figure(data=traces, layout=layout)


# ----------------------------------------------------------------------------------- slices
def focus_point(case: CaseData) -> tuple[int, int, int]:
    """Voxel (z, y, x) the slices start at: tumor centre, else kidney, else prediction, else middle."""
    for vol, name in ((case.label, "tumor"), (case.label, "kidney"), (case.prediction, "tumor"),
                      (case.prediction, "kidney")):
        if vol is not None:
            centre = mask_centre(structure_mask(vol.array, name))
            if centre is not None:
                return centre
    return tuple(s // 2 for s in case.shape)  # type: ignore[return-value]


def mask_centre(mask: np.ndarray) -> tuple[int, int, int] | None:
    """Centre of mass (voxel indices, rounded) of a boolean (z, y, x) mask; ``None`` if empty.

    Computed from axis projections inside the occupied z-slab: about 10x faster than
    ``scipy.ndimage.center_of_mass`` on a 1059 x 512 x 512 mask (measured 12.6 s there).

    >>> m = np.zeros((5, 5, 5), bool); m[1:4, 2, 0:3] = True
    >>> mask_centre(m)
    (2, 2, 1)
    """
    per_z = mask.sum(axis=(1, 2), dtype=np.int64)
    total = int(per_z.sum())
    if total == 0:
        return None
    nz = np.flatnonzero(per_z)
    slab = mask[nz[0]: nz[-1] + 1]
    per_y = slab.sum(axis=(0, 2), dtype=np.int64)
    per_x = slab.sum(axis=(0, 1), dtype=np.int64)
    return tuple(int(round(float((np.arange(len(p)) * p).sum()) / total))  # type: ignore[return-value]
                 for p in (per_z, per_y, per_x))


def _plane(array: np.ndarray | None, axis: int, index: int):
    if array is None:
        return None
    return np.take(array, index, axis=axis)


#: Slice figure: width (inches), resolution, most height of one row of panels (inches), and the
#: space for the titles above, between the two rows and for the legend below (inches).
SLICE_WIDTH_IN, SLICE_DPI, SLICE_MAX_ROW_IN = 12.0, 80, 5.0
SLICE_TOP_IN, SLICE_GAP_IN, SLICE_LEGEND_IN = 0.32, 0.12, 0.42
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

    Top row: ground-truth and prediction contours on the windowed CT; bottom row: the error map.
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
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    lo, hi = window_limits(window)
    shape = case.shape
    point = tuple(int(np.clip(p, 0, s - 1)) for p, s in zip(point, shape))
    image = case.image.array if case.image is not None else None
    label = case.label.array if case.label is not None else None
    pred = case.prediction.array if case.prediction is not None else None
    panels = slice_panels(shape, case.spacing)
    widths, row_in = slice_grid(panels)
    height_in = SLICE_TOP_IN + 2 * row_in + SLICE_GAP_IN + SLICE_LEGEND_IN
    fig = Figure(figsize=(SLICE_WIDTH_IN, height_in), dpi=dpi, facecolor="white")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(2, 3, width_ratios=widths, hspace=SLICE_GAP_IN / row_in,
                            wspace=SLICE_WSPACE, left=SLICE_SIDE, right=1 - SLICE_SIDE,
                            top=1 - SLICE_TOP_IN / height_in, bottom=SLICE_LEGEND_IN / height_in)
    for col, ((axis, aspect, _, _), name) in enumerate(zip(panels, PANEL_NAMES)):
        ct = _plane(image, axis, point[axis])
        gt = _plane(label, axis, point[axis])
        pr = _plane(pred, axis, point[axis])
        if ct is not None:
            background = ct
        else:  # no CT (e.g. KiTS19 labels only): grey levels of the label map itself
            labels_plane = gt if gt is not None else pr
            background = lo + (hi - lo) * np.array([0.0, 0.45, 0.8], np.float32)[labels_plane]
        for row in range(2):
            ax = fig.add_subplot(grid[row, col])
            ax.imshow(background, cmap="gray", vmin=lo, vmax=hi, aspect=aspect, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_label(f"{name} {'contours' if row == 0 else 'errors'}")
            if row == 0:
                ax.set_title(f"{name} {point[axis]}", fontsize=10)
                for mask_plane, colour in ((gt, CONTOUR_GT), (pr, CONTOUR_PRED)):
                    if mask_plane is None:
                        continue
                    for structure, style in (("kidney", "solid"), ("tumor", "dashed")):
                        m = structure_mask(mask_plane, structure)
                        if m.any() and not m.all():
                            ax.contour(m.astype(np.float32), levels=[0.5], colors=[colour],
                                       linewidths=1.3, linestyles=style)
            else:
                ax.imshow(error_rgba(gt, pr), aspect=aspect, interpolation="nearest")
            # contours must not change the view: the panel shows exactly the plane's pixels
            ax.set_xlim(-0.5, background.shape[1] - 0.5)
            ax.set_ylim(background.shape[0] - 0.5, -0.5)
    handles = [Line2D([], [], color=CONTOUR_GT, label="ground truth (dashed: tumor)"),
               Line2D([], [], color=CONTOUR_PRED, label="prediction (dashed: tumor)"),
               Patch(color=FP_COLOUR, label="false positive"), Patch(color=FN_COLOUR, label="false negative"),
               Patch(color=SWAP_COLOUR, label="kidney/tumor swapped")]
    fig.legend(handles=handles, loc="lower center", ncol=5, fontsize=9, frameon=False)
    return fig


def slice_figure_png(case: CaseData, point: tuple[int, int, int], window="abdomen",
                     dpi: int = SLICE_DPI) -> bytes:
    """PNG bytes of :func:`slice_figure` (what the dashboard shows)."""
    buf = io.BytesIO()
    slice_figure(case, point, window, dpi).savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def error_rgba(gt: np.ndarray | None, pred: np.ndarray | None, alpha: float = 0.75) -> np.ndarray:
    """RGBA float image of false positives, false negatives and class swaps (transparent elsewhere).

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


__all__ = ["bone_surface", "case_surfaces", "error_rgba", "focus_point", "label_surfaces",
           "label_frame", "mask_centre", "mask_surface", "pool_mask", "scene_viewport", "slice_figure",
           "slice_figure_png", "slice_grid", "slice_panels", "structure_mask", "surfaces_figure"]
