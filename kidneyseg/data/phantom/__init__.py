"""CT phantoms of the abdomen with kidney/tumor labels, in the KiTS19 layout, at realistic scale.

The phantoms are the package's built-in data: the demo, the tests and the notebooks run on them
when no KiTS19 data is at hand, and ``--from-labels`` paints the same CT model into real label
maps (the rehearsal of the full-size pipeline). A synthetic case is a contrast-enhanced abdominal
CT (int16 HU stored; float32 in memory) of a 30-40 cm abdomen on a ``size`` x ``size`` grid (512
by default, 0.6-0.9 mm; fewer pixels give a coarser spacing, not a smaller body), with its label
map (0 background, 1 kidney, 2 tumor). The package is organised by concept:

========================  =====================================================================
``options``               :class:`PhantomOptions` (checked, unknown names refused)
``placement``             where the body goes: drawn, or fitted around a real label's kidneys
``body``                  outline, skin, fat, muscle wall with oblique layers, lungs, ribs, table
``organs``                liver, spleen, stomach, pancreas, bowel, colon, bladder, spine, pelvis,
                          muscles, aorta/IVC/iliac/mesenteric/portal/renal vessels, ureters
``kidneys``               synthetic kidneys and tumors; cortex, medulla, sinus, pelvis, perirenal
                          fat, tumor looks and necrosis inside/around any kidney label
``tumor_sizes``           KiTS19's tumor-diameter distribution (package data)
``appearance``            HU per tissue and phase, per-case jitter, texture amplitudes
``fields``                smooth random fields and CT noise that a z-slab evaluates on its own
``scene``                 one case's draw, rendered slab by slab (blur with a halo: no seams)
``generate``              in-memory API: :func:`make_phantom`, :func:`phantom_from_label`, ...
``stream``                label reading without copies, slab-wise image writing (ISA-L gzip)
``batch``                 :func:`write_phantoms`: parallel, resumable, atomic, progress bar
========================  =====================================================================

>>> image, label = make_phantom(0, size=64)                        # doctest: +SKIP
>>> image.array.shape[1:], label.spacing[1] > 5                    # doctest: +SKIP
((64, 64), True)
"""

from __future__ import annotations

from .appearance import PHASES, TISSUE_HU, TUMOR_CLASSES
from .batch import case_seed, write_phantoms
from .body import Anatomy
from .generate import make_case, make_phantom, paint_ct, painted_scene, phantom_from_label, synthetic_scene
from .options import PhantomOptions
from .placement import anatomy_from_label

__all__ = ["Anatomy", "PHASES", "PhantomOptions", "TISSUE_HU", "TUMOR_CLASSES", "anatomy_from_label", "case_seed",
           "make_case", "make_phantom", "paint_ct", "painted_scene", "phantom_from_label", "synthetic_scene",
           "write_phantoms"]
