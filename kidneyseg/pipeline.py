"""Run the ordered notebooks end to end with papermill into a self-describing run folder.

A run folder ``runs/<name>/`` holds:

    run.json                  where things are (manifest, predictions, metrics, model) - the viewer reads it
    config.json               the exact profile and parameters the run used
    version.json              package version, git revision, python/torch versions, start time
    runtime.json              the precision and memory layout `auto` chose on the profile's device
                              (train and predict; each trained stage also keeps its own runtime.json)
    resources.json            wall time, CPU time, peak RSS of the process tree and bytes written of each
                              notebook and of the heavy steps inside them (:mod:`kidneyseg.resources`)
    data/                     generated phantoms (when run on phantoms)
    notebooks/NN_name.ipynb   each executed notebook, with its outputs
    NN_name/                  each notebook's figures (PNG), metrics (CSV/JSON), artefacts
    steps/NN_name.done        completion marks: a re-run with the same parameters skips the step

Profiles (``demo``, ``ci``, ``full``, ``ci23``, ``rehearsal``) are JSON files in ``kidneyseg/profiles/``:
shared settings plus one parameter block per notebook. ``demo`` runs on phantoms on a 2-core CPU; ``full``
is what a GPU user runs on KiTS19 (the thesis's 350 epochs); ``ci23`` is ``ci`` on KiTS23-style phantoms
(cysts, region-based training, the KiTS23 protocol); ``rehearsal`` is ``full`` with only the work capped
(a few iterations, 1 seed, 3 validation cases), to run the whole path at native size on any machine
(docs/full_scale.md).

>>> run_pipeline("runs/demo", phantoms=8, profile="demo")      # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable, Sequence

from . import __version__
from .errors import KidneysegError, ensure_output_dir, fail, write_text_atomic
from .resources import ENV_PARENT, ENV_RUN_DIR, record

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = REPO_ROOT / "notebooks"
#: The pipeline's steps, in order. Each is ``notebooks/<name>.ipynb``.
NOTEBOOKS = (
    "01_data_statistics",
    "02_preprocessing",
    "03_training",
    "04_ablation",
    "05_inference_evaluation",
)
PROFILES = ("demo", "ci", "full", "ci23", "rehearsal")


def load_profile(name_or_path: str) -> dict:
    """A profile by name (``demo``, ``ci``, ``full``, ``rehearsal``) or a path to a JSON file of the same form.

    A profile is ``{"description": str, "phantoms": {...}, "shared": {...}, "<notebook>": {...}}``.
    """
    path = Path(name_or_path)
    if path.suffix == ".json":
        if not path.exists():
            raise fail(path, "no such profile file")
        text = path.read_text(encoding="utf-8")
    elif name_or_path in PROFILES:
        text = resources.files("kidneyseg.profiles").joinpath(f"{name_or_path}.json").read_text(encoding="utf-8")
    else:
        raise KidneysegError(f"profile must be one of {list(PROFILES)} or a .json file, got {name_or_path!r}")
    try:
        profile = json.loads(text)
    except json.JSONDecodeError as exc:
        raise fail(path, f"profile is not valid JSON ({exc})") from None
    valid = {"description", "phantoms", "shared", *NOTEBOOKS}
    unknown = sorted(set(profile) - valid)
    if unknown:
        raise fail(path, f"unknown profile keys {unknown}; valid keys: {sorted(valid)}")
    return profile


def git_revision(root: Path = REPO_ROOT) -> str:
    """The checkout's commit (``+dirty`` when it has uncommitted changes), or ``unknown``."""
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _versions() -> dict:
    info = {"kidneyseg": __version__, "git_revision": git_revision(), "python": platform.python_version(),
            "platform": platform.platform(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    try:
        import torch

        info["torch"] = torch.__version__
        info["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    except ImportError:  # pragma: no cover
        pass
    return info


def _runtime(profile: dict) -> dict:
    """What ``precision: auto`` resolves to on the profile's device, for training and prediction."""
    from .runtime import resolve_runtime

    device = profile.get("shared", {}).get("device", "cpu")
    return {"train": resolve_runtime(device, "auto", training=True).to_dict(),
            "predict": resolve_runtime(device, "auto").to_dict()}


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class StepResult:
    name: str
    status: str  # "ran" | "skipped"
    seconds: float


def prepare_data(out: Path, data_dir: str | None, phantoms: int | None, profile: dict,
                 manifest: str | None = None) -> Path:
    """The run's manifest: a given one, one built for ``data_dir``, or phantoms generated into ``out/data``."""
    if manifest is not None:
        from .data.manifest import read_manifest

        read_manifest(manifest)  # validates
        return Path(manifest).resolve()
    if data_dir is not None:
        from .data.manifest import build_manifest

        data = Path(data_dir)
        if not data.is_dir():
            raise fail(data, "no such data folder")
        manifest = out / "manifest.csv"
        if not manifest.exists():
            with record("manifest", manifest, run_dir=out):
                build_manifest(data, manifest, progress=sys.stderr.isatty())
        return manifest
    from .data.phantom import write_phantoms

    opts = dict(profile.get("phantoms", {}))
    n = int(phantoms if phantoms is not None else opts.pop("cases", 8))
    opts.pop("cases", None)
    seed = int(opts.pop("seed", 0))
    marker = out / "data" / ".complete.json"
    wanted = {"cases": n, "seed": seed, **opts}
    if marker.exists() and json.loads(marker.read_text(encoding="utf-8")) == wanted:
        return out / "data" / "manifest.csv"
    with record("paint", out / "data", run_dir=out) as rec:
        rec.details["cases"] = n
        manifest = Path(write_phantoms(out / "data", n, seed, progress=sys.stderr.isatty(), **opts))
    write_text_atomic(marker, json.dumps(wanted, sort_keys=True))
    return manifest


def notebook_parameters(name: str, profile: dict, out: Path, manifest: Path) -> dict:
    """The papermill parameters for one notebook: shared settings, its own block, and run paths.

    ``{run_dir}`` inside a string value is replaced by the run folder.
    """
    params = dict(profile.get("shared", {}))
    params.update(profile.get(name, {}))
    params.update(run_dir=str(out), manifest=str(manifest), output_dir=str(out / name))
    # String values may name other steps' outputs as "{run_dir}/02_preprocessing/cache".
    return {k: v.replace("{run_dir}", str(out)) if isinstance(v, str) else v for k, v in params.items()}


def declared_parameters(notebook: Path) -> set[str]:
    """The names a notebook's papermill ``parameters`` cell declares."""
    import papermill as pm

    return set(pm.inspect_notebook(str(notebook)))


def check_profile_parameters(profile: dict, names: Sequence[str], notebook_dir: Path) -> dict[str, set[str]]:
    """Refuse, before any work starts, a profile setting that no notebook would receive.

    A notebook's own block may only set parameters that notebook declares; a ``shared`` setting must
    be declared by at least one of the notebooks that run (each notebook receives the shared settings
    it declares). Returns each notebook's declared names.

    Raises:
        KidneysegError: naming the block, the unknown keys and the notebook's valid parameters.
    """
    declared = {name: declared_parameters(notebook_dir / f"{name}.ipynb") for name in names}
    for name in names:
        unknown = sorted(set(profile.get(name, {})) - declared[name])
        if unknown:
            raise KidneysegError(f"profile block {name!r} sets {unknown}, which notebook {name} does not declare; "
                                 f"its parameters: {sorted(declared[name])}")
    anywhere = set().union(*declared.values()) if declared else set()
    unused = sorted(set(profile.get("shared", {})) - anywhere)
    if unused:
        raise KidneysegError(f"profile block 'shared' sets {unused}, which none of the notebooks {list(names)} "
                             f"declares")
    return declared


def kernel_manager_options() -> dict:
    """Extra papermill arguments: CurveZMQ encryption between papermill and the kernel where both support it.

    ipykernel >= 7.4 prints "Kernel is running over TCP without encryption" on every start
    otherwise (once per notebook in the pipeline's output). ``transport_encryption="auto"``
    encrypts when the kernel declares support and falls back to plain TCP when it does not.
    Returns ``{}`` with a jupyter_client that has no such option.
    """
    from jupyter_client.manager import AsyncKernelManager

    if "transport_encryption" not in AsyncKernelManager.class_trait_names():
        return {}
    from traitlets import default

    class EncryptedKernelManager(AsyncKernelManager):
        @default("transport_encryption")
        def _default_transport_encryption(self):
            return "auto"

    return {"kernel_manager_class": EncryptedKernelManager}


def _execute(nb_in: Path, nb_out: Path, params: dict, cwd: Path) -> None:
    """Run one notebook with the parameters it declares (the profile was checked up front)."""
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    declared = declared_parameters(nb_in)  # shared settings and run paths go where they are declared
    params = {k: v for k, v in params.items() if k in declared}
    try:
        pm.execute_notebook(str(nb_in), str(nb_out), parameters=params, cwd=str(cwd),
                            progress_bar=sys.stderr.isatty(), kernel_name="python3", log_output=False,
                            **kernel_manager_options())
    except PapermillExecutionError as exc:
        evalue = str(exc.evalue).strip().splitlines()
        raise KidneysegError(
            f"{nb_in.name}: cell {exc.exec_count} failed: {exc.ename}: {evalue[-1] if evalue else ''} "
            f"(executed notebook: {nb_out})") from None


@contextlib.contextmanager
def _environment(values: dict[str, str]):
    """Set environment variables for the block (the notebook kernels started inside inherit them)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_pipeline(out: str | os.PathLike, *, data_dir: str | None = None, phantoms: int | None = None,
                 manifest: str | None = None,
                 profile: str = "demo", notebooks: Sequence[str] | None = None,
                 notebook_dir: Path = NOTEBOOK_DIR, force: bool = False,
                 log: Callable[[str], None] = print) -> list[StepResult]:
    """Execute the notebooks in order into ``out``; stop at the first failure.

    Args:
        out: the run folder (created).
        data_dir: a KiTS19-layout folder with images; ``None`` runs on generated phantoms.
        manifest: an existing manifest CSV to use instead of ``data_dir``/phantoms.
        phantoms: number of phantom cases (default from the profile).
        profile: ``demo``, ``ci``, ``full`` or a JSON path.
        notebooks: a subset of :data:`NOTEBOOKS` (default all, in order).
        force: re-run steps even when their completion mark matches.

    Returns:
        One :class:`StepResult` per notebook.

    Raises:
        KidneysegError: naming the failing notebook and its cell's error.
    """
    if sum(x is not None for x in (data_dir, phantoms, manifest)) > 1:
        raise KidneysegError("give only one of --data, --phantoms and --manifest")
    if phantoms is not None and phantoms < 2:
        raise KidneysegError(f"--phantoms must be at least 2 (a train and a val case), got {phantoms}")
    prof = load_profile(profile)
    names = list(notebooks) if notebooks else list(NOTEBOOKS)
    for name in names:
        if name not in NOTEBOOKS and not (notebook_dir / f"{name}.ipynb").exists():
            raise KidneysegError(f"unknown notebook {name!r}; valid: {list(NOTEBOOKS)}")
    # the profile describes the whole pipeline: checked against every notebook, also when a subset runs
    whole = [n for n in NOTEBOOKS if (notebook_dir / f"{n}.ipynb").exists()]
    check_profile_parameters(prof, list(dict.fromkeys([*whole, *names])), notebook_dir)
    out = ensure_output_dir(out).resolve()
    for sub in ("notebooks", "steps"):
        ensure_output_dir(out / sub)

    log(f"kidneyseg pipeline: profile {profile} -> {out}")
    manifest = prepare_data(out, data_dir, phantoms, prof, manifest)
    config = {"profile": profile, "profile_settings": prof, "data_dir": data_dir, "phantoms": phantoms,
              "notebooks": names, "manifest": str(manifest)}
    write_text_atomic(out / "config.json", json.dumps(config, indent=2, default=str))
    write_text_atomic(out / "version.json", json.dumps(_versions(), indent=2))
    write_text_atomic(out / "runtime.json", json.dumps(_runtime(prof), indent=2))
    run_info = {"manifest": os.path.relpath(manifest, out), "predictions_dir": "05_inference_evaluation/predictions",
                "metrics_csv": "05_inference_evaluation/metrics_cascade.csv", "model_dir": "03_training/model",
                "profile": profile}
    write_text_atomic(out / "run.json", json.dumps(run_info, indent=2))

    results = []
    for name in names:
        params = notebook_parameters(name, prof, out, manifest)
        mark = out / "steps" / f"{name}.done"
        digest = _digest({"params": params, "notebook": (notebook_dir / f"{name}.ipynb").read_text(encoding="utf-8")})
        if not force and mark.exists() and mark.read_text(encoding="utf-8").strip() == digest:
            log(f"  {name}: up to date, skipped")
            results.append(StepResult(name, "skipped", 0.0))
            continue
        mark.unlink(missing_ok=True)
        ensure_output_dir(out / name)
        log(f"  {name}: running ...")
        t0 = time.perf_counter()
        # the notebook's row covers its kernel and workers; the package's steps inside it add their own
        with record(name, out / name, run_dir=out), _environment({ENV_RUN_DIR: str(out), ENV_PARENT: name}):
            _execute(notebook_dir / f"{name}.ipynb", out / "notebooks" / f"{name}.ipynb", params, cwd=out)
        seconds = time.perf_counter() - t0
        write_text_atomic(mark, digest)
        log(f"  {name}: done in {seconds:.0f} s")
        results.append(StepResult(name, "ran", seconds))
    timings = {r.name: round(r.seconds, 1) for r in results}
    write_text_atomic(out / "timings.json", json.dumps(timings, indent=2))
    return results
