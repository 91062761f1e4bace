"""One definition per dataset: its label values and names, its evaluation regions, its metadata file.

Everything that needs to know "which labels exist" or "what is scored" reads a :class:`Dataset`
from here instead of spelling ``{0, 1, 2}``:

==========  ===============================  ==============================================  ==============
dataset     labels                           evaluation regions (label values)               metadata file
==========  ===============================  ==============================================  ==============
``kits19``  0 background, 1 kidney, 2 tumor  kidney {1, 2}, tumor {2}                        ``kits.json``
``kits23``  ... + 3 cyst                     kidney_and_masses {1, 2, 3}, masses {2, 3},     ``kits23.json``
                                             tumor {2}
==========  ===============================  ==============================================  ==============

The regions are nested, outermost first; the outermost is the foreground (``label > 0``) of both
datasets, the region the cascade's stage 1 looks for. The KiTS23 regions carry the challenge's
surface-Dice tolerances in mm (``kits23/configuration/labels.py`` of the official starter code,
1.0331, 1.1329 and 1.1498 rounded). KiTS19's "kidney" region is kidney *and* tumor, as its
official evaluation defines it.

:func:`detect_dataset` tells which dataset a KiTS-layout folder holds (its metadata file, else the
label values found).

>>> KITS23.region("masses").labels
(2, 3)
>>> get_dataset("kits19").label_values
(0, 1, 2)
>>> [KITS23.label_names[v] for v in KITS23.region_labels()]
['kidney', 'cyst', 'tumor']
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

__all__ = ["DATASETS", "DEFAULT_DATASET", "Dataset", "KITS19", "KITS23", "Region", "dataset_for_labels",
           "detect_dataset", "get_dataset"]


@dataclass(frozen=True)
class Region:
    """A scored region: the union of some label values.

    Attributes:
        name: e.g. ``"kidney"`` or ``"kidney_and_masses"``.
        labels: label values that make up the region.
        tolerance_mm: the surface-Dice tolerance of the dataset's official protocol, mm
            (``None``: the protocol has no fixed tolerance for it).
    """

    name: str
    labels: tuple[int, ...]
    tolerance_mm: float | None = None

    @property
    def title(self) -> str:
        """The name for tables and plots: ``"kidney_and_masses"`` -> ``"Kidney and masses"``."""
        return self.name.replace("_", " ").capitalize()

    def mask(self, label_map: np.ndarray) -> np.ndarray:
        """Boolean mask of the region in a label map (any shape)."""
        label_map = np.asarray(label_map)
        if len(self.labels) == 1:
            return label_map == self.labels[0]
        if self.labels == tuple(range(self.labels[0], max(self.labels) + 1)):  # a contiguous range
            return (label_map >= self.labels[0]) & (label_map <= self.labels[-1])
        return np.isin(label_map, self.labels)


@dataclass(frozen=True)
class Dataset:
    """A dataset's label set, evaluation regions and cascade prior.

    Attributes:
        name: ``"kits19"`` or ``"kits23"``.
        label_names: label value -> name, background (0) included.
        regions: the evaluation regions, nested, outermost first (each region holds the next).
        metadata_file: the clinical-records JSON beside the case folders.
        prior_regions: the stage-1 regions that become stage 2's prior channels, in channel order
            (KiTS19: kidney tissue and tumor, the thesis's one-hot; KiTS23: the kidney-and-masses
            region alone, which a coarse stage 1 finds reliably where cyst and tumor it does not).
        consistent_regions: post-processing removes every inner-region voxel outside a kept
            outermost component (KiTS23). KiTS19 keeps the post-processing it always had.
    """

    name: str
    label_names: dict[int, str]
    regions: tuple[Region, ...]
    metadata_file: str
    prior_regions: tuple[Region, ...]
    consistent_regions: bool = False

    def __post_init__(self) -> None:
        for outer, inner in zip(self.regions, self.regions[1:]):
            if not set(inner.labels) < set(outer.labels):
                raise ValueError(f"{self.name}: region {inner.name!r} must lie inside {outer.name!r}")
        if set(self.regions[0].labels) != set(self.foreground_labels):
            raise ValueError(f"{self.name}: the outermost region must hold every foreground label")
        self.region_labels()  # each nesting step adds exactly one label

    @property
    def label_values(self) -> tuple[int, ...]:
        """Every valid label value, sorted (0 first)."""
        return tuple(sorted(self.label_names))

    @property
    def foreground_labels(self) -> tuple[int, ...]:
        """The label values other than background."""
        return tuple(v for v in self.label_values if v != 0)

    @property
    def num_classes(self) -> int:
        """Number of label values including background (softmax channels)."""
        return len(self.label_names)

    @property
    def foreground(self) -> Region:
        """The outermost region (every foreground label): what stage 1 and the ROI box look for."""
        return self.regions[0]

    def region(self, name: str) -> Region:
        """The region called ``name``; unknown names list the valid ones."""
        for r in self.regions:
            if r.name == name:
                return r
        raise ValueError(f"{self.name} has no region {name!r}; valid: {', '.join(r.name for r in self.regions)}")

    def label(self, name: str) -> int:
        """The value of a label name (``"tumor"`` -> 2)."""
        for value, n in self.label_names.items():
            if n == name:
                return value
        raise ValueError(f"{self.name} has no label {name!r}; valid: {', '.join(self.label_names.values())}")

    def region_labels(self) -> tuple[int, ...]:
        """Per region, the one label it holds that the next (inner) region does not.

        A voxel inside region ``i`` and outside region ``i + 1`` has that label, so nested region
        masks turn back into one label map (nnU-Net's ``regions_class_order``): KiTS23 gives
        ``(1, 3, 2)``, KiTS19 ``(1, 2)``.
        """
        out = []
        for i, r in enumerate(self.regions):
            rest = set(r.labels) - (set(self.regions[i + 1].labels) if i + 1 < len(self.regions) else set())
            if len(rest) != 1:
                raise ValueError(f"{self.name}: region {r.name!r} must add exactly one label to the next, got {rest}")
            out.append(rest.pop())
        return tuple(out)

    def check_values(self, values: Iterable[int]) -> list[int]:
        """The values among ``values`` that are not labels of this dataset (sorted)."""
        return sorted(int(v) for v in set(int(v) for v in values) - set(self.label_values))


KITS19 = Dataset(
    name="kits19",
    label_names={0: "background", 1: "kidney", 2: "tumor"},
    regions=(Region("kidney", (1, 2)), Region("tumor", (2,))),
    metadata_file="kits.json",
    prior_regions=(Region("kidney_tissue", (1,)), Region("tumor", (2,))),
)

KITS23 = Dataset(
    name="kits23",
    label_names={0: "background", 1: "kidney", 2: "tumor", 3: "cyst"},
    # the official tolerances (kits23 starter code, configuration/labels.py), not rounded
    regions=(Region("kidney_and_masses", (1, 2, 3), 1.0330772532390826),
             Region("masses", (2, 3), 1.1328796488598762),
             Region("tumor", (2,), 1.1498198361434828)),
    metadata_file="kits23.json",
    prior_regions=(Region("kidney_and_masses", (1, 2, 3)),),
    consistent_regions=True,
)

#: Every known dataset by name, smallest label set first.
DATASETS: dict[str, Dataset] = {d.name: d for d in (KITS19, KITS23)}
#: What a folder or manifest without any sign of its dataset is (everything before KiTS23 support).
DEFAULT_DATASET = "kits19"


def get_dataset(name: str | Dataset | None) -> Dataset:
    """The dataset called ``name`` (a :class:`Dataset` passes through, ``None`` is the default);
    unknown names list the valid ones."""
    if isinstance(name, Dataset):
        return name
    if name is None:
        return DATASETS[DEFAULT_DATASET]
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}") from None


def dataset_for_labels(values: Iterable[int]) -> Dataset | None:
    """The first dataset (smallest label set) whose labels hold every value; ``None`` if none does.

    >>> dataset_for_labels([0, 1, 2]).name, dataset_for_labels([0, 3]).name, dataset_for_labels([7])
    ('kits19', 'kits23', None)
    """
    values = list(values)
    for d in DATASETS.values():
        if not d.check_values(values):
            return d
    return None


def detect_dataset(folder: os.PathLike | str) -> Dataset | None:
    """The dataset a KiTS-layout folder declares by its metadata file, or ``None`` (no file).

    ``kits23.json`` means KiTS23, ``kits.json`` KiTS19. A folder with both is ambiguous and refused.
    The label values (label 3 only in KiTS23) decide when no file does; see
    :func:`kidneyseg.data.manifest.make_manifest`.

    Raises:
        KidneysegError: both metadata files are present.
    """
    from ..errors import fail

    folder = Path(folder)
    found = [d for d in DATASETS.values() if (folder / d.metadata_file).is_file()]
    if len(found) > 1:
        raise fail(folder, f"holds both {' and '.join(d.metadata_file for d in found)}; "
                           "keep the one of its dataset (or pass the dataset explicitly)")
    return found[0] if found else None
