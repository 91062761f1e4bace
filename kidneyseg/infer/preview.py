"""One PNG per case for a quick look (``predict --preview``): axial, coronal and sagittal planes.

The three planes cross at the centre of the largest tumor (or of the kidneys when there is no
tumor), the CT is shown in the abdomen window (W400/L40,
:data:`kidneyseg.preprocess.intensity.WINDOWS`), the labels as outlines in their segment colours
(:data:`kidneyseg.io.segments.SEGMENTS`: kidney region brown-red, tumor yellow), each panel has a
scale bar in mm and orientation letters at its edges. The letters come from the volume's affine
(:func:`edge_letters`), not from an assumed array order, so an axial panel shows the patient's
right on the image's left (radiological convention) exactly when the affine says so.

Pixels are square in mm. Each panel is cut to the body (above -500 HU) plus
:data:`BODY_MARGIN_MM`, and coronal and sagittal panels to the labelled region plus
:data:`Z_MARGIN_MM` above and below, so a long scan does not turn them into thin strips. Only the
three planes are read from the volume.

>>> letters = edge_letters(np.diag([-0.8, -0.8, -2.5, 1.0])[:, [2, 1, 0, 3]], row_axis=1, col_axis=2)
>>> letters["left"], letters["right"], letters["top"], letters["bottom"]
('R', 'L', 'A', 'P')
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import atomic_path
from ..io import Volume
from ..io.segments import SEGMENTS
from ..measure.components import bounding_box
from ..measure.focus import focus_point
from ..measure.statistics import BODY_HU
from ..preprocess.intensity import WINDOWS, window

__all__ = ["Z_MARGIN_MM", "edge_letters", "save_preview"]

#: Coronal/sagittal panels show the labelled z-range plus this much above and below (mm).
Z_MARGIN_MM = 60.0
#: Each panel is cut to the body (voxels above ``BODY_HU``) plus this margin (mm).
BODY_MARGIN_MM = 10.0
_LETTERS = (("L", "R"), ("P", "A"), ("I", "S"))  # RAS: (towards -, towards +) per world axis


def _letter(direction: np.ndarray) -> str:
    c = int(np.argmax(np.abs(direction)))
    return _LETTERS[c][1 if direction[c] > 0 else 0]


def edge_letters(affine: np.ndarray, row_axis: int, col_axis: int) -> dict[str, str]:
    """The patient direction at each edge of a plane shown with ``row_axis`` down and ``col_axis`` across.

    Args:
        affine: 4x4 voxel -> world RAS of the volume.
        row_axis, col_axis: the volume axes that run down the image's rows and across its columns.

    Returns:
        ``{"left", "right", "top", "bottom"}`` -> one of R, L, A, P, S, I (the world axis nearest
        the voxel axis).
    """
    a = np.asarray(affine, float)
    col, row = a[:3, col_axis], a[:3, row_axis]
    return {"left": _letter(-col), "right": _letter(col), "top": _letter(-row), "bottom": _letter(row)}


def _body_crop(image2d: np.ndarray, labels2d: np.ndarray, spacing_rc) -> tuple[slice, slice]:
    """The plane cut to the body (voxels above :data:`BODY_HU`) and the labels, plus :data:`BODY_MARGIN_MM`."""
    keep = (np.asarray(image2d) > BODY_HU) | (labels2d > 0)
    box = bounding_box(keep)
    if box is None:
        return slice(None), slice(None)
    return tuple(slice(max(b.start - int(round(BODY_MARGIN_MM / s)), 0), min(b.stop + int(round(BODY_MARGIN_MM / s)), n))
                 for b, s, n in zip(box, spacing_rc, image2d.shape))  # type: ignore[return-value]


def _scale_bar_mm(width_mm: float) -> float:
    for length in (200, 100, 50, 20, 10, 5, 2, 1):
        if length <= 0.3 * width_mm:
            return float(length)
    return 1.0


def _panel(ax, image2d, labels2d, spacing_rc, letters, title, lo, hi):
    h, w = image2d.shape
    sy, sx = spacing_rc
    extent = (0.0, w * sx, h * sy, 0.0)
    ax.imshow(window(image2d, hi - lo, (hi + lo) / 2), cmap="gray", vmin=0, vmax=1, extent=extent,
              interpolation="bilinear")
    xs, ys = (np.arange(w) + 0.5) * sx, (np.arange(h) + 0.5) * sy
    for seg, mask in ((SEGMENTS[0], labels2d > 0), (SEGMENTS[1], labels2d == 2)):
        if mask.any() and not mask.all():
            ax.contour(xs, ys, mask.astype(np.float32), levels=[0.5], colors=[np.array(seg.rgb) / 255.0],
                       linewidths=1.4)
    kw = dict(color="#3ee6ff", fontsize=12, fontweight="bold", ha="center", va="center")
    W, H = w * sx, h * sy
    ax.text(0.03 * W, H / 2, letters["left"], **kw)
    ax.text(0.97 * W, H / 2, letters["right"], **kw)
    ax.text(W / 2, 0.04 * H, letters["top"], **kw)
    ax.text(W / 2, 0.96 * H, letters["bottom"], **kw)
    bar = _scale_bar_mm(W)
    x0, y0 = 0.05 * W, 0.90 * H
    ax.plot([x0, x0 + bar], [y0, y0], color="white", linewidth=3, solid_capstyle="butt")
    ax.text(x0 + bar / 2, y0 - 0.025 * H, f"{bar:g} mm", color="white", fontsize=9, ha="center", va="bottom")
    ax.set_xlim(0, W)
    ax.set_ylim(H, 0)
    ax.set_title(title, fontsize=10)
    ax.set_axis_off()


def _summary(stats) -> str:
    if stats is None:
        return ""
    parts = [f"{k.side} kidney {k.volume_ml:.0f} ml" for k in stats.kidneys] or ["no kidney found"]
    if stats.tumors:
        t = stats.tumors[0]
        parts.append(f"{stats.tumor_count} tumor{'s' if stats.tumor_count > 1 else ''}, "
                     f"{stats.tumor_burden_ml:.1f} ml; largest ({t.kidney}) {t.diameter_3d_mm:.0f} mm 3-D, "
                     f"{t.diameter_axial_mm:.0f} mm axial")
    else:
        parts.append("no tumor")
    return " | ".join(parts)


def save_preview(volume: Volume, labels: np.ndarray, path: os.PathLike | str, case_id: str = "",
                 stats=None, dpi: int = 100) -> Path:
    """Write the three-plane preview PNG of a CT and its (z, y, x) labels (atomically).

    Args:
        volume: the canonical CT (HU) the labels were predicted on.
        labels: uint8 (z, y, x) on ``volume``'s grid.
        path: the ``.png`` to write.
        case_id: shown in the title.
        stats: a :class:`~kidneyseg.measure.statistics.CaseStatistics` to print under the title.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    img = volume.array
    if tuple(labels.shape) != tuple(img.shape):
        raise ValueError(f"labels shape {labels.shape} differs from the image's {img.shape}")
    sz, sy, sx = volume.spacing
    k, j, i = focus_point(labels) or tuple(n // 2 for n in labels.shape)
    box = bounding_box(labels)
    zr = (0, img.shape[0]) if box is None else (box[0].start, box[0].stop)
    margin = int(round(Z_MARGIN_MM / sz))
    z0, z1 = max(zr[0] - margin, 0), min(zr[1] + margin, img.shape[0])
    lo, hi = WINDOWS["abdomen"][1] - WINDOWS["abdomen"][0] / 2, WINDOWS["abdomen"][1] + WINDOWS["abdomen"][0] / 2
    aff = volume.affine
    planes = [  # (image, labels, (row, column) spacing, letters, title)
        (img[k], labels[k], (sy, sx), edge_letters(aff, 1, 2), f"axial (slice {k})"),
        (img[z0:z1, j], labels[z0:z1, j], (sz, sx), edge_letters(aff, 0, 2), f"coronal (row {j})"),
        (img[z0:z1, :, i], labels[z0:z1, :, i], (sz, sy), edge_letters(aff, 0, 1), f"sagittal (column {i})"),
    ]
    panels = [(im2[c], lab2[c], sp, letters, title) for im2, lab2, sp, letters, title in planes
              for c in [_body_crop(im2, lab2, sp)]]
    widths = [p[0].shape[1] * p[2][1] for p in panels]
    heights = [p[0].shape[0] * p[2][0] for p in panels]
    height_in = 4.2
    fig = Figure(figsize=(sum(w / h for w, h in zip(widths, heights)) * height_in * 1.02 + 0.4, height_in + 0.9),
                 dpi=dpi)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3, gridspec_kw={"width_ratios": [w / h for w, h in zip(widths, heights)]})
    for ax, (im2, lab2, sp, letters, title) in zip(axes, panels):
        _panel(ax, im2, lab2, sp, letters, title, lo, hi)
    title = f"{case_id}   abdomen window W{WINDOWS['abdomen'][0]:g}/L{WINDOWS['abdomen'][1]:g}"
    summary = _summary(stats)
    fig.suptitle(title + (f"\n{summary}" if summary else ""), fontsize=10)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.02, top=0.84, wspace=0.04)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", facecolor="white")
    return path
