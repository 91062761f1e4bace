"""kidneyseg predict: exact geometry for KiTS, RAS, 5 mm and DICOM inputs; model folders; shards; skips."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from kidneyseg.cli import main
from kidneyseg.errors import KidneysegError
from kidneyseg.infer import cascade
from kidneyseg.infer.cascade import CascadeModel, predict_volume
from kidneyseg.infer.predict import list_inputs, output_path, parse_shard, predict_path, shard_cases
from kidneyseg.io import load_volume

from .conftest import kits_affine
from .infer_helpers import make_model_dir, phantom_ct, threshold_model, write_dicom_series

torch.set_num_threads(2)
RAS = np.array([[0.75, 0, 0, -100], [0, 0.8, 0, -120], [0, 0, 2.5, 30], [0, 0, 0, 1]], float)


def dice(a, b):
    return 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


@pytest.fixture
def fake_model(monkeypatch):
    """Threshold networks in place of a trained model: the right answer is known (HU > 150)."""
    monkeypatch.setattr(CascadeModel, "load", classmethod(lambda cls, *a, **k: threshold_model()))


@pytest.mark.parametrize("layout", ["kits", "ras", "kits5mm"])
def test_output_has_input_geometry_and_finds_the_kidney(tmp_path, write_nifti, fake_model, layout):
    ct = phantom_ct()  # canonical (z, y, x)
    if layout == "kits":
        data, aff = ct, kits_affine((2.5, 0.8, 0.75))
    elif layout == "kits5mm":
        data, aff = ct, kits_affine((5.0, 0.9, 0.9))
    else:  # the same anatomy stored RAS: (x, y, z), x->R, y->A, z->S
        data, aff = ct[::-1, ::-1, ::-1].transpose(2, 1, 0), RAS
    path = write_nifti(data, aff, f"in/{layout}.nii.gz", np.int16)
    out = tmp_path / "out" / "seg.nii.gz"
    res = predict_path(path, out, "unused", progress=False, log=lambda s: None)
    assert res[0]["status"] == "done" and res[0]["total"] > 0
    img = nib.load(str(out))
    src = nib.load(str(path))
    assert img.shape == data.shape and np.array_equal(img.affine, src.affine)
    assert np.array_equal(img.header.get_best_affine(), src.header.get_best_affine())
    assert img.get_data_dtype() == np.uint8
    seg = np.asanyarray(img.dataobj)
    assert set(np.unique(seg)) <= {0, 1}
    assert dice(seg == 1, data > 150) > 0.9


def test_dicom_series_input(tmp_path, fake_model):
    ct = phantom_ct(shape=(16, 40, 44))
    folder = write_dicom_series(ct, tmp_path / "dicom" / "case_00042")
    vol = load_volume(folder)
    out = tmp_path / "out"
    predict_path(folder, out, "unused", progress=False, log=lambda s: None)
    img = nib.load(str(out / "case_00042.nii.gz"))
    assert img.shape == vol.source.shape and np.allclose(img.affine, vol.source.affine)
    seg = np.asanyarray(img.dataobj)
    from kidneyseg.io import to_canonical
    canon = to_canonical(seg, img.affine).array
    assert dice(canon == 1, vol.array > 150) > 0.9
    # a folder of DICOM folders works as a batch too
    assert [c for c, _ in list_inputs(tmp_path / "dicom")] == ["case_00042"]


def test_model_folder_cli_skip_and_shards(tmp_path, write_nifti, capsys):
    model = make_model_dir(tmp_path / "model", features=2, plan={"box_size_mm": (20.0, 25.6, 25.6)})
    for i in range(3):
        write_nifti(phantom_ct(seed=i), kits_affine((2.5, 0.8, 0.75)), f"cts/case_{i:05d}/imaging.nii.gz", np.int16)
    out = tmp_path / "pred"
    args = ["predict", "-i", str(tmp_path / "cts"), "-o", str(out), "--model", str(model), "--no-progress"]
    assert main(args + ["--shard", "1/2", "--tta"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["case_00001.nii.gz"]
    assert main(args + ["--shard", "0/2", "--overlap", "0.25"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["case_00000.nii.gz", "case_00001.nii.gz", "case_00002.nii.gz"]
    text = capsys.readouterr().out
    assert "case_00000: load" in text and "stage1" in text and "stage2" in text and "total" in text
    before = (out / "case_00001.nii.gz").stat().st_mtime_ns
    assert main(args) == 0
    assert "case_00001: " in capsys.readouterr().out and (out / "case_00001.nii.gz").stat().st_mtime_ns == before
    seg = nib.load(str(out / "case_00002.nii.gz"))
    src = nib.load(str(tmp_path / "cts" / "case_00002" / "imaging.nii.gz"))
    assert seg.shape == (24, 40, 44) and np.array_equal(seg.affine, src.affine)


def test_bad_inputs_are_one_line_errors_and_write_nothing(tmp_path, write_nifti, capsys):
    model = make_model_dir(tmp_path / "model")
    ct = write_nifti(phantom_ct(), kits_affine((2.5, 0.8, 0.75)), "ct.nii.gz", np.int16)
    out = tmp_path / "o" / "seg.nii.gz"
    cases = [
        (["--overlap", "1.0"], "overlap must be in [0, 1)"),
        (["--shard", "2/2"], "shard i/N needs 0 <= i < N"),
        (["--postprocess", "biggest"], "valid: anatomy"),
        (["--model", str(tmp_path / "nomodel")], "model folder not found"),
    ]
    for extra, msg in cases:
        argv = ["predict", "-i", str(ct), "-o", str(out), "--model", str(model), "--no-progress", *extra]
        assert main(argv) == 2
        assert msg in capsys.readouterr().err
        assert not out.exists()
    (tmp_path / "bad.nii.gz").write_bytes(b"not a nifti at all")
    assert main(["predict", "-i", str(tmp_path / "bad.nii.gz"), "-o", str(out), "--model", str(model),
                 "--no-progress"]) == 2
    assert "bad.nii.gz" in capsys.readouterr().err and not any((tmp_path / "o").glob("*"))
    (tmp_path / "o").mkdir()
    with pytest.raises(KidneysegError, match="no CT found"):
        list_inputs(tmp_path / "o")


def test_empty_stage1_falls_back_with_a_warning():
    m = threshold_model()
    vol = load_volume.__globals__["new_volume"](np.zeros((20, 30, 30), np.float32), (2.5, 0.8, 0.75))
    with pytest.warns(UserWarning, match="stage 1 found no kidney"):
        labels, t = predict_volume(vol, m, progress=False)
    assert labels.shape == (20, 30, 30) and labels.sum() == 0 and set(t) >= {"stage1", "stage2"}


def test_shards_are_disjoint_and_deterministic():
    cases = [(f"case_{i:05d}", None) for i in (4, 0, 3, 1, 2)]
    parts = [shard_cases(cases, f"{i}/3") for i in range(3)]
    assert sorted(c for p in parts for c, _ in p) == sorted(c for c, _ in cases)
    assert [c for c, _ in parts[0]] == ["case_00000", "case_00003"]
    for bad in ("3/3", "a/b", "1", "-1/2"):
        with pytest.raises(ValueError, match="shard"):
            parse_shard(bad)
    assert output_path("c", Path("x.nii.gz"), True).name == "x.nii.gz"


@pytest.fixture
def window_inputs(monkeypatch):
    """The (z, y, x) shape of every input the cascade hands to the sliding window, stage 1 first."""
    from kidneyseg.infer import sliding_window

    seen = []
    real = sliding_window.sliding_window_predict

    def spy(image, *a, **k):
        seen.append(tuple(image.shape[1:]))
        return real(image, *a, **k)

    monkeypatch.setattr(cascade, "sliding_window_predict", spy)
    return seen


def test_stage2_runs_only_on_the_part_of_the_box_inside_the_volume(window_inputs):
    """A box twice the volume: the network sees only the inside part, output geometry and answer unchanged."""
    from kidneyseg.io import Volume
    from kidneyseg.preprocess.case import preprocess_case

    ct = phantom_ct(shape=(24, 40, 44))
    spacing = (2.0, 1.6, 1.6)
    vol = Volume(ct.astype(np.float32), kits_affine(spacing))
    big = threshold_model(box_size_mm=(96.0, 128.0, 140.8))  # 48 x 80 x 88 voxels at 2/1.6 mm: 2x the volume
    center = (11.5, 19.5, 21.5)
    _, _, props = preprocess_case(vol.array, None, spacing, big.plan, 2, center=center)
    assert props.padded and props.box_voxels == (48, 80, 88)
    # the volume sits in the middle of the box: voxels [12, 36) x [20, 60) x [22, 66)
    assert props.inside == ((12, 36), (20, 60), (22, 66))

    seen = window_inputs
    labels, _ = predict_volume(vol, big, progress=False)
    assert seen[1] == (24, 40, 44)  # stage 2 ran on the inside part only, not on 48 x 80 x 88
    assert labels.shape == ct.shape
    assert dice(labels == 1, ct > 150) > 0.9


@pytest.mark.parametrize("body_crop", [True, False])
def test_stage1_runs_on_the_body_box_unless_told_otherwise(window_inputs, body_crop):
    """A CT with 60 % air around the body: stage 1 sees only the body box; the answer is unchanged."""
    from kidneyseg.io import Volume

    ct = phantom_ct(shape=(24, 40, 44)).astype(np.float32)
    big = np.full((24, 100, 110), -1000.0, np.float32)
    big[:, 30:70, 33:77] = ct
    big[:, 30:32] = -1000.0  # phantom_ct's own air rows
    spacing = (2.0, 1.6, 1.6)
    seen = window_inputs
    model = threshold_model()
    labels, _ = predict_volume(Volume(big, kits_affine(spacing)), model, progress=False, body_crop=body_crop)
    # stage 1 at 4 x 3.2 x 3.2 mm (half the voxels in y, x): the body box, rows 32-70 and columns
    # 33-77 plus 7 voxels (10 mm) of margin each side = 52 x 58 voxels, or the whole 100 x 110
    expect = (12, 26, 29) if body_crop else (12, 50, 55)
    assert seen[0] == expect
    assert labels.shape == big.shape
    assert dice(labels == 1, big > 150) > 0.9
    assert not labels[:, :25].any() and not labels[:, 75:].any()
