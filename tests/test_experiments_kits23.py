"""experiments on KiTS23 rows: the ablation table per region, the protocol of results and manifests."""

import numpy as np
import pandas as pd
import pytest

from kidneyseg import experiments


def _rows(protocol_regions):
    rows = []
    for variant in experiments.VARIANTS:
        for seed in (0, 1):
            for case in range(2):
                row = {"variant": variant, "seed": seed, "case_id": f"c{case}"}
                for i, r in enumerate(protocol_regions):
                    row[f"{r}_dice"] = 0.9 - 0.2 * i - 0.05 * seed
                rows.append(row)
    return pd.DataFrame(rows)


def test_ablation_table_kits23_has_one_column_per_region():
    results = _rows(["kidney_and_masses", "masses", "tumor"])
    assert experiments.results_protocol(results).name == "kits23"
    table = experiments.ablation_table(results)
    assert [c for c in table.columns if c.endswith(" Dice")] == ["Kidney and masses Dice", "Masses Dice",
                                                                 "Tumor Dice", "Mean Dice"]
    row = table.iloc[0]
    assert row["kidney_and_masses_dice_mean"] == pytest.approx(87.5)  # (90 + 85) / 2 over seeds
    assert row["mean_dice_mean"] == pytest.approx(np.mean([70, 65]))
    assert row["tumor_dice_sd"] == pytest.approx(np.std([50, 45], ddof=1))


def test_ablation_table_kits19_keeps_the_thesis_columns():
    table = experiments.ablation_table(_rows(["kidney", "tumor"]))
    assert list(table.columns[:5]) == ["Method", "seeds", "Kidney Dice", "kidney_dice_mean", "kidney_dice_sd"]
    assert [c for c in table.columns if c.endswith(" Dice")] == ["Kidney Dice", "Tumor Dice", "Mean Dice"]
