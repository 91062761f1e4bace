"""The two-stage cascade at inference: a CT volume in, a label map in the input's exact geometry out.

Data flow for one case (all arrays (z, y, x)):

1. **stage 1**: the CT (HU, canonical layout, original spacing) cut to the body's bounding box
   plus 10 mm of air (:func:`kidneyseg.preprocess.body.body_slices`; the whole volume with
   ``body_crop=False``), resampled to ``plan.stage1_spacing`` and normalized with the plan ->
   sliding window -> coarse uint8 labels, upsampled to the original grid (labels only, nearest;
   background outside the body box);
2. **ROI**: the plan's fixed box (``box_size_mm``, the thesis's section 3.4) centred on the
   bounding-box centre of the stage-1 foreground (the dataset's outermost region: KiTS19 kidney +
   tumor, KiTS23 kidney and masses); with an empty stage-1 prediction, at the
   volume's centre (a warning says so). Only the box is read from the original grid and resampled
   to ``plan.target_spacing`` (padded where it leaves the volume), exactly as the training cache
   does it (:func:`kidneyseg.preprocess.case.preprocess_case`);
3. **stage 2**: image + the stage-1 prior of the box (the dataset's prior regions: KiTS19 one-hot
   kidney, tumor; KiTS23 the kidney-and-masses region) -> sliding window
   (optional mirror TTA) over the part of the box inside the volume (windows of pure padding
   would be thrown away) -> uint8 labels (softmax argmax, or the nested regions of a
   region-based network, :mod:`kidneyseg.model.outputs`);
4. the labels go back onto the original grid (nearest; background outside the box,
   :func:`kidneyseg.preprocess.case.paste_label_back`) and are post-processed.

Nothing of size ``K x original volume`` is ever created: probabilities exist only at network
resolution inside the sliding window (see :mod:`kidneyseg.infer.sliding_window`).

>>> model = CascadeModel.load("runs/demo/model")                 # doctest: +SKIP
>>> labels, timings = predict_volume(load_volume("ct.nii.gz"), model)   # doctest: +SKIP

Files in, files out (folders, shards, atomic outputs): :mod:`kidneyseg.infer.predict`.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import fail
from ..io import Volume
from ..data.datasets import Dataset, get_dataset
from ..model.folder import ModelFolder, load_stage
from ..model.inputs import prior_channels, stage_channels
from ..model.outputs import OutputSpec
from ..preprocess.plan import Plan
from ..runtime import Runtime, resolve_runtime
from .postprocess import get_strategy, load_choice, postprocess
from .probabilities import BoxProbabilities
from .sliding_window import check_overlap, sliding_window_predict


@dataclass
class CascadeModel:
    """Both stages of a model folder, ready to predict.

    Attributes:
        plan: the preprocessing plan (``MODEL_DIR/plan.json``).
        stage1, stage2: networks in eval mode on ``device``.
        patch1, patch2: their patch sizes (z, y, x) in voxels.
        postprocess: ``(strategy name, options)``.
        runtime: where and how the networks run (device, precision, memory layout;
            :func:`kidneyseg.runtime.resolve_runtime`); the networks are already in its layout.
        output1, output2: how each stage's channels read (dataset, softmax or regions).
    """

    plan: Plan
    stage1: torch.nn.Module
    stage2: torch.nn.Module
    patch1: tuple[int, int, int]
    patch2: tuple[int, int, int]
    postprocess: tuple[str, dict] = ("anatomy", {})
    runtime: Runtime = field(default_factory=lambda: Runtime(torch.device("cpu")))
    output1: OutputSpec = OutputSpec()
    output2: OutputSpec = OutputSpec()

    @property
    def device(self) -> torch.device:
        return self.runtime.device

    @property
    def dataset(self) -> Dataset:
        """The dataset the model segments (its plan's)."""
        return get_dataset(self.plan.dataset)

    @classmethod
    def load(cls, model_dir: os.PathLike | str, device: str | torch.device = "cpu",
             postprocess: str | None = None, precision: str = "auto") -> "CascadeModel":
        """Load a :class:`~kidneyseg.model.folder.ModelFolder` (plan, both stages, post-processing choice).

        Args:
            model_dir: the model folder.
            device: ``"cpu"``, ``"cuda"``, ``"auto"`` (or a torch device).
            postprocess: a strategy name overriding ``postprocess.json`` (e.g. ``"none"``).
            precision: ``"auto"`` (bf16 where the device runs it natively), ``"fp32"``, ``"bf16"``,
                ``"fp16"`` (CUDA); the memory layout follows (:mod:`kidneyseg.runtime`).

        Raises:
            KidneysegError: missing parts, unusable device or precision, stages of the wrong input
                channels or of another dataset than the plan's.
        """
        runtime = resolve_runtime(device, precision)
        folder = ModelFolder(model_dir).require()
        plan = folder.load_plan()
        net1, spec1 = load_stage(folder.stage(1), device=runtime)
        net2, spec2 = load_stage(folder.stage(2), device=runtime)
        for spec in (spec1, spec2):
            if spec.output.dataset != plan.dataset:
                raise fail(spec.checkpoint, f"stage {spec.stage} was trained on {spec.output.dataset}, the plan "
                                            f"is for {plan.dataset}")
        got = (spec1.network.in_channels, spec2.network.in_channels)
        want = (stage_channels(1, plan.dataset), stage_channels(2, plan.dataset))
        if got != want:
            raise fail(folder.root, f"stage input channels must be {want[0]} and {want[1]}, "
                                    f"got {got[0]} and {got[1]}")
        name, opts = load_choice(folder)
        if postprocess is not None and postprocess != name:
            get_strategy(postprocess)
            name, opts = postprocess, {}  # the strategy's own defaults
        return cls(plan, net1, net2, spec1.patch_size, spec2.patch_size, (name, opts), runtime, spec1.output,
                   spec2.output)


# ------------------------------------------------------------------------------------ predict
def _stage_bar(progress: bool, case_id: str):
    return tqdm(total=5, desc=case_id, unit="stage", disable=not progress, leave=False)


def predict_volume(volume: Volume, model: CascadeModel, overlap: float = 0.5, tta: bool = False,
                   batch_size: int = 1, progress: bool = True, case_id: str = "case",
                   body_crop: bool = True, probabilities: bool = False):
    """Segment one CT volume with the cascade.

    Args:
        volume: canonical CT :class:`~kidneyseg.io.Volume` (float32 HU); not modified.
        model: a loaded :class:`CascadeModel`.
        overlap: sliding-window overlap in [0, 1).
        tta: mirror test-time augmentation (all 8 flips) in stage 2.
        batch_size: windows per network call.
        progress: tqdm bars per stage and per sliding window.
        case_id: name shown in progress and messages.
        body_crop: run stage 1 on the body's bounding box only (the field of view's air around the
            patient cannot hold a kidney); ``False``: on the whole volume.
        probabilities: also return stage 2's kidney and tumor probabilities inside the ROI box
            (float16, :class:`~kidneyseg.infer.probabilities.BoxProbabilities`, before
            post-processing).

    Returns:
        ``(labels, timings)``: uint8 (z, y, x) labels on ``volume``'s grid and seconds per stage
        (``stage1``, ``roi``, ``stage2``, ``postprocess``); with ``probabilities=True``
        ``(labels, timings, box_probabilities)``.
    """
    from ..preprocess.body import body_slices
    from ..preprocess.case import paste_label_back, preprocess_case
    from ..preprocess.roi import foreground_center

    overlap = check_overlap(overlap)
    if probabilities and model.output2.kind != "softmax":
        raise fail(case_id, "probabilities are saved for softmax models (kidney, tumor) only; this model's "
                            f"stage 2 has {model.output2.kind} outputs")
    plan = model.plan
    img = volume.array
    if img.ndim != 3:
        raise fail(case_id, f"expected a 3D volume, got shape {img.shape}")
    spacing = tuple(float(s) for s in volume.spacing)
    shape = tuple(int(s) for s in img.shape)
    t: dict[str, float] = {}
    bar = _stage_bar(progress, case_id)
    sw = dict(overlap=overlap, batch_size=batch_size, device=model.runtime, progress=progress)

    # --- stage 1: the body's box at the coarse spacing (the cache's own preprocessing function)
    t0 = time.perf_counter()
    bar.set_postfix_str("stage 1")
    body = body_slices(img, spacing) if body_crop else None
    body = body or (slice(None),) * 3
    x1, _, props1 = preprocess_case(img[body], None, spacing, plan, 1, case_id=case_id)
    coarse = sliding_window_predict(torch.from_numpy(x1)[None], model.stage1, model.patch1,
                                    desc=f"{case_id} stage 1", output=model.output1, **sw).labels
    del x1
    # Islands far from the kidneys would drag the box's centre away: keep at most two kidney
    # components (and the masses touching them) on the coarse grid before placing the ROI.
    coarse = postprocess(coarse, props1.resampled_spacing, "anatomy", dataset=model.dataset)
    prior_full = np.zeros(shape, np.uint8)  # uint8 labels on the original grid (nearest)
    prior_full[body] = paste_label_back(coarse, props1)
    t["stage1"] = time.perf_counter() - t0
    bar.update(1)

    # --- ROI: the plan's fixed box centred on the stage-1 foreground, at the target spacing
    t0 = time.perf_counter()
    bar.set_postfix_str("roi")
    center = foreground_center(prior_full)
    if center is None:
        center = tuple((n - 1) / 2.0 for n in shape)
        warnings.warn(f"{case_id}: stage 1 found no kidney; stage 2 runs on a box at the volume's centre",
                      stacklevel=2)
    x2, p2, props2 = preprocess_case(img, prior_full, spacing, plan, 2, center=center, case_id=case_id)
    del prior_full
    inp = torch.cat([torch.from_numpy(x2)[None], prior_channels(torch.from_numpy(p2), dataset=model.dataset)], 0)
    del x2, p2
    t["roi"] = time.perf_counter() - t0
    bar.update(1)

    # --- stage 2
    t0 = time.perf_counter()
    bar.set_postfix_str("stage 2")
    # Only the part of the box inside the volume goes through the network: where the box reaches
    # past the volume's edge, the rest is padding whose labels paste_label_back drops anyway.
    inside = props2.inside_slices()
    fine = np.zeros(tuple(inp.shape[1:]), np.uint8)
    res2 = sliding_window_predict(inp[(slice(None), *inside)], model.stage2, model.patch2,
                                  mirror_axes=(0, 1, 2) if tta else None, desc=f"{case_id} stage 2",
                                  return_probs=probabilities, output=model.output2, **sw)
    fine[inside] = res2.labels
    box_probs = None
    if probabilities:  # the part of the box inside the volume, with its place on the original grid
        box_probs = BoxProbabilities(
            res2.probs[1], res2.probs[2],
            tuple(m.offset + m.step * sl.start for m, sl in zip(props2.maps, inside)),
            tuple(m.step for m in props2.maps), shape, np.asarray(volume.affine, float).copy())
    del inp, res2
    t["stage2"] = time.perf_counter() - t0
    bar.update(1)

    # --- back to the original grid (nearest, 0 outside the box), post-process (foreground box only)
    t0 = time.perf_counter()
    bar.set_postfix_str("postprocess")
    labels = paste_label_back(fine, props2)
    name, opts = model.postprocess
    labels = postprocess(labels, spacing, name, dataset=model.dataset, **opts)
    t["postprocess"] = time.perf_counter() - t0
    bar.update(2)
    bar.close()
    return (labels, t, box_probs) if probabilities else (labels, t)


__all__ = ["CascadeModel", "predict_volume"]
