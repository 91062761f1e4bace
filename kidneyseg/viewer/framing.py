"""Framing the 3D view: scene ranges, true-shape aspect ratio and a camera that shows every label mesh.

The scene is cut to the box of the label surfaces (kidney and tumor, ground truth and prediction,
in RAS mm) plus a margin, so both kidneys fill the view whatever the CT's extent; the faint bone
surface is cropped to that box. The aspect ratio is the box's extents in mm (1 mm is as long on
every axis, so anisotropic spacing shows the organs' true shape), and the camera is placed from the
front, slightly above, just far enough that the whole box is inside the viewport.

Plotly's ``aspectmode="data"`` is not used: plotly.js takes that ratio from the extents of *all*
trace data (the uncropped bone too), not from the axis ranges, so a box narrower than the data
would be drawn stretched. ``aspectmode="manual"`` with the box's own extents is exact.

Camera model (plotly.js gl3d, checked in its source for plotly 7.1 and by the browser test): the
box becomes ``[-a/2, a/2]`` per axis in world units (``a`` = aspect ratio), the camera looks from
``eye`` at ``center`` (0, 0, 0) with a perspective of vertical field of view 45 degrees and the
viewport's width/height ratio.

>>> import numpy as np
>>> verts = np.array([[-80.0, -20, -60], [80, 20, 60]])
>>> f = frame_bounds(verts.min(0), verts.max(0), viewport=(540, 420))
>>> f.contains(verts), f.aspectratio[0]
(True, 1.0)
>>> bool(f.fits_viewport(f.corners()))
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: plotly.js gl3d's vertical field of view (radians).
FOVY = math.pi / 4
#: Where the camera looks from (RAS): the patient's front, a little from above.
VIEW_DIRECTION = (0.0, 1.0, 0.26)
UP = (0.0, 0.0, 1.0)
#: Margin around the label box on each side: this fraction of its largest extent, at least MIN_MARGIN_MM.
MARGIN_FRACTION = 0.06
MIN_MARGIN_MM = 4.0
#: Extra distance factor of the camera beyond the tightest fit (keeps meshes off the edges).
SLACK = 1.04


@dataclass(frozen=True)
class SceneFrame:
    """What a plotly scene needs to show a box of RAS space at its true shape.

    Attributes:
        ranges: ``((xmin, xmax), (ymin, ymax), (zmin, zmax))`` in RAS mm (x = R, y = A, z = S).
        aspectratio: extents of ``ranges`` divided by the largest one (the largest is 1.0).
        eye: plotly camera eye (world units of the normalised box, centre at the origin).
        viewport: ``(width, height)`` in pixels the camera was fitted to.
    """

    ranges: tuple[tuple[float, float], tuple[float, float], tuple[float, float]]
    aspectratio: tuple[float, float, float]
    eye: tuple[float, float, float]
    viewport: tuple[float, float]

    def contains(self, points) -> bool:
        """Whether every point ``[N, 3]`` (RAS mm) lies inside the ranges."""
        p = np.asarray(points, float).reshape(-1, 3)
        lo, hi = (np.array([r[i] for r in self.ranges]) for i in (0, 1))
        return bool(np.all((p >= lo) & (p <= hi)))

    def corners(self) -> np.ndarray:
        """The 8 corners ``[8, 3]`` of the ranges box (RAS mm)."""
        return np.array([[x, y, z] for x in self.ranges[0] for y in self.ranges[1] for z in self.ranges[2]])

    def to_world(self, points) -> np.ndarray:
        """RAS mm -> plotly world units (the box ``[-a/2, a/2]`` per axis)."""
        p = np.asarray(points, float).reshape(-1, 3)
        lo = np.array([r[0] for r in self.ranges])
        extent = np.array([r[1] - r[0] for r in self.ranges])
        return (p - lo) / extent * np.array(self.aspectratio) - np.array(self.aspectratio) / 2.0

    def project(self, points) -> np.ndarray:
        """Normalised screen coordinates ``[N, 2]`` of RAS points: (-1, -1)..(1, 1) is the viewport."""
        world = self.to_world(points)
        right, up, forward = _camera_axes(np.array(self.eye))
        rel = world - np.array(self.eye)
        depth = rel @ forward
        tan_y = math.tan(FOVY / 2)
        tan_x = tan_y * self.viewport[0] / self.viewport[1]
        return np.stack([(rel @ right) / (depth * tan_x), (rel @ up) / (depth * tan_y)], axis=1)

    def fits_viewport(self, points) -> bool:
        """Whether every point (RAS mm) projects inside the viewport (in front of the camera)."""
        screen = self.project(points)
        return bool(np.all(np.abs(screen) <= 1.0 + 1e-9))

    def scene_layout(self) -> dict:
        """The plotly ``layout.scene`` entries: axis ranges, manual aspect ratio, camera."""
        axes = {f"{name}axis": dict(range=list(rng), autorange=False)
                for name, rng in zip("xyz", self.ranges)}
        return dict(**axes, aspectmode="manual",
                    aspectratio=dict(zip("xyz", self.aspectratio)),
                    camera=dict(eye=dict(zip("xyz", self.eye)), center=dict(x=0, y=0, z=0),
                                up=dict(zip("xyz", UP)), projection=dict(type="perspective")))


def _camera_axes(eye: np.ndarray):
    forward = -eye / np.linalg.norm(eye)
    right = np.cross(forward, UP)
    right /= np.linalg.norm(right)
    return right, np.cross(right, forward), forward


def frame_bounds(lo, hi, viewport: tuple[float, float], margin_fraction: float = MARGIN_FRACTION,
                 min_margin_mm: float = MIN_MARGIN_MM) -> SceneFrame:
    """The frame of an RAS box ``lo..hi`` (mm, x/y/z) seen in a ``viewport`` of (width, height) pixels.

    The box grows by a margin on every side; the camera looks along :data:`VIEW_DIRECTION` and sits
    at the smallest distance (times :data:`SLACK`) at which all 8 corners project inside the viewport.
    """
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    if lo.shape != (3,) or hi.shape != (3,) or not np.all(np.isfinite(lo)) or not np.all(hi >= lo):
        raise ValueError(f"bounds must be two finite (x, y, z) points with hi >= lo, got {lo!r}, {hi!r}")
    width, height = viewport
    if not (width > 0 and height > 0):
        raise ValueError(f"viewport must be (width, height) > 0 pixels, got {viewport!r}")
    margin = max(margin_fraction * float((hi - lo).max()), min_margin_mm)
    lo, hi = lo - margin, hi + margin
    extent = hi - lo
    aspect = extent / extent.max()
    direction = np.array(VIEW_DIRECTION) / np.linalg.norm(VIEW_DIRECTION)
    right, up, forward = _camera_axes(direction)
    tan_y = math.tan(FOVY / 2)
    tan_x = tan_y * width / height
    corners = np.array([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)]) * aspect
    # camera at d * direction: a corner p is at depth d - p.direction and screen offsets p.right, p.up
    need = corners @ direction + np.maximum(np.abs(corners @ right) / tan_x, np.abs(corners @ up) / tan_y)
    distance = float(need.max()) * SLACK
    return SceneFrame(
        ranges=tuple((float(a), float(b)) for a, b in zip(lo, hi)),  # type: ignore[arg-type]
        aspectratio=tuple(float(a) for a in aspect),  # type: ignore[arg-type]
        eye=tuple(float(v) for v in direction * distance),  # type: ignore[arg-type]
        viewport=(float(width), float(height)),
    )


def surfaces_bounds(surfaces) -> tuple[np.ndarray, np.ndarray] | None:
    """``(lo, hi)`` RAS mm over the vertices of the given ``(vertices, faces)`` surfaces (``None``s
    skipped); ``None`` when there is none."""
    verts = [s[0] for s in surfaces if s is not None and len(s[0])]
    if not verts:
        return None
    return np.min([v.min(0) for v in verts], axis=0), np.max([v.max(0) for v in verts], axis=0)


def crop_surface(surface, frame: SceneFrame):
    """The triangles of ``surface`` whose three vertices lie inside ``frame``'s ranges, re-indexed;
    ``None`` when none does (or ``surface`` is ``None``)."""
    if surface is None:
        return None
    verts, faces = surface
    lo = np.array([r[0] for r in frame.ranges])
    hi = np.array([r[1] for r in frame.ranges])
    inside = np.all((verts >= lo) & (verts <= hi), axis=1)
    keep = inside[faces].all(axis=1)
    if not keep.any():
        return None
    faces = faces[keep]
    used = np.unique(faces)
    remap = np.full(len(verts), -1, np.int64)
    remap[used] = np.arange(len(used))
    return verts[used], remap[faces].astype(np.int32)


__all__ = ["FOVY", "SceneFrame", "crop_surface", "frame_bounds", "surfaces_bounds"]
