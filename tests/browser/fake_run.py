"""A tiny run folder for the viewer tests: CT + labels, perturbed predictions, metrics, run.json.

Cases are small synthetic abdomens (body ellipse, spine, two ellipsoid kidneys, one tumor),
KiTS19 layout, written with ``kidneyseg.io``; predictions are the labels shifted and dilated so
ground truth and prediction differ visibly; the metrics CSV has the contract's columns, computed
with ``kidneyseg.evaluate`` when it is installed, else with the viewer's quick metrics.

``dataset="kits23"`` makes a KiTS23 run: each case also has one cyst (label 3, water density,
bulging from the kidney without the tumor, so the 3D view shows it), the manifest's ``dataset``
column says ``kits23`` and the metrics CSV is ``kidneyseg.evaluate``'s kits23 report.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from kidneyseg.io import new_volume, save_like
from kidneyseg.viewer.metrics import quick_metrics

SHAPE = (40, 96, 96)
SPACING = (2.5, 1.6, 1.6)
#: The 'tall' case: thick slices, fine in-plane spacing, 480 mm long, kidneys high up (far from
#: the volume's centre), the spine over the whole length: what the demo's phantoms look like to the
#: 3D view (a plotly camera fitted to all data cut such kidneys off) and to the slice panels.
TALL_SHAPE = (96, 128, 160)
TALL_SPACING = (5.0, 0.8, 0.8)


def _ellipsoid(shape, centre, radii):
    zz, yy, xx = np.ogrid[: shape[0], : shape[1], : shape[2]]
    return (((zz - centre[0]) / radii[0]) ** 2 + ((yy - centre[1]) / radii[1]) ** 2
            + ((xx - centre[2]) / radii[2]) ** 2) <= 1.0


def synth_case(seed: int, shape=SHAPE, cyst: bool = False):
    """(ct float32 HU, label uint8) (z, y, x) of one synthetic case; deterministic per seed.

    ``cyst=True`` adds a KiTS23 cyst (label 3, radius 5 voxels in-plane) on the lateral edge of the
    kidney without the tumor, level with the tumor (so the axial plane through the tumor cuts it);
    the rest of the case is the same as without it."""
    rng = np.random.default_rng(seed)
    z, y, x = shape
    ct = np.full(shape, -1000.0, np.float32)
    ct[_ellipsoid(shape, (z / 2, y / 2, x / 2), (z, y * 0.42, x * 0.46))] = 40.0
    ct[_ellipsoid(shape, (z / 2, y * 0.72, x / 2), (z, y * 0.08, x * 0.08))] = 700.0  # spine
    label = np.zeros(shape, np.uint8)
    for side in (-1, 1):
        centre = (z / 2 + rng.uniform(-2, 2), y * 0.62, x / 2 + side * x * 0.2)
        label[_ellipsoid(shape, centre, (z * 0.3, y * 0.1, x * 0.07))] = 1
    side = 1 if seed % 2 else -1
    t_centre = (z / 2 + rng.uniform(-3, 3), y * 0.58, x / 2 + side * x * 0.26)
    t_r = rng.uniform(4.5, 7.0)
    label[_ellipsoid(shape, t_centre, (t_r * 0.7, t_r, t_r))] = 2
    if cyst:
        c_centre = (t_centre[0], y * 0.62, x / 2 - side * x * 0.29)
        label[_ellipsoid(shape, c_centre, (3.5, 5.0, 5.0)) & (label != 2)] = 3
    ct[label == 1] = 180.0
    ct[label == 2] = 90.0
    ct[label == 3] = 10.0
    ct += rng.normal(0, 12, shape).astype(np.float32)
    return ct, label


def _ellipsoid_mm(shape, spacing, centre_mm, radii_mm):
    zz, yy, xx = (np.arange(n) * d for n, d in zip(shape, spacing))
    return (((zz[:, None, None] - centre_mm[0]) / radii_mm[0]) ** 2
            + ((yy[None, :, None] - centre_mm[1]) / radii_mm[1]) ** 2
            + ((xx[None, None, :] - centre_mm[2]) / radii_mm[2]) ** 2) <= 1.0


def tall_case(seed: int, shape=TALL_SHAPE, spacing=TALL_SPACING):
    """(ct, label) (z, y, x) of the tall anisotropic case; structures sized in mm (kidneys 100 x 40
    x 32 mm, 70 mm apart, centred 90 mm below the top slice; a 24 mm tumor)."""
    rng = np.random.default_rng(seed)
    ext = [n * d for n, d in zip(shape, spacing)]
    ct = np.full(shape, -1000.0, np.float32)
    ct[_ellipsoid_mm(shape, spacing, (ext[0] / 2, ext[1] / 2, ext[2] / 2), (ext[0], ext[1] * 0.45, ext[2] * 0.47))] = 40.0
    ct[_ellipsoid_mm(shape, spacing, (ext[0] / 2, ext[1] * 0.72, ext[2] / 2), (ext[0], 11, 11))] = 700.0  # spine
    label = np.zeros(shape, np.uint8)
    for side in (-1, 1):
        label[_ellipsoid_mm(shape, spacing, (90 + rng.uniform(-5, 5), ext[1] * 0.6, ext[2] / 2 + side * 35),
                            (50, 20, 16))] = 1
    label[_ellipsoid_mm(shape, spacing, (95, ext[1] * 0.6, ext[2] / 2 + 35 + 14), (12, 12, 12))] = 2
    ct[label == 1] = 180.0
    ct[label == 2] = 90.0
    ct += rng.normal(0, 12, shape).astype(np.float32)
    return ct, label


def perturb(label: np.ndarray, seed: int) -> np.ndarray:
    """A plausible 'prediction': the kidneys shifted by a few voxels, the tumor (and any cyst,
    label 3) dilated."""
    rng = np.random.default_rng(1000 + seed)
    shift = (0, int(rng.integers(2, 4)), int(rng.integers(-3, 4)))
    kidney = ndimage.shift((label > 0).astype(np.uint8), shift, order=0) > 0
    tumor = ndimage.binary_dilation(label == 2, iterations=1)
    pred = np.zeros_like(label)
    pred[kidney] = 1
    if (label == 3).any():
        pred[ndimage.binary_dilation(label == 3, iterations=1)] = 3
    pred[tumor] = 2
    return pred


def phantom_case(seed: int):
    """(ct, label, spacing) from the data area's ``make_phantom`` (one tumor, small), or ``None``
    when that module is not available."""
    try:
        from kidneyseg.data.phantom import make_phantom
    except ImportError:
        return None
    image, label = make_phantom(seed, size=96, slices=(32, 40), spacing_z=(2.5,), tumor_counts=(0.0, 1.0, 0.0))
    return image.array, label.array, image.spacing


def case_metrics_row(label: np.ndarray, pred: np.ndarray, spacing) -> dict:
    """The metrics CSV row of one case: ``kidneyseg.evaluate`` when present, else the viewer's."""
    try:
        from kidneyseg.evaluate.metrics import case_metrics
    except ImportError:
        return quick_metrics(label, pred, spacing, tolerance_mm=2.0)
    return case_metrics(pred, label, spacing, tolerance_mm=2.0)


def make_fake_run(root: Path, n_cases: int = 3, seed: int = 0, with_metrics: bool = True,
                  phantom: bool = False, tall: bool = False, dataset: str = "kits19") -> Path:
    """Write ``root/data`` (KiTS layout + manifest.csv) and ``root/run`` (run.json ...); return run dir.

    ``phantom=True`` uses ``kidneyseg.data.phantom.make_phantom`` when it exists (realistic CT,
    tumor sizes vary); the default synthetic cases have fixed-size structures, which the browser
    test's pixel-count thresholds rely on. ``tall=True`` adds one more case, the
    :func:`tall_case` (thick slices, kidneys far from the volume's centre).

    ``dataset="kits23"``: synthetic cases with a cyst (:func:`synth_case`), the manifest's
    ``dataset`` and ``cyst_ml`` columns, the metrics CSV of ``kidneyseg.evaluate``'s kits23 protocol
    (with its summary row, as ``kidneyseg evaluate --csv`` writes it). The KiTS19 manifest has no
    ``dataset`` column, as manifests written before KiTS23 support (they read as KiTS19).
    """
    if dataset not in ("kits19", "kits23"):
        raise ValueError(f"dataset must be 'kits19' or 'kits23', got {dataset!r}")
    kits23 = dataset == "kits23"
    if kits23 and (phantom or tall):
        raise ValueError("a kits23 fake run has synthetic cases only (no phantom=, tall=)")
    root = Path(root)
    data = root / "data"
    run = root / "run"
    (run / "predictions").mkdir(parents=True, exist_ok=True)
    rows, metrics = [], []
    for i in range(n_cases + int(tall)):
        case_id = f"case_{i:05d}"
        made = phantom_case(seed + i) if phantom and i < n_cases else None
        if i == n_cases:
            ct, label = tall_case(seed + i)
            spacing = TALL_SPACING
        elif made is None:
            ct, label = synth_case(seed + i, cyst=kits23)
            spacing = SPACING
        else:
            ct, label, spacing = made
        like = new_volume(label, spacing)
        case_dir = data / case_id
        save_like(ct, case_dir / "imaging.nii.gz", like, kind="image")
        save_like(label, case_dir / "segmentation.nii.gz", like, kind="label")
        pred = perturb(label, seed + i)
        save_like(pred, run / "predictions" / f"{case_id}.nii.gz", like, kind="label")
        voxel_ml = float(np.prod(spacing)) / 1000.0
        rows.append(dict(
            case_id=case_id, image=f"{case_id}/imaging.nii.gz", label=f"{case_id}/segmentation.nii.gz",
            has_image=True, has_label=True, shape_z=label.shape[0], shape_y=label.shape[1],
            shape_x=label.shape[2], spacing_z=spacing[0], spacing_y=spacing[1], spacing_x=spacing[2],
            kidney_ml=float((label > 0).sum()) * voxel_ml, tumor_ml=float((label == 2).sum()) * voxel_ml,
            tumor_size_cm=round(2.0 + 0.4 * i, 1), split="val", excluded=False, exclude_reason=""))
        if kits23:
            from kidneyseg.evaluate.protocols import get_protocol

            rows[-1].update(cyst_ml=float((label == 3).sum()) * voxel_ml, dataset="kits23")
            metrics.append({"case_id": case_id, **get_protocol("kits23").case_metrics(pred, label, spacing)})
        else:
            metrics.append({"case_id": case_id, **case_metrics_row(label, pred, spacing)})
    pd.DataFrame(rows).to_csv(data / "manifest.csv", index=False)
    if with_metrics and kits23:
        from kidneyseg.evaluate.report import write_csv

        write_csv(metrics, run / "metrics.csv", protocol="kits23")
    elif with_metrics:
        pd.DataFrame(metrics).to_csv(run / "metrics.csv", index=False, float_format="%.6f")
    run_json = {"manifest": "../data/manifest.csv", "predictions_dir": "predictions",
                "metrics_csv": "metrics.csv", "model_dir": "model"}
    (run / "run.json").write_text(json.dumps(run_json, indent=2))
    return run


def wait_for_port(port: int, proc, seconds: float = 60.0) -> bool:
    """Wait until something listens on 127.0.0.1:``port``; False if ``proc`` exits or time runs out."""
    import socket
    import time

    deadline = time.monotonic() + seconds
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                return False
            time.sleep(0.3)
