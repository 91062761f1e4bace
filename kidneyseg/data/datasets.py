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

The KiTS23 regions carry the challenge's surface-Dice tolerances (mm). KiTS19's "kidney" region is
kidney *and* tumor, as its official evaluation defines it.

>>> KITS23.region("masses").labels
(2, 3)
>>> get_dataset("kits19").label_values
(0, 1, 2)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["DATASETS", "Dataset", "KITS19", "KITS23", "Region", "get_dataset"]


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
    """A dataset's label set and evaluation regions.

    Attributes:
        name: ``"kits19"`` or ``"kits23"``.
        label_names: label value -> name, background (0) included.
        regions: the evaluation regions, outermost first.
        metadata_file: the clinical-records JSON beside the case folders.
    """

    name: str
    label_names: dict[int, str]
    regions: tuple[Region, ...]
    metadata_file: str

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


KITS19 = Dataset(
    name="kits19",
    label_names={0: "background", 1: "kidney", 2: "tumor"},
    regions=(Region("kidney", (1, 2)), Region("tumor", (2,))),
    metadata_file="kits.json",
)

KITS23 = Dataset(
    name="kits23",
    label_names={0: "background", 1: "kidney", 2: "tumor", 3: "cyst"},
    regions=(Region("kidney_and_masses", (1, 2, 3), 1.0331), Region("masses", (2, 3), 1.1329),
             Region("tumor", (2,), 1.1498)),
    metadata_file="kits23.json",
)

#: Every known dataset by name.
DATASETS: dict[str, Dataset] = {d.name: d for d in (KITS19, KITS23)}


def get_dataset(name: str | Dataset) -> Dataset:
    """The dataset called ``name`` (a :class:`Dataset` passes through); unknown names list the valid ones."""
    if isinstance(name, Dataset):
        return name
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}") from None
