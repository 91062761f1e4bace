#!/usr/bin/env python
"""Make the phantom pictures of docs/data.md (run from the repository root).

    python docs/img/make_phantom_figures.py [--kits19 ../shared/kits19]

Writes docs/img/phantom_synthetic.png (a default 512 x 512 synthetic case and a 160-pixel
demo-size one), and, when the KiTS19 labels are present, docs/img/phantom_painted.png (CT painted
into case_00090's real label). Axial slices at the kidneys' middle and a coronal slice through
them, abdomen window (-160..240 HU), real aspect ratio; the label outlines are drawn in red
(kidney) and yellow (tumor).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from kidneyseg.data.phantom import PhantomOptions, case_seed, painted_scene, synthetic_scene  # noqa: E402
from kidneyseg.data.phantom.stream import LabelFile  # noqa: E402

OUT = Path(__file__).resolve().parent
WINDOW = dict(cmap="gray", vmin=-160, vmax=240, interpolation="nearest")


def _panels(axes, image, label, spacing, title):
    z = int(np.nonzero((label > 0).any(axis=(1, 2)))[0].mean())
    tumor = np.nonzero((label == 2).any(axis=(1, 2)))[0]
    zt = int(tumor.mean()) if len(tumor) else z
    y = int(np.nonzero((label > 0).any(axis=(0, 2)))[0].mean())
    for ax, zz in zip(axes[:2], (z, zt)):
        ax.imshow(image[zz], **WINDOW)
        ax.contour(label[zz], [0.5, 1.5], colors=["r", "y"], linewidths=0.4)
        ax.set_title(f"{title}: axial z={zz}", fontsize=8)
    axes[2].imshow(image[:, y, :], aspect=spacing[0] / spacing[2], **WINDOW)
    axes[2].set_title(f"coronal y={y} ({spacing[0]:g} x {spacing[1]:.2f} mm)", fontsize=8)
    for ax in axes:
        ax.axis("off")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kits19", default="../shared/kits19")
    args = ap.parse_args()
    fig, axes = plt.subplots(2, 3, figsize=(10.5, 7.4))
    for row, (seed, size) in zip(axes, ((1, 512), (6, 160))):
        label, scene, _ = synthetic_scene(seed, PhantomOptions.from_kwargs(size=size))
        _panels(row, scene.render_all(), label, scene.spacing, f"seed {seed}, {size} px, {scene.app.phase[:5]}.")
    fig.tight_layout()
    fig.savefig(OUT / "phantom_synthetic.png", dpi=72)
    src = Path(args.kits19) / "case_00090" / "segmentation.nii.gz"
    if src.exists():
        lab = LabelFile(src)
        scene = painted_scene(lab.array, lab.spacing, case_seed(0, "case_00090"))
        label = np.ascontiguousarray(lab.array)
        fig, axes = plt.subplots(1, 3, figsize=(10.5, 3.9))
        _panels(axes, scene.render_all(), label, scene.spacing, f"case_00090 painted, {scene.app.phase[:5]}.")
        fig.tight_layout()
        fig.savefig(OUT / "phantom_painted.png", dpi=72)


if __name__ == "__main__":
    main()
