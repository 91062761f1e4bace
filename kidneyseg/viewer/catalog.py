"""The cases a viewer may show: read from a run folder (``run.json``) or a manifest CSV.

The viewer is confined to the cases its source lists. A :class:`Catalog` fixes, when it is
opened, the set of case ids and the resolved file paths of each case; :meth:`Catalog.load_case`
accepts only one of those ids and opens only those files. Nothing a browser sends can name a
path: a case id that is not listed, a prediction file that resolves (through ``..`` or a
symbolic link) outside the run's predictions folder, or a manifest row whose case id is not a
plain name is refused.

A run folder (written by :mod:`kidneyseg.pipeline`) holds ``run.json`` with ``manifest``, ``predictions_dir``,
``metrics_csv`` and ``model_dir``, paths relative to the run folder. A manifest alone gives
ground truth only (no predictions, no metrics file).

**Which dataset.** The source's manifest says it (its ``dataset`` column,
:func:`kidneyseg.data.manifest.manifest_dataset`; a manifest written before that column existed is
KiTS19). A run folder's dataset is that of the manifest its ``run.json`` names. Label maps and
predictions are read with that dataset's label values (:mod:`kidneyseg.data.datasets`): KiTS19
{0, 1, 2} exactly as before, KiTS23 {0, 1, 2, 3} (3 = cyst); any other value is refused, naming
the file and the dataset.

>>> cat = open_catalog("runs/demo")                 # doctest: +SKIP
>>> cat.case_ids                                     # doctest: +SKIP
['case_00003', 'case_00007']
>>> case = cat.load_case("case_00003")               # doctest: +SKIP
>>> case.label.shape, case.prediction is not None    # doctest: +SKIP
((64, 128, 128), True)
>>> cat.dataset.name                                 # doctest: +SKIP
'kits19'
"""

from __future__ import annotations

import math
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..data.datasets import Dataset, get_dataset
from ..data.manifest import case_paths, manifest_dataset, read_manifest
from ..errors import KidneysegError, fail, read_json
from ..io import Volume, load_volume

#: A case id is a plain file-name stem: letters, digits, ``_``, ``-`` and inner dots, no ``..``.
CASE_ID_PATTERN = re.compile(r"\A[A-Za-z0-9](?:[A-Za-z0-9_\-]|\.(?!\.))*\Z")
RUN_FILE = "run.json"
#: Metrics CSV columns the dashboard takes from ``kidneyseg evaluate --csv`` when present (KiTS19;
#: a KiTS23 run's are its protocol's, :func:`kidneyseg.viewer.metrics.metric_columns`). Volumes
#: are not taken from it (its ``kidney_ml`` is the predicted label 1 alone, the manifest's is the
#: reference's label > 0); the viewer measures them on the loaded label maps, one definition.
METRIC_COLUMNS = (
    "kidney_dice", "tumor_dice", "mean_dice", "kidney_surface_dice", "tumor_surface_dice",
    "kidney_hd95", "tumor_hd95",
)
#: Volumes (ml) the viewer measures for KiTS19: kidney = label > 0 (kidney incl. tumor), tumor =
#: label == 2 (KiTS23: ``gt_``/``pred_`` + each region's name + ``_ml``).
VOLUME_KEYS = ("gt_kidney_ml", "gt_tumor_ml", "pred_kidney_ml", "pred_tumor_ml")


@dataclass(frozen=True)
class CaseEntry:
    """One listed case and the only files the viewer may open for it (resolved, absolute)."""

    case_id: str
    image: Path | None
    label: Path | None
    prediction: Path | None
    info: dict = field(default_factory=dict)      # the manifest row (tumor_size_cm, split, ...)
    metrics: dict = field(default_factory=dict)   # the metrics CSV row, if any


@dataclass
class CaseData:
    """A loaded case; arrays are canonical (z, y, x), CT in HU, labels uint8 in the dataset's
    label values (KiTS19 {0, 1, 2}, KiTS23 {0, 1, 2, 3})."""

    entry: CaseEntry
    image: Volume | None
    label: Volume | None
    prediction: Volume | None
    dataset: Dataset = field(default_factory=lambda: get_dataset(None))

    @property
    def case_id(self) -> str:
        return self.entry.case_id

    @property
    def reference(self) -> Volume:
        """The volume that defines the grid (label, else prediction, else image)."""
        for vol in (self.label, self.prediction, self.image):
            if vol is not None:
                return vol
        raise fail(self.case_id, "case has no volume to show")

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm, (z, y, x)."""
        return self.reference.spacing

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.reference.shape


class Catalog:
    """The listed cases of a run folder or manifest; the viewer's only way to reach files.

    Args:
        source: a run folder (holding ``run.json``), a ``run.json`` file, or a manifest CSV.

    Attributes:
        dataset: the source's :class:`~kidneyseg.data.datasets.Dataset` (its manifest's ``dataset``).

    Raises:
        KidneysegError: missing source, unreadable ``run.json``/manifest, no viewable case.
    """

    def __init__(self, source: os.PathLike | str):
        source = Path(source).expanduser()
        if not source.exists():
            raise fail(source, "no such run folder or manifest")
        self.source = source.resolve()
        self.run: dict = {}
        self.predictions_dir: Path | None = None
        self.metrics_csv: Path | None = None
        if self.source.is_dir() or self.source.name == RUN_FILE:
            run_file = self.source / RUN_FILE if self.source.is_dir() else self.source
            self.run_dir = run_file.parent
            self.run = _read_run_json(run_file)
            self.manifest_path = self._run_path(run_file, "manifest", required=True)
            self.predictions_dir = self._run_path(run_file, "predictions_dir")
            self.metrics_csv = self._run_path(run_file, "metrics_csv")
        else:
            self.run_dir = None
            self.manifest_path = self.source
        self.kind = "run" if self.run_dir is not None else "manifest"
        manifest = _read_manifest(self.manifest_path)
        self.dataset: Dataset = manifest_dataset(manifest)
        self._entries = self._list_cases(manifest)
        if not self._entries:
            raise fail(self.source, "lists no case with a label map, image or prediction to show")

    # ------------------------------------------------------------------------------- reading
    def _run_path(self, run_file: Path, key: str, required: bool = False) -> Path | None:
        value = self.run.get(key)
        if value in (None, ""):
            if required:
                raise fail(run_file, f"has no {key!r} entry")
            return None
        if not isinstance(value, str):
            raise fail(run_file, f"{key!r} must be a path string, got {value!r}")
        return (run_file.parent / value).resolve()

    def _list_cases(self, manifest: pd.DataFrame) -> dict[str, CaseEntry]:
        metrics = _read_metrics(self.metrics_csv) if self.metrics_csv and self.metrics_csv.is_file() else {}
        pred_root = self.predictions_dir if self.predictions_dir and self.predictions_dir.is_dir() else None
        entries: dict[str, CaseEntry] = {}
        for row in manifest.to_dict("records"):
            case_id = str(row["case_id"])
            if not CASE_ID_PATTERN.fullmatch(case_id):
                warnings.warn(f"{self.manifest_path}: case id {case_id!r} is not a plain name; not shown",
                              stacklevel=3)
                continue
            image, label = _manifest_paths(row, self.manifest_path)
            prediction = None
            if pred_root is not None:
                candidate = pred_root / f"{case_id}.nii.gz"
                if candidate.exists():
                    try:
                        prediction = _inside(candidate.resolve(), pred_root)
                    except KidneysegError as exc:
                        warnings.warn(str(exc), stacklevel=3)
            entries[case_id] = CaseEntry(case_id, image, label, prediction, _clean(row),
                                         metrics.get(case_id, {}))
        if pred_root is not None and any(e.prediction for e in entries.values()):
            # A run shows the cases it predicted (e.g. the validation split), not all 210.
            entries = {k: e for k, e in entries.items() if e.prediction is not None}
        return {k: e for k, e in entries.items() if e.image or e.label or e.prediction}

    # --------------------------------------------------------------------------------- public
    @property
    def case_ids(self) -> list[str]:
        """The listed case ids, sorted."""
        return sorted(self._entries)

    @property
    def has_predictions(self) -> bool:
        return any(e.prediction is not None for e in self._entries.values())

    def entry(self, case_id: str) -> CaseEntry:
        """The listed entry of ``case_id``; refuses anything that is not a listed id."""
        if not isinstance(case_id, str) or case_id not in self._entries:
            raise fail(self.source, f"case {case_id!r} is not listed here; the viewer shows only "
                                    f"{len(self._entries)} listed cases")
        return self._entries[case_id]

    def load_case(self, case_id: str) -> CaseData:
        """Read the listed files of one case (image as float32 HU, labels as uint8 in the
        dataset's label values).

        Raises:
            KidneysegError: an unlisted case id, a file that cannot be read, or a label map with a
                value outside the dataset's labels.
        """
        entry = self.entry(case_id)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # MR-range warnings are irrelevant for display
            image = load_volume(entry.image, "image") if entry.image else None
        label = self._load_labels(entry.label)
        prediction = self._load_labels(entry.prediction)
        grid = next(v for v in (label, prediction, image) if v is not None)
        for name, vol in (("image", image), ("label", label), ("prediction", prediction)):
            if vol is not None and vol.shape != grid.shape:
                path = getattr(entry, name)
                raise fail(path, f"shape {vol.shape} differs from the case's {grid.shape}")
        return CaseData(entry, image, label, prediction, self.dataset)

    def _load_labels(self, path: Path | None) -> Volume | None:
        if path is None:
            return None
        try:
            return load_volume(path, "label", label_values=self.dataset.label_values)
        except KidneysegError as exc:
            if "label values must be" not in str(exc):
                raise
            names = ", ".join(f"{v} {n}" for v, n in self.dataset.label_names.items())
            raise KidneysegError(f"{exc}; {self.manifest_path.name} is a {self.dataset.name} manifest "
                                 f"({names})") from None

    def describe(self) -> str:
        """One line naming the source, its dataset and how many cases it lists."""
        what = f"run {self.run_dir}" if self.kind == "run" else f"manifest {self.manifest_path}"
        pred = "with predictions" if self.has_predictions else "ground truth only"
        return f"{what}: {len(self._entries)} cases, {pred}, {self.dataset.name} labels"


def open_catalog(source: os.PathLike | str) -> Catalog:
    """Open a run folder, a ``run.json`` or a manifest CSV (see :class:`Catalog`)."""
    return Catalog(source)


# ------------------------------------------------------------------------------------ helpers
def _read_run_json(path: Path) -> dict:
    if not path.is_file():
        raise fail(path.parent, f"is not a run folder (no {RUN_FILE}) and not a manifest CSV")
    return read_json(path, "run file")


def _read_manifest(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise fail(path, "no such manifest file")
    return read_manifest(path)


def _manifest_paths(row: dict, manifest_path: Path) -> tuple[Path | None, Path | None]:
    image, label = case_paths(row, manifest_path)
    image = image.resolve() if image is not None and Path(image).exists() else None
    label = label.resolve() if label is not None and Path(label).exists() else None
    for p in (image, label):
        if p is not None and not (p.name.endswith((".nii", ".nii.gz")) or p.is_dir()):
            raise fail(manifest_path, f"case {row['case_id']}: {p.name} is not a NIfTI file or DICOM folder")
    return image, label


def _inside(path: Path, root: Path) -> Path:
    """``path`` if it lies inside ``root`` (both resolved); else a clear error."""
    try:
        path.relative_to(root)
    except ValueError:
        raise fail(path, f"resolves outside the predictions folder {root}; refused") from None
    return path


def _read_metrics(path: Path) -> dict[str, dict]:
    try:
        df = pd.read_csv(path, dtype={"case_id": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as exc:
        raise fail(path, f"not a readable metrics CSV ({str(exc).splitlines()[0]})") from None
    if "case_id" not in df.columns:
        raise fail(path, "metrics CSV has no 'case_id' column")
    return {str(r["case_id"]): _clean(r) for r in df.to_dict("records")}


def _clean(row: dict) -> dict:
    """A row as plain Python values; NaN stays NaN (floats), numpy scalars become Python."""
    out = {}
    for key, value in row.items():
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, float) and math.isnan(value):
            value = float("nan")
        out[str(key)] = value
    return out


__all__ = ["CASE_ID_PATTERN", "Catalog", "CaseData", "CaseEntry", "METRIC_COLUMNS", "VOLUME_KEYS", "open_catalog"]
