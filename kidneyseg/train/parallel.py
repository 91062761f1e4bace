"""Independent trainings side by side: one process per job, each with a fixed number of torch threads.

A tiny network on a small CPU uses a second thread poorly (many small operations, each split
across threads), so on a 2-core machine two single-threaded trainings at once finish sooner than
the same two one after the other with two threads each. :func:`run_jobs` runs picklable jobs in
``workers`` spawned processes (spawn: no fork of a process whose OpenMP threads already run).

A job's result never depends on ``workers``: every job runs with ``threads`` torch threads,
whatever the number of processes, in a process of its own or in the caller's (``workers=1``).
(CPU training depends on the thread count in its last bits, see docs/training.md, so the thread
count is fixed per job rather than derived from the number of workers.)

:func:`train_stages` trains the cascade's stages this way: stage 2 learns from the perturbed
ground truth, not from stage 1's predictions, so the two stages are independent jobs.

>>> run_jobs(abs, [-1, -2], workers=1)
[1, 2]
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

__all__ = ["run_jobs", "train_stages"]


def _set_threads(threads: int | None) -> None:
    if threads is not None:
        torch.set_num_threads(int(threads))


def _call(fn: Callable, threads: int | None, args: Any) -> Any:
    _set_threads(threads)
    return fn(args)


def run_jobs(fn: Callable[[Any], Any], jobs: Sequence[Any], workers: int = 1, threads: int | None = None) -> list:
    """``[fn(job) for job in jobs]``, computed by ``workers`` processes with ``threads`` torch threads each.

    Args:
        fn: a module-level function (picklable) of one argument.
        jobs: its arguments (picklable); results come back in this order.
        workers: processes (1: in this process, one job after the other).
        threads: torch threads per job (``None``: leave the setting as it is; with ``workers=1``
            the caller's thread count is restored afterwards).

    Raises:
        ValueError: ``workers`` or ``threads`` below 1. A job's exception is raised here.
    """
    if int(workers) < 1:
        raise ValueError(f"workers must be >= 1, got {workers!r}")
    if threads is not None and int(threads) < 1:
        raise ValueError(f"threads must be >= 1 or None, got {threads!r}")
    jobs = list(jobs)
    if int(workers) == 1 or len(jobs) <= 1:
        before = torch.get_num_threads()
        try:
            return [_call(fn, threads, job) for job in jobs]
        finally:
            torch.set_num_threads(before)
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(int(workers), len(jobs)), mp_context=ctx) as pool:
        futures = [pool.submit(_call, fn, threads, job) for job in jobs]
        try:
            return [f.result() for f in futures]
        except BaseException:
            for f in futures:
                f.cancel()
            raise


def _train_job(job: tuple) -> list[dict[str, Any]]:
    """One stage: ``(config dict, cache_dir, model_dir, device)``; resumes from its last checkpoint."""
    from ..model.folder import ModelFolder
    from .config import TrainConfig
    from .stage import train_stage

    config, cache_dir, model_dir, device = job
    cfg = TrainConfig.from_dict(config)
    resume = ModelFolder(model_dir).stage(cfg.stage).checkpoint_last.exists()
    return train_stage(cfg, cache_dir, model_dir, device=device, resume=resume)


def train_stages(configs: Sequence, cache_dir: os.PathLike | str, model_dir: os.PathLike | str, *,
                 device: str = "cpu", workers: int = 1, threads: int | None = None) -> list[list[dict[str, Any]]]:
    """Train each :class:`~kidneyseg.train.config.TrainConfig` of ``configs`` (e.g. stage 1 and
    stage 2) into ``model_dir`` with :func:`~kidneyseg.train.stage.train_stage`, ``workers`` at a
    time with ``threads`` torch threads each; a stage with a ``checkpoint_last.pt`` resumes.

    Returns:
        Each stage's metrics history, in the order of ``configs``.
    """
    stages = [c.stage for c in configs]
    if len(set(stages)) != len(stages):
        raise ValueError(f"configs must train different stages, got stages {stages}")
    if str(device).startswith("cuda") and int(workers) > 1:
        raise ValueError("workers > 1 trains on the CPU only (one GPU runs one training at a time)")
    jobs = [(c.to_dict(), str(cache_dir), str(Path(model_dir)), device) for c in configs]
    return run_jobs(_train_job, jobs, workers=workers, threads=threads)
