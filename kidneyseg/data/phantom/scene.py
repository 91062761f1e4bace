"""One case's scene (anatomy, appearance, fields) and its rendering into HU, slab by slab.

:func:`build_scene` draws everything random about a case once; :meth:`Scene.render` then paints
slices ``z0:z1`` without any other state: tissue map (body, viscera, thorax, kidney surroundings,
spine/muscles/vessels, kidneys last) -> mean HU -> three texture fields -> scanner blur (with
a halo of slices so that slab edges see the same neighbours as a one-shot render) -> CT noise ->
int16 HU clipped to [-1024, 3071]. Rendering a volume in slabs of any size gives the same voxels
as rendering it in one piece (tests/test_data_phantom.py checks it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .appearance import PHASES, Appearance, draw_appearance
from .body import Anatomy, Body
from .fields import NoiseBank, ValueNoise
from .kidneys import KidneyTissue, kidney_tissue
from .organs import Layer, build_layers, paint_layers
from .shapes import Slab

#: Gaussian truncation (sigmas) of the scanner blur; the slab halo follows from it.
TRUNCATE = 2.0
#: Slices rendered at a time (float32 work arrays of this many slices).
SLAB = 24


@dataclass
class Scene:
    """Everything drawn for one case; :meth:`render` turns it into HU.

    Attributes:
        shape: (z, y, x) voxels. spacing: (z, y, x) mm.
    """

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    anat: Anatomy
    body: Body
    viscera: list[Layer]
    frame: list[Layer]
    kidneys: KidneyTissue | None
    app: Appearance
    fields: tuple[ValueNoise, ValueNoise]
    texture: NoiseBank
    noise: NoiseBank
    box: tuple[slice, slice]
    coarse_box: tuple | None

    @property
    def halo(self) -> int:
        return int(TRUNCATE * self.app.blur[1] + 0.5) if self.app.blur[1] > 0 else 0

    def tissue(self, slab: Slab) -> np.ndarray:
        """The (z, y, x) uint8 tissue ids of ``slab``."""
        t = np.empty(slab.shape, np.uint8)
        cavity = self.body.paint(t, slab)
        paint_layers(t, slab, self.viscera, cavity)
        self.body.paint_thorax(t, slab, cavity)
        if self.kidneys is not None:
            self.kidneys.apply(t, slab.z0, "around")
        paint_layers(t, slab, self.frame, None)
        if self.kidneys is not None:
            self.kidneys.apply(t, slab.z0, "inside")
        return t

    def render(self, z0: int, z1: int) -> np.ndarray:
        """HU of slices ``z0:z1``: a (z1 - z0, y, x) int16 array."""
        nz, ny, nx = self.shape
        h = self.halo
        lo, hi = max(0, z0 - h), min(nz, z1 + h)
        slab = Slab(lo, hi, ny, nx, self.spacing)
        t = self.tissue(slab)
        hu = self.app.hu[t]
        by, bx = self.box
        # Texture: fine from the per-slice bank, medium over the body, coarse only where it is used.
        sub_t, sub = t[:, by, bx], hu[:, by, bx]
        self.texture.add_to(sub, lo, self.app.fine[sub_t], by, bx)
        sub += self.app.medium[sub_t] * self.fields[0].sample(slab.zmm, slab.ymm[by], slab.xmm[bx])
        if self.coarse_box is not None:
            w = slab.window(*self.coarse_box)
            if w is not None:
                hu[w] += self.app.coarse[t[w]] * self.fields[1].sample(slab.zmm[w[0]], slab.ymm[w[1]], slab.xmm[w[2]])
        # Scanner blur inside the body's box (outside it: air and table).
        bxy, bz = self.app.blur
        if bxy > 0:
            hu[:, by, bx] = ndimage.gaussian_filter(sub, (bz, bxy, bxy), mode="nearest", truncate=TRUNCATE)
        out = hu[z0 - lo: z0 - lo + (z1 - z0)]
        self.noise.add_to(out, z0, self.app.noise_hu, slice(0, ny), slice(0, nx))
        np.rint(out, out=out)
        np.clip(out, -1024, 3071, out=out)
        return out.astype(np.int16)

    def render_all(self, slab: int = SLAB) -> np.ndarray:
        """The whole (z, y, x) volume as int16 HU, rendered ``slab`` slices at a time."""
        out = np.empty(self.shape, np.int16)
        for z0 in range(0, self.shape[0], slab):
            z1 = min(self.shape[0], z0 + slab)
            out[z0:z1] = self.render(z0, z1)
        return out


def build_scene(label, spacing, anat: Anatomy, rng: np.random.Generator, *, noise_hu: float, blur: float,
                phases=(0.65, 0.35)) -> Scene:
    """Draw one case's scene around ``label`` (a (z, y, x) map, any memory order) and ``anat``.

    Args:
        label: kidney/tumor label (0 background, 1 kidney, 2 tumor, 3 cyst).
        spacing: (z, y, x) mm. anat: where the body goes. rng: the case's random generator.
        noise_hu: noise standard deviation, HU. blur: in-plane Gaussian sigma, voxels (z: half).
        phases: probabilities of the corticomedullary and nephrographic phases.
    """
    shape = tuple(int(s) for s in label.shape)
    spacing = tuple(float(s) for s in spacing)
    phase = PHASES[int(rng.choice(len(PHASES), p=np.asarray(phases, float)))]
    app = draw_appearance(rng, phase, noise_hu, (float(blur), 0.5 * float(blur)))
    body = Body(anat, rng, shape[1], shape[2], spacing)
    viscera, frame = build_layers(anat, rng, contrast=bool(rng.random() < 0.5))
    kid = kidney_tissue(label, spacing, anat, rng)
    extent = [n * d for n, d in zip(shape, spacing)]
    fields = (ValueNoise(rng, (6.0, 6.0, 6.0), (0, 0, 0), extent), ValueNoise(rng, (20.0, 20.0, 20.0), (0, 0, 0), extent))
    texture = NoiseBank(rng, shape[0], shape[1], shape[2], sigma=max(0.5, 1.0 / spacing[1]), periods=(128, 113))
    noise = NoiseBank(rng, shape[0], shape[1], shape[2], sigma=0.7)
    coarse = [ly.shape.bounds() for ly in viscera + frame if app.coarse[ly.tid] != 0]
    coarse_box = (np.min([c[0] for c in coarse], axis=0), np.max([c[1] for c in coarse], axis=0)) if coarse else None
    return Scene(shape, spacing, anat, body, viscera, frame, kid, app, fields, texture, noise, body.box, coarse_box)
