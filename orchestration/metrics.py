"""Pipeline and API metrics shared by every process on every machine.

Workers, beat and the API's processes count into Redis hashes (batched: a background thread
flushes each process's counts about once a second), and the API's /metrics exposes the sums, so
one scrape sees the whole cluster whatever the number of worker processes. Counters and
histograms only: the gauges (tasks by status, stream length) are read at scrape time from their
source.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass

import redis

from orchestration.redis_client import get_redis

log = logging.getLogger(__name__)

PREFIX = "orchestration:metrics:"
FLUSH_INTERVAL = 1.0
BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    float("inf"),
)


@dataclass(frozen=True)
class Spec:
    name: str
    kind: str  # "counter" | "histogram"
    help: str
    labels: tuple[str, ...]


SPECS = {
    s.name: s
    for s in (
        Spec("orch_passes", "counter", "Orchestration passes run", ("team_id",)),
        Spec("orch_pass_duration_seconds", "histogram", "Time of one pass", ()),
        Spec("orch_assignments", "counter", "Tasks assigned to workers", ("team_id",)),
        Spec(
            "orch_executions",
            "counter",
            "Entries handled by agents, by outcome",
            ("team_id", "agent_id", "result"),
        ),
        Spec(
            "orch_execution_seconds",
            "histogram",
            "Time an agent took to handle an entry (execution and review)",
            ("agent_id",),
        ),
        Spec(
            "orch_unblock_latency_seconds",
            "histogram",
            "From the completion of a task's last dependency to the task's start",
            (),
        ),
        Spec(
            "orch_plannings",
            "counter",
            "Planning attempts of background decompositions, by outcome",
            ("team_id", "result"),
        ),
        Spec(
            "orch_planning_seconds",
            "histogram",
            "Time a planning attempt of a background decomposition took",
            (),
        ),
        Spec("orch_dead_letters", "counter", "Entries moved to the dead letter", ("team_id",)),
        Spec("orch_reemitted", "counter", "Assignments re-emitted by reconciliation", ("team_id",)),
        Spec("orch_tokens", "counter", "Model tokens used", ("team_id", "agent_id")),
        Spec("orch_cost_usd", "counter", "Model cost in USD", ("team_id", "agent_id")),
        Spec(
            "orch_api_requests",
            "counter",
            "API requests by route template, method and status",
            ("route", "method", "status"),
        ),
        Spec(
            "orch_api_request_duration_seconds",
            "histogram",
            "API request latency by route template, method and status",
            ("route", "method", "status"),
        ),
    )
}


class _Buffer:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: dict[tuple[str, str], float] = defaultdict(float)
        self.thread: threading.Thread | None = None
        self.pid = os.getpid()
        self.stop = threading.Event()

    def add(self, key: str, fields: list[tuple[str, float]]) -> None:
        with self.lock:
            if self.pid != os.getpid():  # forked: the parent's thread and counts are not ours
                self.counts.clear()
                self.thread = None
                self.pid = os.getpid()
            for field, amount in fields:
                self.counts[(key, field)] += amount
            if self.thread is None:
                self.thread = threading.Thread(target=self.run, name="metrics", daemon=True)
                self.thread.start()

    def run(self) -> None:
        while not self.stop.wait(FLUSH_INTERVAL):
            self.flush()

    def flush(self) -> None:
        with self.lock:
            batch, self.counts = self.counts, defaultdict(float)
        if not batch:
            return
        try:
            pipe = get_redis().pipeline(transaction=False)
            for (key, field), amount in batch.items():
                pipe.hincrbyfloat(key, field, amount)
            pipe.execute()
        except redis.RedisError as exc:
            log.debug("metrics not flushed (%s); kept for the next flush", exc)
            with self.lock:
                for item, amount in batch.items():
                    self.counts[item] += amount


_buffer = _Buffer()
atexit.register(_buffer.flush)


def _labels(spec: Spec, labels: dict[str, object]) -> str:
    return "|".join(f"{name}={labels.get(name, '')}" for name in spec.labels)


def inc(name: str, amount: float = 1.0, **labels: object) -> None:
    spec = SPECS[name]
    _buffer.add(PREFIX + name, [(_labels(spec, labels), float(amount))])


def observe(name: str, value: float, **labels: object) -> None:
    spec = SPECS[name]
    base = _labels(spec, labels)
    fields = [(f"{base}#le={bound}", 1.0) for bound in BUCKETS if value <= bound]
    fields += [(f"{base}#sum", float(value)), (f"{base}#count", 1.0)]
    _buffer.add(PREFIX + name, fields)


def flush() -> None:
    """Write this process's pending counts now (tests, shutdown)."""
    _buffer.flush()


@dataclass(frozen=True)
class Sample:
    spec: Spec
    labels: dict[str, str]
    suffix: str  # "" for counters; "le=<b>", "sum", "count" for histograms
    value: float


def read() -> Iterator[Sample]:
    """Every recorded value, for the exporter."""
    r = get_redis()
    names = list(SPECS)
    pipe = r.pipeline(transaction=False)
    for name in names:
        pipe.hgetall(PREFIX + name)
    for name, fields in zip(names, pipe.execute(), strict=True):
        spec = SPECS[name]
        for field, value in (fields or {}).items():
            base, _, suffix = field.partition("#")
            labels = dict(part.split("=", 1) for part in base.split("|") if part) if base else {}
            yield Sample(spec, labels, suffix, float(value))


def forget_team(team_id: object) -> None:
    """Drop a deleted team's series: what is not recorded any more is not exported either."""
    flush()
    r = get_redis()
    label = f"team_id={team_id}"
    for name, spec in SPECS.items():
        if "team_id" not in spec.labels:
            continue
        fields = [f for f in r.hkeys(PREFIX + name) if label in f.partition("#")[0].split("|")]
        if fields:
            r.hdel(PREFIX + name, *fields)
