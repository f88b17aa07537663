"""`learnviz serve`: the command, a real server process over HTTP, the address it binds, the
demo's hook."""

from __future__ import annotations

import socket
import subprocess
import urllib.request
from pathlib import Path

import pytest
from dashboard_run import learnviz_command

from learnviz.cli import build_parser


def fetch(url: str):
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, r.headers.get_content_type(), r.read()


def test_serve_explains_itself():
    out = subprocess.run(learnviz_command() + ["serve", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "usage: learnviz serve" in out.stdout
    for flag in ("--archive DIR", "--checkpoints DIR", "--host ADDR", "--port N", "127.0.0.1", "5000"):
        assert flag in out.stdout


def test_flags_and_defaults():
    from learnviz.settings import load_settings
    args = build_parser().parse_args(["serve", "--archive", "/x"])
    assert (args.dashboard_host, args.dashboard_port, args.archive) == (None, None, "/x")  # settings decide
    s = load_settings(environ={})
    assert (s.dashboard_host, s.dashboard_port) == ("127.0.0.1", 5000)
    args = build_parser().parse_args(["serve", "--host", "0.0.0.0", "--port", "8080"])
    assert (args.dashboard_host, args.dashboard_port) == ("0.0.0.0", 8080)
    s = load_settings(environ={"LEARNVIZ_DASHBOARD_PORT": "7000"}, overrides={"dashboard_host": "0.0.0.0"})
    assert (s.dashboard_host, s.dashboard_port) == ("0.0.0.0", 7000)


def test_the_demo_calls_serve():
    from dashboard.cli import serve
    from learnviz.plugins import serve_hook
    assert serve_hook() is serve


def test_a_real_server_serves_pages_and_figures(server):
    base, port, archive, log = server
    status, ctype, body = fetch(base + "/")
    assert status == 200 and ctype == "text/html" and b"Learning dynamics" in body
    status, ctype, body = fetch(base + "/figures/loss_curve.png")
    assert status == 200 and ctype == "image/png"
    assert body == (archive / "visualizations" / "loss_curve.png").read_bytes()
    status, ctype, body = fetch(base + "/api/status.json")
    assert status == 200 and ctype == "application/json"
    assert f"http://127.0.0.1:{port}/" in log.read_text()                     # it says where it is


def _listening_addresses(port: int) -> list[str]:
    """Local IPv4 addresses that listen on `port`, from /proc/net/tcp (hex, little-endian)."""
    out = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        addr, p = local.split(":")
        if int(p, 16) == port and state == "0A":                               # 0A: LISTEN
            out.append(socket.inet_ntoa(bytes.fromhex(addr)[::-1]))
    return out


def _own_address() -> str | None:
    """This machine's address on its default route (no packet is sent), None without one."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))                                         # TEST-NET-1: never routed
            addr = s.getsockname()[0]
    except OSError:
        return None
    return None if addr.startswith("127.") else addr


def test_it_binds_loopback_only_by_default(server):
    _, port, _, _ = server
    if Path("/proc/net/tcp").exists():
        assert _listening_addresses(port) == ["127.0.0.1"]
    own = _own_address()
    if own is None and not Path("/proc/net/tcp").exists():
        pytest.skip("no way to see the bound address here")
    if own is not None:
        with pytest.raises(OSError):
            socket.create_connection((own, port), timeout=2).close()


def test_a_taken_port_is_a_clear_error(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        out = subprocess.run(learnviz_command() + ["serve", "--archive", str(tmp_path), "--port", str(port)],
                             capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert f"127.0.0.1:{port}" in out.stderr and "--port" in out.stderr and "Traceback" not in out.stderr


def test_the_demo_takes_a_free_port_when_5000_is_taken(monkeypatch, tmp_path):
    import threading

    from dashboard import cli
    from learnviz.errors import LearnvizError
    from learnviz.settings import load_settings

    settings = load_settings(overrides={"archive": str(tmp_path)}, environ={})
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        taken = busy.getsockname()[1]
        monkeypatch.setattr(cli, "DEFAULT_PORT", taken)
        with pytest.raises(LearnvizError, match=str(taken)):
            cli.make_dashboard_server(settings, port=taken)             # asked for: an error
        server = cli.make_dashboard_server(settings)                      # the demo's default: any free port
    try:
        assert server.port not in (0, taken)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        status, ctype, body = fetch(f"http://127.0.0.1:{server.port}/")
        assert status == 200 and b"No archived checkpoints yet" in body
    finally:
        server.shutdown()
        server.server_close()


def test_a_missing_folder_is_refused_before_serving(tmp_path):
    """A typo in --checkpoints or --archive stops serve as it stops status (rc 2, the path and
    its field), instead of serving "No archived checkpoints yet" quietly."""
    typo = tmp_path / "typo-run"
    for flag, field in (("--checkpoints", "checkpoints"), ("--archive", "archive")):
        out = subprocess.run(learnviz_command() + ["serve", flag, str(typo), "--port", "0"],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 2, (flag, out.stdout, out.stderr)
        assert str(typo) in out.stderr and f"field '{field}'" in out.stderr and "no such folder" in out.stderr
        assert "Traceback" not in out.stderr and "learnviz dashboard: http" not in out.stdout
    (tmp_path / "run").mkdir()     # a checkpoint folder whose archive is still to come: served (it waits)
    from dashboard.cli import check_folder
    from learnviz.settings import load_settings
    check_folder(load_settings(overrides={"checkpoints": str(tmp_path / "run")}, environ={}))
