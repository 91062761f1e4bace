"""Pictures of one case: 3D label surfaces (plotly) and orthogonal slice overlays (matplotlib).

3D: each structure (kidney = label > 0, tumor = label == 2) of the ground truth and of the
prediction becomes a ``Mesh3d`` surface from scikit-image's marching cubes, computed on a
block-max-pooled copy of the mask (at most ``max_dim`` voxels per axis, so small tumors survive
and a 1059-slice case stays light) and lightly smoothed. Coordinates are mm in RAS (the
canonical (I, P, L) axes negated), so the scene is not mirrored. The CT adds context as a faint
grey bone surface.

Slices: axial, coronal and sagittal planes through one point; the top row draws ground-truth
contours in blue and prediction contours in green on the windowed CT (the thesis's Fig 4.3
style); the bottom row colours false positives red, false negatives yellow and kidney/tumor
swaps magenta.
"""

from __future__ import annotations

import io
import math

import numpy as np
from scipy import ndimage

from .catalog import CaseData
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


def surfaces_figure(surfaces: dict, mode: str = "side by side", title: str = ""):
    """A plotly ``Figure`` of ground truth and prediction surfaces.

    Args:
        surfaces: output of :func:`case_surfaces`.
        mode: ``"side by side"`` (two linked-looking scenes: ground truth | prediction) or
            ``"overlay"`` (one scene, both semi-transparent).
        title: figure title.
    """
    import plotly.graph_objects as go

    if mode not in ("side by side", "overlay"):
        raise ValueError(f"mode must be 'side by side' or 'overlay', got {mode!r}")
    has_pred = any(k[0] == "pred" for k in surfaces)
    sources = [s for s in ("gt", "pred") if any(k[0] == s for k in surfaces)]
    two = mode == "side by side" and len(sources) == 2
    scenes = {"gt": "scene", "pred": "scene2" if two else "scene"}
    traces = []
    bone = surfaces.get(("ct", "bone"))
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
    scene_style = dict(
        aspectmode="data", xaxis=dict(visible=False), yaxis=dict(visible=False), zaxis=dict(visible=False),
        camera=dict(eye=dict(x=0.0, y=1.9, z=0.5), up=dict(x=0, y=0, z=1)), bgcolor="white",
    )
    layout = go.Layout(
        title=dict(text=title, x=0.5, font=dict(size=14)), height=480, width=1100, autosize=False, margin=dict(l=0, r=0, t=40, b=0),
        legend=dict(orientation="h", y=-0.02, x=0.5, xanchor="center"), paper_bgcolor="white",
        scene=dict(domain=dict(x=[0.0, 0.49] if two else [0.0, 1.0], y=[0.05, 1.0]), **scene_style),
    )
    if two:
        layout.scene2 = dict(domain=dict(x=[0.51, 1.0], y=[0.05, 1.0]), **scene_style)
        layout.annotations = [
            dict(text="ground truth", x=0.245, y=1.0, xref="paper", yref="paper", showarrow=False),
            dict(text="prediction", x=0.755, y=1.0, xref="paper", yref="paper", showarrow=False),
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


def slice_figure_png(case: CaseData, point: tuple[int, int, int], window="abdomen",
                     dpi: int = 80) -> bytes:
    """PNG of the three orthogonal planes through ``point`` (z, y, x), contours and error maps.

    Args:
        case: loaded case.
        point: voxel indices (z, y, x), clipped to the volume.
        window: preset name (``"abdomen"``, ``"kidney"``, ``"bone"``) or ``(width, level)`` HU.
        dpi: output resolution.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    lo, hi = window_limits(window)
    shape = case.shape
    point = tuple(int(np.clip(p, 0, s - 1)) for p, s in zip(point, shape))
    dz, dy, dx = case.spacing
    image = case.image.array if case.image is not None else None
    label = case.label.array if case.label is not None else None
    pred = case.prediction.array if case.prediction is not None else None
    # (axis, aspect = row spacing / column spacing)
    planes = ((0, dy / dx), (1, dz / dx), (2, dz / dy))
    widths = [shape[2] * dx, shape[2] * dx, shape[1] * dy]
    fig = Figure(figsize=(12, 7.6), dpi=dpi, facecolor="white")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(2, 3, width_ratios=widths, hspace=0.12, wspace=0.04,
                            left=0.01, right=0.99, top=0.94, bottom=0.07)
    for col, ((axis, aspect), name) in enumerate(zip(planes, PANEL_NAMES)):
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
            if row == 0:
                ax.set_title(f"{name} {point[axis]}", fontsize=10)
                for mask_plane, colour in ((gt, CONTOUR_GT), (pr, CONTOUR_PRED)):
                    if mask_plane is None:
                        continue
                    for name, style in (("kidney", "solid"), ("tumor", "dashed")):
                        m = structure_mask(mask_plane, name)
                        if m.any() and not m.all():
                            ax.contour(m.astype(np.float32), levels=[0.5], colors=[colour],
                                       linewidths=1.3, linestyles=style)
            else:
                ax.imshow(error_rgba(gt, pr), aspect=aspect, interpolation="nearest")
    handles = [Line2D([], [], color=CONTOUR_GT, label="ground truth (dashed: tumor)"),
               Line2D([], [], color=CONTOUR_PRED, label="prediction (dashed: tumor)"),
               Patch(color=FP_COLOUR, label="false positive"), Patch(color=FN_COLOUR, label="false negative"),
               Patch(color=SWAP_COLOUR, label="kidney/tumor swapped")]
    fig.legend(handles=handles, loc="lower center", ncol=5, fontsize=9, frameon=False)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
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
           "mask_centre", "mask_surface", "pool_mask", "slice_figure_png", "structure_mask", "surfaces_figure"]
