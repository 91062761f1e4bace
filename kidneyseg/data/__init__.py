"""kidneyseg.data: the manifest of a KiTS19-layout folder, dataset statistics, CT-like phantoms.

Submodules: :mod:`~kidneyseg.data.manifest` (scan, split, read/write the manifest CSV),
:mod:`~kidneyseg.data.stats` (Table 4.1, Fig. 4.2, volume plots),
:mod:`~kidneyseg.data.phantom` (abdominal CT phantoms at realistic scale in the KiTS19 layout, and
CT painted into real label maps).
"""

from .manifest import COLUMNS, build_manifest, case_paths, read_manifest, select_cases

__all__ = ["COLUMNS", "build_manifest", "case_paths", "read_manifest", "select_cases"]
