"""Benchmark 2: dependency-unblock latency along a chain of sequential tasks.

Latency of link i = start_time(task i+1) - completion_time(task i), both written by
PostgreSQL's now() in the committing transactions (the completion and the claim). now() is the
time the transaction began, so each figure also holds the completing transaction's own duration
(a slight overestimate of "from the completion commit").

- engine: two `celery -A orchestration worker -c 1` and a beat (ORCH_PASS_INTERVAL=2); the
  consumer's pass after each completion (and the debounced pass request) assign the successor.
- seed-style baseline: the seed only had the polling pass every 2 s. The engine has no knob to
  turn off the on-completion pass, so the baseline runs the same AgentConsumer in this process,
  with the `orchestrator` module it calls swapped for a proxy whose run_pass does nothing
  (NoInlinePass below), no Celery worker and no beat, and a bench-local loop calling
  orchestrator.run_pass every 2 s. Everything else (claim, execute, complete, unblock,
  streams) is the engine's code.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from typing import Any

from sqlalchemy import text

from bench import harness
from bench.harness import BulkTask, log
from tests.support.processes import processes


def _chain(length: int) -> list[BulkTask]:
    ids = [uuid.uuid4() for _ in range(length)]
    return [BulkTask(ids[i], [ids[i - 1]] if i else []) for i in range(length)]


def _latencies(ids: list[uuid.UUID]) -> list[float]:
    from db.engine import get_engine

    with get_engine().connect() as conn:
        rows = {
            r.id: r
            for r in conn.execute(
                text(
                    "SELECT id, extract(epoch FROM start_time) AS s, "
                    "extract(epoch FROM completion_time) AS c FROM tasks WHERE id = ANY(:ids)"
                ),
                {"ids": ids},
            )
        }
    return [float(rows[b].s) - float(rows[a].c) for a, b in itertools.pairwise(ids)]


def _breakdown(ids: list[uuid.UUID]) -> dict[str, Any]:
    """Split each link at the successor's `task.assigned` event (written with now() of the pass
    transaction): completion -> pass began, and pass began -> successor's claim began."""
    from db.engine import get_engine

    with get_engine().connect() as conn:
        rows = {
            r.id: r
            for r in conn.execute(
                text(
                    "SELECT t.id, extract(epoch FROM t.start_time) AS s, "
                    "extract(epoch FROM t.completion_time) AS c, "
                    "(SELECT extract(epoch FROM max(e.created_at)) FROM task_events e "
                    " WHERE e.task_id = t.id AND e.kind = 'task.assigned') AS a "
                    "FROM tasks t WHERE t.id = ANY(:ids)"
                ),
                {"ids": ids},
            )
        }
    to_pass = [float(rows[b].a) - float(rows[a].c) for a, b in itertools.pairwise(ids)]
    to_claim = [float(rows[b].s) - float(rows[b].a) for a, b in itertools.pairwise(ids)]
    return {
        "completion_to_pass_start": _summary(to_pass, raw=False),
        "pass_start_to_claim_start": _summary(to_claim, raw=False),
    }


def _summary(lat: list[float], raw: bool = False) -> dict[str, Any]:
    ms = [x * 1000 for x in lat]
    return {
        "links": len(ms),
        "p50_ms": round(harness.percentile(ms, 50), 2),
        "p90_ms": round(harness.percentile(ms, 90), 2),
        "p99_ms": round(harness.percentile(ms, 99), 2),
        "max_ms": round(max(ms), 2) if ms else None,
        "mean_ms": round(sum(ms) / len(ms), 2) if ms else None,
    }


def engine_run(length: int, timeout: float = 600) -> dict[str, Any]:
    from orchestration import lifecycle

    with harness.stack("latency") as st:
        env = harness.worker_env(st)
        harness.use_env(st.database, st.redis_url, env)
        team = harness.make_team(workers=4, capacity=2)
        chain = _chain(length)
        harness.bulk_insert(team, chain)
        with processes(st.directory, env) as procs:
            procs.engine(workers=2)
            lifecycle.start_team(team)
            harness.wait_for(
                "the chain",
                lambda: harness.status_counts(team).get("completed", 0) >= length,
                timeout,
                progress=lambda: str(harness.status_counts(team)),
            )
        lat = _latencies([t.id for t in chain])
        return {
            "chain": length,
            **_summary(lat),
            "breakdown": _breakdown([t.id for t in chain]),
            "raw_ms": [round(x * 1000, 3) for x in lat],
        }


def baseline_run(length: int, interval: float = 2.0) -> dict[str, Any]:
    from orchestration import consumer as consumer_module
    from orchestration import lifecycle, orchestrator

    class NoInlinePass:
        """The orchestrator as the consumer module sees it, minus the pass after completion."""

        def __getattr__(self, name: str) -> Any:
            return getattr(orchestrator, name)

        @staticmethod
        def run_pass(team_id: uuid.UUID) -> None:
            return None

    with harness.stack("latency_seed") as st:
        env = harness.worker_env(st, ORCH_PASS_INTERVAL=str(interval))
        harness.use_env(st.database, st.redis_url, env)
        team = harness.make_team(workers=4, capacity=2)
        chain = _chain(length)
        harness.bulk_insert(team, chain)
        # start_team would request an immediate pass through Celery (no worker here: the
        # message is never consumed); the first pass comes from the polling loop below.
        lifecycle.start_team(team)
        consumer_module.orchestrator = NoInlinePass()  # type: ignore[assignment]
        consumer = consumer_module.AgentConsumer(concurrency=4)
        consumer.start()
        stop = threading.Event()

        def poll() -> None:
            while not stop.is_set():
                orchestrator.run_pass(team)
                stop.wait(interval)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        try:
            harness.wait_for(
                "the seed-style chain",
                lambda: harness.status_counts(team).get("completed", 0) >= length,
                length * interval * 2 + 30,
                progress=lambda: str(harness.status_counts(team)),
            )
        finally:
            stop.set()
            poller.join(5)
            consumer.stop(5)
            consumer_module.orchestrator = orchestrator
        lat = _latencies([t.id for t in chain])
        return {
            "chain": length,
            "pass_interval_s": interval,
            **_summary(lat),
            "raw_ms": [round(x * 1000, 3) for x in lat],
        }


def run(length: int, baseline_length: int) -> dict[str, Any]:
    log(f"latency: engine, chain of {length}")
    engine = engine_run(length)
    log(f"  engine: p50 {engine['p50_ms']} ms, p99 {engine['p99_ms']} ms")
    log(f"latency: seed-style 2 s polling, chain of {baseline_length}")
    started = time.monotonic()
    seed = baseline_run(baseline_length)
    log(
        f"  seed-style: p50 {seed['p50_ms']} ms, p99 {seed['p99_ms']} ms "
        f"({time.monotonic() - started:.0f} s)"
    )
    return {
        "engine": engine,
        "seed_style": seed,
        "targets": {
            "p50_at_most_10ms": engine["p50_ms"] <= 10,
            "p99_at_most_50ms": engine["p99_ms"] <= 50,
        },
    }
