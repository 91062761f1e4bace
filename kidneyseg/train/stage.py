"""Train one cascade stage from the preprocessed cache: the glue between cache, sampler and trainer.

``MODEL_DIR`` layout written here (the model-dir contract)::

    MODEL_DIR/plan.json               copied from CACHE/plan.json (the preprocessing plan)
    MODEL_DIR/stage1/ and stage2/     config.json, checkpoint_last.pt, checkpoint_best.pt (+ .sha256),
                                      metrics.csv

Stage 1 trains on the whole volumes at the coarse spacing (1 input channel); stage 2 on the ROI
boxes at the target spacing with the perturbed ground truth as the stage-1 prior (image + the
dataset's prior regions: KiTS19 one-hot kidney, tumor; KiTS23 the kidney-and-masses region; see
:mod:`kidneyseg.train.prior` for the perturbation and why). The dataset comes from the cache's
plan; a config naming another dataset is refused.

On CUDA the sampler extracts enlarged patches and the augmentation runs on the GPU inside the
trainer; on the CPU the sampler augments in its worker thread.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from ..errors import ensure_output_dir, fail, write_text_atomic
from ..model.folder import ModelFolder
from ..resources import record
from ..runtime import ram_budget_bytes, resolve_device, resolve_runtime
from .config import TrainConfig
from .distributed import cleanup_distributed, init_distributed
from .trainer import Trainer

__all__ = ["memory_check", "resolve_dataset", "train_stage"]


def _copy_plan(cache_dir: Path, folder: ModelFolder) -> None:
    src, dst = cache_dir / "plan.json", folder.plan_path
    if not src.is_file():
        raise fail(src, "the cache has no plan.json (not a `kidneyseg preprocess` folder?); a model folder "
                        "needs the plan its cache was built with")
    if dst.is_file() and dst.read_bytes() != src.read_bytes():
        raise fail(dst, f"differs from the cache's plan {src}; use a new --out folder for a new plan")
    if not dst.is_file():
        from ..errors import atomic_path

        with atomic_path(dst) as tmp:
            shutil.copyfile(src, tmp)


def resolve_dataset(config: TrainConfig, cache_dir: os.PathLike | str) -> TrainConfig:
    """``config`` with the dataset of the cache's plan filled in (``dataset: null``) or checked.

    Raises:
        KidneysegError: the config names another dataset than the cache's, or the cache has no plan.
    """
    from ..preprocess.plan import Plan  # lazily: preprocess is an earlier step

    path = Path(cache_dir) / "plan.json"
    if not path.is_file():
        raise fail(path, "the cache has no plan.json (not a `kidneyseg preprocess` folder?)")
    dataset = Plan.load(path).dataset
    if config.dataset is None:
        return dataclasses.replace(config, dataset=dataset)
    if config.dataset != dataset:
        raise fail(cache_dir, f"the cache holds {dataset} cases but the config says dataset {config.dataset!r}; "
                              f"set \"dataset\": {dataset!r} (or null to take the cache's)")
    return config


def train_stage(config: TrainConfig, cache_dir: os.PathLike | str, model_dir: os.PathLike | str, *,
                resume: bool = False, extend_epochs: int | None = None, device: str = "cpu",
                full_validation: Callable | None = None, hooks: Sequence[Any] = (),
                stop_after: int | None = None, num_workers: int = 1,
                memory_budget_bytes: int | None = None, full_plan: bool = False) -> list[dict[str, Any]]:
    """Train ``config.stage`` on the cache's train split, validating on its val split.

    Args:
        config: the stage's configuration (``config.stage`` picks the cache stage and input channels).
        cache_dir: the ``kidneyseg preprocess`` output folder.
        model_dir: the model folder; this writes ``model_dir/stage<N>/`` and ``model_dir/plan.json``.
        resume, extend_epochs, stop_after: see :meth:`kidneyseg.train.trainer.Trainer.fit`.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"`` (under torchrun each rank takes ``cuda:LOCAL_RANK``).
        memory_budget_bytes: memory one step may take (default: the GPU's, or the CPU RAM budget);
            the step's memory plan is checked first and a step that cannot fit is refused
            (:func:`memory_check`). The plan's table is written to ``model_dir/stage<N>/memory_plan.txt``.
        full_plan: print the whole table (``kidneyseg train``); else one line (stages trained side
            by side in a notebook would interleave their tables).
        full_validation: optional ``(model, epoch) -> dict`` (e.g. a
            whole-case evaluation) run every ``config.full_val_every`` epochs.
        num_workers: sampler threads.

    Returns:
        The metrics history, one dict per epoch.
    """
    cache_dir, model_dir = Path(cache_dir), Path(model_dir)
    if not cache_dir.is_dir():
        raise fail(cache_dir, "no such cache folder (build it with `kidneyseg preprocess`)")
    device = resolve_device(device).type  # "auto" -> cuda or cpu; under torchrun each rank takes its GPU
    # refuse an impossible precision (bf16 on a CPU without it) before anything is read
    resolve_runtime(device, config.precision, config.channels_last, training=True)
    if not (cache_dir / "plan.json").is_file():  # checked before any case is loaded
        raise fail(cache_dir / "plan.json", "the cache has no plan.json (not a `kidneyseg preprocess` folder?); a "
                                            "model folder needs the plan its cache was built with")
    config = resolve_dataset(config, cache_dir)
    lines: list[str] = []
    plan = memory_check(config, device, budget_bytes=memory_budget_bytes, log=lines.append)
    stage_dir = ensure_output_dir(Path(model_dir) / f"stage{config.stage}")
    write_text_atomic(stage_dir / "memory_plan.txt", "\n".join(lines) + "\n")
    print("\n".join(lines) if full_plan else
          f"stage {config.stage}: memory plan {plan.total_bytes / 2 ** 30:.2f} GiB per training step "
          f"(batch {config.batch_size} x patch {list(config.patch_size)}, {plan.precision}; "
          f"table: {stage_dir / 'memory_plan.txt'})")
    with record(f"train stage {config.stage}", Path(model_dir) / f"stage{config.stage}") as rec:
        rec.details.update(epochs=config.epochs, iterations_per_epoch=config.iterations_per_epoch,
                           batch_size=config.batch_size, patch_size=list(config.patch_size),
                           planned_step_gib=round(plan.total_bytes / 2 ** 30, 3))
        return _train(config, cache_dir, model_dir, resume, extend_epochs, device, full_validation, hooks,
                      stop_after, num_workers, rec.details)


def memory_check(config: TrainConfig, device: str, budget_bytes: int | None = None, log=print):
    """Print the memory plan of one training step and refuse, before any work, one that cannot fit.

    The budget is the GPU's total memory on CUDA, and on the CPU ``budget_bytes`` or
    :func:`kidneyseg.runtime.ram_budget_bytes` (``$KIDNEYSEG_RAM_BUDGET_GIB``, else the RAM free now).

    Returns:
        the :class:`~kidneyseg.train.memory_plan.MemoryPlan`.
    """
    from .memory_plan import check_memory_plan, training_memory_plan

    plan = training_memory_plan(config, device)
    log(plan.table())
    if device == "cuda":
        total = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
        budget, what = (budget_bytes or total), "the GPU's memory"
    else:
        budget, what = (budget_bytes or ram_budget_bytes()), "the RAM budget"
    check_memory_plan(plan, int(budget), what)
    return plan


def _train(config: TrainConfig, cache_dir: Path, model_dir: Path, resume: bool, extend_epochs: int | None,
           device: str, full_validation: Callable | None, hooks: Sequence[Any], stop_after: int | None,
           num_workers: int, details: dict[str, Any]) -> list[dict[str, Any]]:
    from ..preprocess.cache import list_cases, load_case  # lazily: preprocess is an earlier step
    from .augment import augment_batch, sample_size_for
    from .sampler import PatchSampler

    info = init_distributed(device)
    dev = f"cuda:{info.local_rank}" if device.startswith("cuda") else "cpu"
    stage = config.stage
    train_ids = list_cases(cache_dir, split="train", stage=stage)
    val_ids = list_cases(cache_dir, split="val", stage=stage)
    if not train_ids:
        raise fail(cache_dir, f"no stage-{stage} training cases in the cache")
    train_cases = [load_case(cache_dir, c, stage) for c in train_ids]
    val_cases = [load_case(cache_dir, c, stage) for c in val_ids]
    prior = "perturbed-gt" if stage == 2 else None
    patch = tuple(config.patch_size)
    acfg = config.augment
    on_gpu = dev.startswith("cuda")
    sample_size = patch if acfg is None else sample_size_for(patch, acfg)
    sc = config.sampler
    sampler = PatchSampler(
        train_cases, patch, config.batch_size, sc.fg_fraction, prior, seed=config.seed,
        sample_size=sample_size, augment=None if on_gpu else acfg, tumor_fraction=sc.tumor_fraction,
        max_locations=sc.max_locations, perturbation=sc.prior, num_workers=num_workers,
        rank=info.rank, world_size=info.world_size, pin_memory=on_gpu, dataset=config.dataset,
        label_dtype=torch.uint8 if on_gpu else torch.int64, progress=config.progress and info.is_main)
    n = config.iterations_per_epoch

    def train_batches(epoch: int, seed: int):
        return sampler.iterate(epoch * n, (epoch + 1) * n)

    val_batches = None
    if val_cases and config.val_iterations:
        val_sampler = PatchSampler(val_cases, patch, config.batch_size, sc.fg_fraction, prior,
                                   seed=config.seed + 1, tumor_fraction=sc.tumor_fraction,
                                   max_locations=sc.max_locations, perturbation=sc.prior, num_workers=0, rank=info.rank,
                                   world_size=info.world_size, progress=False, dataset=config.dataset)

        def val_batches(epoch: int, seed: int):
            return val_sampler.iterate(0, config.val_iterations)

    augment = None
    if on_gpu and acfg is not None:
        def augment(x, y, g):
            return augment_batch(x, y, acfg, g, out_shape=patch, image_channels=1)

    folder = ModelFolder(model_dir)
    if info.is_main:
        ensure_output_dir(model_dir)
        _copy_plan(cache_dir, folder)
    trainer = Trainer(config, folder.stage(stage).root, train_batches, val_batches, device=dev, augment=augment,
                      full_validation=full_validation, hooks=hooks, dist=info)
    try:
        history = trainer.fit(resume=resume, extend_epochs=extend_epochs, stop_after=stop_after)
        details["epochs_run"] = trainer.epochs_run
        if not trainer.epochs_run:  # a resumed run found this stage trained: its row measured no work
            details["no_work"] = "already trained"
        return history
    finally:
        cleanup_distributed()
