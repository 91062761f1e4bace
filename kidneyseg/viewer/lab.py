"""``make lab``: JupyterLab on 127.0.0.1 with the notebooks folder, pointed at a run's data.

The notebooks' statistics and spacing tables are explored interactively in JupyterLab (notebook 01's
filter widgets). The server:

- listens on 127.0.0.1 only (port 8888, or a free one when it is taken), opens no browser tab, and
  asks for no token (``--IdentityProvider.token=``): anyone who can open a connection to
  127.0.0.1 on this machine can run code in it; on a machine shared with other users pass a token
  (``make lab LAB_ARGS=--IdentityProvider.token=SECRET``);
- never reaches the network: no news feed (``LabApp.news_url=None``), no update check
  (``jupyterlab.NeverCheckForUpdate``), the read-only extension manager (no PyPI queries), and
  ``app/lab/overrides.json`` sets the news and update notifications to "Never" (no "get notified
  about official Jupyter news?" question) and hides the extension manager;
- serves the ``notebooks/`` folder and gives its kernels ``KIDNEYSEG_MANIFEST``, the manifest of the
  run's data (``run.json``'s ``manifest``; for ``runs/demo`` that is ``runs/demo/data/manifest.csv``),
  which notebook 01 reads when neither its ``manifest`` nor its ``data_dir`` parameter is set.

Usage: ``python -m kidneyseg.viewer.lab [RUN_DIR_OR_MANIFEST] [--port N] [JUPYTER_ARGS...]``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from ..errors import KidneysegError, fail
from .catalog import open_catalog
from .commands import HOST, free_port, port_is_free
from .dashboard import DEFAULT_RUN, REPO_ROOT

#: Environment variable giving notebook 01 (and any notebook that reads it) its manifest CSV.
ENV_MANIFEST = "KIDNEYSEG_MANIFEST"
NOTEBOOK_DIR = REPO_ROOT / "notebooks"
#: JupyterLab's application settings folder: ``overrides.json`` turns the news and update
#: notifications off ("Never") and the extension manager panel off.
SETTINGS_DIR = REPO_ROOT / "app" / "lab"
DEFAULT_PORT = 8888
#: JupyterLab settings that keep it on this machine (no request to any other host).
OFFLINE_ARGS = (
    "--LabApp.news_url=None",
    "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    "--LabApp.extension_manager=readonly",
    f"--LabApp.app_settings_dir={SETTINGS_DIR}",
)


def run_manifest(source: os.PathLike | str) -> Path:
    """The manifest CSV of a run folder or ``run.json`` (its ``manifest`` entry), or ``source``
    itself when it is a manifest CSV (read the way the viewer reads it).

    Raises:
        KidneysegError: ``source`` does not exist, or is not a readable run folder or manifest.
    """
    return open_catalog(source).manifest_path


def lab_command(port: int, manifest: os.PathLike | str | None = None, notebook_dir: os.PathLike | str = NOTEBOOK_DIR,
                extra_args: list[str] | tuple[str, ...] = (), environ: dict | None = None) -> tuple[list[str], dict]:
    """The argv and environment that serve JupyterLab on ``127.0.0.1:port`` (see module docstring).

    Args:
        port: TCP port on 127.0.0.1 (no retry on another port).
        manifest: manifest CSV given to the kernels as ``KIDNEYSEG_MANIFEST`` (made absolute);
            ``None`` removes the variable (notebook 01 then generates phantoms).
        notebook_dir: the folder JupyterLab serves.
        extra_args: more ``jupyter lab`` arguments, appended last (they win).
        environ: base environment (default ``os.environ``).

    Returns:
        ``(argv, env)`` for :class:`subprocess.Popen`.
    """
    if not 0 < int(port) < 65536:
        raise ValueError(f"port must be in 1..65535, got {port!r}")
    notebook_dir = Path(notebook_dir)
    if not notebook_dir.is_dir():
        raise fail(notebook_dir, "notebook folder not found")
    env = dict(os.environ if environ is None else environ)
    env.pop(ENV_MANIFEST, None)
    if manifest is not None:
        env[ENV_MANIFEST] = str(Path(manifest).absolute())
    argv = [
        sys.executable, "-m", "jupyterlab",
        f"--ServerApp.ip={HOST}", f"--ServerApp.port={int(port)}", "--ServerApp.port_retries=0",
        "--ServerApp.open_browser=False", f"--ServerApp.root_dir={notebook_dir.absolute()}",
        "--IdentityProvider.token=", *OFFLINE_ARGS, *extra_args,
    ]
    return argv, env


def run_lab(source: os.PathLike | str | None = None, port: int | None = None,
            extra_args: list[str] | tuple[str, ...] = ()) -> int:
    """Start JupyterLab in the foreground (Ctrl-C stops it); returns its exit status.

    ``source`` (default ``runs/demo``) is a run folder or manifest; a missing ``runs/demo`` is not
    an error (notebook 01 then makes phantoms), any other missing source is.

    Raises:
        KidneysegError: the source is not a readable run folder or manifest, or the port is taken.
    """
    if source is None or (Path(source).absolute() == DEFAULT_RUN and not DEFAULT_RUN.exists()):
        if DEFAULT_RUN.exists():
            manifest = run_manifest(DEFAULT_RUN)
        else:
            manifest = None
            print(f"kidneyseg lab: {DEFAULT_RUN} does not exist yet (make demo creates it); notebook 01 "
                  f"will generate phantoms", file=sys.stderr)
    else:
        manifest = run_manifest(source)
    if port is not None and not port_is_free(port):
        raise fail(f"{HOST}:{port}", "port is in use; pick another with --port or leave it out")
    port = port or free_port(DEFAULT_PORT)
    argv, env = lab_command(port, manifest, extra_args=extra_args)
    if hasattr(os, "geteuid") and os.geteuid() == 0 and not any("allow_root" in a or a == "--allow-root" for a in argv):
        print("kidneyseg lab: running as root, which JupyterLab refuses; to allow it anyway: "
              "make lab LAB_ARGS=--allow-root", file=sys.stderr)
    print(f"kidneyseg lab: http://{HOST}:{port}/lab (notebooks/; {ENV_MANIFEST}={manifest or 'unset'}; "
          f"Ctrl-C stops)", file=sys.stderr)
    try:
        return subprocess.call(argv, env=env)
    except KeyboardInterrupt:
        return 130


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kidneyseg.viewer.lab",
        description="JupyterLab on 127.0.0.1 with notebooks/, pointed at a run's data (offline, no token).")
    parser.add_argument("run", nargs="?", default=None,
                        help="run folder (with run.json) or manifest CSV; default runs/demo")
    parser.add_argument("--port", type=int, default=None, help=f"port on {HOST} (default {DEFAULT_PORT} or a free one)")
    args, extra = parser.parse_known_args(argv)
    try:
        return run_lab(args.run, args.port, extra)
    except KidneysegError as exc:
        print(f"kidneyseg lab: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
