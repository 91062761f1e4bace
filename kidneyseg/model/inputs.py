"""What the networks take as input: stage 1 the CT; stage 2 the CT plus the stage-1 prior one-hot.

The contract both training (the perturbed ground truth as prior, :mod:`kidneyseg.train.prior`)
and inference (the real stage-1 prediction, :mod:`kidneyseg.infer.cascade`) follow, so it lives
below both. Channel 0 is the normalised CT; stage 2 adds one channel per prior region of the
dataset (:attr:`Dataset.prior_regions <kidneyseg.data.datasets.Dataset.prior_regions>`): KiTS19
kidney (label 1) and tumor (label 2), the thesis's; KiTS23 the kidney-and-masses region
(labels 1-3) alone.

>>> import numpy as np
>>> prior_channels(np.array([[[0, 1, 2]]], np.uint8))[:, 0, 0]
array([[0., 1., 0.],
       [0., 0., 1.]], dtype=float32)
>>> stage_channels(1), stage_channels(2), stage_channels(2, "kits23")
(1, 3, 2)
"""

from __future__ import annotations

import numpy as np
import torch

from ..data.datasets import KITS19, Dataset, get_dataset

__all__ = ["PRIOR_LABELS", "prior_channels", "stage_channels"]

#: KiTS19's stage-1 label values that become stage 2's prior channels, in channel order.
PRIOR_LABELS = tuple(r.labels[0] for r in KITS19.prior_regions)


def stage_channels(stage: int, dataset: str | Dataset | None = None) -> int:
    """Input channels of a stage's network: 1 (CT) for stage 1, 1 + the prior regions for stage 2."""
    if stage not in (1, 2):
        raise ValueError(f"stage must be 1 or 2, got {stage!r}")
    return 1 if stage == 1 else 1 + len(get_dataset(dataset).prior_regions)


def prior_channels(labels: np.ndarray | torch.Tensor, dtype=None,
                   dataset: str | Dataset | None = None) -> np.ndarray | torch.Tensor:
    """One channel per prior region of a stage-1 label map, for stage 2's input.

    Args:
        labels: (z, y, x) or [B, 1, z, y, x] integer labels; numpy or torch.
        dtype: output dtype (default float32).
        dataset: whose prior regions (default KiTS19: kidney label 1, tumor label 2).

    Returns:
        float ``(P, z, y, x)`` or ``[B, P, z, y, x]``, same library (and device) as the input:
        channel ``k`` is the mask of the dataset's ``prior_regions[k]``.
    """
    regions = get_dataset(dataset).prior_regions
    if labels.ndim == 5:
        if labels.shape[1] != 1:
            raise ValueError(f"labels must be [B, 1, z, y, x], got shape {tuple(labels.shape)}")
        squeeze_axis = 1
    elif labels.ndim == 3:
        squeeze_axis = None
    else:
        raise ValueError(f"labels must be (z, y, x) or [B, 1, z, y, x], got shape {tuple(labels.shape)}")
    axis = 0 if squeeze_axis is None else 1
    if isinstance(labels, torch.Tensor):
        base = labels if squeeze_axis is None else labels[:, 0]
        masks = [(base >= min(r.labels)) & (base <= max(r.labels)) if _contiguous(r.labels)
                 else torch.isin(base, torch.tensor(r.labels, device=base.device, dtype=base.dtype)) for r in regions]
        return torch.stack(masks, dim=axis).to(dtype or torch.float32)
    labels = np.asarray(labels)
    base = labels if squeeze_axis is None else labels[:, 0]
    return np.stack([r.mask(base) for r in regions], axis=axis).astype(dtype or np.float32)


def _contiguous(values: tuple[int, ...]) -> bool:
    return values == tuple(range(min(values), max(values) + 1))
