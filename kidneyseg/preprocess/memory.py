"""The RAM one case needs to preprocess, known from its shape before any voxel is read.

:func:`check_memory` runs before ``kidneyseg preprocess`` (and the pipeline's notebook 02) starts:
a case that cannot fit the RAM budget (:func:`kidneyseg.runtime.ram_budget_bytes`) is refused in one
line with the GiB it needs, and fewer worker processes run when the largest cases would not fit side
by side.

>>> from kidneyseg.preprocess.plan import Plan
>>> plan = Plan(box_size_mm=(236.0, 199.6, 315.9))
>>> round(case_memory_bytes((1059, 512, 512), (0.5, 0.81, 0.81), plan) / 2**30, 1)   # KiTS19's largest
2.5
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np

from ..errors import fail
from .case import STAGES
from .plan import Plan

__all__ = ["CASE_BASE_BYTES", "CASE_BYTES_PER_VOXEL", "OUTPUT_BYTES_PER_VOXEL", "case_memory_bytes", "check_memory"]


#: Memory of one case in a preprocessing worker, measured on painted native KiTS19 cases
#: (benchmarks/native_scale.py, docs/full_scale.md): the process (0.5 GiB) plus 6.7 bytes per original
#: voxel (the int16 file decoded to float32, its transpose into C order, the labels; 2.3 GiB for the
#: 1059 x 512 x 512 case), plus the stage outputs while they are made (float32, one resampling pass
#: and the float16 rounding: about 10 bytes per output voxel). Rounded up: 7 and 10.
CASE_BASE_BYTES = 512 * 2**20
CASE_BYTES_PER_VOXEL = 7
OUTPUT_BYTES_PER_VOXEL = 10


def case_memory_bytes(shape, spacing, plan: Plan, stages: Sequence[int] = STAGES) -> int:
    """Estimated peak memory (bytes) of preprocessing one case of ``shape`` (z, y, x) at ``spacing`` (mm)."""
    from .resample import new_shape
    from .roi import box_voxels

    out = 0
    if 1 in stages:
        out = max(out, int(np.prod(new_shape(shape, spacing, plan.stage1_spacing), dtype=np.int64)))
    if 2 in stages and plan.box_size_mm is not None:
        out = max(out, int(np.prod(box_voxels(plan.box_size_mm, plan.target_spacing), dtype=np.int64)))
    vox = int(np.prod([int(s) for s in shape], dtype=np.int64))
    return CASE_BASE_BYTES + CASE_BYTES_PER_VOXEL * vox + OUTPUT_BYTES_PER_VOXEL * out


def check_memory(df, cases, plan: Plan, stages: Sequence[int], workers: int, budget: int) -> int:
    """Refuse a case that cannot fit ``budget`` bytes on its own; return how many workers fit at once.

    The workers take the largest cases first, so the ``workers`` largest cases may run together; when
    they do not fit, fewer workers run (a warning says so; the results do not depend on it).

    Raises:
        KidneysegError: naming the largest case, the GiB it needs and the budget.
    """
    rows = df.set_index("case_id")
    need = sorted(((case_memory_bytes([rows.at[c, f"shape_{a}"] for a in "zyx"],
                                      [rows.at[c, f"spacing_{a}"] for a in "zyx"], plan, stages), c)
                   for c, _, _ in cases), reverse=True)
    if not need:
        return workers
    top, case = need[0]
    if top > budget:
        raise fail(case, f"preprocessing this case needs about {top / 2**30:.1f} GiB of RAM but the RAM budget is "
                         f"{budget / 2**30:.1f} GiB (free memory, or $KIDNEYSEG_RAM_BUDGET_GIB); free memory or use "
                         "a coarser stage-1 spacing")
    fit = 1
    while fit < min(workers, len(need)) and sum(n for n, _ in need[:fit + 1]) <= budget:
        fit += 1
    if fit < workers and fit < len(need):
        warnings.warn(f"preprocessing with {fit} worker(s) instead of {workers}: the {workers} largest cases need "
                      f"about {sum(n for n, _ in need[:workers]) / 2**30:.1f} GiB together, the RAM budget is "
                      f"{budget / 2**30:.1f} GiB", stacklevel=3)
        return fit
    return workers
