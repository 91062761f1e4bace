"""``kidneyseg viewer [RUN_DIR]``: serve ``app/viewer.ipynb`` with Voila on 127.0.0.1 only.

The run folder (or manifest) reaches the notebook through the ``KIDNEYSEG_VIEWER_RUN``
environment variable of the Voila server, never through the URL. Voila is started with the
offline ``kidneyseg`` page template (``app/share/jupyter/voila/templates/kidneyseg``: no CDN
stylesheets) and serves no files besides the dashboard (``file_denylist`` matches every path).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from ..errors import fail
from .dashboard import DEFAULT_RUN, ENV_SOURCE, REPO_ROOT

HOST = "127.0.0.1"
DEFAULT_PORT = 8866
APP_DIR = REPO_ROOT / "app"
NOTEBOOK = APP_DIR / "viewer.ipynb"
TEMPLATE_ROOT = APP_DIR / "share" / "jupyter"
TEMPLATE = "kidneyseg"


def port_is_free(port: int, host: str = HOST) -> bool:
    """Whether ``host:port`` can be bound now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(preferred: int | None = DEFAULT_PORT, host: str = HOST) -> int:
    """``preferred`` if it is free, else a port the OS picks."""
    if preferred and port_is_free(preferred, host):
        return preferred
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def voila_command(source: os.PathLike | str | None, port: int, open_browser: bool = False,
                  environ: dict | None = None) -> tuple[list[str], dict]:
    """The argv and environment that serve the viewer on ``127.0.0.1:port``.

    Args:
        source: run folder or manifest (made absolute), or ``None`` for the notebook's default
            (``runs/demo``).
        port: TCP port on 127.0.0.1.
        open_browser: let Voila open a browser tab.
        environ: base environment (default ``os.environ``).

    Returns:
        ``(argv, env)`` for :class:`subprocess.Popen`.
    """
    if not NOTEBOOK.is_file():
        raise fail(NOTEBOOK, "viewer notebook not found; run kidneyseg from its source checkout")
    env = dict(os.environ if environ is None else environ)
    env.pop(ENV_SOURCE, None)
    if source is not None:
        env[ENV_SOURCE] = str(Path(source).absolute())
    env["JUPYTER_PATH"] = os.pathsep.join([str(TEMPLATE_ROOT)] + [p for p in env.get("JUPYTER_PATH", "").split(os.pathsep) if p])
    argv = [
        sys.executable, "-m", "voila", str(NOTEBOOK),
        f"--Voila.ip={HOST}", f"--port={port}", f"--template={TEMPLATE}",
        "--VoilaConfiguration.file_denylist=.*",  # serve no file at all (path traversal: nothing to reach)
        "--Voila.open_browser=" + ("True" if open_browser else "False"),
    ]
    return argv, env


def run_viewer(source: os.PathLike | str | None = None, port: int | None = None,
               open_browser: bool = True) -> int:
    """Start Voila in the foreground (Ctrl-C stops it); returns its exit status.

    Raises:
        KidneysegError: the given run folder/manifest does not exist, or the port is taken.
    """
    if port is not None and not 0 < port < 65536:
        raise ValueError(f"port must be in 1..65535, got {port!r}")
    if source is not None and not Path(source).exists():
        hint = " (make demo creates it)" if Path(source).absolute() == DEFAULT_RUN else ""
        raise fail(source, f"no such run folder or manifest{hint}")
    if source is None and not DEFAULT_RUN.exists():
        print(f"kidneyseg viewer: {DEFAULT_RUN} does not exist yet (make demo); the page will say so",
              file=sys.stderr)
    if port is not None and not port_is_free(port):
        raise fail(f"{HOST}:{port}", "port is in use; pick another with --port or leave it out")
    port = port or free_port()
    argv, env = voila_command(source, port, open_browser, None)
    print(f"kidneyseg viewer: serving {source or DEFAULT_RUN} at http://{HOST}:{port}/ (Ctrl-C stops)",
          file=sys.stderr)
    try:
        return subprocess.call(argv, env=env)
    except KeyboardInterrupt:
        return 130


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "viewer", help="browse a run's segmentations in a local Voila dashboard",
        description="Serve app/viewer.ipynb with Voila on 127.0.0.1: ground truth against prediction "
                    "in 3D and in slices, per-case metrics. Offline; shows only the cases the run "
                    "folder or manifest lists.")
    p.add_argument("run_dir", nargs="?", default=None,
                   help="run folder (with run.json) or manifest CSV; default runs/demo")
    p.add_argument("--port", type=int, default=None,
                   help=f"port on {HOST} (default {DEFAULT_PORT}, or a free one when it is taken)")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser tab")
    p.set_defaults(func=lambda args: run_viewer(args.run_dir, args.port, not args.no_browser))
