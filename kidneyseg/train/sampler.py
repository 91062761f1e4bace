"""Random training patches with foreground oversampling, as torch batches.

:class:`PatchSampler` draws batches of patches from preprocessed cases (the cache's objects:
``.case_id``, ``.image`` float32 (z, y, x) normalized, ``.label`` uint8 (z, y, x); memmaps are
fine, only the patch is read):

* A fraction ``fg_fraction`` (default 1/3) of the patches is centered on a foreground voxel,
  the rest is placed uniformly at random. The foreground patches are spread evenly over the
  stream (patch ``k`` is a foreground patch when ``floor((k+1) f) > floor(k f)``), so every
  stretch of batches has the right share, not just the average.
* Among foreground patches, tumor is chosen with probability ``tumor_fraction`` (default 1/2,
  so tumor at least as often as kidney), from a case that contains tumor (KiTS23: tumor or cyst,
  each with half of that share when both exist). Cases without any foreground only give random
  patches.
* Foreground voxel locations are found once per case (sub-sampled to ``max_locations`` per
  class, seeded by the case index) and kept in memory, shared by :meth:`with_seed` copies.
* Where a patch leaves the volume the image is padded with the case's minimum (air after
  normalization) and the label with 0.
* ``sample_size`` (>= ``patch_size``) extracts a larger patch around the same center, for
  :func:`kidneyseg.train.augment.augment_batch` with ``out_shape=patch_size`` (rotations then read
  real voxels; see :func:`kidneyseg.train.augment.sample_size_for`). With ``augment=`` the sampler
  augments on the CPU itself and yields ``patch_size`` patches (use this without a GPU).
* ``prior="perturbed-gt"`` adds stage 2's prior channels, the masks of the dataset's prior
  regions (KiTS19: kidney, tumor, so C = 3; KiTS23: kidney-and-masses, C = 2) of
  :func:`kidneyseg.train.prior.perturb_prior` applied to the patch's label.
* Batch ``k`` depends only on ``(seed, k, rank)``: the stream is deterministic, batches can be
  made in background threads (``num_workers``) and arrive in order, and training resumes exactly
  with ``iterate(start=k)``. Under DDP give each rank its ``rank`` and ``world_size``.
  ``with_seed(seed)`` gives a new stream (one per epoch) without locating the foreground again.

>>> import numpy as np, types
>>> label = np.zeros((20, 20, 20), np.uint8); label[5:10, 5:10, 5:10] = 1
>>> case = types.SimpleNamespace(case_id="c0", image=np.random.rand(20, 20, 20).astype("float32"), label=label)
>>> sampler = PatchSampler([case], patch_size=(8, 8, 8), batch_size=2, num_batches=1)
>>> image, target = next(iter(sampler))
>>> tuple(image.shape), tuple(target.shape), target.dtype
((2, 1, 8, 8, 8), (2, 1, 8, 8, 8), torch.int64)
"""

from __future__ import annotations

import collections
import copy
import math
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.datasets import get_dataset
from ..model.inputs import stage_channels
from .augment import AugmentConfig, augment_batch
from .prior import PriorPerturbation, perturb_prior

PRIOR_MODES = (None, "perturbed-gt")
FOREGROUND_CLASSES = (1, 2)


def class_locations(label: np.ndarray, rng: np.random.Generator, max_locations: int = 10000,
                    classes: Sequence[int] = FOREGROUND_CLASSES) -> dict[int, np.ndarray]:
    """Voxel coordinates of each class, randomly sub-sampled to at most ``max_locations``.

    Args:
        label: (z, y, x) integer labels.
        rng: numpy generator used for the sub-sampling.
        max_locations: most coordinates kept per class.
        classes: the label values to locate.

    Returns:
        ``{class: int32 array (n, 3) of (z, y, x)}``; ``n`` is 0 for an absent class.
    """
    label = np.asarray(label)
    out = {}
    for c in classes:
        flat = np.flatnonzero(label == c)
        if len(flat) > max_locations:
            flat = np.sort(rng.choice(flat, max_locations, replace=False))
        out[c] = np.stack(np.unravel_index(flat, label.shape), axis=1).astype(np.int32)
    return out


def extract_patch(volume: np.ndarray, start: Sequence[int], size: Sequence[int], pad_value) -> np.ndarray:
    """``volume[start : start + size]`` with ``pad_value`` where the window leaves the volume.

    Reads only the overlapping part (cheap on a memmap). ``start`` may be negative.
    """
    out = np.full(tuple(size), pad_value, dtype=volume.dtype)
    src, dst = [], []
    for s, n, dim in zip(start, size, volume.shape):
        lo, hi = max(s, 0), min(s + n, dim)
        if hi <= lo:
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - s, hi - s))
    out[tuple(dst)] = volume[tuple(src)]
    return out


class PatchSampler:
    """Batches of random patches ``(image [B, C, z, y, x] float32, label [B, 1, z, y, x] int64)``.

    Args:
        cases: objects with ``.case_id``, ``.image`` float32 (z, y, x), ``.label`` uint8 (z, y, x).
        patch_size: (z, y, x) voxels of the patches yielded.
        batch_size: patches per batch.
        fg_fraction: share of patches centered on a foreground voxel, in [0, 1].
        prior: ``None`` (C = 1) or ``"perturbed-gt"`` (C = 1 + the dataset's prior regions, stage 2).
        seed: base seed; batch ``k`` is a function of ``(seed, rank, k)``.
        sample_size: (z, y, x) of the patches actually extracted (>= ``patch_size``); default
            ``patch_size``. Yielded as is unless ``augment`` is given.
        augment: augment on the CPU inside the sampler and crop to ``patch_size``.
        tumor_fraction: probability a foreground patch is centered on tumor (when any case has one).
        num_batches: length of one ``iter()``; ``None`` means endless.
        num_workers: background threads making batches (0: in the caller's thread).
        prefetch: batches made ahead per worker.
        max_locations: foreground voxels remembered per class and case.
        pad_value: image value outside the volume; ``None`` uses each case's minimum.
        perturbation: settings of the prior corruption (``prior="perturbed-gt"``).
        rank, world_size: DDP position; ranks draw disjoint batch streams.
        pin_memory: pin the yielded tensors (faster host-to-GPU copies).
        label_dtype: dtype of the yielded labels (int64 by default; ``torch.uint8`` moves 8x fewer
            bytes to the GPU for large ``sample_size`` patches; cast after augmenting there).
        progress: show a progress bar while locating foreground.
        dataset: whose prior regions make the prior channels (default KiTS19).
    """

    def __init__(self, cases: Sequence, patch_size: Sequence[int], batch_size: int, fg_fraction: float = 1 / 3,
                 prior: str | None = None, seed: int = 0, *, sample_size: Sequence[int] | None = None,
                 augment: AugmentConfig | None = None, tumor_fraction: float = 0.5,
                 num_batches: int | None = None, num_workers: int = 1, prefetch: int = 2,
                 max_locations: int = 10000, pad_value: float | None = None,
                 perturbation: PriorPerturbation | None = None, rank: int = 0, world_size: int = 1,
                 pin_memory: bool = False, label_dtype: torch.dtype = torch.int64, progress: bool = True,
                 dataset: str | None = None):
        self.cases = list(cases)
        if not self.cases:
            raise ValueError("cases must not be empty")
        self.patch_size = _shape3(patch_size, "patch_size")
        self.sample_size = self.patch_size if sample_size is None else _shape3(sample_size, "sample_size")
        if any(s < p for s, p in zip(self.sample_size, self.patch_size)):
            raise ValueError(f"sample_size must be >= patch_size {self.patch_size}, got {self.sample_size!r}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        if not 0.0 <= fg_fraction <= 1.0:
            raise ValueError(f"fg_fraction must be in [0, 1], got {fg_fraction!r}")
        if not 0.0 <= tumor_fraction <= 1.0:
            raise ValueError(f"tumor_fraction must be in [0, 1], got {tumor_fraction!r}")
        if prior not in PRIOR_MODES:
            raise ValueError(f"prior must be one of {PRIOR_MODES}, got {prior!r}")
        if num_batches is not None and int(num_batches) < 0:
            raise ValueError(f"num_batches must be >= 0 or None, got {num_batches!r}")
        if int(num_workers) < 0 or int(prefetch) < 1:
            raise ValueError(f"num_workers must be >= 0 and prefetch >= 1, got {num_workers!r}, {prefetch!r}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank!r}")
        self.batch_size, self.fg_fraction, self.tumor_fraction = int(batch_size), float(fg_fraction), float(tumor_fraction)
        self.prior, self.seed, self.augment = prior, int(seed), augment
        self.num_batches = None if num_batches is None else int(num_batches)
        self.num_workers, self.prefetch = int(num_workers), int(prefetch)
        self.max_locations, self.pad_value = int(max_locations), pad_value
        self.perturbation = perturbation or PriorPerturbation()
        self.rank, self.world_size = int(rank), int(world_size)
        self.pin_memory = bool(pin_memory) and torch.cuda.is_available()
        self.label_dtype = label_dtype
        ds = get_dataset(dataset)
        self.prior_regions = ds.prior_regions
        self.classes = ds.foreground_labels  # KiTS19 (1, 2), KiTS23 (1, 2, 3)
        self.lesion_classes = tuple(c for c in self.classes if c != ds.label("kidney"))
        self.channels = stage_channels(2 if prior == "perturbed-gt" else 1, dataset)
        self._pad_values: dict[int, float] = {}
        self._lock = threading.Lock()
        self.locations = self._locate(progress)
        self.cases_with = {c: [i for i, loc in enumerate(self.locations) if len(loc[c])] for c in self.classes}
        if self.fg_fraction > 0 and not any(self.cases_with.values()):
            warnings.warn("no case has foreground: every patch is placed at random", stacklevel=2)

    def _locate(self, progress: bool) -> list[dict[int, np.ndarray]]:
        def locate(i: int) -> dict[int, np.ndarray]:
            case = self.cases[i]
            # a cached label is read with plain file reads, not through its memory map: mapped pages
            # stay resident in this process (4.6 GB for the 209 KiTS19 stage-2 boxes), read ones do not
            label = np.load(case.label.filename) if isinstance(case.label, np.memmap) else np.asarray(case.label)
            if label.ndim != 3 or np.shape(case.image) != label.shape:
                raise ValueError(f"case {getattr(case, 'case_id', i)!r}: image {np.shape(case.image)} and label "
                                 f"{label.shape} must be the same (z, y, x) shape")
            # Seeded by the case index only, so every seed (and with_seed) shares the same locations.
            return class_locations(label, np.random.default_rng([i, 7]), self.max_locations, self.classes)

        # Threads: reading memmaps and comparing arrays release the GIL.
        with ThreadPoolExecutor(max(1, self.num_workers)) as pool:
            return list(tqdm(pool.map(locate, range(len(self.cases))), total=len(self.cases),
                             desc="locating foreground", disable=not progress, leave=False))

    def with_seed(self, seed: int, num_batches: int | None = -1) -> "PatchSampler":
        """A copy drawing another stream (e.g. one per epoch), sharing the located foreground.

        Args:
            seed: the new base seed.
            num_batches: the copy's length (``-1`` keeps this sampler's).
        """
        other = copy.copy(self)
        other.seed = int(seed)
        if num_batches != -1:
            other.num_batches = None if num_batches is None else int(num_batches)
        return other

    def __len__(self) -> int:
        if self.num_batches is None:
            raise TypeError("endless sampler (num_batches=None) has no length")
        return self.num_batches

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.iterate(0, self.num_batches)

    def iterate(self, start: int = 0, stop: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield batches ``start, start+1, ... stop-1`` (endless when ``stop`` is None), in order."""
        indices = range(start, stop) if stop is not None else _count(start)
        if self.num_workers == 0:
            for k in indices:
                yield self.batch(k)
            return
        with ThreadPoolExecutor(self.num_workers, thread_name_prefix="patch-sampler") as pool:
            pending: collections.deque = collections.deque()
            it = iter(indices)
            try:
                for k in it:
                    pending.append(pool.submit(self.batch, k))
                    if len(pending) >= self.num_workers * self.prefetch:
                        break
                while pending:
                    result = pending.popleft().result()
                    for k in it:
                        pending.append(pool.submit(self.batch, k))
                        break
                    yield result
            finally:
                for f in pending:
                    f.cancel()

    def _case_pad(self, i: int) -> float:
        if self.pad_value is not None:
            return float(self.pad_value)
        with self._lock:
            if i not in self._pad_values:
                # the cache records each image's minimum: no pass over (and no mapping of) the whole image
                known = getattr(getattr(self.cases[i], "properties", None), "image_min", None)
                self._pad_values[i] = float(np.min(self.cases[i].image)) if known is None else float(known)
            return self._pad_values[i]

    def is_foreground_patch(self, k: int) -> bool:
        """Whether global patch number ``k`` is centered on foreground (evenly spread share)."""
        f = self.fg_fraction
        return math.floor((k + 1) * f + 1e-9) > math.floor(k * f + 1e-9)

    def batch(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch number ``k`` of this rank: ``(image [B, C, z, y, x] float32, label [B, 1, z, y, x] int64)``."""
        global_k = k * self.world_size + self.rank
        rng = np.random.default_rng([self.seed, global_k])
        size = self.sample_size
        images = np.empty((self.batch_size, self.channels, *size), np.float32)
        labels = np.empty((self.batch_size, 1, *size), np.uint8)
        for j in range(self.batch_size):
            i, center = self._draw_center(global_k * self.batch_size + j, rng)
            case = self.cases[i]
            # The patch_size window centered here is what augment_batch's center crop keeps.
            start = [c - p // 2 - (s - p) // 2 for c, p, s in zip(center, self.patch_size, size)]
            images[j, 0] = extract_patch(case.image, start, size, self._case_pad(i))
            labels[j, 0] = extract_patch(case.label, start, size, 0)
            if self.prior == "perturbed-gt":
                prior = perturb_prior(labels[j, 0], rng, self.perturbation)
                for k, region in enumerate(self.prior_regions):  # = model.inputs.prior_channels(prior), in place
                    images[j, 1 + k] = region.mask(prior)
        image, label = torch.from_numpy(images), torch.from_numpy(labels)
        if self.augment is not None:
            g = torch.Generator().manual_seed(int(rng.integers(2**62)))
            image, label = augment_batch(image, label, self.augment, g, out_shape=self.patch_size,
                                         image_channels=1)
            image, label = image.contiguous(), label.contiguous()
        label = label.to(self.label_dtype)
        if self.pin_memory:
            image, label = image.pin_memory(), label.pin_memory()
        return image, label

    def _draw_center(self, patch_index: int, rng: np.random.Generator) -> tuple[int, tuple[int, ...]]:
        """Pick a case and a patch center (z, y, x) for one patch."""
        if self.is_foreground_patch(patch_index) and any(self.cases_with.values()):
            want_tumor = rng.random() < self.tumor_fraction
            lesions = [c for c in self.lesion_classes if self.cases_with[c]]
            cls = lesions[0] if (want_tumor and lesions) or not self.cases_with[1] else 1
            if cls != 1 and len(lesions) > 1:  # KiTS23: tumor or cyst (KiTS19 draws nothing more)
                cls = lesions[int(rng.integers(len(lesions)))]
            candidates = self.cases_with[cls]
            i = candidates[int(rng.integers(len(candidates)))]
            locs = self.locations[i][cls]
            return i, tuple(int(v) for v in locs[int(rng.integers(len(locs)))])
        i = int(rng.integers(len(self.cases)))
        shape = np.shape(self.cases[i].label)
        starts = [int(rng.integers(min(0, d - p), max(0, d - p) + 1)) for d, p in zip(shape, self.patch_size)]
        return i, tuple(st + p // 2 for st, p in zip(starts, self.patch_size))


def _count(start: int) -> Iterator[int]:
    k = start
    while True:
        yield k
        k += 1


def _shape3(value, name: str) -> tuple[int, int, int]:
    try:
        shape = tuple(int(v) for v in value)
    except TypeError:
        raise ValueError(f"{name} must be 3 sizes (z, y, x), got {value!r}") from None
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"{name} must be 3 positive sizes (z, y, x), got {value!r}")
    return shape
