"""The dashboard's widget tree: case picker, 3D view, slices, window presets, metrics, status.

``app/viewer.ipynb`` calls :func:`build_dashboard` and displays the result; all behaviour lives
here so tests drive it without a browser (``dash.select("case_00001")`` then read
``dash.status.value`` and ``dash.metrics.value``).

Stable CSS classes for browser tests and styling: ``kidneyseg-status`` (text ``loading: <case>``,
``ready: <case>``, ``error: ...`` or ``no run: ...``), ``kidneyseg-case`` (the picker),
``kidneyseg-3d`` (the plotly view), ``kidneyseg-slices``, ``kidneyseg-metrics``,
``kidneyseg-loading``.

Plotly ``FigureWidget`` edits made while Voila first executes the notebook can be lost, so each
case gets a *new* ``FigureWidget`` built with its data, swapped into the 3D box.
"""

from __future__ import annotations

import html
import math
import os
import time
import traceback
from pathlib import Path

from ..data.datasets import get_dataset
from ..errors import KidneysegError
from .catalog import Catalog, CaseData, open_catalog
from .metrics import case_summary
from .render import case_surfaces, surfaces_figure
from .slices import focus_point, slice_figure_png
from .style import WINDOW_PRESETS

#: Environment variable naming the run folder or manifest to show (set by ``kidneyseg viewer``).
ENV_SOURCE = "KIDNEYSEG_VIEWER_RUN"
#: The repository root when kidneyseg runs from a checkout (editable install).
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_RUN = REPO_ROOT / "runs" / "demo"
#: Cases with more voxels than this get a 'large case' note in the loading indicator.
LARGE_CASE_VOXELS = 60_000_000

_CSS = """<style>
.kidneyseg-spinner{display:inline-block;width:14px;height:14px;border:3px solid #c9d6ff;
  border-top-color:#1f5bff;border-radius:50%;animation:kidneyseg-spin 0.8s linear infinite;
  vertical-align:middle;margin-right:6px}
@keyframes kidneyseg-spin{to{transform:rotate(360deg)}}
.kidneyseg-metrics table{border-collapse:collapse;font-size:13px}
.kidneyseg-metrics td,.kidneyseg-metrics th{padding:2px 10px;border-bottom:1px solid #ddd;text-align:right}
.kidneyseg-metrics th{text-align:left}
.kidneyseg-status{font-family:monospace}
</style>"""


def resolve_source(source: os.PathLike | str | None = None, environ: dict | None = None) -> Path | None:
    """The run folder or manifest to show: ``source``, else ``$KIDNEYSEG_VIEWER_RUN``, else
    ``runs/demo`` of the repository if it exists, else ``None``.

    The source never comes from the browser (no URL parameter): only the person who starts
    the server chooses what it serves.
    """
    environ = os.environ if environ is None else environ
    if source not in (None, ""):
        return Path(source)
    if environ.get(ENV_SOURCE):
        return Path(environ[ENV_SOURCE])
    return DEFAULT_RUN if DEFAULT_RUN.exists() else None


def _fmt(value, digits=3, unit=""):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "&ndash;"
    return f"{value:.{digits}f}{unit}"


def metrics_html(case_id: str, summary: dict) -> str:
    """The per-case metrics table (HTML) from :func:`kidneyseg.viewer.metrics.case_summary`:
    kidney and tumor columns for KiTS19, one column per evaluation region for KiTS23."""
    if summary.get("protocol", "kits19") == "kits23":
        return _kits23_html(case_id, summary)
    fmt = _fmt
    rows = [
        ("Dice", fmt(summary["kidney_dice"]), fmt(summary["tumor_dice"])),
        ("surface Dice", fmt(summary["kidney_surface_dice"]), fmt(summary["tumor_surface_dice"])),
        ("HD95", fmt(summary["kidney_hd95"], 1, " mm"), fmt(summary["tumor_hd95"], 1, " mm")),
        ("volume, ground truth", fmt(summary["gt_kidney_ml"], 1, " ml"), fmt(summary["gt_tumor_ml"], 1, " ml")),
        ("volume, prediction", fmt(summary["pred_kidney_ml"], 1, " ml"), fmt(summary["pred_tumor_ml"], 1, " ml")),
        ("largest tumor diameter, ground truth", "", fmt(summary["tumor_diameter_gt_cm"], 1, " cm")),
        ("largest tumor diameter, prediction", "", fmt(summary["tumor_diameter_pred_cm"], 1, " cm")),
        ("tumor size in kits.json", "", fmt(summary["tumor_size_cm"], 1, " cm")),
    ]
    body = "".join(f"<tr><th>{html.escape(a)}</th><td>{b}</td><td>{c}</td></tr>" for a, b, c in rows)
    body += ("<tr><td colspan='3' style='text-align:left;color:#666'>kidney = KiTS19 kidney region "
             "(kidney and tumor, label &gt; 0); tumor = label 2</td></tr>")
    if summary["source"] == "metrics_csv":
        source = "from the run's metrics CSV"
    else:
        source = f"computed by the viewer (kidneyseg evaluate), surface Dice at {summary['tolerance_mm']:g} mm"
    return (f"<div data-case='{html.escape(case_id)}'><b>{html.escape(case_id)}</b> "
            f"(mean Dice <span class='kidneyseg-mean-dice'>{fmt(summary['mean_dice'])}</span>; "
            f"metrics {source})<table><tr><th></th><th>kidney</th><th>tumor</th></tr>{body}</table></div>")


def _kits23_html(case_id: str, summary: dict) -> str:
    """The KiTS23 table: Dice, surface Dice (at each region's tolerance) and volumes per region."""
    dataset = get_dataset(summary["dataset"])
    regions = [r.name for r in dataset.regions]
    tumor = ["" for _ in regions[:-1]]  # the diameters go in the tumor (last, innermost) column

    def per_region(fmt_one):
        return [fmt_one(name) for name in regions]

    rows = [
        ("Dice", per_region(lambda n: _fmt(summary[f"{n}_dice"]))),
        ("surface Dice", per_region(lambda n: _fmt(summary[f"{n}_surface_dice"]))),
        ("surface-Dice tolerance", per_region(lambda n: _fmt(summary[f"{n}_tolerance_mm"], 4, " mm"))),
        ("volume, ground truth", per_region(lambda n: _fmt(summary[f"gt_{n}_ml"], 1, " ml"))),
        ("volume, prediction", per_region(lambda n: _fmt(summary[f"pred_{n}_ml"], 1, " ml"))),
        ("largest tumor diameter, ground truth", tumor + [_fmt(summary["tumor_diameter_gt_cm"], 1, " cm")]),
        ("largest tumor diameter, prediction", tumor + [_fmt(summary["tumor_diameter_pred_cm"], 1, " cm")]),
        (f"tumor size in {dataset.metadata_file}", tumor + [_fmt(summary["tumor_size_cm"], 1, " cm")]),
    ]
    body = "".join(f"<tr><th>{html.escape(a)}</th>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"
                   for a, cells in rows)
    names = dataset.label_names
    defs = "; ".join(f"{r.title.lower()} = label{'s' if len(r.labels) > 1 else ''} "
                     f"{', '.join(str(v) for v in r.labels)} ({', '.join(names[v] for v in r.labels)})"
                     for r in dataset.regions)
    body += (f"<tr><td colspan='{len(regions) + 1}' style='text-align:left;color:#666'>{html.escape(defs)}; "
             "KiTS23 rule: both empty = 1, one empty = 0</td></tr>")
    if summary["source"] == "metrics_csv":
        source = "from the run's metrics CSV"
    else:
        source = "computed by the viewer (kidneyseg evaluate, kits23 protocol)"
    head = "".join(f"<th>{html.escape(r.title.lower())}</th>" for r in dataset.regions)
    return (f"<div data-case='{html.escape(case_id)}'><b>{html.escape(case_id)}</b> "
            f"(mean Dice <span class='kidneyseg-mean-dice'>{_fmt(summary['mean_dice'])}</span>, "
            f"mean surface Dice {_fmt(summary['mean_surface_dice'])}; metrics {source})"
            f"<table><tr><th></th>{head}</tr>{body}</table></div>")


class Dashboard:
    """The viewer for one run folder or manifest (see module docstring).

    Args:
        catalog: the listed cases (:func:`kidneyseg.viewer.catalog.open_catalog`).
        max_mesh_dim: most voxels per axis for the 3D surfaces (block max-pooled above).
        initial_case: case shown first (default: the first listed).
    """

    def __init__(self, catalog: Catalog, max_mesh_dim: int = 96, initial_case: str | None = None):
        import ipywidgets as w

        self.catalog = catalog
        self.max_mesh_dim = max_mesh_dim
        self.case: CaseData | None = None
        self.surfaces: dict = {}
        self.figure = None
        self.status = w.HTML("starting").add_class("kidneyseg-status")
        self.loading = w.HTML("", layout=w.Layout(display="none")).add_class("kidneyseg-loading")
        self.case_picker = w.Dropdown(options=catalog.case_ids, description="Case",
                                      layout=w.Layout(width="260px")).add_class("kidneyseg-case")
        self.mode = w.ToggleButtons(options=["side by side", "overlay"], description="3D",
                                    style={"button_width": "100px"})
        self.window = w.ToggleButtons(options=list(WINDOW_PRESETS), description="Window",
                                      style={"button_width": "80px"}).add_class("kidneyseg-window")
        self.sliders = [w.IntSlider(0, 0, 1, description=name, continuous_update=False,
                                    layout=w.Layout(width="330px")) for name in ("axial", "coronal", "sagittal")]
        self.metrics = w.HTML("").add_class("kidneyseg-metrics")
        self.view3d = w.Box(layout=w.Layout(width="100%", min_height="460px")).add_class("kidneyseg-3d")
        self.niivue_toggle = w.Checkbox(False, description="CT volume view (NiiVue; sends the whole CT to the browser)",
                                        indent=False, layout=w.Layout(width="auto")).add_class("kidneyseg-niivue-toggle")
        self.niivue_box = w.VBox(layout=w.Layout(width="1100px")).add_class("kidneyseg-niivue")
        self.slices = w.Image(format="png", layout=w.Layout(width="100%", max_width="1100px")).add_class(
            "kidneyseg-slices")
        header = w.HTML(f"{_CSS}<h3 style='margin:4px 0'>kidneyseg viewer</h3>"
                        f"<div>{html.escape(catalog.describe())}</div>")
        controls = w.HBox([self.case_picker, self.mode, self.window])
        self.widget = w.VBox([header, controls, w.HBox([self.status, self.loading]), self.metrics,
                              self.view3d, w.HBox(self.sliders), self.slices, self.niivue_toggle, self.niivue_box])
        self._busy = False
        self.case_picker.observe(lambda ch: self.select(ch["new"]), names="value")
        self.mode.observe(lambda ch: self._show_3d(), names="value")
        self.window.observe(lambda ch: self._show_slices(), names="value")
        self.niivue_toggle.observe(lambda ch: self._show_niivue(), names="value")
        for s in self.sliders:
            s.observe(lambda ch: self._show_slices(), names="value")
        first = initial_case or catalog.case_ids[0]
        if first != self.case_picker.value:
            self.case_picker.value = first  # triggers select()
        else:
            self.select(first)

    # ------------------------------------------------------------------------------ actions
    def select(self, case_id: str) -> None:
        """Load and show one listed case; the status reads ``ready: <case>`` when done."""
        entry_shape = None
        try:
            entry = self.catalog.entry(case_id)  # refuses unlisted ids before any file access
            info = entry.info
            if all(k in info for k in ("shape_z", "shape_y", "shape_x")):
                entry_shape = (info["shape_z"], info["shape_y"], info["shape_x"])
        except KidneysegError as exc:
            self._set_status("error", str(exc))
            return
        self._set_status("loading", case_id)
        note = ""
        if entry_shape and math.prod(int(v) for v in entry_shape) > LARGE_CASE_VOXELS:
            note = f" (large case {entry_shape[0]}x{entry_shape[1]}x{entry_shape[2]}, this takes a while)"
        self.loading.value = f"<span class='kidneyseg-spinner'></span>loading {html.escape(case_id)}{note}"
        self.loading.layout.display = None
        t0 = time.perf_counter()
        self._busy = True
        try:
            case = self.catalog.load_case(case_id)
            self.case = case
            self.surfaces = case_surfaces(case, self.max_mesh_dim)
            summary = case_summary(case)
            self.metrics.value = metrics_html(case_id, summary)
            point = focus_point(case)
            for s, size, p in zip(self.sliders, case.shape, point):
                s.max = max(size - 1, 1)
                s.value = int(p)
            self._busy = False
            self._show_3d()
            self._show_slices()
            self._show_niivue()
        except KidneysegError as exc:
            self._set_status("error", str(exc))
            return
        except Exception as exc:  # show, never hang on 'loading'
            self._set_status("error", f"{case_id}: {type(exc).__name__}: {exc}")
            traceback.print_exc()
            return
        finally:
            self._busy = False
            self.loading.layout.display = "none"
        self._set_status("ready", case_id, f" ({time.perf_counter() - t0:.1f} s)")

    def _show_3d(self) -> None:
        import plotly.graph_objects as go

        if self.case is None or self._busy:
            return
        fig = surfaces_figure(self.surfaces, self.mode.value, title=self.case.case_id)
        # A new FigureWidget per view, built with its data (see the module docstring).
        self.figure = go.FigureWidget(fig)
        self.view3d.children = (self.figure,)

    def _show_niivue(self) -> None:
        if self.case is None or self._busy:
            return
        if not self.niivue_toggle.value:
            self.niivue_box.children = ()
            return
        from .niivue import niivue_view

        self.niivue_box.children = (niivue_view(self.case, self.window.value),)

    def _show_slices(self) -> None:
        if self.case is None or self._busy:
            return
        point = tuple(s.value for s in self.sliders)
        self.slices.value = slice_figure_png(self.case, point, self.window.value)

    def _set_status(self, state: str, text: str, extra: str = "") -> None:
        self.status.value = (f"<span data-state='{state}'>{html.escape(state)}: {html.escape(text)}</span>"
                             f"<span style='color:#888'>{html.escape(extra)}</span>")


def build_dashboard(source: os.PathLike | str | None = None, **kwargs):
    """The widget to display: a :class:`Dashboard` or a clear message when there is nothing to show.

    Args:
        source: run folder, ``run.json`` or manifest CSV; default from :func:`resolve_source`.
        **kwargs: passed to :class:`Dashboard`.

    Returns:
        ``(widget, dashboard_or_None)``.
    """
    import ipywidgets as w

    path = resolve_source(source)
    if path is None:
        msg = (f"no run: {DEFAULT_RUN} does not exist. Make one with `make demo`, or start the "
               f"viewer on a run folder or manifest: `kidneyseg viewer RUN_DIR`.")
        return _message(w, msg), None
    try:
        dash = Dashboard(open_catalog(path), **kwargs)
    except KidneysegError as exc:
        return _message(w, f"error: {exc}"), None
    return dash.widget, dash


def _message(w, text: str):
    state, _, rest = text.partition(": ")
    return w.VBox([w.HTML(f"{_CSS}<h3>kidneyseg viewer</h3>"),
                   w.HTML(f"<span data-state='{html.escape(state)}'>{html.escape(text)}</span>")
                   .add_class("kidneyseg-status")])


__all__ = ["DEFAULT_RUN", "Dashboard", "ENV_SOURCE", "build_dashboard", "metrics_html", "resolve_source"]
