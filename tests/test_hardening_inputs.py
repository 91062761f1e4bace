"""Table-driven bad-input suite: every command gets broken data and must fail loudly, early, harmlessly.

Each row of :data:`CASES` builds its inputs in a fresh ``tmp_path``, runs the ``kidneyseg`` entry
point in-process (``kidneyseg.cli.main(argv)`` -> exit code; stderr captured) and checks:

- ``error`` rows: exit code != 0 and *exactly one* stderr line that names the offending file (or
  folder) and contains the row's keyword;
- ``warn`` rows: exit code 0 and a ``warning`` line with the keyword; ``ok`` rows: exit code 0;
- always: no ``*.part`` temporary file anywhere, and (error rows) the output location ``out/`` is
  byte-for-byte what it was before (a pre-existing output file survives, nothing new appears),
  except the few bookkeeping files a row lists in ``allow_new``.

The "viewer" rows call :class:`kidneyseg.viewer.catalog.Catalog` (what the dashboard does when a
case is picked) and print its one-line error the way the CLI does; ``kidneyseg viewer`` itself only
starts Voila. docs/failures.md holds the same table in words.
"""

from __future__ import annotations

import json
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from kidneyseg.cli import main
from kidneyseg.errors import KidneysegError

from . import hardening_helpers as H
from .conftest import kits_affine, tiny_label

OLD = "this output was written by an earlier run and must survive\n"


@dataclass
class Env:
    """The sandbox one row runs in."""

    tmp: Path
    monkeypatch: pytest.MonkeyPatch
    write_nifti: Callable
    model_dir: Path

    @property
    def data(self) -> Path:
        return self.tmp / "data"

    @property
    def out(self) -> Path:
        return self.tmp / "out"

    def old_output(self, name: str) -> Path:
        """A complete output of an earlier run at ``out/name`` (must be unchanged afterwards)."""
        p = self.out / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(OLD)
        return p

    def plan(self) -> Path:
        from kidneyseg.preprocess.plan import Plan

        return Plan(**H.PLAN).save(self.tmp / "plan.json")


@dataclass
class Case:
    """One bad input: ``setup(env) -> (argv, name that must appear in the message)``."""

    id: str
    command: str
    setup: Callable[[Env], tuple[list[str], str]]
    keyword: str = ""
    expect: str = "error"  # "error" | "warn" | "ok"
    allow_new: tuple[str, ...] = ()
    max_seconds: float | None = None
    xfail: str | None = None


# ------------------------------------------------------------------------------------ manifest
def _manifest(env: Env) -> list[str]:
    env.old_output("manifest.csv")
    return ["manifest", str(env.data), "-o", str(env.out / "manifest.csv"), "--workers", "1", "--no-progress"]


def _bad_label(label=None, image=None, **kw):
    def setup(env: Env):
        H.write_case(env.data, "case_00000", image=image, label=label, **kw)
        H.write_case(env.data, "case_00001")
        return _manifest(env), "case_00000/segmentation.nii.gz"
    return setup


def _broken_file(breaker, which="segmentation.nii.gz"):
    def setup(env: Env):
        H.write_case(env.data, "case_00000")
        H.write_case(env.data, "case_00001")
        breaker(env.data / "case_00001" / which)
        return _manifest(env), f"case_00001/{which}"
    return setup


def _manifest_4d_singleton(env: Env):
    H.write_case(env.data, "case_00000", label=tiny_label(H.SHAPE)[..., None], image=H.ct_image()[..., None])
    return _manifest(env), ""


def _manifest_1059(env: Env):
    shape = (1059, 64, 64)
    H.write_case(env.data, "case_00000", shape=shape, image=np.full(shape, -1000, np.int16),
                 label=tiny_label(shape), affine=kits_affine((0.5, 0.8, 0.8)))
    return _manifest(env), ""


def _manifest_1059_headers_only(env: Env):
    argv, name = _manifest_1059(env)
    return argv + ["--headers-only"], name


def _manifest_missing_folder(env: Env):
    env.old_output("manifest.csv")
    return ["manifest", str(env.tmp / "no_such_dir"), "-o", str(env.out / "manifest.csv")], "no_such_dir"


def _manifest_unwritable(env: Env):
    H.write_case(env.data, "case_00000")
    blocker = env.out / "results"  # a regular file where a folder is needed: fails for root too
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text(OLD)
    return ["manifest", str(env.data), "-o", str(blocker / "manifest.csv"), "--workers", "1",
            "--no-progress"], "results"


def _manifest_full_disk(env: Env):
    H.write_case(env.data, "case_00000")
    H.full_disk(env.monkeypatch, env.out)
    return _manifest(env), "manifest.csv"


def _manifest_oblique(env: Env):
    aff = H.oblique_affine(20.0)
    H.write_case(env.data, "case_00000", affine=aff)
    return _manifest(env), "case_00000"


def _manifest_empty_volume(env: Env):
    shape = (0, 64, 64)
    H.write_case(env.data, "case_00000", shape=shape, image=np.zeros(shape, np.int16),
                 label=np.zeros(shape, np.uint8))
    return _manifest(env), "case_00000"


# --------------------------------------------------------------------------------------- stats
def _stats_duplicate_ids(env: Env):
    H.write_case(env.data, "case_00000")
    H.write_case(env.data, "case_00001")
    m = H.write_manifest_for(env.data)
    lines = m.read_text().splitlines()
    lines[2] = lines[2].replace("case_00001", "case_00000", 1)
    m.write_text("\n".join(lines) + "\n")
    return ["stats", str(m)], "manifest.csv"


def _stats_zero_spacing_row(env: Env):
    H.write_case(env.data, "case_00000")
    m = H.write_manifest_for(env.data)
    import pandas as pd

    df = pd.read_csv(m)
    df.loc[0, "spacing_z"] = 0.0
    df.to_csv(m, index=False)
    return ["stats", str(m), "--json"], "manifest.csv"


def _stats_not_csv(env: Env):
    p = env.tmp / "manifest.csv"
    p.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8)
    return ["stats", str(p)], "manifest.csv"


# ------------------------------------------------------------------------------------- phantom
def _phantom_unwritable(env: Env):
    blocker = env.out / "phantoms"
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text(OLD)
    return ["phantom", str(blocker / "sub"), "--cases", "1", "--size", "48", "--no-progress"], "phantoms"


def _phantom_full_disk(env: Env):
    env.old_output("phantoms/manifest.csv")
    H.full_disk(env.monkeypatch, env.out)
    return ["phantom", str(env.out / "phantoms"), "--cases", "1", "--size", "48", "--no-progress"], "phantoms"


# ------------------------------------------------------------------------------- plan/preprocess
def _plan_all_background(env: Env):
    for i in range(2):
        H.write_case(env.data, f"case_0000{i}", label=np.zeros(H.SHAPE, np.uint8))
    m = H.write_manifest_for(env.data)
    env.old_output("plan.json")
    return ["plan", str(m), "-o", str(env.out / "plan.json"), "--no-progress"], "manifest.csv"


def _plan_negative_spacing(env: Env):
    H.write_case(env.data, "case_00000")
    m = H.write_manifest_for(env.data)
    env.old_output("plan.json")
    return ["plan", str(m), "-o", str(env.out / "plan.json"), "--target-spacing", "1", "-0.8", "0.8",
            "--no-progress"], "spacing"


def _preprocess(env: Env, manifest: Path) -> list[str]:
    env.old_output("cache/old_case/properties.json")
    return ["preprocess", str(manifest), "--plan", str(env.plan()), "--out", str(env.out / "cache"),
            "--no-progress"]


#: bookkeeping files ``kidneyseg preprocess`` writes before it reads any case (complete files)
CACHE_META = ("cache/cache.json", "cache/plan.json", "cache/manifest.csv")


def _preprocess_after(breaker, which="imaging.nii.gz"):
    """A valid manifest whose case file is broken afterwards (e.g. by a truncated copy)."""
    def setup(env: Env):
        H.write_case(env.data, "case_00000")
        m = H.write_manifest_for(env.data)
        breaker(env, env.data / "case_00000" / which)
        return _preprocess(env, m), f"case_00000/{which}"
    return setup


def _replace_with(array_fn, affine=None):
    def breaker(env: Env, path: Path):
        H.save_nifti(path, array_fn(), affine)
    return breaker


def _preprocess_missing_file(env: Env):
    H.write_case(env.data, "case_00000")
    m = H.write_manifest_for(env.data)
    (env.data / "case_00000" / "imaging.nii.gz").unlink()
    return _preprocess(env, m), "case_00000/imaging.nii.gz"


def _preprocess_all_background(env: Env):
    H.write_case(env.data, "case_00000")
    H.write_case(env.data, "case_00001", label=np.zeros(H.SHAPE, np.uint8))
    return _preprocess(env, H.write_manifest_for(env.data)), "case_00001"


def _preprocess_mr(env: Env):
    lab = tiny_label(H.SHAPE)
    H.write_case(env.data, "case_00000", image=(lab * 300.0 + 200.0).astype(np.float32))
    return _preprocess(env, H.write_manifest_for(env.data)), "case_00000/imaging.nii.gz"


def _preprocess_changed_plan(env: Env):

    H.write_case(env.data, "case_00000")
    m = H.write_manifest_for(env.data)
    argv = _preprocess(env, m)
    (env.out / "cache").mkdir(parents=True, exist_ok=True)
    (env.out / "cache" / "cache.json").write_text(json.dumps({"format": 1, "plan_hash": "0123456789ab"}))
    return argv, "cache"


def _preprocess_full_disk(env: Env):
    H.write_case(env.data, "case_00000")
    m = H.write_manifest_for(env.data)
    argv = _preprocess(env, m)
    H.full_disk(env.monkeypatch, env.out)
    return argv, "cache"


# --------------------------------------------------------------------------------------- train
def _train_missing_cache(env: Env):
    env.old_output("model/stage1/checkpoint_last.pt")
    return ["train", "--stage", "1", "--cache", str(env.tmp / "no_cache"), "--out", str(env.out / "model"),
            "--no-progress"], "no_cache"


def _train_unknown_key(env: Env):
    cfg = env.tmp / "config.json"
    cfg.write_text(json.dumps({"epochs": 2, "learning_rate": 0.1}))
    env.old_output("model/stage1/checkpoint_last.pt")
    return ["train", "--config", str(cfg), "--stage", "1", "--cache", str(env.tmp), "--out",
            str(env.out / "model"), "--no-progress"], "config.json"


# ------------------------------------------------------------------------------------- predict
def _predict(env: Env, ct: Path) -> list[str]:
    env.old_output("pred/earlier_case.nii.gz")
    return ["predict", "-i", str(ct), "-o", str(env.out / "pred" / "ct_pred.nii.gz"), "--model",
            str(env.model_dir), "--no-progress"]


def _predict_with(make):
    def setup(env: Env):
        ct = make(env.tmp / "in" / "ct.nii.gz")
        return _predict(env, ct), "ct.nii.gz"
    return setup


def _valid_ct(path: Path, affine=None, array=None, dtype=np.int16) -> Path:
    return H.save_nifti(path, H.ct_image() if array is None else array, affine, dtype=dtype)


def _predict_unwritable(env: Env):
    ct = _valid_ct(env.tmp / "in" / "ct.nii.gz")
    blocker = env.out / "pred"
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text(OLD)
    return ["predict", "-i", str(ct), "-o", str(blocker / "ct_pred.nii.gz"), "--model", str(env.model_dir),
            "--no-progress"], "pred"


def _predict_full_disk(env: Env):
    ct = _valid_ct(env.tmp / "in" / "ct.nii.gz")
    argv = _predict(env, ct)
    H.full_disk(env.monkeypatch, env.out)
    return argv, "ct_pred.nii.gz"


def _predict_existing_output_kept(env: Env):
    """A bad second input must not touch the first case's complete output."""
    cases = env.tmp / "in"
    _valid_ct(cases / "case_00000.nii.gz")
    H.corrupt_gzip(_valid_ct(cases / "case_00001.nii.gz"))
    env.old_output("pred/case_00000.nii.gz")
    return ["predict", "-i", str(cases), "-o", str(env.out / "pred"), "--model", str(env.model_dir),
            "--no-progress"], "case_00001.nii.gz"


def _predict_dicom(make, extra=()):
    """A DICOM input (folder or zip) built by ``make(env) -> (path, name in the message)``."""
    def setup(env: Env):
        src, name = make(env)
        return _predict(env, src) + list(extra), name
    return setup


def _dicom_series(folder: Path, **kw) -> Path:
    from .dicom_helpers import phantom, write_ct_series

    return write_ct_series(phantom((10, 32, 32)), folder, **kw)


def _empty_dicom_folder(env: Env):
    (env.tmp / "in" / "dicom").mkdir(parents=True)
    return env.tmp / "in" / "dicom", "dicom"


def _zip_without_dicom(env: Env):
    import zipfile

    z = env.tmp / "in" / "study.zip"
    z.parent.mkdir(parents=True)
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("report.txt", "no images in here")
    return z, "study.zip"


def _two_equal_series(env: Env):
    from pydicom.uid import generate_uid

    study = generate_uid()
    for name in ("series_a", "series_b"):
        _dicom_series(env.tmp / "in" / "study" / name, study_uid=study)
    return env.tmp / "in" / "study", "study"


def _missing_slice(env: Env):
    return _dicom_series(env.tmp / "in" / "gap", slice_positions=[0, 2.5, 5, 7.5, 10, 15, 17.5, 20, 22.5, 25]), "gap"


def _gantry_tilt(env: Env):
    return _dicom_series(env.tmp / "in" / "tilted", tilt_mm_per_slice=0.5), "tilted"


def _dicom_seg_from_nifti(env: Env):
    ct = _valid_ct(env.tmp / "in" / "ct.nii.gz")
    env.old_output("pred/earlier_case.nii.gz")
    return ["predict", "-i", str(ct), "-o", str(env.out / "pred"), "--model", str(env.model_dir), "--format",
            "dicom-seg", "--no-progress"], "ct.nii.gz"


def _format_name_mismatch(env: Env):
    ct = _valid_ct(env.tmp / "in" / "ct.nii.gz")
    return _predict(env, ct) + ["--format", "nrrd"], "ct_pred.nii.gz"


# ------------------------------------------------------------------------------------ evaluate
def _evaluate(pred_label=None, gt_label=None, pred_affine=None, layout="flat"):
    def setup(env: Env):
        pred, gt = env.tmp / "pred", env.tmp / "gt"
        lab, aff = tiny_label(H.SHAPE), kits_affine(H.SPACING)
        env.write_nifti(lab if gt_label is None else gt_label, aff, "gt/case_00000.nii.gz")
        env.write_nifti(lab if pred_label is None else pred_label, aff if pred_affine is None else pred_affine,
                        "pred/case_00000.nii.gz")
        if layout == "duplicate":
            env.write_nifti(lab, aff, "gt/case_00000/segmentation.nii.gz")
        if layout == "missing":
            env.write_nifti(lab, aff, "pred/case_00001.nii.gz")
        env.old_output("metrics.csv")
        argv = ["evaluate", "--pred", str(pred), "--gt", str(gt), "--csv", str(env.out / "metrics.csv"),
                "--no-progress"]
        name = {"duplicate": "gt", "missing": "gt"}.get(layout, "pred/case_00000.nii.gz")
        return argv, name
    return setup


def _evaluate_full_disk(env: Env):
    argv, _ = _evaluate()(env)
    H.full_disk(env.monkeypatch, env.out)
    return argv, "metrics.csv"


# -------------------------------------------------------------------------------------- viewer
def _viewer(breaker):
    def setup(env: Env):
        H.write_case(env.data, "case_00000")
        m = H.write_manifest_for(env.data)
        breaker(env.data / "case_00000" / "segmentation.nii.gz")
        return ["viewer-load", str(m), "case_00000"], "case_00000/segmentation.nii.gz"
    return setup


def _viewer_nothing_listed(env: Env):
    H.write_case(env.data, "case_00000")
    m = H.write_manifest_for(env.data)
    for f in ("imaging.nii.gz", "segmentation.nii.gz"):
        (env.data / "case_00000" / f).unlink()
    return ["viewer-load", str(m), "case_00000"], "manifest.csv"


def _label(value, dtype=np.uint8):
    lab = tiny_label(H.SHAPE).astype(dtype)
    lab[0, 0, 0] = value
    return lab


def _float_label():
    lab = tiny_label(H.SHAPE).astype(np.float32)
    lab[lab == 1] = 0.5
    return lab


def _nan_image():
    img = H.ct_image()
    img[3, 10, 10] = np.nan
    img[4, 11, 11] = np.inf
    return img


CASES = [
    # manifest: broken files, wrong dimensions, wrong values, wrong geometry, missing things
    Case("manifest-corrupt-gzip", "manifest", _broken_file(H.corrupt_gzip), r"corrupt|truncated"),
    Case("manifest-truncated", "manifest", _broken_file(H.truncate), r"corrupt|truncated"),
    Case("manifest-empty-file", "manifest", _broken_file(H.empty_file, "imaging.nii.gz"), r"empty"),
    Case("manifest-not-nifti", "manifest", _broken_file(H.not_nifti, "imaging.nii.gz"), r"not a .*NIfTI"),
    Case("manifest-2d", "manifest", _bad_label(label=np.zeros((20, 24), np.uint8)), r"3D"),
    Case("manifest-4d", "manifest", _bad_label(label=np.zeros(H.SHAPE + (2,), np.uint8)), r"3D.*4D|4D"),
    Case("manifest-4d-singleton-accepted", "manifest", _manifest_4d_singleton, expect="ok",
         allow_new=("*",)),
    Case("manifest-label-7", "manifest", _bad_label(label=_label(7)), r"label values.*7"),
    Case("manifest-label-int-overflow", "manifest", _bad_label(label=_label(257, np.int16)),
         r"label values.*257"),
    Case("manifest-float-label", "manifest", _bad_label(label=_float_label()), r"non-integer|float"),
    Case("manifest-shape-mismatch", "manifest", _bad_label(label=tiny_label((16, 64, 60))), r"shape"),
    Case("manifest-affine-mismatch", "manifest",
         _bad_label(label_affine=kits_affine((2.5, 0.8, 0.8))), r"affine"),
    Case("manifest-zero-spacing", "manifest", _broken_file(lambda p: H.zero_spacing_file(p, tiny_label(H.SHAPE))),
         r"spacing must be positive"),
    Case("manifest-empty-volume", "manifest", _manifest_empty_volume, r"empty|0 voxels|zero"),
    Case("manifest-missing-folder", "manifest", _manifest_missing_folder, r"no such folder"),
    Case("manifest-unwritable-output", "manifest", _manifest_unwritable, r"cannot create|not writable"),
    Case("manifest-full-disk", "manifest", _manifest_full_disk, r"No space left"),
    Case("manifest-oblique-warns", "manifest", _manifest_oblique, r"oblique", expect="warn", allow_new=("*",)),
    Case("manifest-1059-slices-accepted", "manifest", _manifest_1059, expect="ok", allow_new=("*",),
         max_seconds=20.0),
    Case("manifest-1059-slices-headers-only", "manifest", _manifest_1059_headers_only, expect="ok",
         allow_new=("*",), max_seconds=5.0),
    # stats
    Case("stats-duplicate-case-ids", "stats", _stats_duplicate_ids, r"duplicate case ids"),
    Case("stats-zero-spacing-row", "stats", _stats_zero_spacing_row, r"positive spacing"),
    Case("stats-not-a-csv", "stats", _stats_not_csv, r"not a readable CSV|columns"),
    # phantom
    Case("phantom-unwritable-output", "phantom", _phantom_unwritable, r"cannot create|not writable|not a folder"),
    Case("phantom-full-disk", "phantom", _phantom_full_disk, r"No space left"),
    # plan / preprocess
    Case("plan-all-background-labels", "plan", _plan_all_background, r"foreground"),
    Case("plan-negative-spacing", "plan", _plan_negative_spacing, r"positive"),
    Case("preprocess-nan-inf-voxels", "preprocess", _preprocess_after(_replace_with(_nan_image)),
         r"NaN or Inf", allow_new=CACHE_META),
    Case("preprocess-truncated", "preprocess", _preprocess_after(lambda env, p: H.truncate(p)),
         r"corrupt|truncated", allow_new=CACHE_META),
    Case("preprocess-label-shape-mismatch", "preprocess",
         _preprocess_after(_replace_with(lambda: tiny_label((16, 64, 60))), "segmentation.nii.gz"),
         r"shape", allow_new=CACHE_META),
    Case("preprocess-missing-file", "preprocess", _preprocess_missing_file, r"no such file",
         allow_new=CACHE_META),
    Case("preprocess-changed-plan", "preprocess", _preprocess_changed_plan, r"--force"),
    Case("preprocess-full-disk", "preprocess", _preprocess_full_disk, r"No space left"),
    Case("preprocess-all-background-label-warns", "preprocess", _preprocess_all_background,
         r"empty foreground", expect="warn", allow_new=("*",)),
    Case("preprocess-mr-range-warns", "preprocess", _preprocess_mr, r"does not look like CT", expect="warn",
         allow_new=("*",)),
    # train
    Case("train-missing-cache", "train", _train_missing_cache, r"no such cache folder"),
    Case("train-unknown-config-key", "train", _train_unknown_key, r"learning_rate.*valid|valid keys"),
    # predict
    Case("predict-corrupt-gzip", "predict", _predict_with(lambda p: H.corrupt_gzip(_valid_ct(p))),
         r"corrupt|truncated"),
    Case("predict-empty-file", "predict", _predict_with(H.empty_file), r"empty"),
    Case("predict-2d", "predict", _predict_with(lambda p: _valid_ct(p, array=H.ct_image()[0])), r"3D"),
    Case("predict-4d", "predict", _predict_with(lambda p: _valid_ct(p, array=np.stack([H.ct_image()] * 3, -1))),
         r"3D"),
    Case("predict-nan-voxels", "predict", _predict_with(lambda p: _valid_ct(p, array=_nan_image(),
                                                                          dtype=np.float32)), r"NaN or Inf"),
    Case("predict-float32-overflow", "predict", _predict_with(H.overflow_image), r"NaN or Inf"),
    Case("predict-zero-spacing", "predict",
         _predict_with(lambda p: H.zero_spacing_file(p, H.ct_image(), axis=0)), r"spacing must be positive"),
    Case("predict-empty-volume", "predict",
         _predict_with(lambda p: _valid_ct(p, array=np.zeros((16, 0, 64), np.float32))), r"empty|0 voxels"),
    Case("predict-unwritable-output", "predict", _predict_unwritable, r"cannot create|not writable"),
    Case("predict-full-disk", "predict", _predict_full_disk, r"No space left"),
    Case("predict-bad-case-keeps-earlier-output", "predict", _predict_existing_output_kept, r"corrupt|truncated"),
    Case("predict-mr-range-warns", "predict",
         _predict_with(lambda p: _valid_ct(p, array=(tiny_label(H.SHAPE) * 300.0 + 200.0))),
         r"does not look like CT", expect="warn", allow_new=("*",)),
    Case("predict-4d-singleton-accepted", "predict",
         _predict_with(lambda p: _valid_ct(p, array=H.ct_image()[..., None])), expect="ok", allow_new=("*",)),
    Case("predict-dicom-seg-from-nifti", "predict", _dicom_seg_from_nifti, r"dicom-seg needs a DICOM series"),
    Case("predict-format-name-mismatch", "predict", _format_name_mismatch, r"does not fit --format nrrd"),
    Case("predict-empty-dicom-folder", "predict", _predict_dicom(_empty_dicom_folder), r"no CT found"),
    Case("predict-zip-without-dicom", "predict", _predict_dicom(_zip_without_dicom), r"no DICOM files"),
    Case("predict-two-equal-series", "predict", _predict_dicom(_two_equal_series), r"equally large.*--series"),
    Case("predict-dicom-missing-slice", "predict", _predict_dicom(_missing_slice), r"not uniform"),
    Case("predict-dicom-gantry-tilt-warns", "predict", _predict_dicom(_gantry_tilt), r"gantry tilt",
         expect="warn", allow_new=("*",)),
    # evaluate
    Case("evaluate-label-outside-012", "evaluate", _evaluate(pred_label=_label(3)), r"label values.*3"),
    Case("evaluate-float-label", "evaluate", _evaluate(pred_label=_float_label()), r"non-integer|float"),
    Case("evaluate-shape-mismatch", "evaluate", _evaluate(pred_label=tiny_label((16, 64, 60))), r"shape"),
    Case("evaluate-affine-mismatch", "evaluate", _evaluate(pred_affine=kits_affine((3.0, 0.7, 0.8))), r"affine"),
    Case("evaluate-duplicate-case-id", "evaluate", _evaluate(layout="duplicate"), r"appears twice"),
    Case("evaluate-missing-reference", "evaluate", _evaluate(layout="missing"), r"no reference"),
    Case("evaluate-full-disk", "evaluate", _evaluate_full_disk, r"No space left"),
    # viewer loading
    Case("viewer-corrupt-label", "viewer", _viewer(H.corrupt_gzip), r"corrupt|truncated"),
    Case("viewer-label-values", "viewer", _viewer(lambda p: H.save_nifti(p, _label(9))), r"label values"),
    Case("viewer-manifest-files-missing", "viewer", _viewer_nothing_listed, r"lists no case"),
]


def _viewer_load(argv: list[str]) -> int:
    """What the dashboard does when a case is picked, with the CLI's one-line error contract."""
    from kidneyseg.viewer.catalog import open_catalog

    try:
        open_catalog(argv[1]).load_case(argv[2])
    except KidneysegError as exc:
        print(f"kidneyseg viewer: error: {exc}", file=sys.stderr)
        return 2
    return 0


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from .infer_helpers import make_model_dir

    return make_model_dir(tmp_path_factory.mktemp("hardening_model"), plan=H.PLAN)


def _allowed(rel: str, allow: tuple[str, ...]) -> bool:
    return any(a == "*" or rel == a for a in allow)


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=[pytest.mark.xfail(reason=c.xfail, strict=True)]
                                               if c.xfail else []) for c in CASES])
def test_bad_input(case: Case, tmp_path, monkeypatch, capsys, write_nifti, model_dir):
    env = Env(tmp_path, monkeypatch, write_nifti, model_dir)
    argv, name = case.setup(env)
    before = H.snapshot(env.out)
    capsys.readouterr()
    t0 = time.perf_counter()
    rc = _viewer_load(argv) if argv[0] == "viewer-load" else main(argv)
    seconds = time.perf_counter() - t0
    monkeypatch.undo()
    err = capsys.readouterr().err
    lines = H.error_lines(err)
    after = H.snapshot(env.out)

    assert H.part_files(tmp_path) == [], "temporary files left behind"
    if case.expect == "error":
        for rel, digest in before.items():  # nothing written earlier is lost or changed
            assert after.get(rel) == digest, f"{rel} was changed or removed"
        assert rc != 0, f"exit code 0; stderr: {err!r}"
        assert len(lines) == 1, f"expected exactly one stderr line, got {lines}"
        assert name in lines[0], f"message does not name {name!r}: {lines[0]!r}"
        assert re.search(case.keyword, lines[0], re.I), f"no {case.keyword!r} in {lines[0]!r}"
        new = [r for r in after if r not in before and not _allowed(r, case.allow_new)]
        assert new == [], f"partial/new output after a failure: {new}"
    else:
        assert rc == 0, f"exit code {rc}; stderr: {err!r}"
        if case.expect == "warn":
            hits = [ln for ln in lines if "warning" in ln and re.search(case.keyword, ln, re.I)]
            assert hits, f"no warning matching {case.keyword!r} in {lines}"
            assert name in hits[0]
    if case.max_seconds is not None:
        assert seconds < case.max_seconds, f"took {seconds:.1f} s"


#: rows also run as a real process: catches output that bypasses Python's sys.stderr (C libraries,
#: loggers bound at import time) and proves the exit status of the installed entry point.
SUBPROCESS_IDS = ["manifest-corrupt-gzip", "manifest-zero-spacing", "manifest-unwritable-output",
                  "predict-float32-overflow", "evaluate-affine-mismatch", "preprocess-missing-file"]


@pytest.mark.parametrize("case", [c for c in CASES if c.id in SUBPROCESS_IDS], ids=lambda c: c.id)
def test_bad_input_in_a_real_process(case: Case, tmp_path, monkeypatch, write_nifti, model_dir):
    import os
    import subprocess

    env = Env(tmp_path, monkeypatch, write_nifti, model_dir)
    argv, name = case.setup(env)
    before = H.snapshot(env.out)
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-m", "kidneyseg", *argv], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root)}, cwd=root)
    lines = H.error_lines(r.stderr)
    assert r.returncode == 2, r.stderr
    assert len(lines) == 1, f"expected exactly one stderr line, got {lines}"
    assert name in lines[0] and re.search(case.keyword, lines[0], re.I), lines[0]
    assert "Traceback" not in r.stderr
    after = H.snapshot(env.out)
    assert H.part_files(tmp_path) == []
    assert all(after.get(rel) == digest for rel, digest in before.items())
    assert [r for r in after if r not in before and not _allowed(r, case.allow_new)] == []


def test_table_is_large_and_covers_every_command():
    assert len(CASES) >= 25
    assert len({c.id for c in CASES}) == len(CASES)
    commands = {c.command for c in CASES}
    assert {"manifest", "stats", "phantom", "preprocess", "train", "predict", "evaluate", "viewer"} <= commands


def test_oblique_prediction_keeps_the_input_affine(tmp_path, model_dir, capsys):
    """Accepted with a warning, and the output lies exactly on the input's (oblique) grid."""
    import nibabel as nib

    aff = H.oblique_affine(20.0)
    ct = _valid_ct(tmp_path / "ct.nii.gz", affine=aff)
    out = tmp_path / "pred.nii.gz"
    assert main(["predict", "-i", str(ct), "-o", str(out), "--model", str(model_dir), "--no-progress"]) == 0
    assert "oblique" in capsys.readouterr().err
    img = nib.load(str(out))
    assert img.shape == H.SHAPE and np.allclose(img.affine, aff)
