"""The in-memory phantom API: a synthetic case, or CT painted into a given label map.

Every random choice of a case comes from one generator seeded with the case's seed, drawn in a
fixed order (geometry, label, appearance, anatomy, kidney tissue, fields, noise), so a seed always
gives the same case, whatever the process, worker count or slab size that renders it.
"""

from __future__ import annotations

import numpy as np

from ...io import Volume, new_volume
from ..cysts import CYST_LABEL, place_cysts
from ..datasets import get_dataset
from .body import Anatomy
from .options import PhantomOptions
from .placement import anatomy_from_label, draw_synthetic
from .scene import Scene, build_scene


def case_rng(seed) -> np.random.Generator:
    """The generator of one case: ``seed`` is an int or a tuple of ints (e.g. ``(run_seed, case)``)."""
    return np.random.default_rng(np.random.SeedSequence(seed))


def draw_cysts(label: np.ndarray, spacing, seed, opts: PhantomOptions) -> None:
    """KiTS23 phantoms: cysts (label 3) drawn into ``label`` in place, before it is painted.

    They come from their own random stream (the case's seed plus the cyst label), so a KiTS23
    phantom has the same geometry, anatomy and draws as its KiTS19 twin, plus the cysts.
    """
    if CYST_LABEL not in get_dataset(opts.dataset).label_values:
        return
    rng = case_rng((*np.atleast_1d(seed).tolist(), CYST_LABEL))
    n = int(rng.choice(len(opts.cyst_counts), p=np.asarray(opts.cyst_counts, float)))
    place_cysts(label, spacing, rng, n, radius_mm=opts.cyst_radius_mm)


def synthetic_scene(seed, opts: PhantomOptions) -> tuple[np.ndarray, Scene, float]:
    """``(label, scene, largest tumor diameter cm)`` of synthetic case ``seed``."""
    rng = case_rng(seed)
    label, spacing, anat, diam = draw_synthetic(rng, opts)
    draw_cysts(label, spacing, seed, opts)
    noise = float(rng.uniform(*opts.noise_hu))
    scene = build_scene(label, spacing, anat, rng, noise_hu=noise, blur=float(opts.blur), phases=opts.phases)
    return label, scene, diam


def painted_scene(label: np.ndarray, spacing, seed, noise_hu=(12.0, 25.0), blur: float = 0.6,
                  phases=(0.65, 0.35), anatomy: Anatomy | None = None) -> Scene:
    """The scene that paints CT into ``label`` ((z, y, x), any memory order) for ``seed``."""
    rng = case_rng(seed)
    anat = anatomy if anatomy is not None else anatomy_from_label(label, spacing, rng)
    noise = float(rng.uniform(*noise_hu))
    return build_scene(label, spacing, anat, rng, noise_hu=noise, blur=blur, phases=phases)


def make_phantom(seed: int | tuple[int, ...] = 0, **opts) -> tuple[Volume, Volume]:
    """One synthetic case: a CT-like image and its label, deterministic per seed.

    Args:
        seed: int (or tuple of ints) seeding every random choice.
        **opts: fields of :class:`PhantomOptions` (``size``, ``spacing_xy``, ``spacing_z``,
            ``slices``, ``coverage_mm``, ``body_width_mm``, ``noise_hu``, ``tumor_counts``,
            ``blur``, ``kidney_scale``, ``phases``, ``dataset``, ``cyst_counts``, ``cyst_radius_mm``).

    Returns:
        ``(image, label)``: canonical (z, y, x) volumes with a KiTS19-style affine; the image is
        float32 HU (integer values), the label uint8 in {0, 1, 2} (3: cyst with ``dataset="kits23"``).

    >>> image, label = make_phantom(3, size=64)
    >>> image.shape == label.shape and image.shape[1:] == (64, 64)
    True
    """
    image, label, _ = make_case(seed, PhantomOptions.from_kwargs(**opts))
    return image, label


def make_case(seed, opts: PhantomOptions) -> tuple[Volume, Volume, float]:
    """:func:`make_phantom` plus the largest tumor's diameter (cm, 0 without tumor)."""
    label, scene, diam = synthetic_scene(seed, opts)
    image = scene.render_all().astype(np.float32)
    return new_volume(image, scene.spacing), new_volume(label, scene.spacing), diam


def paint_ct(label: np.ndarray, spacing, seed=0, anatomy: Anatomy | None = None, noise_hu: float | None = None,
             blur: float = 0.6) -> np.ndarray:
    """Paint a CT-like image (HU) around and into a kidney/tumor label map, in one piece.

    Args:
        label: (z, y, x) uint8, 0 background, 1 kidney, 2 tumor (3 cyst).
        spacing: (z, y, x) voxel size, mm.
        seed: seed of the random choices (int or tuple).
        anatomy: body placement; fitted around the label's kidneys when ``None``.
        noise_hu: noise standard deviation, HU (``None``: drawn in 12-25).
        blur: scanner blur sigma in voxels (in-plane; half of it along z).

    Returns:
        (z, y, x) float32 HU, integer values in [-1024, 3071].
    """
    noise = (12.0, 25.0) if noise_hu is None else (float(noise_hu), float(noise_hu))
    scene = painted_scene(label, spacing, seed, noise, blur, anatomy=anatomy)
    return scene.render_all().astype(np.float32)


def phantom_from_label(label: Volume, seed=0, noise_hu: tuple[float, float] = (12.0, 25.0),
                       blur: float = 0.6) -> Volume:
    """Paint the CT model into a (real) label volume; the image keeps its geometry.

    Args:
        label: a label :class:`Volume` (e.g. a KiTS19 ``segmentation.nii.gz``).
        seed: seed of the random choices.

    Returns:
        The float32 HU image on the label's grid (same shape, affine and source geometry).
    """
    scene = painted_scene(label.array, label.spacing, seed, noise_hu, blur)
    return label.with_array(scene.render_all().astype(np.float32))
