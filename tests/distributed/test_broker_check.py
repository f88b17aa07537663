"""`learnviz worker` and `learnviz beat` check the broker before they become Celery: a wrong
password, no password, a port where nothing listens or an unknown host is one line on stderr and
exit status 2 (not a Celery that retries for ever), naming the URL with its password redacted.
Real processes against our own password-protected redis-server (tests/distributed/conftest.py)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest
import redis

from learnviz.errors import LearnvizError
from learnviz.settings import load_settings
from workers import dispatch as dsp
from workers.cli import check_broker

from .conftest import PASSWORD, ROOT, free_port, needs_redis, settings_file

pytestmark = needs_redis
WRONG = "not the pass/word"               # quoted in a URL as not%20the%20pass%2Fword
COMMANDS = {"gpu worker": ["worker", "--queue", "gpu"], "cpu worker": ["worker", "--queue", "cpu"],
            "beat": ["beat"]}


@pytest.fixture
def config(tmp_path, redis_server) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    return settings_file(tmp_path / "learnviz.yaml", redis_server, run, tmp_path / "archive")


def learnviz(args: list[str], config: Path, cwd: Path, **env) -> subprocess.CompletedProcess:
    """The installed `learnviz` script, as a user runs it, with nothing of this process's LEARNVIZ_*."""
    script = Path(sys.executable).parent / "learnviz"
    argv = [str(script)] if script.exists() else [sys.executable, "-m", "learnviz.cli"]
    environ = {"PATH": "/usr/bin:/bin", "LEARNVIZ_CONFIG": str(config), **env}
    return subprocess.run(argv + args, capture_output=True, text=True, cwd=cwd, env=environ, timeout=120)


def no_secret(text: str, *secrets: str) -> bool:
    return all(s not in text and urllib.parse.quote(s, safe="") not in text for s in secrets)


@pytest.mark.parametrize("command", COMMANDS)
def test_a_wrong_password_is_one_line_and_exit_2(command, config, tmp_path, redis_server):
    out = learnviz(COMMANDS[command], config, tmp_path, LEARNVIZ_REDIS_PASSWORD=WRONG)
    assert out.returncode == 2, out.stderr[-2000:]
    err = out.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in out.stderr
    assert f"redis://:***@127.0.0.1:{redis_server.port}/0" in err          # the URL, password redacted
    assert "refused the password: wrong password (AUTH failed)" in err
    assert "LEARNVIZ_REDIS_PASSWORD" in err and "--broker" in err             # what to do
    assert no_secret(out.stderr + out.stdout, WRONG, PASSWORD)
    assert "learnviz: exec" not in out.stderr                                 # Celery never started


def test_a_wrong_password_in_the_broker_flag_is_redacted(config, tmp_path, redis_server):
    url = f"redis://:{urllib.parse.quote(WRONG, safe='')}@127.0.0.1:{redis_server.port}/0"
    out = learnviz(["beat", "--broker", url], config, tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"redis://:***@127.0.0.1:{redis_server.port}/0" in out.stderr and "AUTH failed" in out.stderr
    assert "came from --broker" in out.stderr and no_secret(out.stderr + out.stdout, WRONG)


def test_no_password_says_one_is_needed(config, tmp_path, redis_server):
    out = learnviz(COMMANDS["gpu worker"], config, tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"redis://127.0.0.1:{redis_server.port}/0 asks for a password and none was given" in out.stderr
    assert "LEARNVIZ_REDIS_PASSWORD" in out.stderr and "learnviz: exec" not in out.stderr


@pytest.mark.parametrize("command", ["gpu worker", "beat"])
def test_a_port_where_nothing_listens_is_named(command, config, tmp_path):
    port = free_port()
    out = learnviz(COMMANDS[command] + ["--broker", f"redis://127.0.0.1:{port}/0"], config, tmp_path,
                   LEARNVIZ_REDIS_PASSWORD=PASSWORD)
    assert out.returncode == 2 and "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert f"nothing listens at 127.0.0.1:{port} (connection refused)" in out.stderr
    assert f"redis://:***@127.0.0.1:{port}/0" in out.stderr and no_secret(out.stderr, PASSWORD)
    assert "--broker" in out.stderr and "LEARNVIZ_BROKER_URL" in out.stderr
    assert "learnviz: exec" not in out.stderr


def test_submit_says_the_same(config, tmp_path):
    ck = tmp_path / "run" / "checkpoint-5"
    ck.mkdir()
    out = learnviz(["submit", str(ck)], config, tmp_path, LEARNVIZ_REDIS_PASSWORD=WRONG)
    assert out.returncode == 2 and "wrong password (AUTH failed)" in out.stderr and no_secret(out.stderr, WRONG)


# ---------------------------------------------------------------- the check itself

def settings_with(config: Path, password: str | None):
    return load_settings(config, environ={} if password is None else {"LEARNVIZ_REDIS_PASSWORD": password})


def test_the_right_password_passes_the_check(config):
    settings = settings_with(config, PASSWORD)
    assert dsp.broker_problem(dsp.broker_url(settings)) is None
    check_broker(settings)                                                    # does not raise


def test_each_problem_has_its_kind(config, redis_server):
    right = dsp.broker_url(settings_with(config, PASSWORD))
    wrong = dsp.broker_url(settings_with(config, WRONG))
    none = dsp.broker_url(settings_with(config, None))
    assert dsp.broker_problem(wrong).kind == "auth" and dsp.broker_problem(none).kind == "auth"
    assert dsp.broker_problem(f"redis://127.0.0.1:{free_port()}/0").kind == "refused"
    unknown = dsp.broker_problem("redis://no-such-host.invalid:6379/0")
    assert unknown.kind == "unknown-host" and "unknown host 'no-such-host.invalid'" in unknown.message
    out_of_range = dsp.broker_problem(right.replace("/0", "/99999"))
    assert out_of_range.kind == "other" and "***" in out_of_range.message
    assert no_secret(out_of_range.message + dsp.broker_problem(wrong).message, PASSWORD, WRONG)


def test_a_result_backend_of_its_own_is_checked_too(config, redis_server):
    settings = settings_with(config, PASSWORD)
    own = dataclasses.replace(settings, result_backend=f"redis://:nope@127.0.0.1:{redis_server.port}/1")
    with pytest.raises(LearnvizError) as err:
        check_broker(own)
    text = str(err.value)
    assert "field 'result_backend'" in text and "the result backend redis://:***@" in text and "nope" not in text


def test_a_redis_loading_its_data_passes(config, monkeypatch):
    """Redis answers LOADING while it reads its AOF after a restart: Celery waits for that, so may we."""
    def loading(self, **kw):
        raise redis.exceptions.BusyLoadingError("Redis is loading the dataset in memory")
    monkeypatch.setattr(redis.Redis, "ping", loading)
    assert dsp.broker_problem(dsp.broker_url(settings_with(config, PASSWORD))) is None


def test_a_worker_on_a_queue_learnviz_never_sends_to_says_so(config, tmp_path):
    """`celery -A workers worker -Q gpuu` (a typo) used to wait for ever, its log saying nothing."""
    from .conftest import wait_for
    log = tmp_path / "worker.log"
    env = {"PATH": "/usr/bin:/bin", "LEARNVIZ_CONFIG": str(config), "LEARNVIZ_REDIS_PASSWORD": PASSWORD,
           "PYTHONUNBUFFERED": "1"}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "celery", "-A", "workers", "worker", "-Q", "gpuu,cpu",
                                 "-n", "typo@%h", "--concurrency", "1", "--loglevel", "info"],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: "typo@" in log.read_text() and " ready." in log.read_text() or proc.poll() is not None,
                 120, "the worker to start")
    finally:
        proc.terminate()
        proc.wait(60)
    errors = [line for line in log.read_text().splitlines() if "ERROR/" in line]
    assert len(errors) == 1, log.read_text()[-3000:]                 # gpuu, not cpu
    assert ("this worker consumes the queue 'gpuu', to which learnviz sends no task: the settings name 'gpu' "
            "(queue_gpu) and 'cpu' (queue_cpu). Start it with -Q gpu or -Q cpu") in errors[0]
