"""What the networks output: softmax over the labels, or one sigmoid per nested region.

The output contract training (the loss's targets) and inference (probabilities -> labels) share:

* ``"softmax"`` (the thesis's): one channel per label value of the dataset (background
  included); probabilities are the softmax, labels its argmax.
* ``"regions"`` (the KiTS23 winners' and nnU-Net's region-based training): one channel per
  evaluation region of the dataset (KiTS23: kidney_and_masses {1, 2, 3}, masses {2, 3},
  tumor {2}; KiTS19: kidney {1, 2}, tumor {2}), each an independent sigmoid. A voxel belongs to a
  region when its probability is >= 0.5; the label map is rebuilt from the nested regions by
  painting, outermost first, each region's own label (:meth:`Dataset.region_labels
  <kidneyseg.data.datasets.Dataset.region_labels>`: KiTS23 1, 3, 2), so an inner region only
  counts where every region around it does.

The network is trained on exactly what is evaluated: region-based training optimises the
nested regions the KiTS23 metrics score.

>>> import torch
>>> out = OutputSpec("kits23", "regions")
>>> out.channels
3
>>> logits = torch.tensor([[5.0, -5.0, -5.0], [5.0, 5.0, -5.0], [5.0, 5.0, 5.0], [-5.0, 5.0, 5.0]]).T
>>> out.labels(out.probabilities(logits[None, :, :, None, None]))[0, :, 0, 0].tolist()  # 4 voxels
[1, 3, 2, 0]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..data.datasets import Dataset, get_dataset

__all__ = ["OUTPUTS", "OutputSpec", "labels_to_regions", "regions_to_labels"]

#: The output kinds.
OUTPUTS = ("softmax", "regions")


def labels_to_regions(labels: torch.Tensor | np.ndarray, dataset: Dataset | str) -> torch.Tensor | np.ndarray:
    """Region masks of a label map: ``[B, 1, *S]`` (or ``(*S)``) integer labels -> ``[B, R, *S]``
    (or ``(R, *S)``) float masks, one channel per region of the dataset, outermost first."""
    ds = get_dataset(dataset)
    if isinstance(labels, torch.Tensor):
        base, axis = (labels[:, 0], 1) if labels.dim() == 5 else (labels, 0)
        masks = []
        for r in ds.regions:
            lo, hi = min(r.labels), max(r.labels)
            if r.labels == tuple(range(lo, hi + 1)):
                masks.append((base >= lo) & (base <= hi))
            else:
                masks.append(torch.isin(base, torch.tensor(r.labels, device=base.device, dtype=base.dtype)))
        return torch.stack(masks, dim=axis).float()
    labels = np.asarray(labels)
    base, axis = (labels[:, 0], 1) if labels.ndim == 5 else (labels, 0)
    return np.stack([r.mask(base) for r in ds.regions], axis=axis).astype(np.float32)


def regions_to_labels(masks: torch.Tensor | np.ndarray, dataset: Dataset | str) -> torch.Tensor | np.ndarray:
    """Nested region masks -> uint8 labels: channel axis 0 (``(R, *S)``) or 1 (``[B, R, *S]``).

    Region ``i`` paints its own label (:meth:`Dataset.region_labels`) where it and every region
    around it holds, outermost first, so inner regions win.
    """
    ds = get_dataset(dataset)
    values = ds.region_labels()
    axis = 1 if masks.ndim == 5 else 0
    if masks.shape[axis] != len(values):
        raise ValueError(f"{ds.name} has {len(values)} regions, got {masks.shape[axis]} channels")
    if isinstance(masks, torch.Tensor):
        chans = masks.unbind(axis)
        out = torch.zeros(chans[0].shape, dtype=torch.uint8, device=masks.device)
        inside = torch.ones_like(chans[0], dtype=torch.bool)
    else:
        chans = [np.take(masks, i, axis=axis) for i in range(masks.shape[axis])]
        out = np.zeros(chans[0].shape, np.uint8)
        inside = np.ones(chans[0].shape, bool)
    for value, m in zip(values, chans):
        inside = inside & (m > 0)
        out[inside] = value
    return out


@dataclass(frozen=True)
class OutputSpec:
    """A network's output: the dataset it segments and how its channels read.

    Attributes:
        dataset: ``"kits19"`` or ``"kits23"`` (or a :class:`~kidneyseg.data.datasets.Dataset`).
        kind: ``"softmax"`` or ``"regions"`` (see the module docstring).
    """

    dataset: str = "kits19"
    kind: str = "softmax"

    def __post_init__(self) -> None:
        object.__setattr__(self, "dataset", get_dataset(self.dataset).name)
        if self.kind not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {self.kind!r}")

    @property
    def data(self) -> Dataset:
        return get_dataset(self.dataset)

    @property
    def channels(self) -> int:
        """Output channels of the network: labels (softmax) or regions."""
        return self.data.num_classes if self.kind == "softmax" else len(self.data.regions)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """``[B, K, *S]`` logits -> float32 probabilities (softmax over K, or a sigmoid each)."""
        logits = logits.float()
        return torch.softmax(logits, dim=1) if self.kind == "softmax" else torch.sigmoid(logits)

    def labels(self, probs: torch.Tensor) -> torch.Tensor:
        """Probabilities ``[B, K, *S]`` or ``(K, *S)`` -> uint8 labels ``[B, *S]`` or ``(*S)``."""
        axis = 1 if probs.dim() == 5 else 0
        if self.kind == "softmax":
            return probs.argmax(axis).to(torch.uint8)
        return regions_to_labels(probs >= 0.5, self.data)
