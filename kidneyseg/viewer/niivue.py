"""Optional CT volume view with NiiVue (ipyniivue): CT volume rendering plus three planes.

NiiVue's JavaScript ships inside the ipyniivue wheel, so this renders offline in Voila. The whole
CT and both label files are sent to the browser, so the dashboard builds this view only on
request (a checkbox), never on page load. Only the case's listed files are given to NiiVue.
"""

from __future__ import annotations

from .catalog import CaseData
from .style import window_limits

#: NiiVue colour maps of the label overlays (same meaning as the slice contours).
NIIVUE_GT_COLORMAP = "blue"
NIIVUE_PRED_COLORMAP = "green"


def niivue_volumes(case: CaseData, window="abdomen") -> list[dict]:
    """The ``load_volumes`` list of a case: CT (grey, windowed), ground truth, prediction.

    >>> from kidneyseg.viewer.catalog import CaseEntry
    >>> from pathlib import Path
    >>> e = CaseEntry("c", Path("/d/ct.nii.gz"), Path("/d/gt.nii.gz"), None)
    >>> [v["colormap"] for v in niivue_volumes(CaseData(e, None, None, None))]
    ['gray', 'blue']
    """
    lo, hi = window_limits(window)
    entry = case.entry
    volumes = []
    if entry.image is not None and entry.image.name.endswith((".nii", ".nii.gz")):  # not DICOM folders
        volumes.append({"path": str(entry.image), "colormap": "gray", "cal_min": lo, "cal_max": hi})
    for path, cmap in ((entry.label, NIIVUE_GT_COLORMAP), (entry.prediction, NIIVUE_PRED_COLORMAP)):
        if path is not None:
            volumes.append({"path": str(path), "colormap": cmap, "cal_min": 0.5, "cal_max": 1.0, "opacity": 0.5})
    return volumes


def niivue_view(case: CaseData, window="abdomen", height: int = 520):
    """An ipyniivue ``NiiVue`` widget (multiplanar + volume render) of the case."""
    from ipyniivue import NiiVue, ShowRender, SliceType

    nv = NiiVue(height=height, slice_type=SliceType.MULTIPLANAR, multiplanar_show_render=ShowRender.ALWAYS,
                back_color=(1.0, 1.0, 1.0, 1.0), is_radiological_convention=True,  # as the slice panels
                crosshair_width=0.5)
    nv.layout.width = "100%"  # inside a flex box the canvas would otherwise get zero width
    nv.load_volumes(niivue_volumes(case, window))
    return nv
