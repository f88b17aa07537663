"""Fixtures: the small real archive of dashboard_run, built once per session by the real pipeline;
the app over a fresh copy of it per test (flaskr's `app` and `client`); one real `learnviz serve`."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from dashboard_run import build, free_port, learnviz_command, make_app
from helpers import stop_process


@pytest.fixture(scope="session")
def built_archive(tmp_path_factory) -> Path:
    """The run's archive folder (never served directly: tests get copies)."""
    return build(tmp_path_factory.mktemp("dashboard-run"))


def copy_archive(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".locks"))
    return dst


@pytest.fixture
def archive(built_archive, tmp_path) -> Path:
    """A fresh copy of the built archive folder, that a test may change."""
    return copy_archive(built_archive, tmp_path / "archive")


@pytest.fixture
def app(archive):
    return make_app(archive)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture(scope="session")
def server(built_archive, tmp_path_factory):
    """`learnviz serve --archive COPY --port FREE` in a subprocess: yields (base URL, port, archive, log)."""
    base = tmp_path_factory.mktemp("served")
    archive = copy_archive(built_archive, base / "archive")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEARNVIZ_")}
    log = base / "serve.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(learnviz_command() + ["serve", "--archive", str(archive), "--port", str(port)],
                                stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(f"learnviz serve exited with {proc.returncode}:\n{log.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"learnviz serve did not listen on port {port} within 30 s:\n{log.read_text()}")
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}", port, archive, log
    finally:
        stop_process(proc)
