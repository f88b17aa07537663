"""Who sends what, once: the Redis keys that coordinate the tasks, the scan and `learnviz submit`.

The archives are the state of record; Redis only holds messages and these short-lived marks, so
losing Redis loses no work (the next scan finds what is missing and sends it again). Keys:

  learnviz:queued:<stage>:<checkpoint>  set (NX, expiring after `enqueue_ttl`) when a per-checkpoint
                                        task is sent, deleted by that task when it ends: while it
                                        exists the stage is queued or running and nobody sends it again.
                                        A task killed by its hard limit or lost too often leaves it as
                                        `held:<task id>` until it expires (that paces the next try);
                                        a mark whose message is gone from Redis (a purged queue) is
                                        dropped by the scan, which sends the stage again
  learnviz:queued:history               the one update_learning_history waiting in the queue (deleted
                                        when it starts, so a change during a run queues one more)
  learnviz:queued:visualize             the one pending draw, sent with a countdown of
                                        `visualize_delay`: every request in that window joins it
  learnviz:recent:scan                  a scan ran less than half an interval ago (a second beat's
                                        scan is then skipped)
  learnviz:lock:<name>                  redis-py locks: scan, history, visualize

One Redis database per deployment: two learnviz runs that share a database share these keys and
queues (give each its own database, redis://host:6379/1, /2, ...).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import socket
import urllib.parse
import uuid
from pathlib import Path
from typing import Iterator

import redis
from kombu.transport.redis import Channel
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry

from learnviz.results import ANALYSIS, EXTRACT
from learnviz.settings import Settings

log = logging.getLogger(__name__)

PREFIX = "learnviz:"

# Stages a scan can find missing for one checkpoint, and the task that makes each.
STAGE_TASKS = {EXTRACT: "collect_embeddings", ANALYSIS: "analyze"}
TASK_STAGES = {task: stage for stage, task in STAGE_TASKS.items()}

# One Redis list per priority level (kombu's `priority_steps`): 3 and 4 do not share a list.
PRIORITY_STEPS = tuple(range(10))

# A mark younger than this may have its message still on the way (the publish retries for ~15 s
# while Redis restarts): never taken for lost.
LOST_AFTER = 60.0
HELD = "held:"

# Delete a key only while it still holds our value: a mark that expired and was set again by
# another sender belongs to that sender's message.
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"
_HOLD = ("if redis.call('get', KEYS[1]) == ARGV[1] then "
         "return redis.call('set', KEYS[1], ARGV[2], 'KEEPTTL') else return 0 end")


def with_password(url: str, password: str | None) -> str:
    """`url` with `password` put in when the URL carries none (redis://:PASSWORD@host:port/db)."""
    if not password:
        return url
    parts = urllib.parse.urlsplit(url)
    if parts.password or "@" in parts.netloc:
        return url
    netloc = f":{urllib.parse.quote(password, safe='')}@{parts.netloc}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def broker_url(settings: Settings) -> str:
    return with_password(settings.broker_url, settings.redis_password)


def result_url(settings: Settings) -> str:
    return with_password(settings.result_backend or settings.broker_url, settings.redis_password)


def redact(url: str) -> str:
    """A URL fit for a log line: the password replaced by ***."""
    parts = urllib.parse.urlsplit(url)
    if not parts.password:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.replace(
        f":{parts.password}@", ":***@")))


BROKER_CHECK_TIMEOUT = 5.0   # seconds to connect, and then to answer, in `broker_problem`


@dataclasses.dataclass(frozen=True)
class BrokerProblem:
    """Why a Redis URL cannot be used, in words fit for a log line (the password never in them).

    kind: "auth" (password refused or missing), "refused" (nothing listens), "unknown-host",
    "timeout", or "other" (not Redis, a bad URL, a database out of range, TLS, ...)."""
    kind: str
    message: str


def _where(parts: urllib.parse.SplitResult) -> str:
    host = parts.hostname or "localhost"
    try:
        port = parts.port or 6379
    except ValueError:
        port = "?"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def describe_broker_error(exc: BaseException, url: str, *, timeout: float = BROKER_CHECK_TIMEOUT,
                          role: str = "broker") -> BrokerProblem:
    """What an exception met while talking to the Redis at `url` (the `role`: broker or result
    backend) means, for someone who must fix it."""
    parts = urllib.parse.urlsplit(url)
    shown, where = redact(url), _where(parts)
    chain, cause = [], exc
    while cause is not None and cause not in chain:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__

    def caused_by(*types) -> bool:
        return any(isinstance(c, types) for c in chain)

    detail = str(exc)
    for secret in {parts.password, urllib.parse.unquote(parts.password or "")} - {None, ""}:
        detail = detail.replace(secret, "***")
    if isinstance(exc, redis.exceptions.AuthenticationError) or detail.startswith(("NOAUTH", "WRONGPASS")):
        if parts.password is None:
            return BrokerProblem("auth", f"the {role} {shown} asks for a password and none was given (NOAUTH)")
        what = "wrong user name or password" if parts.username else "wrong password"
        return BrokerProblem("auth", f"the {role} {shown} refused the password: {what} (AUTH failed)")
    if caused_by(ConnectionRefusedError):
        return BrokerProblem("refused", f"cannot reach the {role} {shown}: nothing listens at {where} "
                                        "(connection refused)")
    if caused_by(socket.gaierror):
        return BrokerProblem("unknown-host", f"cannot reach the {role} {shown}: unknown host "
                                             f"{parts.hostname or 'localhost'!r} (the name does not resolve)")
    if caused_by(redis.exceptions.TimeoutError, socket.timeout):
        return BrokerProblem("timeout", f"cannot reach the {role} {shown}: no answer from {where} "
                                        f"within {timeout:g} s")
    if isinstance(exc, redis.exceptions.InvalidResponse):
        return BrokerProblem("other", f"cannot use the {role} {shown}: what answers at {where} is not Redis "
                                      f"({detail})")
    if isinstance(exc, (ValueError, TypeError)):
        return BrokerProblem("other", f"cannot use the {role} {shown}: not a Redis URL redis-py can use ({detail})")
    return BrokerProblem("other", f"cannot use the {role} {shown}: {detail}")


def broker_problem(url: str, *, timeout: float = BROKER_CHECK_TIMEOUT, role: str = "broker") -> BrokerProblem | None:
    """Connect to the Redis at `url` once (no retries, `timeout` s) and PING it: None when it answers
    to these credentials (or is loading its data, which Celery waits for), else what went wrong."""
    client = None
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout,
                                      retry=Retry(NoBackoff(), 0))
        client.ping()
    except redis.exceptions.BusyLoadingError:
        return None
    except (redis.exceptions.RedisError, OSError, ValueError, TypeError) as exc:
        return describe_broker_error(exc, url, timeout=timeout, role=role)
    finally:
        if client is not None:
            client.close()
    return None


def checkpoint_id(checkpoint: str | os.PathLike) -> str:
    """The one spelling of a checkpoint in messages and keys: its absolute path."""
    return str(Path(checkpoint).resolve())


class Dispatcher:
    """Sends tasks by name through `app` (routing and priority come from the app's config) and keeps
    the marks above in the broker's Redis. One per process: redis-py clients do not survive a fork."""

    def __init__(self, app, settings: Settings, *, patient: bool = True):
        self.app = app
        self.settings = settings
        # Patient (workers, the scan): ride out a Redis restart of a few seconds inside the task
        # (10 tries, backoff capped at 2 s) rather than fail and lose the follow-up message.
        # Impatient (`learnviz submit`): say at once that the broker is unreachable.
        retry = Retry(ExponentialBackoff(cap=2.0, base=0.1), 10 if patient else 0)
        self.redis = redis.Redis.from_url(broker_url(settings), socket_timeout=30, socket_connect_timeout=5,
                                          health_check_interval=25, retry=retry)
        self._release = self.redis.register_script(_RELEASE)
        self._hold = self.redis.register_script(_HOLD)

    # -------------------------------------------------------------- per-checkpoint stages

    @staticmethod
    def queued_key(stage: str, checkpoint: str) -> str:
        return f"{PREFIX}queued:{stage}:{checkpoint}"

    def send_stage(self, stage: str, checkpoint: str | os.PathLike, *, force: bool = False) -> str | None:
        """Send the task of `stage` for one checkpoint unless it is queued or running already.

        Returns the new task's id, or None when it was already queued (`force` sends anyway)."""
        if stage not in STAGE_TASKS:
            raise ValueError(f"unknown stage {stage!r}; known: {', '.join(STAGE_TASKS)}")
        checkpoint = checkpoint_id(checkpoint)
        key = self.queued_key(stage, checkpoint)
        task_id = str(uuid.uuid4())
        if force:
            self.redis.set(key, task_id, ex=int(self.settings.enqueue_ttl))
        elif not self.redis.set(key, task_id, nx=True, ex=int(self.settings.enqueue_ttl)):
            return None
        try:
            self.app.send_task(STAGE_TASKS[stage], args=[checkpoint], task_id=task_id)
        except BaseException:
            self._release(keys=[key], args=[task_id])
            raise
        return task_id

    def stage_done(self, stage: str, checkpoint: str, task_id: str) -> None:
        """The task of `stage` ended for good (not a retry): the stage may be sent again."""
        self._release(keys=[self.queued_key(stage, checkpoint_id(checkpoint))], args=[task_id])

    def stage_held(self, stage: str, checkpoint: str, task_id: str) -> None:
        """The task of `stage` was killed by its hard limit, or lost its process too often: keep the
        mark until it expires (a scan would send it straight back), as held, not as a message."""
        key = self.queued_key(stage, checkpoint_id(checkpoint))
        self._hold(keys=[key], args=[task_id, HELD + task_id])

    def queued(self, stage: str, checkpoint: str | os.PathLike) -> str | None:
        value = self.redis.get(self.queued_key(stage, checkpoint_id(checkpoint)))
        return value.decode().removeprefix(HELD) if value is not None else None

    def message_ids(self) -> set[str]:
        """The task ids of every message Redis holds for the two queues: waiting (one list per
        priority level) or delivered and not yet acknowledged (kombu's `unacked` hash: running, or
        waiting for a countdown or a retry in a worker). Read in one transaction."""
        queues = (self.settings.queue_gpu, self.settings.queue_cpu)
        lists = [f"{q}{Channel.sep}{p}" if p else q for q in queues for p in PRIORITY_STEPS]
        with self.redis.pipeline(transaction=True) as pipe:
            for key in lists:
                pipe.lrange(key, 0, -1)
            pipe.hvals(Channel.unacked_key)
            *waiting, delivered = pipe.execute()
        ids = set()
        for raw in [m for msgs in waiting for m in msgs] + [(v, 0) for v in delivered]:
            try:
                msg = json.loads(raw[0])[raw[1]] if isinstance(raw, tuple) else json.loads(raw)
                ids.add(msg["headers"].get("id") or msg["properties"].get("correlation_id"))
            except (ValueError, KeyError, IndexError, TypeError, AttributeError):
                continue   # not a Celery message: it names no task of ours
        return ids

    def resend_lost(self, stage: str, checkpoint: str | os.PathLike, ids: set[str]) -> str | None:
        """Send `stage` again when its mark names a task whose message is in no queue and with no
        worker (`ids`, from `message_ids`): the queue was purged, or Redis lost the message but
        kept the mark. The mark would otherwise block the stage for `enqueue_ttl` (hours). Returns
        the new task's id, or None when the mark's message is still there (or the mark is held,
        or younger than LOST_AFTER)."""
        checkpoint = checkpoint_id(checkpoint)
        key = self.queued_key(stage, checkpoint)
        with self.redis.pipeline(transaction=True) as pipe:
            value, ttl = pipe.get(key).ttl(key).execute()
        if value is None:
            return self.send_stage(stage, checkpoint)
        task_id = value.decode()
        if task_id.startswith(HELD) or task_id in ids or self.settings.enqueue_ttl - ttl < LOST_AFTER:
            return None
        # A worker pops a message, then files it as unacknowledged: look once more, to not take a
        # message caught between the two for lost.
        if task_id in self.message_ids():
            return None
        log.warning("learnviz: the %s task %s of %s is in no queue and with no worker (a purged queue?): "
                    "sent again", stage, task_id, checkpoint)
        self._release(keys=[key], args=[task_id])
        return self.send_stage(stage, checkpoint)

    # -------------------------------------------------------------- run-wide stages, coalesced

    def request_history(self) -> str | None:
        """Queue one update_learning_history unless one is waiting already (it will see this change)."""
        return self._coalesced("history", "update_learning_history", ttl=self.settings.cpu_time_limit)

    def request_visualizations(self) -> str | None:
        """Draw once `visualize_delay` seconds from the first request; later requests join it."""
        delay = self.settings.visualize_delay
        return self._coalesced("visualize", "generate_visualizations", ttl=delay + self.settings.cpu_time_limit,
                               countdown=delay)

    def _coalesced(self, name: str, task: str, *, ttl: float, countdown: float = 0.0) -> str | None:
        key = f"{PREFIX}queued:{name}"
        task_id = str(uuid.uuid4())
        if not self.redis.set(key, task_id, nx=True, ex=max(1, int(ttl))):
            return None
        try:
            self.app.send_task(task, task_id=task_id, countdown=countdown or None)
        except BaseException:
            self._release(keys=[key], args=[task_id])
            raise
        return task_id

    def started(self, name: str, task_id: str) -> None:
        """A coalesced task starts: from now on a new request queues another run after this one."""
        self._release(keys=[f"{PREFIX}queued:{name}"], args=[task_id])

    # -------------------------------------------------------------- scans and locks

    def claim_scan(self) -> bool:
        """True unless a scan started less than half an interval ago (two beats scan once)."""
        ms = max(1, int(self.settings.scan_interval * 500))
        return bool(self.redis.set(f"{PREFIX}recent:scan", os.getpid(), nx=True, px=ms))

    @contextlib.contextmanager
    def lock(self, name: str, timeout: float) -> Iterator[bool]:
        """A non-blocking Redis lock that expires after `timeout` s (a killed holder cannot keep it).
        Yields whether it was acquired."""
        lock = self.redis.lock(f"{PREFIX}lock:{name}", timeout=max(1.0, timeout), blocking=False)
        got = lock.acquire()
        try:
            yield bool(got)
        finally:
            if got:
                try:
                    lock.release()
                except redis.exceptions.LockError:
                    log.warning("lock %s expired before it was released (timeout %.0fs)", name, timeout)
                except redis.exceptions.ConnectionError as exc:
                    log.warning("lock %s not released (Redis unreachable: %s); it expires by itself", name, exc)


_DISPATCHERS: dict[tuple[int, int], Dispatcher] = {}


def for_app(app) -> Dispatcher:
    """The Dispatcher of `app` in this process."""
    key = (os.getpid(), id(app))
    if key not in _DISPATCHERS:
        _DISPATCHERS[key] = Dispatcher(app, app.learnviz_settings)
    return _DISPATCHERS[key]
