"""kidneyseg.data.manifest: scan, volumes, split, exclusion, validation, clear errors."""

from __future__ import annotations

import gzip
import json
import math

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from kidneyseg.cli import main
from kidneyseg.data.manifest import (COLUMNS, assign_split, build_manifest, case_paths, make_manifest,
                                     n_validation, read_manifest, select_cases)
from kidneyseg.errors import KidneysegError

from .conftest import ROOT, kits_affine, tiny_label

SPACING = (3.0, 0.8, 0.75)  # (z, y, x) mm -> 1.8 mm^3 per voxel


def _write_case(root, i, label, spacing=SPACING, image=True):
    case = root / f"case_{i:05d}"
    case.mkdir(parents=True, exist_ok=True)
    aff = kits_affine(spacing)
    nib.save(nib.Nifti1Image(label.astype(np.uint8), aff), str(case / "segmentation.nii.gz"))
    if image:
        nib.save(nib.Nifti1Image(np.zeros(label.shape, np.int16), aff), str(case / "imaging.nii.gz"))
    return case


@pytest.fixture
def kits_folder(tmp_path):
    """Six tiny cases (one with an odd in-plane shape) plus a kits.json."""
    root = tmp_path / "data"
    for i in range(5):
        lab = tiny_label(seed=i)
        lab[: i + 1, :2, :2] = 2  # tumor sizes 4 * (i + 1) voxels larger per case
        _write_case(root, i, lab)
    _write_case(root, 5, tiny_label(shape=(12, 20, 30)), image=False)  # the odd one out
    records = [{"case_id": f"case_{i:05d}", "radiographic_size": 1.5 + i} for i in range(5)]
    (root / "kits.json").write_text(json.dumps(records))
    return root


def test_manifest_rows_volumes_paths(kits_folder, tmp_path):
    out = tmp_path / "out" / "m.csv"
    path = build_manifest(kits_folder, out, workers=1, progress=False)
    df = read_manifest(path)
    assert list(df.columns) == list(COLUMNS)
    assert len(df) == 6 and df.case_id.tolist() == [f"case_{i:05d}" for i in range(6)]
    row = df.iloc[0]
    assert row.image == "../data/case_00000/imaging.nii.gz"
    image, label = case_paths(row, path)
    assert image.exists() and label.exists()
    # Hand count: tiny_label has two 6x7x6 kidney boxes ... computed from the array itself.
    lab = tiny_label(seed=0)
    lab[:1, :2, :2] = 2
    voxel_ml = 3.0 * 0.8 * 0.75 / 1000
    assert row.kidney_ml == pytest.approx(np.count_nonzero(lab) * voxel_ml, rel=1e-6)
    assert row.tumor_ml == pytest.approx(np.count_nonzero(lab == 2) * voxel_ml, rel=1e-6)
    assert row.kidney_ml > row.tumor_ml > 0
    assert (row.shape_z, row.shape_y, row.shape_x) == (12, 20, 24)
    assert (row.spacing_z, row.spacing_y, row.spacing_x) == pytest.approx(SPACING)
    assert row.tumor_size_cm == 1.5 and math.isnan(df.iloc[5].tumor_size_cm)
    assert not df.iloc[5].has_image and df.iloc[5].image == "" and case_paths(df.iloc[5], path)[0] is None


def test_odd_inplane_shape_is_excluded_with_reason(kits_folder, tmp_path):
    df = make_manifest(kits_folder, headers_only=True, progress=False)
    assert df.excluded.tolist() == [False] * 5 + [True]
    assert "20x30 differs from the dataset's 20x24" in df.exclude_reason.iloc[5]
    assert (df.split[df.excluded] == "train").all()  # never drawn for validation
    assert df.kidney_ml.isna().all()  # headers only
    assert len(select_cases(df)) == 5 and len(select_cases(df, "val")) == 1


def test_parallel_equals_serial(kits_folder, tmp_path):
    a = make_manifest(kits_folder, workers=1, progress=False)
    b = make_manifest(kits_folder, workers=2, progress=False)
    pd.testing.assert_frame_equal(a, b)


@pytest.mark.parametrize("n, n_val", [(210, 20), (8, 1), (5, 1), (4, 0), (21, 2), (100, 10)])
def test_validation_count(n, n_val):
    assert n_validation(n) == n_val


def test_split_is_seeded_and_balances_tumor_sizes():
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"tumor_ml": rng.lognormal(3.4, 1.5, 210), "excluded": False})
    s1, s2, s3 = assign_split(df, 0), assign_split(df, 0), assign_split(df, 1)
    assert (s1 == s2).all() and not (s1 == s3).all()
    assert (s1 == "val").sum() == 20
    val, train = df.tumor_ml[s1 == "val"], df.tumor_ml[s1 == "train"]
    # One val case per tumor-size decile-like bin: val quantiles track train quantiles.
    for q in (0.25, 0.5, 0.75):
        assert val.quantile(q) == pytest.approx(train.quantile(q), rel=0.35)
    # An unstratified draw can be far off; ours cannot put all val cases in the small half.
    assert (val < train.median()).sum() in range(8, 13)


def _run(args, capsys):
    rc = main(args)
    err = capsys.readouterr().err.strip()
    return rc, err


@pytest.mark.parametrize("problem", ["missing", "corrupt", "2d", "value7", "empty"])
def test_bad_input_one_line_no_output(problem, kits_folder, tmp_path, capsys):
    out = tmp_path / "m.csv"
    out.write_text("previous complete manifest\n")
    bad = kits_folder / "case_00002" / "segmentation.nii.gz"
    if problem == "missing":
        target = tmp_path / "nope"
    else:
        target = kits_folder
        if problem == "corrupt":
            raw = gzip.compress(b"\x5c\x01" + b"x" * 400)
            bad.write_bytes(raw[: len(raw) // 2])
        elif problem == "2d":
            nib.save(nib.Nifti1Image(np.zeros((20, 24), np.uint8), np.eye(4)), str(bad))
        elif problem == "value7":
            lab = tiny_label()
            lab[0, 0, 0] = 7
            nib.save(nib.Nifti1Image(lab, kits_affine(SPACING)), str(bad))
        elif problem == "empty":
            bad.write_bytes(b"")
    rc, err = _run(["manifest", str(target), "-o", str(out), "--workers", "2", "--no-progress"], capsys)
    assert rc == 2
    lines = [line for line in err.splitlines() if line.startswith("kidneyseg manifest: error:")]
    assert len(lines) == 1, err
    assert str(target if problem == "missing" else bad) in lines[0]
    expected = {"missing": "no such folder", "corrupt": "", "2d": "3D", "value7": "[7]", "empty": "empty"}[problem]
    assert expected in lines[0]
    assert out.read_text() == "previous complete manifest\n"  # untouched, no partial CSV
    assert not list(tmp_path.glob(".m.csv.*"))


def test_read_manifest_refuses_bad_files(tmp_path, kits_folder):
    path = build_manifest(kits_folder, tmp_path / "m.csv", headers_only=True, progress=False)
    df = pd.read_csv(path)
    df.drop(columns=["split"]).to_csv(tmp_path / "a.csv", index=False)
    with pytest.raises(KidneysegError, match="lacks columns \\['split'\\]"):
        read_manifest(tmp_path / "a.csv")
    pd.concat([df, df.iloc[:1]]).to_csv(tmp_path / "b.csv", index=False)
    with pytest.raises(KidneysegError, match="duplicate case ids"):
        read_manifest(tmp_path / "b.csv")
    with pytest.raises(KidneysegError, match="no such manifest"):
        read_manifest(tmp_path / "none.csv")


# ------------------------------------------------------------------------------- real labels
def test_real_headers_only_manifest(kits19_dir, tmp_path, capsys):
    out = tmp_path / "m.csv"
    rc, err = _run(["manifest", str(kits19_dir), "-o", str(out), "--headers-only"], capsys)
    assert rc == 0, err
    df = read_manifest(out)
    assert len(df) == 210 and not df.has_image.any() and df.has_label.all()
    assert df.excluded.sum() == 1 and df.loc[df.excluded, "case_id"].item() == "case_00160"
    assert (df.split == "val").sum() == 20 and (df.split == "train").sum() == 190
    assert df.tumor_size_cm.notna().all() and df.loc[0, "tumor_size_cm"] == 2.4
    assert case_paths(df.iloc[0], out)[1].exists()


def test_committed_manifest(kits19_dir):
    path = ROOT / "data_manifest.csv"
    df = read_manifest(path)
    assert len(df) == 210 and not df.has_image.any()
    assert df.loc[df.excluded, "case_id"].tolist() == ["case_00160"]
    assert df.kidney_ml.notna().all() and (df.kidney_ml > df.tumor_ml).all() and (df.tumor_ml > 0).all()
    assert df.label.iloc[0] == "../shared/kits19/case_00000/segmentation.nii.gz"
    assert case_paths(df.iloc[0], path)[1].resolve() == (kits19_dir / "case_00000" / "segmentation.nii.gz").resolve()
    # Same header facts and split as a fresh header-only scan (seed 0).
    fresh = make_manifest(kits19_dir, ROOT, headers_only=True, progress=False)
    cols = ["case_id", "label", "shape_z", "shape_y", "shape_x", "excluded"]
    pd.testing.assert_frame_equal(df[cols], fresh[cols])
    spacing = ["spacing_z", "spacing_y", "spacing_x"]
    np.testing.assert_allclose(df[spacing], fresh[spacing], rtol=1e-8)
    # Tumor sizes balanced across the split.
    med = df.groupby("split").tumor_ml.median()
    assert med["val"] == pytest.approx(med["train"], rel=0.5)


def test_phantom_manifest_val_cases_override(tmp_path):
    from kidneyseg.data.manifest import read_manifest
    from kidneyseg.data.phantom import write_phantoms

    m = write_phantoms(tmp_path / "ph", 6, 0, progress=False, n_val=2, size=48)
    df = read_manifest(m)
    assert (df.split == "val").sum() == 2 and len(df) == 6
    with pytest.raises(ValueError, match="n_val must be in"):
        write_phantoms(tmp_path / "ph2", 3, 0, progress=False, n_val=3, size=48)


def test_spread_by_size_keeps_the_largest_and_spans_the_sizes():
    import pandas as pd

    from kidneyseg.data.manifest import spread_by_size

    df = pd.DataFrame({"case_id": [f"case_{i:05d}" for i in range(20)], "shape_z": [(i * 7) % 20 + 1 for i in range(20)],
                       "shape_y": 512, "shape_x": 512})
    vox = df.shape_z * 512 * 512
    three = spread_by_size(df, 3)
    assert len(three) == 3 and list(three.index) == sorted(three.index)          # the manifest's order
    assert vox[three.index].max() == vox.max() and vox[three.index].min() == vox.min()
    assert sorted(vox[three.index])[1] in (sorted(vox)[9], sorted(vox)[10])      # and the median
    assert list(spread_by_size(df, 1).index) == [int(vox.idxmax())]
    assert spread_by_size(df, 0) is df and spread_by_size(df, None) is df and spread_by_size(df, 50) is df
    with pytest.raises(ValueError, match="n must be >= 0"):
        spread_by_size(df, -1)
