"""Stage-2 probabilities saved inside the ROI box only (``predict --save-probabilities``), and placed back.

The cascade's second stage sees only the ROI box, resampled to the plan's target spacing, so
that is where its softmax exists. :class:`BoxProbabilities` keeps the kidney and tumor channels
there as float16 with the box's position on the original grid, and is written as
``<case>.probabilities.npz``:

===================  ==========================================================================
key                  meaning
===================  ==========================================================================
``kidney``           float16 (z, y, x): softmax probability of label 1 (kidney tissue) per box voxel
``tumor``            float16 (z, y, x): softmax probability of label 2 (tumor)
``offset``           3 floats: the original canonical voxel index of box voxel (0, 0, 0)
``step``             3 floats: original voxels per box voxel along z, y, x
``original_shape``   the CT's canonical (z, y, x) shape
``affine``           4x4: box voxel index -> world RAS mm (place it with any resampler)
``canonical_affine`` 4x4: the CT's canonical voxel index -> world RAS mm
===================  ==========================================================================

So box voxel ``j`` (per axis) lies at original canonical voxel ``offset + step * j``;
:meth:`BoxProbabilities.place_back` does the inverse (linear interpolation onto the original
grid, only over the region the box covers). The probabilities are the network's, before
post-processing, mirror-averaged with ``--tta``; background is ``1 - kidney - tumor``; the KiTS
kidney region is ``kidney + tumor``. Memory stays that of the box: 216 x 180 x 296 mm at
1.0 x 0.78 x 0.78 mm is 2 x 19 M float16 values (75 MB), whatever the CT's size.

>>> p = BoxProbabilities.load("case_00000.probabilities.npz")   # doctest: +SKIP
>>> region, kidney, tumor = p.place_back()                      # doctest: +SKIP
>>> full = np.zeros(p.original_shape, np.float32); full[region] = tumor   # doctest: +SKIP
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import atomic_path, fail

__all__ = ["PROBABILITIES_SUFFIX", "BoxProbabilities"]

#: The ending of the probability files.
PROBABILITIES_SUFFIX = ".probabilities.npz"


@dataclass
class BoxProbabilities:
    """Kidney and tumor probabilities on the ROI box grid (see the module docstring)."""

    kidney: np.ndarray
    tumor: np.ndarray
    offset: tuple[float, float, float]
    step: tuple[float, float, float]
    original_shape: tuple[int, int, int]
    canonical_affine: np.ndarray

    @property
    def affine(self) -> np.ndarray:
        """4x4 box voxel index -> world RAS mm."""
        to_original = np.eye(4)
        to_original[:3, :3] = np.diag(self.step)
        to_original[:3, 3] = self.offset
        return np.asarray(self.canonical_affine, float) @ to_original

    def save(self, path: os.PathLike | str) -> Path:
        """Write the ``.npz`` (compressed, atomically)."""
        path = Path(path)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, kidney=self.kidney.astype(np.float16), tumor=self.tumor.astype(np.float16),
                                    offset=np.asarray(self.offset, float), step=np.asarray(self.step, float),
                                    original_shape=np.asarray(self.original_shape, np.int64),
                                    affine=self.affine, canonical_affine=np.asarray(self.canonical_affine, float))
        return path

    @classmethod
    def load(cls, path: os.PathLike | str) -> "BoxProbabilities":
        """Read a file written by :meth:`save`."""
        try:
            with np.load(path) as z:
                return cls(z["kidney"], z["tumor"], tuple(float(v) for v in z["offset"]),
                           tuple(float(v) for v in z["step"]), tuple(int(v) for v in z["original_shape"]),
                           z["canonical_affine"])
        except (OSError, KeyError, ValueError) as exc:
            raise fail(path, f"not a kidneyseg probabilities file ({exc})") from None

    def region(self) -> tuple[slice, slice, slice]:
        """The original-grid voxels whose centres lie inside the box (canonical (z, y, x) slices)."""
        out = []
        for n_box, off, st, n in zip(self.kidney.shape, self.offset, self.step, self.original_shape):
            lo = int(np.ceil(off - 0.5 * st - 1e-9))
            hi = int(np.floor(off + (n_box - 0.5) * st + 1e-9)) + 1
            out.append(slice(max(lo, 0), min(hi, n)))
        return tuple(out)  # type: ignore[return-value]

    def place_back(self) -> tuple[tuple[slice, slice, slice], np.ndarray, np.ndarray]:
        """``(region, kidney, tumor)``: the probabilities linearly interpolated onto the original grid.

        ``kidney`` and ``tumor`` are float32 arrays of the region's shape; outside the region the
        box has no prediction (the labels are background there).
        """
        from ..preprocess.resample import AxisMap, resample_image_maps

        region = self.region()
        maps = [AxisMap(s.stop - s.start, (s.start - off) / st, 1.0 / st)
                for s, off, st in zip(region, self.offset, self.step)]
        out = [resample_image_maps(np.asarray(p, np.float32), maps, order=1) for p in (self.kidney, self.tumor)]
        return region, np.clip(out[0], 0.0, 1.0), np.clip(out[1], 0.0, 1.0)
