"""``kidneyseg predict`` products: statistics JSON/CSV, preview PNG, box probabilities, NRRD and DICOM SEG labels."""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest
import torch

from kidneyseg.cli import main
from kidneyseg.infer.cascade import CascadeModel
from kidneyseg.infer.outputs import OutputOptions, case_outputs
from kidneyseg.infer.predict import predict_path
from kidneyseg.infer.preview import edge_letters
from kidneyseg.measure.focus import focus_point
from kidneyseg.infer.probabilities import BoxProbabilities
from kidneyseg.io import load_volume, to_canonical
from kidneyseg.preprocess.plan import Plan

from .conftest import kits_affine
from .dicom_helpers import write_ct_series
from .infer_helpers import PLAN, threshold_net

torch.set_num_threads(2)
SPACING = (2.5, 0.8, 0.75)
RAS = np.array([[0.75, 0, 0, -100], [0, 0.8, 0, -120], [0, 0, 2.5, 30], [0, 0, 0, 1]], float)


def tumor_net() -> torch.nn.Module:
    """Stage 2 as a 1x1x1 conv on the CT channel: kidney above 150 HU, tumor above 650 HU."""
    net = torch.nn.Conv3d(3, 3, 1)
    with torch.no_grad():
        net.weight.zero_()
        net.bias.zero_()
        net.weight[1, 0], net.bias[1] = 10.0, -15.0
        net.weight[2, 0], net.bias[2] = 40.0, -210.0
    return net.eval()


@pytest.fixture
def fake_model(monkeypatch):
    """Threshold networks with a box that holds both kidneys: the right answer is known."""
    model = CascadeModel(Plan(**{**PLAN, "box_size_mm": (64.0, 48.0, 48.0)}), threshold_net(1), tumor_net(),
                         (8, 16, 16), (8, 16, 16), ("anatomy", {"min_component_ml": 0.0}))
    monkeypatch.setattr(CascadeModel, "load", classmethod(lambda cls, *a, **k: model))
    return model


def two_kidney_ct(shape=(24, 40, 44), seed=0) -> np.ndarray:
    """Canonical (z, y, x) int16 HU: body, kidneys at x index 4-13 (patient right) and 30-39 (left), a
    800 HU tumor in the left one."""
    rng = np.random.default_rng(seed)
    ct = rng.normal(20, 8, shape).astype(np.float32)
    ct[:, :2] = -1000.0
    ct[6:18, 14:26, 4:14] = 300.0
    ct[6:18, 14:26, 30:40] = 300.0
    ct[9:14, 17:23, 33:38] = 800.0
    return ct.astype(np.int16)


def test_statistics_preview_and_probabilities_for_a_folder(tmp_path, write_nifti, fake_model):
    ct = two_kidney_ct()
    write_nifti(ct, kits_affine(SPACING), "in/case_a.nii.gz", np.int16)
    # the same anatomy stored RAS (x, y, z): left and right must not change with the file layout
    write_nifti(ct[::-1, ::-1, ::-1].transpose(2, 1, 0), RAS, "in/case_b.nii.gz", np.int16)
    out = tmp_path / "out"
    res = predict_path(tmp_path / "in", out, "unused", progress=False, log=lambda s: None, statistics=True,
                       preview=True, save_probabilities=True)
    assert [r["status"] for r in res] == ["done", "done"]
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(["statistics.csv"] + [f"case_{c}{e}" for c in "ab" for e in (
        ".nii.gz", ".statistics.json", ".preview.png", ".probabilities.npz")])
    docs = {c: json.loads((out / f"case_{c}.statistics.json").read_text()) for c in "ab"}
    vox_ml = np.prod(SPACING) / 1000
    for c, doc in docs.items():
        assert set(doc["kidneys"]) == {"left", "right"}, c
        assert doc["tumor_count"] == 1 and doc["tumors"][0]["kidney"] == "left", c
        pred = load_volume(out / f"case_{c}.nii.gz", kind="label").array      # canonical: x index 0 = right
        assert doc["kidneys"]["right"]["volume_ml"] == pytest.approx((pred[:, :, :22] > 0).sum() * vox_ml)
        assert doc["kidneys"]["left"]["tissue_ml"] == pytest.approx((pred[:, :, 22:] == 1).sum() * vox_ml)
        assert doc["kidneys"]["right"]["volume_ml"] == pytest.approx(12 * 12 * 10 * vox_ml, rel=0.15)  # truth
        left_tissue = pred[:, :, 22:] == 1
        hu = ct[:, :, 22:][left_tissue].astype(float)                      # the CT under the predicted mask
        assert doc["kidneys"]["left"]["hu_mean"] == pytest.approx(hu.mean(), abs=1e-3)
        assert doc["kidneys"]["left"]["hu_median"] == pytest.approx(np.median(hu), abs=1e-3)
        assert doc["tumors"][0]["hu_mean"] == pytest.approx(ct[pred == 2].mean(), abs=1e-3)
        assert doc["tumor_burden_ml"] == pytest.approx((pred == 2).sum() * vox_ml)
        assert 0.5 * 150 * vox_ml < doc["tumor_burden_ml"] <= 150 * vox_ml      # the 5 x 6 x 5 tumor, eroded
        assert doc["midline"]["method"] == "body" and doc["spacing_zyx_mm"] == pytest.approx(list(SPACING))
    strip = lambda d: {k: v for k, v in d.items() if k != "centroid_ras_mm"}  # noqa: E731 (origins differ)
    for side in ("left", "right"):
        assert strip(docs["a"]["kidneys"][side]) == pytest.approx(strip(docs["b"]["kidneys"][side]))
    assert docs["a"]["tumors"][0]["diameter_3d_mm"] == pytest.approx(docs["b"]["tumors"][0]["diameter_3d_mm"])
    rows = list(csv.DictReader((out / "statistics.csv").open()))
    assert [r["case_id"] for r in rows] == ["case_a", "case_b"]
    assert float(rows[0]["left_kidney_ml"]) == pytest.approx(docs["a"]["kidneys"]["left"]["volume_ml"], rel=1e-5)
    assert rows[1]["largest_tumor_kidney"] == "left" and rows[0]["tumor_count"] == "1"

    # the preview is a real picture with the segment colours in it
    import matplotlib.image as mpimg

    png = mpimg.imread(out / "case_a.preview.png")
    assert png.ndim == 3 and png.shape[0] > 300 and png.shape[1] > 600
    rgb = (png[..., :3] * 255).round().astype(int)
    for colour in ((185, 102, 83), (241, 214, 69)):          # kidney and tumor outlines
        assert (np.abs(rgb - colour).sum(-1) < 40).sum() > 20, colour

    # probabilities: box grid inside the volume, placed back onto the CT where the kidneys are
    p = BoxProbabilities.load(out / "case_a.probabilities.npz")
    assert p.kidney.dtype == np.float16 and p.original_shape == ct.shape
    region, kidney, tumor = p.place_back()
    from scipy import ndimage

    sub = ct[region]
    core = ndimage.binary_erosion(sub >= 300, iterations=2)                # kidney interiors
    far = ~ndimage.binary_dilation(sub >= 300, iterations=3)               # soft tissue away from them
    assert kidney[core & (sub == 300)].mean() > 0.95 and kidney[far].mean() < 0.01 and tumor[far].max() < 0.01
    assert tumor[sub == 800].max() > 0.9 and tumor[core & (sub == 300)].mean() < 0.01
    # in place: thresholded at 0.5 they cover the written labels (which went through nearest resampling)
    fg = load_volume(out / "case_a.nii.gz", kind="label").array[region] > 0
    hit = (kidney + tumor) > 0.5
    assert 2 * (hit & fg).sum() / (hit.sum() + fg.sum()) > 0.9
    np.testing.assert_allclose(p.affine, kits_affine(SPACING) @ np.block(
        [[np.diag(p.step), np.array(p.offset)[:, None]], [np.zeros((1, 3)), np.ones((1, 1))]]))
    # a re-run with everything present skips; asking for nothing more does not recompute
    again = predict_path(tmp_path / "in", out, "unused", progress=False, log=lambda s: None, statistics=True)
    assert [r["status"] for r in again] == ["skipped", "skipped"]


def test_nrrd_and_dicom_seg_outputs_hold_the_nifti_voxels(tmp_path, fake_model):
    import highdicom as hd
    import SimpleITK as sitk

    ct = two_kidney_ct((10, 40, 44))
    folder = write_ct_series(ct, tmp_path / "dicom" / "case_7", spacing=SPACING, shuffle=True)
    kw = dict(progress=False, log=lambda s: None)
    predict_path(folder, tmp_path / "ref.nii.gz", "unused", **kw)
    ref = nib.load(str(tmp_path / "ref.nii.gz"))
    ref_canon = to_canonical(np.asanyarray(ref.dataobj), ref.affine).array
    assert (ref_canon == 2).any() and (ref_canon == 1).any()

    predict_path(folder, tmp_path / "seg.seg.nrrd", "unused", fmt="nrrd", **kw)
    img = sitk.ReadImage(str(tmp_path / "seg.seg.nrrd"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(img), np.asanyarray(ref.dataobj))

    predict_path(tmp_path / "dicom", tmp_path / "segs", "unused", fmt="dicom-seg", **kw)
    seg = hd.seg.segread(str(tmp_path / "segs" / "case_7.seg.dcm"))
    vol = load_volume(folder)
    uids = [h.SOPInstanceUID for h in vol.source.dicom.headers]      # slice order
    back = seg.get_pixels_by_source_instance(uids, combine_segments=True)
    np.testing.assert_array_equal(back, np.asanyarray(ref.dataobj))


def test_list_series_and_series_choice_on_the_command_line(tmp_path, fake_model, capsys):
    from pydicom.uid import generate_uid

    study, a, b = generate_uid(), generate_uid(), generate_uid()
    write_ct_series(two_kidney_ct((10, 40, 44)), tmp_path / "study" / "s1", spacing=SPACING, series_uid=a,
                    study_uid=study)
    write_ct_series(two_kidney_ct((10, 40, 44), seed=1), tmp_path / "study" / "s2", spacing=SPACING,
                    series_uid=b, study_uid=study)
    assert main(["predict", "-i", str(tmp_path / "study"), "--list-series"]) == 0
    text = capsys.readouterr().out
    assert a in text and b in text and "no default: choose with --series UID" in text
    out = tmp_path / "pred.nii.gz"
    assert main(["predict", "-i", str(tmp_path / "study"), "-o", str(out), "--model", "unused", "--series", b,
                 "--statistics", "--no-progress"]) == 0
    doc = json.loads((tmp_path / "pred.statistics.json").read_text())
    assert doc["dicom_series_uid"] == b and out.exists()
    assert main(["predict", "-i", str(tmp_path / "study"), "--model", "unused"]) == 2
    assert "needs -o/--output" in capsys.readouterr().err


def test_box_probabilities_are_placed_back_exactly(tmp_path):
    """A linear ramp on a box grid (step 2 along z, 0.5 along x, offset) reads back as the same ramp."""
    nz, ny, nx = 6, 4, 10
    zz, yy, xx = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
    kidney = (zz / 10.0 + xx / 40.0).astype(np.float16)
    p = BoxProbabilities(kidney, np.zeros_like(kidney), (3.0, 1.0, 2.5), (2.0, 1.0, 0.5), (20, 8, 12),
                         kits_affine(SPACING))
    p.save(tmp_path / "p.probabilities.npz")
    q = BoxProbabilities.load(tmp_path / "p.probabilities.npz")
    region, k, t = q.place_back()
    assert region == (slice(2, 15), slice(1, 5), slice(3, 8))     # voxel centres within the box (edges included)
    oz, oy, ox = np.meshgrid(*[np.arange(s.start, s.stop) for s in region], indexing="ij")
    u_z = np.clip((oz - 3.0) / 2.0, 0, nz - 1)                     # box coordinate of each original voxel
    u_x = np.clip((ox - 2.5) / 0.5, 0, nx - 1)
    np.testing.assert_allclose(k, u_z / 10.0 + u_x / 40.0, atol=2e-3)   # float16 storage
    assert t.max() == 0.0
    # the stored affine places box voxel j at the CT's world position of original voxel offset + step * j
    world = q.affine @ np.array([2, 1, 3, 1.0])
    np.testing.assert_allclose(world, kits_affine(SPACING) @ np.array([3 + 4.0, 1 + 1.0, 2.5 + 1.5, 1]))


def test_output_names_and_sidecars():
    from pathlib import Path

    o = case_outputs("c", Path("x/y.seg.nrrd"), True, OutputOptions("nrrd", statistics=True, preview=True))
    assert (o.labels.name, o.statistics.name, o.preview.name) == ("y.seg.nrrd", "y.statistics.json", "y.preview.png")
    o = case_outputs("c1", Path("out"), False, OutputOptions("dicom-seg", probabilities=True))
    assert (o.labels.name, o.probabilities.name, o.statistics) == ("c1.seg.dcm", "c1.probabilities.npz", None)
    with pytest.raises(ValueError, match="format must be one of nifti, nrrd, dicom-seg"):
        OutputOptions("png")


def test_preview_orientation_letters_follow_the_affine():
    aff = kits_affine(SPACING)
    assert edge_letters(aff, 1, 2) == {"left": "R", "right": "L", "top": "A", "bottom": "P"}
    assert edge_letters(aff, 0, 2) == {"left": "R", "right": "L", "top": "S", "bottom": "I"}
    assert edge_letters(aff, 0, 1)["left"] == "A"
    flipped = aff.copy()
    flipped[:3, 2] *= -1                           # the same array, x axis reversed: R and L swap
    assert edge_letters(flipped, 1, 2)["left"] == "L" and edge_letters(flipped, 1, 2)["right"] == "R"
    lab = np.zeros((10, 10, 10), np.uint8)
    lab[1:4, 1:4, 1:4] = 1
    lab[6:9, 6:9, 6:9] = 1
    lab[7, 7, 7] = 2
    assert focus_point(lab) == (7, 7, 7)
    lab[lab == 2] = 1
    assert focus_point(lab) == (5, 5, 5)


def test_a_folder_of_mixed_inputs_lists_every_ct_and_no_output(tmp_path, write_nifti):
    import SimpleITK as sitk

    from kidneyseg.infer.predict import list_inputs

    from .dicom_helpers import phantom, zip_folder

    ct = two_kidney_ct((10, 40, 44))
    write_nifti(ct, kits_affine(SPACING), "in/a.nii.gz", np.int16)
    sitk.WriteImage(sitk.GetImageFromArray(ct), str(tmp_path / "in" / "b.nrrd"))
    sitk.WriteImage(sitk.GetImageFromArray(ct), str(tmp_path / "in" / "c.mha"))
    zip_folder(write_ct_series(phantom(), tmp_path / "series"), tmp_path / "in" / "d.zip")
    write_ct_series(phantom(), tmp_path / "in" / "e" / "ct")              # a DICOM folder one level down
    sitk.WriteImage(sitk.GetImageFromArray(ct.astype(np.uint8) * 0), str(tmp_path / "in" / "a.seg.nrrd"))
    cases = list_inputs(tmp_path / "in")
    assert [(c, p.name) for c, p in cases] == [("a", "a.nii.gz"), ("b", "b.nrrd"), ("c", "c.mha"), ("d", "d.zip"),
                                               ("e", "e")]
