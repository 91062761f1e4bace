"""How each tissue looks in contrast-enhanced CT: mean HU per phase, per-case jitter, texture.

The anatomy paints tissue ids (one uint8 per voxel); :func:`draw_appearance` turns the table
below into per-case lookup tables (``Appearance``): the mean HU of each id and the amplitude of
three texture fields: fine (~2 mm, in-plane, from a per-slice bank), medium (~6 mm) and coarse
(~20 mm, the spleen's arterial pattern only) smooth 3D fields (see ``fields``).

Two phases of the KiTS19 protocol are modelled: **corticomedullary** (late arterial, ~35 s:
bright cortex, dark medulla, bright aorta, unopacified infrarenal IVC, heterogeneous "zebra"
spleen) and **nephrographic** (~100 s: cortex and medulla alike, veins and liver enhanced).

Tumors get ids ``TUMOR_BASE + 2 i`` (viable part of tumor ``i``) and ``+ 1`` (necrotic core); each
draws a contrast class of :data:`TUMOR_CLASSES` relative to the case's cortex value.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: tissue: (corticomedullary HU, nephrographic HU, per-case jitter +-HU, texture fine, medium, coarse HU).
TISSUE_TABLE: dict[str, tuple[float, float, float, float, float, float]] = {
    "air": (-1000, -1000, 0, 0, 0, 0),
    "table": (250, 250, 50, 0, 0, 0),
    "foam": (-700, -700, 40, 0, 0, 0),
    "skin": (35, 35, 10, 0, 0, 0),
    "subcutaneous_fat": (-105, -105, 10, 0, 4, 0),
    "muscle": (55, 60, 8, 3, 6, 0),
    "visceral_fat": (-95, -95, 10, 2, 10, 0),
    "lung": (-860, -860, 30, 25, 20, 0),
    "heart": (180, 140, 30, 0, 20, 0),
    "liver": (75, 110, 10, 3, 14, 0),
    "gallbladder": (10, 12, 8, 0, 0, 0),
    "spleen": (115, 115, 12, 4, 10, 35),
    "pancreas": (115, 95, 12, 6, 15, 0),
    "stomach_wall": (80, 75, 10, 0, 0, 0),
    "bowel_wall": (85, 75, 12, 3, 0, 0),
    "bowel_fluid": (15, 15, 10, 0, 5, 0),
    "oral_contrast": (280, 280, 70, 0, 20, 0),
    "gas": (-1000, -1000, 0, 0, 0, 0),
    "feces": (-380, -380, 40, 260, 60, 0),
    "aorta": (320, 170, 50, 0, 0, 0),
    "ivc": (140, 150, 20, 0, 4, 0),
    "ivc_infrarenal": (75, 140, 15, 0, 15, 0),
    "renal_vein": (170, 160, 25, 0, 0, 0),
    "portal_vein": (140, 170, 25, 0, 0, 0),
    "bone_cortical": (850, 850, 120, 40, 0, 0),
    "bone_cancellous": (230, 230, 50, 55, 25, 0),
    "disc": (85, 85, 10, 0, 5, 0),
    "csf": (12, 12, 5, 0, 0, 0),
    "perirenal_fat": (-90, -90, 10, 3, 12, 0),
    "sinus_fat": (-80, -80, 10, 0, 10, 0),
    "kidney_cortex": (200, 180, 25, 6, 8, 0),
    "kidney_medulla": (90, 165, 15, 4, 6, 0),
    "urine": (12, 15, 6, 0, 0, 0),
    "cyst": (10, 12, 8, 2, 0, 0),
}
TISSUES: tuple[str, ...] = tuple(TISSUE_TABLE)
#: Tissue name -> uint8 id painted into the tissue map.
T: dict[str, int] = {name: i for i, name in enumerate(TISSUES)}
TUMOR_BASE = 64
MAX_TUMORS = 64
#: Mean HU per tissue (corticomedullary phase), for documentation and tests.
TISSUE_HU = {name: float(v[0]) for name, v in TISSUE_TABLE.items()}
#: Tumor contrast classes: HU offset range from the case's cortex value, and their frequencies.
TUMOR_CLASSES = {"hypo": ((-140.0, -70.0), 0.45), "iso": ((-20.0, 20.0), 0.30), "hyper": ((40.0, 90.0), 0.25)}
PHASES = ("corticomedullary", "nephrographic")


def tumor_id(i: int, necrotic: bool = False) -> int:
    """The tissue id of tumor component ``i`` (tumors beyond the 64th share the last id)."""
    return TUMOR_BASE + 2 * min(i, MAX_TUMORS - 1) + int(necrotic)


@dataclass
class Appearance:
    """Per-case lookup tables, indexed by tissue id (256 entries each).

    Attributes:
        phase: ``"corticomedullary"`` or ``"nephrographic"``.
        hu: mean HU. fine, medium, coarse: texture amplitudes (HU per unit field).
        noise_hu: noise standard deviation, HU. blur: Gaussian sigma (voxels; in-plane, z).
        tumor_classes: the contrast class drawn for each tumor id that was used.
    """

    phase: str
    hu: np.ndarray
    fine: np.ndarray
    medium: np.ndarray
    coarse: np.ndarray
    noise_hu: float
    blur: tuple[float, float]
    tumor_classes: dict

    def cortex(self) -> float:
        return float(self.hu[T["kidney_cortex"]])


def draw_appearance(rng: np.random.Generator, phase: str, noise_hu: float, blur: tuple[float, float]) -> Appearance:
    """Draw one case's tables: the phase's means jittered, plus every possible tumor's look."""
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
    col = 0 if phase == PHASES[0] else 1
    hu, fine, med, coarse = (np.zeros(256, np.float32) for _ in range(4))
    for name, row in TISSUE_TABLE.items():
        i = T[name]
        hu[i] = row[col] + rng.uniform(-row[2], row[2])
        fine[i], med[i], coarse[i] = row[3:6]
    if phase == PHASES[1]:
        coarse[T["spleen"]] = 4.0  # the arterial "zebra" spleen is gone by the nephrographic phase
        hu[T["kidney_medulla"]] = hu[T["kidney_cortex"]] - rng.uniform(0, 25)
    hu[T["gas"]] = hu[T["air"]]
    cortex = float(hu[T["kidney_cortex"]])
    names = list(TUMOR_CLASSES)
    probs = [TUMOR_CLASSES[c][1] for c in names]
    classes = {}
    for i in range(MAX_TUMORS):
        kind = names[int(rng.choice(len(names), p=probs))]
        lo, hi = TUMOR_CLASSES[kind][0]
        v, n = tumor_id(i), tumor_id(i, True)
        hu[v] = cortex + rng.uniform(lo, hi)
        fine[v], med[v] = rng.uniform(8, 30), rng.uniform(12, 45)
        hu[n] = rng.uniform(5, 40)  # necrosis / cystic change
        fine[n], med[n] = 4.0, 6.0
        classes[v] = kind
    return Appearance(phase, hu, fine, med, coarse, float(noise_hu), blur, classes)
