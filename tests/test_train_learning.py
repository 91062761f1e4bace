"""An honest learning test: a small U-Net trained for a few minutes on CPU segments held-out phantoms.

Data: :func:`kidneyseg.data.phantom.make_phantom` CT phantoms (64 x 64 in-plane at 4 mm, a 256 mm field
of view centred on the kidneys; 2 mm slices),
intensities clipped to [-150, 350] HU and scaled, batches from the real
:class:`kidneyseg.train.sampler.PatchSampler`, training by the real :class:`Trainer`. The test
asserts the untrained network is poor (so a broken loss, optimizer or data path cannot pass) and
that the trained one reaches a KiTS19 kidney Dice (kidney + tumor region) >= 0.85 on 4 held-out
phantoms, evaluated on whole volumes. Training stops as soon as the goal is met (checked after
each epoch) or after ``MAX_EPOCHS``. It runs in fp32 and in bf16 (bf16 only where the CPU runs it
natively, :func:`kidneyseg.runtime.cpu_bf16_support`).

The trained model then checks bf16 prediction against fp32 prediction of the *same* weights
(sliding window, :mod:`kidneyseg.infer.sliding_window`) on 3 held-out phantoms: the kidney Dice
may differ by at most 0.002 and the tumor Dice by at most 0.005 (issue 14's parity bounds).
"""

from __future__ import annotations

import time
import types

import numpy as np
import pytest
import torch

from kidneyseg.runtime import cpu_bf16_support, resolve_runtime
from kidneyseg.train.config import TrainConfig
from kidneyseg.train.losses import dice_from_counts, region_counts
from kidneyseg.train.trainer import Trainer

pytestmark = pytest.mark.slow
phantom = pytest.importorskip("kidneyseg.data.phantom")
sampler_mod = pytest.importorskip("kidneyseg.train.sampler")

GOAL = 0.85
MAX_EPOCHS = 14
ITERS = 20


def _case(seed: int):
    image, label = phantom.make_phantom(seed, size=64, slices=(24, 32), spacing_z=(2.0,), spacing_xy=(4.0, 4.0))
    img = ((np.clip(image.array, -150, 350) - 100) / 100).astype(np.float32)
    return types.SimpleNamespace(case_id=str(seed), image=img, label=label.array.astype(np.uint8))


def _kidney_dice(model, cases, window: int = 16) -> float:
    """Kidney-region Dice over whole volumes, predicted with z-windows of the training patch's depth
    (averaged softmax): instance norm statistics then match training, as in sliding-window inference."""
    model.eval()
    counts = torch.zeros(2, 3, dtype=torch.float64)
    with torch.no_grad():
        for c in cases:
            depth = c.image.shape[0]
            probs = torch.zeros(1, 3, *c.image.shape)
            hits = torch.zeros(1, 1, *c.image.shape)
            for z0 in sorted(set(np.linspace(0, depth - window, 3).astype(int).tolist())):
                x = torch.from_numpy(np.ascontiguousarray(c.image[None, None, z0:z0 + window]))
                probs[:, :, z0:z0 + window] += torch.softmax(model(x), 1)
                hits[:, :, z0:z0 + window] += 1
            y = torch.from_numpy(c.label[None, None].astype(np.int64))
            counts += region_counts(probs / hits, y)
    return dice_from_counts(counts)[0]


class _StopAtGoal:
    def __init__(self, cases):
        self.cases, self.scores = cases, []

    def on_epoch_end(self, trainer, epoch, metrics):
        score = _kidney_dice(trainer.model, self.cases)
        metrics["heldout_kidney_dice"] = score
        self.scores.append(score)
        if score >= GOAL:
            trainer.should_stop = True  # done: the loop ends after this epoch's checkpoint


def _parity(model, cases) -> list[tuple[float, float, float, float]]:
    """Per case: (kidney Dice fp32, kidney Dice bf16, tumor Dice fp32, tumor Dice bf16) of whole-volume
    sliding-window predictions of the same weights in the two precisions (the runtimes predict uses)."""
    from kidneyseg.evaluate.metrics import kits_dice
    from kidneyseg.infer.sliding_window import sliding_window_predict

    out = []
    for c in cases:
        scores = {}
        for prec in ("fp32", "bf16"):
            rt = resolve_runtime("cpu", prec)
            net = rt.prepare_model(model).eval()
            labels = sliding_window_predict(c.image[None], net, (16, 64, 64), 0.5, device=rt).labels
            scores[prec] = kits_dice(labels, c.label)
        out.append(tuple(scores[p][f"{r}_dice"] for r in ("kidney", "tumor") for p in ("fp32", "bf16")))
    return out


@pytest.mark.parametrize("precision", ["fp32", pytest.param("bf16", marks=pytest.mark.skipif(
    cpu_bf16_support() is None, reason="this CPU has no native bf16 (AMX / AVX-512 BF16)"))])
def test_small_unet_learns_kidneys_on_phantoms(tmp_path, precision):
    torch.set_num_threads(2)
    t0 = time.perf_counter()
    train = [_case(s) for s in range(8)]
    heldout = [_case(100 + s) for s in range(4)]
    cfg = TrainConfig.from_dict({
        "epochs": MAX_EPOCHS, "iterations_per_epoch": ITERS, "val_iterations": 0, "patch_size": [16, 64, 64],
        "progress": False, "augment": None, "prefetch": 2, "seed": 0, "precision": precision,
        "optimizer": {"name": "adamw", "lr": 3e-3}, "loss": {"ce_weight": 1.0}, "scheduler": {"name": "poly"},
        "network": {"n_stages": 4, "base_features": 8, "strides": [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]]},
    })
    sampler = sampler_mod.PatchSampler(train, cfg.patch_size, cfg.batch_size, 1 / 3, seed=0, num_workers=0,
                                       progress=False)
    hook = _StopAtGoal(heldout)
    trainer = Trainer(cfg, tmp_path, lambda e, s: sampler.iterate(e * ITERS, (e + 1) * ITERS), hooks=[hook])
    untrained = _kidney_dice(trainer.model, heldout)
    assert untrained < 0.3, f"untrained network already scores {untrained:.3f}: the test would prove nothing"
    trainer.fit()
    elapsed = time.perf_counter() - t0
    print(f"{trainer.runtime.describe()}; held-out kidney Dice per epoch: {[round(s, 3) for s in hook.scores]}; "
          f"untrained {untrained:.3f}; {elapsed:.0f} s")
    assert trainer.runtime.precision == precision
    assert max(hook.scores) >= GOAL, f"kidney Dice {max(hook.scores):.3f} < {GOAL} after {len(hook.scores)} epochs"
    if cpu_bf16_support() is None:
        return
    parity = _parity(trainer.model, heldout[:3])
    print("parity (kidney fp32, kidney bf16, tumor fp32, tumor bf16): "
          + "; ".join(", ".join(f"{v:.4f}" for v in row) for row in parity))
    assert np.mean([row[0] for row in parity]) > 0.7  # a trained model: the comparison means something
    assert any(row[2] > 0.1 for row in parity if not np.isnan(row[2]))  # and it finds some tumor
    for k32, k16, t32, t16 in parity:
        assert abs(k32 - k16) <= 0.002, f"kidney Dice fp32 {k32:.4f} vs bf16 {k16:.4f}"
        assert np.isnan(t32) == np.isnan(t16) and (np.isnan(t32) or abs(t32 - t16) <= 0.005), (t32, t16)
