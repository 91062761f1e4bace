"""notebooks/02_preprocessing.ipynb runs end to end on phantoms (papermill) and writes its figures."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_notebook_runs_on_phantoms(tmp_path):
    papermill = pytest.importorskip("papermill")
    out = tmp_path / "out"
    papermill.execute_notebook(str(ROOT / "notebooks" / "02_preprocessing.ipynb"), str(tmp_path / "nb.ipynb"),
                               parameters={"output_dir": str(out), "n_phantoms": 3, "workers": 1, "phantom_size": 128,
                                           # the phantoms' own scale (~3 mm pixels): nothing is upsampled
                                           "target_spacing": [3.0, 2.4, 2.4], "stage1_spacing": [6.0, 4.8, 4.8]},
                               progress_bar=False, kernel_name="python3")
    for name in ("fig3_3_foreground_histogram.png", "fig3_4_normalisation.png", "stages.png",
                 "roi_comparison.png", "roi_comparison.csv", "plan.json"):
        assert (out / name).stat().st_size > 0, name
    import nibabel as nib  # the size parameter reached the phantoms (KiTS layout: z first on disk)

    img = nib.load(str(next((out / "phantoms").glob("case_*/imaging.nii.gz"))))
    assert img.shape[1:] == (128, 128), img.shape
