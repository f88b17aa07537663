"""The worker's consumer: Celery's, made to survive a Redis restart while it holds messages.

With celery 5.7 / kombu 5.7 on Redis, a lost broker connection is first `collect()`ed, which
detaches its transport; anything that later touches a channel of that dead connection needs a new
connection pool and fails on the detached transport with "AttributeError: 'NoneType' object has
no attribute 'hostname'", which Celery treats as an unrecoverable error: the worker process stays
up but never consumes again. Two moments do that (tests/distributed/test_cluster.py restarts Redis
under the workers and meets both):
  - closing the dead channel, which tries to return the messages the worker holds (a running
    task, one reserved, one waiting for its countdown);
  - acknowledging, after the reconnection, a task that was running during the outage.
Here that AttributeError ends the cleanup, or the acknowledgement, of the dead connection, and the
consumer goes on on the new one. Nothing is lost: with Redis gone those messages are gone too (the
next scan re-sends what the archives lack), and a Redis that kept them hands them out again after
the visibility timeout, to a stage that then finds its result current. Selected by
`worker_consumer` in the app's configuration, so `celery -A workers worker` gets it too.
"""

from __future__ import annotations

import logging

from celery.worker.consumer import Consumer as CeleryConsumer

log = logging.getLogger(__name__)


def _tolerant(ack):
    """`ack` (a message's ack/reject) that shrugs off the dead connection's AttributeError."""
    def call(*args, **kwargs):
        try:
            return ack(*args, **kwargs)
        except AttributeError as exc:
            log.warning("learnviz: a message of the lost broker connection was not acknowledged (%s)", exc)
    return call


class Consumer(CeleryConsumer):
    def on_connection_error_after_connected(self, exc):
        try:
            super().on_connection_error_after_connected(exc)
        except AttributeError as err:
            log.warning("learnviz: the lost broker connection could not return its unacknowledged "
                        "messages (%s); reconnecting", err)
            self.connection = None

    def call_soon_ack(self, p, *args, **kwargs):
        return super().call_soon_ack(_tolerant(p), *args, **kwargs)
