"""The 3D view of one case: label surfaces (plotly ``Mesh3d``) of ground truth and prediction.

Each structure of the ground truth and of the prediction becomes a ``Mesh3d`` surface from
scikit-image's marching cubes, computed on a block-max-pooled copy of the mask (at most
``max_dim`` voxels per axis, so small tumors survive and a 1059-slice case stays light) and lightly
smoothed. The structures come from the case's dataset (:func:`structures`): KiTS19 kidney
(label > 0, kidney and tumor) and tumor (label 2); KiTS23 adds the cyst (label 3). Coordinates
are mm in RAS (the canonical (I, P, L) axes negated), so the scene is not mirrored. The CT adds
context as a faint grey bone surface.

The 3D scenes are framed on the union of the label surfaces at their true shape
(:mod:`kidneyseg.viewer.framing`). The slice overlays are :mod:`kidneyseg.viewer.slices`.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from ..data.datasets import Dataset, get_dataset
from .catalog import CaseData
from .framing import SceneFrame, crop_surface, frame_bounds, surfaces_bounds
from .style import BONE_COLOUR, MESH_COLOURS

#: Every structure the viewer draws, in drawing order; a dataset uses those of :func:`structures`.
STRUCTURES = ("kidney", "tumor", "cyst")
BONE_HU = 250.0


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


def structures(dataset: Dataset | str | None = None) -> tuple[str, ...]:
    """The structures drawn for a dataset: ``"kidney"``, then its other foreground labels' names.

    >>> structures("kits19"), structures("kits23")
    (('kidney', 'tumor'), ('kidney', 'tumor', 'cyst'))
    """
    names = get_dataset(dataset).label_names
    found = {names[v] for v in get_dataset(dataset).foreground_labels} | {"kidney"}
    return tuple(s for s in STRUCTURES if s in found)


def structure_mask(label: np.ndarray, name: str, dataset: Dataset | str | None = None) -> np.ndarray:
    """Boolean mask of one structure in a (z, y, x) label map of ``dataset`` (default KiTS19).

    ``"kidney"`` is the outermost region, every foreground label (label > 0: KiTS19's kidney
    region, KiTS23's kidney and masses); ``"tumor"`` (2) and ``"cyst"`` (3, KiTS23) are their label.
    """
    dataset = get_dataset(dataset)
    if name not in structures(dataset):
        raise ValueError(f"structure must be one of {structures(dataset)} ({dataset.name}), got {name!r}")
    if name == "kidney":
        return label > 0
    return label == dataset.label(name)


def label_surfaces(label: np.ndarray, spacing, max_dim: int = 96, dataset: Dataset | str | None = None) -> dict:
    """``{structure: surface | None}`` of a label map for each of the dataset's :func:`structures`
    (KiTS19: kidney, tumor; KiTS23: kidney, tumor, cyst); see :func:`mask_surface`."""
    return {name: mask_surface(structure_mask(label, name, dataset), spacing, max_dim)
            for name in structures(dataset)}


def bone_surface(image: np.ndarray, spacing, max_dim: int = 64, threshold_hu: float = BONE_HU):
    """Surface of CT voxels above ``threshold_hu`` (bone), coarse: context for the 3D view."""
    return mask_surface(image > threshold_hu, spacing, max_dim, smooth=0.8)


def case_surfaces(case: CaseData, max_dim: int = 96) -> dict:
    """All surfaces of a case: ``{("gt"|"pred", structure): surface, ("ct", "bone"): ...}`` with the
    structures of the case's dataset (``"cyst"`` for KiTS23)."""
    out: dict = {}
    for source, vol in (("gt", case.label), ("pred", case.prediction)):
        if vol is not None:
            for name, surf in label_surfaces(vol.array, vol.spacing, max_dim, case.dataset).items():
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
    """The frame around every label surface (ground truth and prediction, every structure) of
    :func:`case_surfaces` output; the bone's when there is no label; ``None`` when empty."""
    labels = [s for (source, _), s in surfaces.items() if source in ("gt", "pred")]
    bounds = surfaces_bounds(labels)
    if bounds is None:
        bounds = surfaces_bounds(surfaces.values())
    return None if bounds is None else frame_bounds(*bounds, viewport=viewport)


def surfaces_figure(surfaces: dict, mode: str = "side by side", title: str = ""):
    """A plotly ``Figure`` of ground truth and prediction surfaces.

    Every scene is framed on the union of all label surfaces (both kidneys, tumors, cysts, both
    sources; :mod:`kidneyseg.viewer.framing`), at the true shape (1 mm equally long on every axis);
    the CT bone is cropped to that box. The legend names every surface (``"ground truth cyst"``).

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
        for structure in STRUCTURES:
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


__all__ = ["STRUCTURES", "bone_surface", "case_surfaces", "label_frame", "label_surfaces", "mask_surface", "pool_mask",
           "scene_viewport", "structure_mask", "structures", "surfaces_figure"]
