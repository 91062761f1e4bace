"""What each predicted label value *is*, for outputs that name their segments (DICOM SEG, Slicer NRRD).

One definition: the label value, a name, a display colour and the SNOMED CT codes (category, type,
anatomic region) that DICOM Segmentation objects and 3D Slicer's terminology use.

================  =====  =================================================  ==========================
segment           label  SNOMED category / type                             anatomic region
================  =====  =================================================  ==========================
kidney            1      123037004 Anatomical Structure / 64033007 Kidney   -
renal tumor       2      49755003 Morphologically Altered Structure /       64033007 Kidney
                         108369006 Neoplasm
================  =====  =================================================  ==========================

KiTS19's label 1 is kidney tissue *without* the tumor; the kidney region of the KiTS19 metrics
is labels 1 and 2 together.

>>> [s.name for s in SEGMENTS]
['kidney', 'renal tumor']
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Code:
    """A coded concept: ``value`` in ``scheme`` (``"SCT"`` = SNOMED CT) with its ``meaning``."""

    value: str
    scheme: str
    meaning: str


@dataclass(frozen=True)
class Segment:
    """One output segment.

    Attributes:
        label: its value in kidneyseg's label maps.
        name: a short human-readable name.
        rgb: display colour, 0..255 each.
        category, type: the segmented property category and type (DICOM SEG, Slicer terminology).
        region: the anatomic region modifier, or ``None``.
    """

    label: int
    name: str
    rgb: tuple[int, int, int]
    category: Code
    type: Code
    region: Code | None = None

    def slicer_terminology(self) -> str:
        """The ``TerminologyEntry`` string 3D Slicer stores in a ``.seg.nrrd`` header."""
        def triple(c: Code | None) -> str:
            return f"{c.scheme}^{c.value}^{c.meaning}" if c else "^^"
        return (f"Segmentation category and type - DICOM master list~{triple(self.category)}~{triple(self.type)}"
                f"~^^~Anatomic codes - DICOM master list~{triple(self.region)}~^^")


KIDNEY_CODE = Code("64033007", "SCT", "Kidney")

#: The segments of a kidneyseg label map, in label order (background 0 is not a segment).
SEGMENTS = (
    Segment(1, "kidney", (185, 102, 83), Code("123037004", "SCT", "Anatomical Structure"), KIDNEY_CODE),
    Segment(2, "renal tumor", (241, 214, 69), Code("49755003", "SCT", "Morphologically Altered Structure"),
            Code("108369006", "SCT", "Neoplasm"), KIDNEY_CODE),
)

__all__ = ["Code", "KIDNEY_CODE", "SEGMENTS", "Segment"]
