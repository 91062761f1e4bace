"""kidneyseg.data: datasets, the manifest of a KiTS19/KiTS23-layout folder, statistics, CT-like phantoms.

Submodules: :mod:`~kidneyseg.data.datasets` (labels and regions of KiTS19 and KiTS23),
:mod:`~kidneyseg.data.manifest` (scan, split, read/write the manifest CSV),
:mod:`~kidneyseg.data.volumes` (label volumes of the voxel pass),
:mod:`~kidneyseg.data.stats` (Table 4.1, Fig. 4.2, volume plots),
:mod:`~kidneyseg.data.phantom` (abdominal CT phantoms at realistic scale in the KiTS19 layout, and
CT painted into real label maps),
:mod:`~kidneyseg.data.cysts` (renal cysts for KiTS23-style phantoms).
"""

from .manifest import COLUMNS, build_manifest, case_paths, read_manifest, select_cases

__all__ = ["COLUMNS", "build_manifest", "case_paths", "read_manifest", "select_cases"]
