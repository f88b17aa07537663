"""The Host check (DNS rebinding): the dashboard answers only to the names it was meant for, on
every route, in the app and in a real `learnviz serve` over a real socket."""

from __future__ import annotations

import os
import selectors
import socket
import subprocess

import pytest
from dashboard_run import learnviz_command
from helpers import stop_process

from dashboard import ADDRESSES_KEY, HOSTS_KEY, create_app, host_name
from learnviz.cli import build_parser
from learnviz.settings import load_settings

# Every kind of route: a page, a page with an argument, the JSON API, a figure file, a static
# file, and a URL that does not exist (the check comes before the 404).
ROUTES = ["/", "/checkpoints", "/checkpoints/10", "/hard-examples", "/api/status.json", "/api/history.json",
          "/figures/loss_curve.png", "/static/style.css", "/no/such/page"]
FOREIGN = ["evil.example", "evil.example:5000", "127.0.0.1.nip.io", "localhost.evil.example", "EVIL.example."]


def app_for(archive, **settings):
    return create_app(load_settings(overrides={"archive": str(archive), **settings}, environ={}),
                      test_config={"TESTING": True})


def refused(response, name: str) -> bool:
    text = response.get_data(as_text=True)
    return (response.status_code == 400 and response.mimetype == "text/plain"
            and f"host '{name}' is not allowed" in text and f"--allow-host {name}" in text
            and "dashboard_allowed_hosts" in text)


@pytest.mark.parametrize("route", ROUTES)
def test_a_foreign_host_gets_400_on_every_route(client, route):
    r = client.get(route, headers={"Host": "evil.example"})
    assert refused(r, "evil.example"), (r.status_code, r.data[:300])
    assert r.headers["X-Content-Type-Options"] == "nosniff"          # the usual headers still apply


@pytest.mark.parametrize("host", FOREIGN)
def test_foreign_spellings_get_400(client, host):
    r = client.get("/api/status.json", headers={"Host": host})
    assert refused(r, host_name(host)), (host, r.status_code)


@pytest.mark.parametrize("host", ["localhost", "localhost:5000", "127.0.0.1", "127.0.0.1:5000", "[::1]:5000",
                                  "LocalHost.", "[0:0:0:0:0:0:0:1]"])
def test_loopback_names_are_answered(client, host):
    for route in ("/", "/api/status.json", "/figures/loss_curve.png"):
        r = client.get(route, headers={"Host": host})
        assert r.status_code == 200, (host, route, r.data[:300])


def test_the_default_test_client_host_is_answered(client):
    assert client.get("/").status_code == 200                       # Werkzeug's default Host: localhost


def test_a_configured_name_is_answered(archive):
    client = app_for(archive, dashboard_allowed_hosts=["dash.lab", "Proxy.Example.org"]).test_client()
    for host in ("dash.lab", "dash.lab:8080", "proxy.example.org", "localhost"):
        assert client.get("/", headers={"Host": host}).status_code == 200, host
    assert refused(client.get("/", headers={"Host": "evil.example"}), "evil.example")
    assert refused(client.get("/", headers={"Host": "sub.dash.lab"}), "sub.dash.lab")   # exact names only


def test_a_specific_bound_address_is_answered_and_no_other(archive):
    app = app_for(archive, dashboard_host="10.1.2.3")
    assert app.config[HOSTS_KEY] == ["10.1.2.3", "127.0.0.1", "::1", "localhost"] and not app.config[ADDRESSES_KEY]
    client = app.test_client()
    assert client.get("/", headers={"Host": "10.1.2.3:5000"}).status_code == 200
    assert client.get("/", headers={"Host": "127.0.0.1:5000"}).status_code == 200
    assert refused(client.get("/", headers={"Host": "10.9.9.9:5000"}), "10.9.9.9")
    assert refused(client.get("/", headers={"Host": "evil.example"}), "evil.example")
    six = app_for(archive, dashboard_host="fd00::5").test_client()
    assert six.get("/", headers={"Host": "[fd00:0::5]:5000"}).status_code == 200
    assert refused(six.get("/", headers={"Host": "[fd00::6]:5000"}), "fd00::6")


@pytest.mark.parametrize("bound", ["0.0.0.0", "::"])
def test_every_interface_answers_addresses_and_this_machines_name_but_not_other_names(archive, bound):
    app = app_for(archive, dashboard_host=bound)
    assert app.config[ADDRESSES_KEY] is True
    client = app.test_client()
    for host in ("192.168.1.20:5000", "10.0.0.5", "[fe80::1]:5000", socket.gethostname(), "localhost:5000"):
        assert client.get("/", headers={"Host": host}).status_code == 200, host
    assert refused(client.get("/", headers={"Host": "evil.example:5000"}), "evil.example")
    listed = app_for(archive, dashboard_host=bound, dashboard_allowed_hosts=["dash.lab"]).test_client()
    assert listed.get("/", headers={"Host": "dash.lab"}).status_code == 200
    assert listed.get("/", headers={"Host": "10.0.0.5"}).status_code == 200
    assert refused(listed.get("/", headers={"Host": "evil.example"}), "evil.example")


def test_a_star_answers_every_name(archive):
    client = app_for(archive, dashboard_allowed_hosts=["*"]).test_client()
    assert client.get("/", headers={"Host": "evil.example"}).status_code == 200


def test_the_app_built_from_test_config_alone_answers_loopback_only(archive):
    client = create_app(test_config={"LEARNVIZ_ARCHIVE": str(archive), "TESTING": True}).test_client()
    assert client.get("/").status_code == 200
    assert refused(client.get("/", headers={"Host": "evil.example"}), "evil.example")


def test_host_name_strips_ports_brackets_and_case():
    assert host_name("Example.ORG:8080") == "example.org"
    assert host_name("[::1]:5000") == "::1" and host_name("[0:0::1]") == "::1" and host_name("::1") == "::1"
    assert host_name("localhost.") == "localhost" and host_name("127.0.0.1:80") == "127.0.0.1"
    assert host_name("") == ""


def test_the_setting_comes_from_env_yaml_and_the_flag(tmp_path):
    from dashboard.cli import serve_settings
    assert load_settings(environ={}).dashboard_allowed_hosts == []
    assert load_settings(environ={"LEARNVIZ_DASHBOARD_ALLOWED_HOSTS": "dash.lab"}).dashboard_allowed_hosts == [
        "dash.lab"]
    assert load_settings(environ={"LEARNVIZ_DASHBOARD_ALLOWED_HOSTS": "[a.lab, b.lab]"}).dashboard_allowed_hosts == [
        "a.lab", "b.lab"]
    cfg = tmp_path / "lv.yaml"
    cfg.write_text("dashboard_allowed_hosts: [from.yaml]\n")
    args = build_parser().parse_args(["--config", str(cfg), "serve", "--archive", "/x"])
    assert args.dashboard_allowed_hosts is None and serve_settings(args).dashboard_allowed_hosts == ["from.yaml"]
    args = build_parser().parse_args(["--config", str(cfg), "serve", "--archive", "/x",
                                      "--allow-host", "a.lab", "--allow-host", "b.lab"])
    s = serve_settings(args)
    assert s.dashboard_allowed_hosts == ["a.lab", "b.lab"] and s.sources["dashboard_allowed_hosts"] == "command line"
    assert s.archive == "/x"                                          # the other flags still apply


# ---------------------------------------------------------------- a real server, a real socket

def _http_get(port: int, host: str, path: str = "/") -> tuple[int, str]:
    """(status, body) of a GET sent with this Host header over a real socket."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode(errors="replace")


@pytest.fixture
def port_zero_server(built_archive, tmp_path):
    """`learnviz serve --archive COPY --port 0 --allow-host dash.lab`; yields the port it printed."""
    from conftest import copy_archive
    archive = copy_archive(built_archive, tmp_path / "archive")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEARNVIZ_")}
    log = open(tmp_path / "serve.log", "w")
    proc = subprocess.Popen(learnviz_command() + ["serve", "--archive", str(archive), "--port", "0",
                                                  "--allow-host", "dash.lab"],
                            stdout=subprocess.PIPE, stderr=log, text=True, env=env)
    try:
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        line = proc.stdout.readline() if sel.select(timeout=60) else ""
        if "learnviz dashboard: http://127.0.0.1:" not in line:
            proc.kill()
            pytest.fail(f"learnviz serve printed {line!r}; log:\n{(tmp_path / 'serve.log').read_text()}")
        yield int(line.split("http://127.0.0.1:")[1].split("/")[0])
    finally:
        stop_process(proc)
        log.close()


def test_a_real_server_on_port_zero_refuses_a_foreign_host(port_zero_server):
    port = port_zero_server
    assert port != 0
    status, body = _http_get(port, "evil.example")
    assert status == 400 and "host 'evil.example' is not allowed" in body and "--allow-host evil.example" in body
    status, _ = _http_get(port, f"evil.example:{port}", "/api/status.json")
    assert status == 400
    assert _http_get(port, f"127.0.0.1:{port}")[0] == 200
    assert _http_get(port, f"localhost:{port}", "/api/status.json")[0] == 200
    assert _http_get(port, "dash.lab")[0] == 200                      # --allow-host reached the app
