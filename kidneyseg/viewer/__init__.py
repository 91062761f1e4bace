"""The Voila dashboard's logic: run-folder reading, per-case metrics, 3D meshes, slice overlays.

``app/viewer.ipynb`` only wires these together; everything here runs (and is tested) without a
browser. KiTS19 and KiTS23 runs (the manifest's ``dataset``: labels, cyst colours, the evaluation
protocol's metrics). Modules: ``catalog`` (what may be read), ``metrics``, ``render`` (3D surfaces),
``slices`` (slice panels), ``style`` (colours), ``framing``, ``dashboard``, ``niivue``. Entry points:

- :func:`kidneyseg.viewer.catalog.open_catalog` - the cases a run folder or manifest lists;
- :func:`kidneyseg.viewer.dashboard.build_dashboard` - the widget tree the notebook displays;
- ``kidneyseg viewer [RUN_DIR]`` (:mod:`kidneyseg.viewer.commands`) - starts Voila on 127.0.0.1.
- ``make lab`` (:mod:`kidneyseg.viewer.lab`) - JupyterLab on 127.0.0.1 with the notebooks, pointed
  at a run's manifest.
"""
