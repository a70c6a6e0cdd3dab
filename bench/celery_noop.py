"""The ceiling of the engine we stand on: a Celery app with the project's broker settings
(acks late, prefetch 1, JSON, task events for Flower as ORCH_TASK_EVENTS sets them, as
celeryconfig.py does) and a task that does nothing but count itself.

`celery -A bench.celery_noop worker -c 1` against REDIS_URL.
"""

from __future__ import annotations

import os
import time
from typing import Any

import redis
from celery import Celery
from celery.signals import worker_ready

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
COUNT_KEY = "bench:noop:count"
LAST_KEY = "bench:noop:last"
QUEUE = "noop"
HOLD_QUEUE = "noop_hold"
TASK_EVENTS = os.environ.get("ORCH_TASK_EVENTS", "on").lower() not in ("off", "0", "false")

app = Celery("bench_noop", broker=REDIS_URL)
app.conf.update(
    task_ignore_result=True,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_serializer="json",
    accept_content=["json"],
    task_default_queue=QUEUE,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    # The engine's workers send these for every agent execution (orchestration/monitoring.py).
    worker_send_task_events=TASK_EVENTS,
    task_send_sent_event=TASK_EVENTS,
    task_track_started=True,
)

_client: redis.Redis | None = None


def _redis() -> redis.Redis:
    global _client
    if _client is None:
        _client = redis.Redis.from_url(REDIS_URL)
    return _client


@app.task(name="bench.noop")
def noop() -> None:
    pipe = _redis().pipeline(transaction=False)
    pipe.incr(COUNT_KEY)
    pipe.set(LAST_KEY, repr(time.time()))
    pipe.execute()


@worker_ready.connect
def _ready(**_: Any) -> None:
    print("noop worker ready.", flush=True)
