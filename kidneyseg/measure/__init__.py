"""Pure measurements on label maps (numpy in, numbers out), shared by every step that needs them.

``infer.postprocess``, ``evaluate``, the viewer and ``predict --statistics`` all measure label maps
with these functions (connected components, volumes in ml, diameters in mm, left/right from the
affine, per-label HU statistics), so each concept has one implementation. Arrays are (z, y, x);
spacing is (z, y, x) in mm.
"""
