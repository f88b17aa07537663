"""docker-compose.yml read as data (there is no Docker engine here): each service's command names
a real entry point and the right queue, Redis has a password, the learnviz services share one volume."""

from __future__ import annotations

from importlib.metadata import entry_points

import pytest
import yaml

from learnviz.cli import build_parser
from learnviz.settings import Settings
from workers.cli import beat_argv, cmd_beat, cmd_worker, worker_argv

from .conftest import ROOT

SERVICES = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
LEARNVIZ = ["worker-gpu", "worker-cpu", "beat", "dashboard"]


def parse(command: list[str]):
    assert command[0] in {ep.name for ep in entry_points(group="console_scripts")}, command
    assert command[0] == "learnviz"
    return build_parser().parse_args(command[1:])


def test_every_planned_service_is_there():
    assert set(SERVICES) == {"redis", "worker-gpu", "worker-cpu", "beat", "dashboard", "flower"}
    assert SERVICES["flower"]["profiles"] == ["flower"]            # optional
    assert all("profiles" not in SERVICES[s] for s in ["redis", *LEARNVIZ])


@pytest.mark.parametrize("service, queue", [("worker-gpu", "gpu"), ("worker-cpu", "cpu")])
def test_workers_run_learnviz_worker_on_their_queue(service, queue):
    args = parse(SERVICES[service]["command"])
    assert args.handler is cmd_worker and args.queue == queue
    argv = worker_argv(args, Settings())
    assert argv[argv.index("-A") + 1] == "workers" and argv[argv.index("-Q") + 1] == queue
    # a stop waits for the running task (warm shutdown): killed after compose's default 10 s, its
    # message would wait for Redis' visibility timeout
    assert SERVICES[service]["stop_grace_period"] == "10m"
    devices = SERVICES[service].get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
    if queue == "gpu":
        assert devices and devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
        assert argv[argv.index("--concurrency") + 1] == "1"
    else:
        assert devices == []


def test_beat_runs_learnviz_beat():
    args = parse(SERVICES["beat"]["command"])
    assert args.handler is cmd_beat and beat_argv(args)[-4:-2] == ["workers", "beat"]


def test_dashboard_serves_on_all_interfaces_inside_its_container():
    command = SERVICES["dashboard"]["command"]
    assert command == ["learnviz", "serve", "--host", "0.0.0.0"]
    for port in SERVICES["dashboard"]["ports"]:
        assert port.startswith("127.0.0.1:"), "published on the host's loopback only"
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    if "serve" not in sub.choices:
        pytest.skip("the dashboard's `serve` command is not installed yet (its learnviz.commands entry point)")
    args = parse(command)
    assert args.command == "serve" and args.dashboard_host == "0.0.0.0"


def test_flower_watches_the_same_broker():
    flower = SERVICES["flower"]
    assert flower["image"].startswith("mher/flower") and "flower" in flower["command"]
    assert "@redis:6379/0" in flower["environment"]["CELERY_BROKER_URL"]


def test_redis_has_a_password_that_every_learnviz_service_gets():
    redis = SERVICES["redis"]
    assert "--requirepass" in " ".join(redis["command"]) and "REDIS_PASSWORD" in " ".join(redis["command"])
    assert "healthcheck" in redis
    for name in LEARNVIZ:
        s = SERVICES[name]
        env = s["environment"]
        assert env["LEARNVIZ_BROKER_URL"].startswith("redis://redis:6379/")
        assert "REDIS_PASSWORD" in env["LEARNVIZ_REDIS_PASSWORD"]
        assert s["depends_on"]["redis"]["condition"] == "service_healthy"


def test_learnviz_services_share_one_volume_for_checkpoints_and_archives():
    mounts = {name: SERVICES[name]["volumes"] for name in LEARNVIZ}
    assert len({tuple(v) for v in mounts.values()}) == 1
    (mount,) = mounts["worker-gpu"]
    volume, target = mount.split(":")[:2]
    assert volume in yaml.safe_load((ROOT / "docker-compose.yml").read_text())["volumes"]
    for name in LEARNVIZ:
        env = SERVICES[name]["environment"]
        assert env["LEARNVIZ_CHECKPOINTS"].startswith(target + "/") and env["LEARNVIZ_ARCHIVE"].startswith(target + "/")


def test_the_image_is_built_from_our_dockerfile_with_every_package():
    build = SERVICES["worker-gpu"]["build"]
    dockerfile = ROOT / build["context"] / build["dockerfile"]
    text = dockerfile.read_text()
    for package in ("learnviz", "workers", "beat", "dashboard", "config"):
        assert f"COPY {package} ./{package}" in text
    assert "USER learnviz" in text
