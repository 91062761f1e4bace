"""bf16 against fp32 prediction with a *trained* cascade: a small model trained on phantoms, cached.

Random weights give near-tied class scores, where any rounding flips labels, and prove nothing
about parity; a trained model does. :func:`trained_phantom_cascade` builds (once, then reuses from
``cache``) phantoms -> plan -> preprocessed cache -> stage 1 and stage 2 trained with the ``demo``
preset; :func:`precision_parity` predicts the held-out phantoms with ``kidneyseg predict``'s own
code (:func:`kidneyseg.infer.predict.predict_path`) in fp32 and in bf16 and scores both against
the phantoms' labels (:func:`kidneyseg.evaluate.metrics.case_metrics`).

    python benchmarks/_parity.py [--cache DIR]     # prints the per-case table and the deltas
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

#: what the cached model is; a cache made with other settings is rebuilt
SETTINGS = {"version": 1, "phantoms": 10, "n_val": 3, "seed": 0, "size": 96, "target_spacing": [2.0, 1.6, 1.6],
            "stage1_spacing": [4.0, 3.2, 3.2], "preset": "demo",
            "overrides": {"epochs": 8, "iterations_per_epoch": 30, "val_iterations": 2, "patch_size": [16, 64, 64],
                          "progress": False}}


def trained_phantom_cascade(cache: Path, log=print) -> tuple[Path, Path]:
    """``(model_dir, manifest)`` of a cascade trained on phantoms, built under ``cache`` unless there.

    Training uses the machine's ``auto`` precision (as ``kidneyseg train`` does); the model is the
    same for the fp32 and bf16 predictions compared afterwards.
    """
    from kidneyseg.data.phantom import write_phantoms
    from kidneyseg.errors import write_text_atomic
    from kidneyseg.preprocess.cache import preprocess_dataset
    from kidneyseg.preprocess.fit import fit_plan
    from kidneyseg.train.config import preset
    from kidneyseg.train.stage import train_stage

    cache = Path(cache)
    mark, model, manifest = cache / "complete.json", cache / "model", cache / "phantoms" / "manifest.csv"
    if mark.is_file() and json.loads(mark.read_text()) == SETTINGS:
        log(f"# parity model: cached in {cache}")
        return model, manifest
    t0 = time.perf_counter()
    s = SETTINGS
    manifest = write_phantoms(cache / "phantoms", s["phantoms"], s["seed"], n_val=s["n_val"], size=s["size"],
                              progress=False)
    plan = fit_plan(manifest, s["target_spacing"], s["stage1_spacing"], progress=False)
    plan.save(cache / "plan.json")
    preprocess_dataset(manifest, cache / "plan.json", cache / "cache", progress=False)
    for stage in (1, 2):
        cfg = preset(s["preset"], stage, s["overrides"])
        train_stage(cfg, cache / "cache", model, resume=(model / f"stage{stage}" / "checkpoint_last.pt").is_file())
    write_text_atomic(mark, json.dumps(SETTINGS))
    log(f"# parity model: phantoms, preprocessing and both stages trained in {time.perf_counter() - t0:.0f} s")
    return model, manifest


def precision_parity(model_dir: Path, manifest: Path, work: Path, precisions=("fp32", "bf16"), log=print) -> dict:
    """Predict the manifest's validation cases in each precision and score them.

    Returns:
        ``{"rows": [{case_id, precision, kidney_dice, tumor_dice, seconds}], "kidney_delta": max |d|,
        "tumor_delta": max |d|}`` (deltas between the first two precisions, over cases; a case
        without tumor in the reference and in both predictions has NaN tumor Dice and is skipped).
    """
    import math

    from kidneyseg.evaluate.metrics import case_metrics
    from kidneyseg.experiments import split_cases
    from kidneyseg.infer.predict import predict_path
    from kidneyseg.io import load_volume

    cases = split_cases(manifest, "val")
    inputs = work / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    for cid, img, _ in cases:
        link = inputs / f"{cid}.nii.gz"
        if not link.exists():
            link.symlink_to(img)
    rows, scores = [], {}
    for prec in precisions:
        t0 = time.perf_counter()
        predict_path(inputs, work / prec, model_dir, precision=prec, overwrite=True, progress=False, log=lambda m: None)
        seconds = time.perf_counter() - t0
        for cid, _, lab in cases:
            gt = load_volume(lab, "label")
            pred = load_volume(work / prec / f"{cid}.nii.gz", "label").array
            m = case_metrics(pred, gt.array, gt.spacing)
            scores[(cid, prec)] = (m["kidney_dice"], m["tumor_dice"])
            rows.append({"case_id": cid, "precision": prec, "kidney_dice": m["kidney_dice"],
                         "tumor_dice": m["tumor_dice"], "seconds": seconds / len(cases)})
    a, b = precisions[:2]

    def delta(i):
        d = [abs(scores[(c, a)][i] - scores[(c, b)][i]) for c, _, _ in cases
             if not (math.isnan(scores[(c, a)][i]) or math.isnan(scores[(c, b)][i]))]
        return max(d) if d else float("nan")

    return {"rows": rows, "kidney_delta": delta(0), "tumor_delta": delta(1)}


def table(result: dict) -> str:
    out = ["| case | precision | kidney Dice | tumor Dice |", "|---|---|---|---|"]
    for r in result["rows"]:
        out.append(f"| {r['case_id']} | {r['precision']} | {r['kidney_dice']:.4f} | {r['tumor_dice']:.4f} |")
    return "\n".join(out)


def main(argv=None) -> int:
    import tempfile

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "kidneyseg-parity-model"),
                    help="where the trained phantom cascade is kept (default: the system temp folder)")
    a = ap.parse_args(argv)
    model, manifest = trained_phantom_cascade(Path(a.cache))
    with tempfile.TemporaryDirectory(prefix="kidneyseg-parity-") as tmp:
        res = precision_parity(model, manifest, Path(tmp))
    print(table(res))
    print(f"RESULT kidney_dice_delta={res['kidney_delta']:.4f} tumor_dice_delta={res['tumor_delta']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
