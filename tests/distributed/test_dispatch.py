"""The Celery configuration, the Redis coordination (dedupe, debounce, locks), the scan and the
commands, against a real redis-server but without workers: messages are read back from Redis."""

from __future__ import annotations

import dataclasses
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from kombu.transport.redis import Channel

from learnviz.settings import load_settings
from workers import dispatch as dsp
from workers.celery import ROUTES, Priority, celery_config, make_app, visibility_timeout

from .conftest import PASSWORD, ROOT, needs_redis, settings_file

pytestmark = needs_redis
SEP = Channel.sep


@pytest.fixture
def settings_path(tmp_path, redis_server):
    redis_server.client().flushdb()
    run = tmp_path / "run"
    run.mkdir()
    return settings_file(tmp_path / "learnviz.yaml", redis_server, run, tmp_path / "archive", settle_seconds=0.0)


@pytest.fixture
def settings(settings_path):
    return load_settings(settings_path, environ={"LEARNVIZ_REDIS_PASSWORD": PASSWORD})


@pytest.fixture
def dispatch(settings):
    return dsp.Dispatcher(make_app(settings), settings)


def queue_lengths(client, queue: str) -> dict[int, int]:
    """Messages waiting per priority level: kombu keeps one Redis list per level, `queue<sep>N`."""
    out = {}
    for p in range(10):
        n = client.llen(queue if p == 0 else f"{queue}{SEP}{p}")
        if n:
            out[p] = n
    return out


def messages(client, queue: str, priority: int) -> list[dict]:
    key = queue if priority == 0 else f"{queue}{SEP}{priority}"
    return [json.loads(m) for m in client.lrange(key, 0, -1)]


# ---------------------------------------------------------------- the configuration

def test_config_is_json_only_acks_late_and_outlives_the_hard_limits(settings):
    conf = celery_config(settings)
    assert conf["accept_content"] == ["json"] and conf["result_accept_content"] == ["json"]
    assert conf["task_serializer"] == conf["result_serializer"] == "json"
    assert conf["task_acks_late"] and conf["task_reject_on_worker_lost"] and conf["worker_prefetch_multiplier"] == 1
    # a pool process imports torch and transformers and compiles UMAP before it reports up: Celery's
    # 4 s killed it in a loop on a loaded machine (test_cluster's restarted gpu child never came up)
    assert conf["worker_proc_alive_timeout"] >= 60
    opts = conf["broker_transport_options"]
    assert opts["visibility_timeout"] > max(settings.gpu_time_limit, settings.cpu_time_limit)
    assert opts["priority_steps"] == list(range(10)) and opts["queue_order_strategy"] == "priority"
    ann = conf["task_annotations"]
    assert ann["collect_embeddings"] == {"soft_time_limit": settings.gpu_soft_time_limit,
                                         "time_limit": settings.gpu_time_limit, "priority": 3}
    assert ann["analyze"]["time_limit"] == settings.cpu_time_limit
    assert ann["*"]["max_retries"] == settings.task_max_retries
    # the plan's task names, queues and priorities, routed by name in one place
    assert conf["task_routes"]["collect_embeddings"] == {"queue": "gpu", "priority": 3}
    assert conf["task_routes"]["update_learning_history"] == {"queue": "cpu", "priority": 4}
    assert conf["task_routes"]["generate_visualizations"] == {"queue": "cpu", "priority": 4}
    assert conf["task_routes"]["analyze"]["queue"] == "cpu"
    assert set(ROUTES) == set(conf["task_routes"])


def test_longer_limits_raise_the_visibility_timeout(settings):
    longer = dataclasses.replace(settings, gpu_soft_time_limit=7000.0, gpu_time_limit=7200.0)
    assert visibility_timeout(longer) > 7200 > visibility_timeout(settings)


def test_bad_limits_and_urls_are_config_errors_naming_the_field(settings):
    from learnviz.errors import ConfigError
    with pytest.raises(ConfigError, match="gpu_soft_time_limit"):
        celery_config(dataclasses.replace(settings, gpu_soft_time_limit=3000.0, gpu_time_limit=2000.0))
    with pytest.raises(ConfigError, match="broker_url"):
        celery_config(dataclasses.replace(settings, broker_url="amqp://localhost"))


def test_password_goes_into_urls_quoted_and_never_into_logs(settings):
    conf = celery_config(settings)
    assert "s3cret%20pass%2Fword@" in conf["broker_url"] and conf["result_backend"] == conf["broker_url"]
    assert PASSWORD not in dsp.redact(conf["broker_url"]) and "***" in dsp.redact(conf["broker_url"])
    explicit = dsp.with_password("redis://:other@host:6379/1", PASSWORD)
    assert explicit == "redis://:other@host:6379/1"   # a URL's own password wins


# ---------------------------------------------------------------- routing and priorities in Redis

def test_messages_land_in_the_right_queue_and_priority_list(dispatch, redis_server):
    client = redis_server.client()
    ck = "/data/run/checkpoint-10"
    assert dispatch.send_stage("extract", ck)
    assert dispatch.send_stage("analysis", ck)
    assert dispatch.request_history()
    dispatch.app.send_task("scan_checkpoints")
    assert queue_lengths(client, "gpu") == {int(Priority.LOW): 1}
    assert queue_lengths(client, "cpu") == {0: 1, int(Priority.LOW): 1, int(Priority.IDLE): 1}
    (msg,) = messages(client, "gpu", 3)
    assert msg["content-type"] == "application/json" and msg["headers"]["task"] == "collect_embeddings"
    # A worker pops the lists in priority order: the scan, then the analysis, then the history.
    order = [client.brpop([f"cpu{SEP}{p}" if p else "cpu" for p in range(10)], timeout=1) for _ in range(3)]
    tasks = [json.loads(m[1])["headers"]["task"] for m in order]
    assert tasks == ["scan_checkpoints", "analyze", "update_learning_history"]


def test_a_process_that_has_the_tasks_sends_each_at_its_route_priority(dispatch, redis_server):
    """In a worker or the beat the tasks are registered, and a registered task's own priority
    (task_default_priority, 2) used to override its route's: the beat's scans went out at 2, not 0."""
    client = redis_server.client()
    dispatch.app.loader.import_default_modules()      # what `celery -A workers worker|beat` does
    for name, (_, priority) in ROUTES.items():
        assert dispatch.app.tasks[name]._get_exec_options()["priority"] == int(priority), name
    dispatch.app.send_task("scan_checkpoints", expires=30.0)                  # the beat's first scan
    dispatch.app.tasks["scan_checkpoints"].apply_async(expires=30.0)          # its schedule's
    assert dispatch.send_stage("analysis", "/data/run/checkpoint-30")
    assert dispatch.request_history()
    assert queue_lengths(client, "cpu") == {int(Priority.CRITICAL): 2, int(Priority.LOW): 1, int(Priority.IDLE): 1}


def test_a_stage_is_sent_once_while_queued(dispatch, redis_server):
    ck = "/data/run/checkpoint-20"
    first = dispatch.send_stage("extract", ck)
    assert first and dispatch.send_stage("extract", ck) is None
    assert dispatch.queued("extract", ck) == first
    dispatch.stage_done("extract", ck, "some-other-task")      # not the owner: the mark stays
    assert dispatch.send_stage("extract", ck) is None
    dispatch.stage_done("extract", ck, first)
    second = dispatch.send_stage("extract", ck)
    assert second and second != first
    assert dispatch.send_stage("extract", ck, force=True)
    assert queue_lengths(redis_server.client(), "gpu") == {3: 3}
    assert redis_server.client().ttl(dsp.Dispatcher.queued_key("extract", ck)) > 0   # never stuck for good
    with pytest.raises(ValueError, match="unknown stage"):
        dispatch.send_stage("geometry", ck)


def test_a_burst_of_requests_draws_once(dispatch, redis_server):
    ids = [dispatch.request_visualizations() for _ in range(10)]
    assert ids[0] and ids[1:] == [None] * 9
    (msg,) = messages(redis_server.client(), "cpu", 4)
    assert msg["headers"]["task"] == "generate_visualizations" and msg["headers"]["eta"]   # the countdown
    dispatch.started("visualize", ids[0])                     # drawing: a change now draws again
    assert dispatch.request_visualizations()
    history = [dispatch.request_history() for _ in range(5)]
    assert sum(h is not None for h in history) == 1


def test_locks_and_the_recent_scan_mark_keep_scans_apart(dispatch, settings):
    other = dsp.Dispatcher(dispatch.app, settings)           # a second beat's scan
    assert dispatch.claim_scan() and not other.claim_scan()
    with dispatch.lock("scan", timeout=30) as got:
        with other.lock("scan", timeout=30) as got_too:
            assert got and not got_too
    with other.lock("scan", timeout=30) as got:
        assert got


def test_scan_sends_every_pending_checkpoint_once(dispatch, settings, tokenizer, redis_server):
    from helpers import make_checkpoint

    from beat.scan import scan
    for i, step in enumerate((10, 20)):
        make_checkpoint(Path(settings.checkpoints) / f"checkpoint-{step}", tokenizer, step=step, seed=i)
    first = scan(settings, dispatch)
    assert first["status"] == "ok" and [s["step"] for s in first["sent"]] == [10, 20]
    assert {s["stage"] for s in first["sent"]} == {"extract"}
    assert scan(settings, dispatch)["status"] == "skipped"    # less than half an interval later
    redis_server.client().delete(f"{dsp.PREFIX}recent:scan")
    again = scan(settings, dispatch)
    assert again["sent"] == [] and again["already_queued"] == 2
    assert queue_lengths(redis_server.client(), "gpu") == {3: 2}


def test_scan_sends_again_what_a_purge_took_from_the_queue(dispatch, settings, tokenizer, redis_server, settings_path):
    """`celery purge` empties the queues but leaves the queued marks: every checkpoint it took used
    to wait for the marks to expire (enqueue_ttl, 6 h), the scans saying 'already queued'."""
    from helpers import make_checkpoint

    from beat.scan import scan
    client = redis_server.client()
    cks = [make_checkpoint(Path(settings.checkpoints) / f"checkpoint-{step}", tokenizer, step=step, seed=i)
           for i, step in enumerate((10, 20, 30))]
    first = {s["step"]: s["task_id"] for s in scan(settings, dispatch)["sent"]}
    env = {"LEARNVIZ_CONFIG": str(settings_path), "LEARNVIZ_REDIS_PASSWORD": PASSWORD, "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "celery", "-A", "workers", "purge", "-Q", "gpu", "-f"],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert out.returncode == 0 and "Purged 3 messages" in out.stdout, out.stderr
    # step 20's message is with a worker (kombu's unacked hash); step 30's task was killed by its hard
    # limit (the mark is held until it expires, to pace the next try)
    client.hset(Channel.unacked_key, "tag-20", json.dumps([{"headers": {"id": first[20]}, "properties": {}},
                                                           "gpu", "gpu"]))
    dispatch.stage_held("extract", str(cks[2]), first[30])
    assert dispatch.queued("extract", cks[2]) == first[30]

    def rescan():
        client.delete(f"{dsp.PREFIX}recent:scan")
        return scan(settings, dispatch)

    young = rescan()                 # a mark under a minute old may have its message on the way
    assert young["sent"] == [] and young["already_queued"] == 3 and queue_lengths(client, "gpu") == {}
    for ck in cks:
        client.expire(dsp.Dispatcher.queued_key("extract", str(ck.resolve())), int(settings.enqueue_ttl - 61))
    again = rescan()
    assert [s["step"] for s in again["sent"]] == [10] and again["resent_lost"] == 1
    assert again["sent"][0]["task_id"] not in first.values()
    (msg,) = messages(client, "gpu", 3)
    assert msg["headers"]["id"] == again["sent"][0]["task_id"] == dispatch.queued("extract", cks[0])
    assert rescan()["sent"] == []                   # its new message is there: sent once


def test_a_task_killed_by_its_hard_limit_holds_its_mark_and_a_failed_one_frees_it(dispatch, redis_server):
    from celery.exceptions import TimeLimitExceeded
    dispatch.app.loader.import_default_modules()
    task = dispatch.app.tasks["collect_embeddings"]
    ck = "/data/run/checkpoint-40"
    killed = dispatch.send_stage("extract", ck)
    task.on_failure(TimeLimitExceeded(2100), killed, [ck], {}, None)
    key = dsp.Dispatcher.queued_key("extract", ck)
    assert redis_server.client().get(key) == f"held:{killed}".encode() and redis_server.client().ttl(key) > 0
    assert dispatch.send_stage("extract", ck) is None and dispatch.resend_lost("extract", ck, set()) is None
    redis_server.client().delete(key)
    failed = dispatch.send_stage("extract", ck)
    task.on_failure(ValueError("bad"), failed, [ck], {}, None)
    assert not redis_server.client().exists(key)


def test_scan_waits_for_a_missing_checkpoint_folder(dispatch, settings):
    from beat.scan import scan
    missing = dataclasses.replace(settings, checkpoints=str(settings.archive_dir().parent / "not-yet"))
    out = scan(missing, dispatch)
    assert out["status"] == "waiting"
    # a folder only the GPU host sees: the reason says where the scan looked, and on which host
    assert out["reason"].startswith(f"checkpoint folder {missing.checkpoints} does not exist (yet) on host "
                                    f"{socket.gethostname()}, where this scan ran (a cpu worker)")
    assert "same path on every host" in out["reason"]


def test_an_analysis_on_a_host_that_does_not_see_the_archive_says_so(settings, tmp_path):
    """The GPU host archived the checkpoint, the cpu worker's archive folder is another: the task
    used to succeed with 'skipped: no successful extraction archived yet', naming nothing."""
    elsewhere = dataclasses.replace(settings, archive=str(tmp_path / "cpu-host-archive"))
    app = make_app(elsewhere)
    app.loader.import_default_modules()
    result = app.tasks["analyze"].apply(args=[str(tmp_path / "run" / "checkpoint-10")]).get()
    assert result["status"] == "skipped"
    assert result["reason"].startswith(f"no successful extraction of checkpoint-10 archived yet in "
                                       f"{tmp_path / 'cpu-host-archive'} on host {socket.gethostname()}: ")
    assert "does not see the archive folder" in result["reason"] and "docs/distributed.md" in result["reason"]


# ---------------------------------------------------------------- the commands

def _learnviz(*args, env=None):
    return subprocess.run([sys.executable, "-m", "learnviz.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=60)


@pytest.mark.parametrize("command", ["worker", "beat", "submit"])
def test_every_command_explains_itself(command):
    from learnviz.cli import build_parser
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    text = sub.format_help()
    assert "--checkpoints" in text and "--archive" in text and "--broker" in text
    assert len(sub.description) > 100


def test_worker_flags_reach_celery_as_environment(settings_path, tmp_path):
    from learnviz.cli import build_parser
    from learnviz.errors import LearnvizError
    from learnviz.flags import settings_from
    from workers.cli import celery_env, worker_argv
    args = build_parser().parse_args(["--config", str(settings_path), "worker", "--queue", "cpu",
                                      "--archive", str(tmp_path / "a"), "--broker", "redis://h:1/2",
                                      "--layers", "0,last", "--concurrency", "3"])
    s = settings_from(args)
    env = celery_env(args, s)
    assert env["LEARNVIZ_ARCHIVE"] == str(tmp_path / "a") and env["LEARNVIZ_BROKER_URL"] == "redis://h:1/2"
    assert env["LEARNVIZ_CONFIG"] == str(settings_path)
    assert load_settings(env["LEARNVIZ_CONFIG"], environ=env).layers == [0, "last"]   # what celery will read
    argv = worker_argv(args, s)
    assert argv[1:6] == ["-m", "celery", "-A", "workers", "worker"] and argv[argv.index("-Q") + 1] == "cpu"
    assert argv[argv.index("--concurrency") + 1] == "3" and argv[argv.index("--pool") + 1] == "prefork"
    gpu = build_parser().parse_args(["worker", "--queue", "gpu", "--concurrency", "2"])
    with pytest.raises(LearnvizError, match="one process"):
        worker_argv(gpu, s)


@pytest.mark.parametrize("command", ["worker", "beat", "submit"])
def test_every_setting_flag_of_a_distributed_command_reaches_celery(command):
    """A flag that `learnviz worker` or `beat` accepts for a setting is handed on to Celery's
    processes (ENV_FLAGS), or it would be accepted and then do nothing there (`--status-dir` was)."""
    from learnviz.cli import build_parser
    from learnviz.flags import SETTING_FLAGS
    from workers.cli import ENV_FLAGS
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices[command]
    dests = {a.dest for a in sub._actions if a.dest in SETTING_FLAGS}
    assert "checkpoints" in dests and "broker_url" in dests
    assert sorted(dests - set(ENV_FLAGS)) == []
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--queue", "cpu", "--status-dir", "status"] if command == "worker"
                                  else [command, "--status-dir", "status"])


def test_submit_sends_one_checkpoint_and_says_when_it_is_queued(settings_path, tmp_path, redis_server):
    ck = tmp_path / "run" / "checkpoint-5"
    ck.mkdir()
    env = {"LEARNVIZ_CONFIG": str(settings_path), "LEARNVIZ_REDIS_PASSWORD": PASSWORD,
           "PATH": "/usr/bin:/bin"}
    first = _learnviz("submit", str(ck), env=env)
    assert first.returncode == 0 and "sent extract of" in first.stdout, first.stderr
    second = _learnviz("submit", str(ck), env=env)
    assert second.returncode == 0 and "queued or running already" in second.stdout
    (msg,) = messages(redis_server.client(), "gpu", 3)
    assert json.loads(__import__("base64").b64decode(msg["body"]))[0] == [str(ck.resolve())]
    missing = _learnviz("submit", str(tmp_path / "nope"), env=env)
    assert missing.returncode == 2 and "nope" in missing.stderr and "not a folder" in missing.stderr
    down = _learnviz("submit", str(ck), "--broker", "redis://127.0.0.1:1/0", env=env)
    assert down.returncode == 2 and "cannot reach the broker" in down.stderr and PASSWORD not in down.stderr


def test_celery_dash_A_workers_finds_the_app_built_from_settings(settings_path):
    env = {"LEARNVIZ_CONFIG": str(settings_path), "LEARNVIZ_QUEUE_GPU": "gpu0", "PATH": "/usr/bin:/bin"}
    code = ("from celery.app.utils import find_app; a = find_app('workers'); a.loader.import_default_modules(); "
            "print(a.conf.task_routes['collect_embeddings']['queue'], sorted(a.tasks.keys() & "
            "{'collect_embeddings','analyze','update_learning_history','generate_visualizations','scan_checkpoints'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == "gpu0" and "scan_checkpoints" in out.stdout
