"""What the networks take as input: stage 1 the CT; stage 2 the CT plus the stage-1 prior one-hot.

The contract both training (the perturbed ground truth as prior, :mod:`kidneyseg.train.prior`)
and inference (the real stage-1 prediction, :mod:`kidneyseg.infer.cascade`) follow, so it lives
below both. Channel 0 is the normalised CT; stage 2 adds one channel per prior class: kidney
(label 1) and tumor (label 2).

>>> import numpy as np
>>> prior_channels(np.array([[[0, 1, 2]]], np.uint8))[:, 0, 0]
array([[0., 1., 0.],
       [0., 0., 1.]], dtype=float32)
>>> stage_channels(1), stage_channels(2)
(1, 3)
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["PRIOR_LABELS", "prior_channels", "stage_channels"]

#: The stage-1 label values that become stage 2's prior channels, in channel order.
PRIOR_LABELS = (1, 2)


def stage_channels(stage: int) -> int:
    """Input channels of a stage's network: 1 (CT) for stage 1, 1 + len(PRIOR_LABELS) for stage 2."""
    if stage not in (1, 2):
        raise ValueError(f"stage must be 1 or 2, got {stage!r}")
    return 1 if stage == 1 else 1 + len(PRIOR_LABELS)


def prior_channels(labels: np.ndarray | torch.Tensor, dtype=None) -> np.ndarray | torch.Tensor:
    """One-hot prior channels (kidney, tumor) of a stage-1 label map, for stage 2's input.

    Args:
        labels: (z, y, x) or [B, 1, z, y, x] integer labels; numpy or torch.
        dtype: output dtype (default float32).

    Returns:
        float ``(2, z, y, x)`` or ``[B, 2, z, y, x]``, same library (and device) as the input:
        channel ``k`` is ``labels == PRIOR_LABELS[k]``.
    """
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
        return torch.stack([base == v for v in PRIOR_LABELS], dim=axis).to(dtype or torch.float32)
    labels = np.asarray(labels)
    base = labels if squeeze_axis is None else labels[:, 0]
    return np.stack([base == v for v in PRIOR_LABELS], axis=axis).astype(dtype or np.float32)
