"""The Voila dashboard's logic: run-folder reading, per-case metrics, 3D meshes, slice overlays.

``app/viewer.ipynb`` only wires these together; everything here runs (and is tested) without a
browser. Entry points:

- :func:`kidneyseg.viewer.catalog.open_catalog` - the cases a run folder or manifest lists;
- :func:`kidneyseg.viewer.dashboard.build_dashboard` - the widget tree the notebook displays;
- ``kidneyseg viewer [RUN_DIR]`` (:mod:`kidneyseg.viewer.commands`) - starts Voila on 127.0.0.1.
- ``make lab`` (:mod:`kidneyseg.viewer.lab`) - JupyterLab on 127.0.0.1 with the notebooks, pointed
  at a run's manifest.
"""
