"""``kidneyseg viewer``: Voila on 127.0.0.1 only, offline template, no file serving (path traversal)."""

from __future__ import annotations

import socket
import subprocess
import urllib.error
import urllib.request

import pytest

from kidneyseg.cli import main
from kidneyseg.errors import KidneysegError
from kidneyseg.viewer import commands
from kidneyseg.viewer.commands import TEMPLATE_ROOT, free_port, run_viewer, voila_command
from kidneyseg.viewer.dashboard import ENV_SOURCE

from .browser.fake_run import make_fake_run, wait_for_port


def test_voila_command_binds_localhost_with_offline_template(tmp_path):
    argv, env = voila_command(tmp_path, 8899, environ={"JUPYTER_PATH": "/x", ENV_SOURCE: "/stale"})
    assert "--Voila.ip=127.0.0.1" in argv and "--port=8899" in argv
    assert "--template=kidneyseg" in argv and "--VoilaConfiguration.file_denylist=.*" in argv
    assert "--Voila.open_browser=False" in argv
    assert argv[1:3] == ["-m", "voila"] and argv[3].endswith("app/viewer.ipynb")
    assert env[ENV_SOURCE] == str(tmp_path.absolute())
    assert env["JUPYTER_PATH"].split(":") == [str(TEMPLATE_ROOT), "/x"]
    _, env = voila_command(None, 8899, environ={ENV_SOURCE: "/stale"})
    assert ENV_SOURCE not in env                          # the notebook's default (runs/demo) applies


def test_offline_template_drops_cdn_links():
    page = (TEMPLATE_ROOT / "voila" / "templates" / "kidneyseg" / "index.html.j2").read_text()
    assert "super.super()" in page and "html_head_js_mermaidjs" in page
    code = "\n".join(line for line in page.splitlines() if not line.lstrip().startswith(("{#", "that", "Voila", "this")))
    assert "http" not in code


def test_free_port_falls_back_when_taken():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        assert not commands.port_is_free(taken)
        assert free_port(taken) != taken


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["viewer", str(tmp_path / "missing"), "--no-browser"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no such run folder or manifest" in err[0]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(KidneysegError, match="port is in use"):
            run_viewer(tmp_path, port=s.getsockname()[1], open_browser=False)


def _get(url: str) -> int:
    try:
        return urllib.request.urlopen(url, timeout=10).status
    except urllib.error.HTTPError as exc:
        return exc.code


def _non_loopback_ip() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))  # no packet is sent for UDP connect
            ip = s.getsockname()[0]
        except OSError:
            return None
    return None if ip.startswith("127.") else ip


def test_server_serves_no_files_and_listens_on_loopback_only(tmp_path):
    run = make_fake_run(tmp_path, n_cases=1)
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"\x89PNG not for the browser")
    port = free_port(None)
    argv, env = voila_command(run, port)
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    try:
        assert wait_for_port(port, proc), "voila did not start"
        base = f"http://127.0.0.1:{port}"
        for path in ("/voila/files/secret.png", "/voila/files/../secret.png", "/voila/files/%2e%2e/%2e%2e/etc/passwd",
                     "/voila/files/" + str(secret).lstrip("/"), "/voila/files/run/run.json",
                     "/voila/files/data/case_00000/imaging.nii.gz", "/api/contents", "/tree",
                     "/voila/render/..%2f..%2fetc%2fpasswd", "/files/etc/passwd", "/voila/files/viewer.ipynb"):
            assert _get(base + path) in (403, 404), path
        ip = _non_loopback_ip()
        if ip is not None:
            with pytest.raises(OSError):
                socket.create_connection((ip, port), timeout=2).close()
    finally:
        proc.terminate()
        proc.wait(15)
