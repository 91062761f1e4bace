"""kidneyseg.train.parallel: independent jobs in processes with a fixed thread count per job."""

from __future__ import annotations

import pytest
import torch

from kidneyseg.train.parallel import run_jobs, train_stages


def _seeded_matmul(seed: int) -> tuple[int, float]:
    """A module-level (picklable) job: its thread count and a seeded torch result."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(64, 64, generator=g)
    return torch.get_num_threads(), float((a @ a.T).sum())


def test_results_keep_the_job_order_and_do_not_depend_on_workers():
    one = run_jobs(_seeded_matmul, [3, 1, 2], workers=1, threads=1)
    two = run_jobs(_seeded_matmul, [3, 1, 2], workers=2, threads=1)
    assert one == two
    assert [t for t, _ in two] == [1, 1, 1]          # every job ran with the fixed thread count
    assert one[0] != one[1]                           # the order is the jobs' order


def test_in_process_jobs_restore_the_callers_thread_count():
    before = torch.get_num_threads()
    run_jobs(_seeded_matmul, [0], workers=1, threads=1)
    assert torch.get_num_threads() == before


def test_a_jobs_exception_reaches_the_caller():
    with pytest.raises(ValueError, match="math domain"):
        run_jobs(_sqrt, [4.0, -1.0], workers=2, threads=1)


def _sqrt(x: float) -> float:
    import math

    return math.sqrt(x)


@pytest.mark.parametrize("kwargs, message", [({"workers": 0}, "workers must be >= 1"),
                                             ({"threads": 0}, "threads must be >= 1")])
def test_bad_counts_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        run_jobs(_sqrt, [1.0], **kwargs)


def test_train_stages_refuses_two_configs_of_one_stage(tmp_path):
    from kidneyseg.train.config import preset

    cfg = preset("demo", 1, {"epochs": 1})
    with pytest.raises(ValueError, match="different stages"):
        train_stages([cfg, cfg], tmp_path / "cache", tmp_path / "model")
