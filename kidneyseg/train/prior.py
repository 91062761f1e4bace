"""The stage-2 prior: stage-1 labels as extra input channels, simulated in training by perturbing the truth.

Stage 2 of the cascade sees the CT plus the one-hot stage-1 prediction (kidney, tumor). At
inference the prior is the real stage-1 output. nnU-Net's cascade trains stage 2 on out-of-fold
stage-1 predictions (a 5-fold cross-validation of stage 1, then a prediction pass over every
training case) and corrupts them further with random binary operators and removed components.
We keep only the corruption and apply it to the ground truth: no extra trainings, no prediction
pass. The corruption imitates what a coarse stage-1 network gets wrong: boundaries off by a few
voxels (dilation / erosion), missed or spurious components (dropped components), misregistration
from the coarse grid (small shifts, blocky upsampling), kidney and tumor confused (label swaps
inside a component), a tumor seen as kidney (a small tumor the coarse grid misses: the stage-1 failure
the demo's validation shows) and, rarely, nothing found (an empty prior). The network thus learns to use
the prior without trusting it blindly. See ``docs/augment.md`` for the trade-off.

The prior's channel layout (one-hot kidney, tumor) is the model-input contract of
:func:`kidneyseg.model.inputs.prior_channels`, which training and inference share.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

#: 6-connected structuring element (one voxel step along each axis).
_CROSS = ndimage.generate_binary_structure(3, 1)


@dataclass
class PriorPerturbation:
    """Probabilities and sizes of the ground-truth corruptions (per patch, per component).

    Attributes:
        p_empty: probability of an all-background prior.
        p_morph: probability, per class region (kidney+tumor, tumor), of a dilation or erosion.
        max_iterations: largest dilation/erosion radius in voxels (drawn from 1..max_iterations).
        p_drop: probability each connected foreground component is removed.
        p_swap: probability, per component, that kidney and tumor labels are swapped inside it.
        p_tumor_missed: probability, per connected tumor component, that it is relabelled kidney
            (stage 1 found the kidney but not the tumor in it).
        p_shift: probability of shifting the whole prior.
        max_shift: largest shift in (full-resolution) voxels per axis.
        coarsen: work on every ``coarsen``-th voxel and repeat back (1 = full resolution);
            ``max_iterations`` is then in coarse voxels.
    """

    p_empty: float = 0.02
    p_morph: float = 0.4
    max_iterations: int = 2
    p_drop: float = 0.1
    p_swap: float = 0.1
    p_tumor_missed: float = 0.0
    p_shift: float = 0.3
    max_shift: int = 3
    coarsen: int = 2

    def __post_init__(self) -> None:
        for name in ("p_empty", "p_morph", "p_drop", "p_swap", "p_tumor_missed", "p_shift"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
        for name in ("max_iterations", "max_shift"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if int(self.coarsen) < 1:
            raise ValueError(f"coarsen must be >= 1, got {self.coarsen!r}")


def _morph(mask: np.ndarray, rng: np.random.Generator, cfg: PriorPerturbation) -> np.ndarray:
    """Dilate or erode ``mask`` by 1..max_iterations voxels, working on its bounding box only."""
    if cfg.max_iterations < 1 or not mask.any():
        return mask
    it = int(rng.integers(1, cfg.max_iterations + 1))
    dilate = bool(rng.random() < 0.5)
    # Restrict the work to the mask's bounding box (+ margin): much faster on a mostly empty patch.
    nz = np.nonzero(mask)
    lo = [max(0, int(a.min()) - it - 1) for a in nz]
    hi = [min(s, int(a.max()) + it + 2) for a, s in zip(nz, mask.shape)]
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    out = mask.copy()
    op = ndimage.binary_dilation if dilate else ndimage.binary_erosion
    out[box] = op(mask[box], structure=_CROSS, iterations=it, border_value=0 if dilate else 1)
    return out


def perturb_prior(label: np.ndarray, rng: np.random.Generator, cfg: PriorPerturbation | None = None) -> np.ndarray:
    """A plausible stage-1 prediction made from the ground truth (see the module docstring).

    With ``cfg.coarsen = f > 1`` the label is first taken every ``f`` voxels (as a coarse
    stage-1 network sees it), corrupted there, and repeated back to full size; this mimics the
    blocky upsampled stage-1 output and makes the corruption about f**3 times cheaper.

    Args:
        label: (z, y, x) uint8 ground truth in {0, 1, 2} (KiTS23: {0, 1, 2, 3}; a patch or a whole case).
        rng: numpy random generator (the only source of randomness).
        cfg: probabilities and sizes; defaults to :class:`PriorPerturbation()`.

    Returns:
        (z, y, x) uint8 with the input's label values, a new array of the same shape.

    >>> label = np.zeros((10, 10, 10), np.uint8); label[3:7, 3:7, 3:7] = 1
    >>> none = PriorPerturbation(p_empty=0, p_morph=0, p_drop=0, p_swap=0, p_shift=0, coarsen=1)
    >>> bool((perturb_prior(label, np.random.default_rng(0), none) == label).all())
    True
    """
    cfg = cfg or PriorPerturbation()
    label = np.asarray(label)
    if label.ndim != 3:
        raise ValueError(f"label must be (z, y, x), got shape {label.shape}")
    if rng.random() < cfg.p_empty:
        return np.zeros(label.shape, np.uint8)
    f = int(cfg.coarsen) if min(label.shape) > int(cfg.coarsen) // 2 else 1
    out = label[f // 2::f, f // 2::f, f // 2::f].astype(np.uint8, copy=True)

    # Components: drop some, swap kidney <-> tumor inside others.
    if out.any() and (cfg.p_drop > 0 or cfg.p_swap > 0):
        components, n = ndimage.label(out > 0, structure=_CROSS)
        drop = rng.random(n) < cfg.p_drop
        swap = rng.random(n) < cfg.p_swap
        if swap.any():
            swapped = np.r_[False, swap][components] & ((out == 1) | (out == 2))
            out[swapped] = 3 - out[swapped]  # 1 <-> 2 (a KiTS23 cyst, 3, stays)
        if drop.any():
            out[np.r_[False, drop][components]] = 0

    # Tumors the coarse grid missed: a tumor component becomes kidney (its kidney is still found).
    if cfg.p_tumor_missed > 0 and (out == 2).any():
        tumors, n = ndimage.label(out == 2, structure=_CROSS)
        missed = rng.random(n) < cfg.p_tumor_missed
        if missed.any():
            out[np.r_[False, missed][tumors]] = 1

    # Boundaries: dilate/erode the foreground region, then the tumor inside it (cysts keep their place).
    if out.any() and cfg.p_morph > 0:
        fg, tumor, cyst = out > 0, out == 2, out == 3
        if rng.random() < cfg.p_morph:
            fg = _morph(fg, rng, cfg)
        if rng.random() < cfg.p_morph:
            tumor = _morph(tumor, rng, cfg)
        out = fg.astype(np.uint8)
        out[cyst & fg] = 3
        out[tumor] = 2

    # Misregistration: a shift of a few (full-resolution) voxels, edges replicated; done in the same
    # gather that repeats the coarse label back to full size (np.take per axis: one cheap pass each).
    shift = np.zeros(3, int)
    if cfg.max_shift > 0 and rng.random() < cfg.p_shift:
        shift = rng.integers(-cfg.max_shift, cfg.max_shift + 1, size=3)
    if f == 1 and not shift.any():
        return out
    for axis in (2, 1, 0):  # the full-size axis last: the big copy happens once
        index = np.clip((np.arange(label.shape[axis]) - int(shift[axis])) // f, 0, out.shape[axis] - 1)
        out = out.take(index, axis=axis)
    return np.ascontiguousarray(out)
