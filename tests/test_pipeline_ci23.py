"""The ci23 profile end to end: KiTS23-style phantoms with cysts, region-based training, the kits23 protocol."""

import numpy as np
import pandas as pd
import pytest

from kidneyseg import pipeline
from kidneyseg.data.datasets import KITS23
from kidneyseg.evaluate.protocols import get_protocol
from kidneyseg.io import load_volume
from kidneyseg.model.folder import ModelFolder, load_stage

pytestmark = pytest.mark.slow

#: Notebook 04 (the ablation) is left out to keep the test short; its per-region table has a fast test.
STEPS = ["01_data_statistics", "02_preprocessing", "03_training", "05_inference_evaluation"]


@pytest.fixture(scope="module")
def ci23_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "ci23"
    results = pipeline.run_pipeline(out, profile="ci23", notebooks=STEPS, log=lambda s: None)
    return out, results


def test_kits23_phantoms_train_region_based_predict_three_labels_and_evaluate(ci23_run):
    out, results = ci23_run
    assert [r.status for r in results] == ["ran"] * len(STEPS)
    manifest = pd.read_csv(out / "data" / "manifest.csv")
    assert set(manifest.dataset) == {"kits23"} and (manifest.cyst_ml > 0).sum() >= 2
    assert (out / "data" / "kits23.json").is_file()
    assert (out / "01_data_statistics" / "spacing_table.csv").is_file()
    model = ModelFolder(out / "03_training" / "model")
    assert model.load_plan().dataset == "kits23"
    for stage in (1, 2):
        net, spec = load_stage(model.stage(stage))
        assert (spec.output.dataset, spec.output.kind, spec.network.num_classes) == ("kits23", "regions", 3)
    assert spec.network.in_channels == 2  # CT + the kidney-and-masses prior
    metrics = pd.read_csv(model.stage(2).metrics)
    assert {"val_dice_kidney_and_masses", "val_dice_masses", "val_dice_tumor"} <= set(metrics.columns)
    # the cascade's predictions hold all three labels (raw, before post-processing), and only those
    found = set()
    for path in (out / "05_inference_evaluation" / "predictions_raw").glob("*.nii.gz"):
        found |= set(np.unique(load_volume(path, "label", label_values=KITS23.label_values).array).tolist())
    assert found == {0, 1, 2, 3}
    table = pd.read_csv(out / "05_inference_evaluation" / "metrics_cascade.csv")
    assert tuple(table.columns) == get_protocol("kits23").columns
    cases = table[table.case_id != "mean"]
    assert len(cases) == 2
    for col in get_protocol("kits23").columns[1:9]:
        assert cases[col].between(0, 1).all(), col
    assert cases["kidney_and_masses_dice"].mean() > 0.1  # it learned something: an untrained net scores ~0
