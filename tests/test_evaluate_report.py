"""kidneyseg evaluate: folder matching, CSV/JSON output, summary row, geometry errors."""

import csv
import json
import math

import numpy as np
import pytest

from kidneyseg.cli import main
from kidneyseg.errors import KidneysegError
from kidneyseg.evaluate.report import COLUMNS, evaluate_folders, find_label_files

from .conftest import kits_affine, tiny_label

AFF = kits_affine((3.0, 0.8, 0.75))


def make_folders(write_nifti, n=2):
    for i in range(n):
        gt = tiny_label(seed=i)
        pred = gt.copy()
        if i == 1:
            pred[pred == 2] = 1  # tumor missed
        write_nifti(gt, AFF, f"gt/case_{i:05d}/segmentation.nii.gz", np.uint8)
        write_nifti(pred, AFF, f"pred/case_{i:05d}.nii.gz", np.uint8)


def test_cli_writes_csv_and_json_with_summary(tmp_path, write_nifti, capsys):
    make_folders(write_nifti)
    rc = main(["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"), "--no-progress",
               "--csv", str(tmp_path / "m.csv"), "--json", str(tmp_path / "m.json"), "--tolerance-mm", "1.5"])
    assert rc == 0
    assert "tolerance: 1.5 mm" in capsys.readouterr().out
    rows = list(csv.DictReader(open(tmp_path / "m.csv")))
    assert list(rows[0]) == COLUMNS
    assert [r["case_id"] for r in rows] == ["case_00000", "case_00001", "mean"]
    assert float(rows[0]["kidney_dice"]) == 1.0 and float(rows[0]["tumor_dice"]) == 1.0
    assert float(rows[1]["kidney_dice"]) == 1.0 and float(rows[1]["tumor_dice"]) == 0.0
    assert float(rows[2]["tumor_dice"]) == 0.5 and float(rows[2]["mean_dice"]) == 0.75
    assert all(float(r["tolerance_mm"]) == 1.5 for r in rows)
    doc = json.load(open(tmp_path / "m.json"))
    assert doc["tolerance_mm"] == 1.5 and len(doc["cases"]) == 2
    assert doc["cases"][1]["tumor_hd95"] is None  # NaN -> null: prediction has no tumor
    assert doc["summary"]["kidney_dice"] == 1.0


def test_geometry_mismatch_is_a_clear_error_and_writes_nothing(tmp_path, write_nifti, capsys):
    write_nifti(tiny_label(), AFF, "gt/case_00000.nii.gz", np.uint8)
    write_nifti(tiny_label(), kits_affine((2.0, 0.8, 0.75)), "pred/case_00000.nii.gz", np.uint8)
    rc = main(["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"), "--no-progress",
               "--csv", str(tmp_path / "m.csv")])
    err = capsys.readouterr().err
    assert rc == 2 and "affine differs" in err and "case_00000.nii.gz" in err
    assert not (tmp_path / "m.csv").exists()
    write_nifti(tiny_label((12, 20, 26)), AFF, "pred/case_00000.nii.gz", np.uint8)
    with pytest.raises(KidneysegError, match="shape"):
        evaluate_folders(tmp_path / "pred", tmp_path / "gt", progress=False)


def test_missing_reference_and_empty_folder(tmp_path, write_nifti):
    write_nifti(tiny_label(), AFF, "pred/case_00007.nii.gz", np.uint8)
    (tmp_path / "gt").mkdir()
    (tmp_path / "empty").mkdir()
    with pytest.raises(KidneysegError, match="no reference.*case_00007"):
        evaluate_folders(tmp_path / "pred", tmp_path / "gt", progress=False)
    with pytest.raises(KidneysegError, match="no label maps"):
        evaluate_folders(tmp_path / "empty", tmp_path / "gt", progress=False)
    with pytest.raises(KidneysegError, match="no such folder"):
        find_label_files(tmp_path / "nope")
    with pytest.raises(ValueError, match="tolerance_mm"):
        evaluate_folders(tmp_path / "pred", tmp_path / "gt", tolerance_mm=math.inf)
