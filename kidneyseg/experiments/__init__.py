"""Experiments the notebooks run: whole-case validation, a single-stage baseline, the Table 4.2 ablation.

Everything here composes the pipeline's steps (preprocess -> train -> infer -> evaluate); the
notebooks ``04_ablation`` and ``05_inference_evaluation`` only set parameters, call these and plot.

========================  =====================================================================
``validation``            :func:`validate_model` (a cascade model on a manifest split, per-case
                          metrics), the post-processing choice, :func:`evaluate_predictions`,
                          the single-stage baseline (:func:`train_single_stage`,
                          :func:`validate_single_stage`), :func:`untrained_copy` (the control);
                          a rerun scores the label maps it already wrote (:func:`prediction_key`)
``ablation``              :func:`run_ablation` (Table 4.2's variants over seeds, one shared
                          stage-1 model, notebook 03's stage 2 reused as its PM run),
                          :func:`ablation_table` (mean ± sd), :func:`ablation_differences` and
                          :func:`ablation_summary` (each variant against PM, told apart from seed
                          noise or not)
========================  =====================================================================

Cases are scored with the evaluation protocol of the data's dataset
(:mod:`kidneyseg.evaluate.protocols`): KiTS19's kidney/tumor report, or KiTS23's three nested
regions at the challenge's tolerances (``tolerance_mm`` must then stay ``None``).
"""

from __future__ import annotations

from .ablation import (THESIS_TABLE_4_2, VARIANTS, ablation_differences, ablation_summary,
                       ablation_table, reusable_stage2, run_ablation, welch_interval)
from .validation import (METRIC_COLUMNS, PREDICTIONS_INDEX, choose_postprocessing, evaluate_predictions, manifest_protocol,
                         prediction_key, results_protocol, single_stage_plan, split_cases, train_single_stage, untrained_copy,
                         validate_model, validate_single_stage)

__all__ = ["METRIC_COLUMNS", "PREDICTIONS_INDEX", "THESIS_TABLE_4_2", "VARIANTS", "ablation_differences", "ablation_summary",
           "ablation_table", "choose_postprocessing", "evaluate_predictions", "manifest_protocol", "prediction_key", "reusable_stage2",
           "results_protocol", "run_ablation", "single_stage_plan", "split_cases", "train_single_stage",
           "untrained_copy", "validate_model", "validate_single_stage", "welch_interval"]
