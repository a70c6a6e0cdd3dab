"""Benchmark 1: end-to-end throughput, beside raw Celery no-op tasks and procrastinate no-op
jobs, with the same broker (one private redis-server), the same machine and the same number of
worker processes (2). Each peer runs with one execution per process and with as many as the
engine's agent threads; the ratios are against its faster configuration. The engine and raw
Celery run with Flower's task events on (celeryconfig.py's default) and off (ORCH_TASK_EVENTS),
and are compared like for like.

Each configuration runs once per round, the rounds one after another; its figure is its median
round. Each run loads the whole backlog first and then releases it at once, timing from the
release to the last completion:

- engine: N independent pending tasks are inserted while the team is inactive; two
  `celery -A orchestration worker -c 1` (agent consumer with ORCH_AGENT_CONCURRENCY threads in
  each main process) and a beat run; the clock starts at start_team and stops at the last
  completion_time written by PostgreSQL.
- celery: N `bench.noop` messages are published to a hold queue; once two
  `celery -A bench.celery_noop worker -c 1` are ready the hold list is RENAMEd onto the consumed
  queue (one atomic step); the clock stops at the last task's own timestamp.
- procrastinate: two `python -m bench.procrastinate_app` workers (concurrency 1) are started;
  N jobs are deferred in one batch (one transaction); the clock stops at the last `succeeded`
  event.
"""

from __future__ import annotations

import sys
import time
import uuid
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bench import harness
from bench.harness import BulkTask, log
from tests.support.processes import processes

PROCESSES = 2


def _events(on: bool) -> str:
    return "on" if on else "off"


def engine_run(
    tasks: int, agent_concurrency: int = 4, events: bool = True, timeout: float = 900
) -> dict[str, Any]:
    from db.engine import get_engine
    from orchestration import lifecycle

    with harness.stack("throughput") as st:
        env = harness.worker_env(
            st, ORCH_AGENT_CONCURRENCY=str(agent_concurrency), ORCH_TASK_EVENTS=_events(events)
        )
        harness.use_env(st.database, st.redis_url, env)
        team = harness.make_team(workers=8, capacity=agent_concurrency)
        harness.bulk_insert(team, [BulkTask(uuid.uuid4()) for _ in range(tasks)])
        with processes(st.directory, env) as procs:
            procs.engine(workers=PROCESSES)
            released = time.time()
            lifecycle.start_team(team)

            def done() -> bool:
                return harness.status_counts(team).get("completed", 0) >= tasks

            harness.wait_for(
                "engine tasks",
                done,
                timeout,
                progress=lambda: str(harness.status_counts(team)),
            )
            with get_engine().connect() as conn:
                row = conn.execute(
                    text(
                        "SELECT extract(epoch FROM max(completion_time)) AS last, "
                        "extract(epoch FROM min(start_time)) AS first FROM tasks "
                        "WHERE team_id = :t"
                    ),
                    {"t": team},
                ).one()
        elapsed = float(row.last) - released
        return {
            "tasks": tasks,
            "seconds": round(elapsed, 3),
            "tasks_per_s": round(tasks / elapsed, 1),
            "first_start_after_release_s": round(float(row.first) - released, 3),
            "processes": PROCESSES,
            "agent_concurrency": agent_concurrency,
            "task_events": events,
        }


def celery_run(
    tasks: int, concurrency: int = 1, events: bool = True, timeout: float = 600
) -> dict[str, Any]:
    with harness.stack("celery") as st:
        env = {"REDIS_URL": st.redis_url, "ORCH_TASK_EVENTS": _events(events)}
        from bench import celery_noop

        r = st.redis.client()
        # Its own connection, not the app's pool: each run has a new redis-server.
        with (
            celery_noop.app.connection_for_write(st.redis_url) as conn,
            conn.Producer() as producer,
        ):
            for _ in range(tasks):
                celery_noop.noop.apply_async(queue=celery_noop.HOLD_QUEUE, producer=producer)
        queued = int(r.llen(celery_noop.HOLD_QUEUE))
        if queued != tasks:
            raise RuntimeError(f"{queued} of {tasks} noop messages on the hold queue")
        with processes(st.directory, env) as procs:
            workers = [procs.worker("bench.celery_noop", concurrency) for _ in range(PROCESSES)]
            for w in workers:
                procs.wait_for_log(w, "noop worker ready.")
            time.sleep(0.5)
            released = time.time()
            r.rename(celery_noop.HOLD_QUEUE, celery_noop.QUEUE)
            harness.wait_for(
                "celery noop tasks",
                lambda: int(r.get(celery_noop.COUNT_KEY) or 0) >= tasks,
                timeout,
                interval=0.05,
                progress=lambda: str(r.get(celery_noop.COUNT_KEY)),
            )
            last = float(r.get(celery_noop.LAST_KEY) or 0)
        elapsed = last - released
        return {
            "tasks": tasks,
            "seconds": round(elapsed, 3),
            "tasks_per_s": round(tasks / elapsed, 1),
            "processes": PROCESSES,
            "worker_concurrency": concurrency,
            "task_events": events,
        }


def procrastinate_run(tasks: int, concurrency: int = 1, timeout: float = 900) -> dict[str, Any]:
    url = harness.database_url("procrastinate")
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    from db.migrate import drop_database, ensure_database

    drop_database(url)
    ensure_database(url)
    import tempfile
    from pathlib import Path

    directory = Path(tempfile.mkdtemp(prefix="orch-bench-procrastinate-"))
    engine = create_engine(url)
    try:
        env = {"PROCRASTINATE_DSN": dsn, "PROCRASTINATE_CONCURRENCY": str(concurrency)}
        import os

        os.environ["PROCRASTINATE_DSN"] = dsn
        from bench import procrastinate_app

        app = procrastinate_app.build(dsn)
        with app.open():
            app.schema_manager.apply_schema()
        with processes(directory, env) as procs:
            workers = [
                procs.spawn("procrastinate", [sys.executable, "-m", "bench.procrastinate_app"])
                for _ in range(PROCESSES)
            ]
            for w in workers:
                procs.wait_for_log(w, "procrastinate worker ready.")
            time.sleep(2.0)  # the workers LISTEN before they fetch
            task = app.tasks["bench.noop"]
            with app.open():
                released = time.time()
                task.batch_defer(*({} for _ in range(tasks)))

            def count() -> int:
                with engine.connect() as conn:
                    return int(
                        conn.execute(
                            text("SELECT count(*) FROM procrastinate_jobs WHERE status='succeeded'")
                        ).scalar()
                        or 0
                    )

            harness.wait_for(
                "procrastinate jobs",
                lambda: count() >= tasks,
                timeout,
                progress=lambda: str(count()),
            )
            with engine.connect() as conn:
                last = float(
                    conn.execute(
                        text(
                            "SELECT extract(epoch FROM max(at)) FROM procrastinate_events "
                            "WHERE type = 'succeeded'"
                        )
                    ).scalar()
                    or 0
                )
        elapsed = last - released
        return {
            "tasks": tasks,
            "seconds": round(elapsed, 3),
            "tasks_per_s": round(tasks / elapsed, 1),
            "processes": PROCESSES,
            "worker_concurrency": concurrency,
        }
    finally:
        engine.dispose()
        drop_database(url)
        import shutil

        shutil.rmtree(directory, ignore_errors=True)


def _best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return max(runs, key=lambda r: r["tasks_per_s"])


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median rate, carrying every round's rate."""
    ordered = sorted(runs, key=lambda r: r["tasks_per_s"])
    return {
        **ordered[(len(ordered) - 1) // 2],
        "rounds_tasks_per_s": [r["tasks_per_s"] for r in runs],
    }


def run(
    tasks: int, peer_tasks: int | None = None, agent_concurrency: int = 4, rounds: int = 3
) -> dict[str, Any]:
    """`rounds` rounds, each running the engine and raw Celery with Flower's task events on (the
    project's default) and off, each Celery with one execution per worker process and with as
    many as the engine's agent threads, then procrastinate at both concurrencies. A
    configuration's figure is its median round (the machine's noise, several tenths between
    back-to-back runs, and the first run's cold caches fall out); the ratios are against each
    peer's faster configuration, like for like on task events."""
    peer_tasks = peer_tasks or tasks
    concurrencies = sorted({1, agent_concurrency})
    engine_rounds: dict[bool, list[dict[str, Any]]] = {True: [], False: []}
    celery_rounds: dict[tuple[bool, int], list[dict[str, Any]]] = {
        (e, c): [] for e in (True, False) for c in concurrencies
    }
    peer_rounds: dict[int, list[dict[str, Any]]] = {c: [] for c in concurrencies}
    for n in range(1, rounds + 1):
        for events in (True, False):
            log(f"throughput round {n}/{rounds}: engine, {tasks} tasks, events {_events(events)}")
            engine_rounds[events].append(engine_run(tasks, agent_concurrency, events))
            log(f"  engine: {engine_rounds[events][-1]['tasks_per_s']} tasks/s")
            for c in concurrencies:
                log(f"throughput round {n}: raw celery no-op, -c {c}, events {_events(events)}")
                celery_rounds[events, c].append(celery_run(peer_tasks, c, events))
                log(f"  celery -c {c}: {celery_rounds[events, c][-1]['tasks_per_s']} tasks/s")
        for c in concurrencies:
            log(f"throughput round {n}: procrastinate no-op, {peer_tasks} jobs, concurrency {c}")
            peer_rounds[c].append(procrastinate_run(peer_tasks, c))
            log(f"  procrastinate concurrency {c}: {peer_rounds[c][-1]['tasks_per_s']} jobs/s")
    engine, bare = _median(engine_rounds[True]), _median(engine_rounds[False])
    celery_runs = [_median(celery_rounds[True, c]) for c in concurrencies]
    bare_celery_runs = [_median(celery_rounds[False, c]) for c in concurrencies]
    peer_runs = [_median(peer_rounds[c]) for c in concurrencies]
    celery, bare_celery, peer = _best(celery_runs), _best(bare_celery_runs), _best(peer_runs)
    vs_celery = engine["tasks_per_s"] / celery["tasks_per_s"]
    bare_vs_celery = bare["tasks_per_s"] / bare_celery["tasks_per_s"]
    vs_peer = engine["tasks_per_s"] / peer["tasks_per_s"]
    log(
        f"  medians of {rounds}: engine {engine['tasks_per_s']} / celery {celery['tasks_per_s']}"
        f" = {vs_celery:.3f}; without events {bare['tasks_per_s']} / "
        f"{bare_celery['tasks_per_s']} = {bare_vs_celery:.3f}; / procrastinate "
        f"{peer['tasks_per_s']} = {vs_peer:.2f}"
    )
    return {
        "rounds": rounds,
        "engine": engine,
        "engine_without_events": bare,
        "celery_noop": celery,
        "celery_noop_runs": celery_runs,
        "celery_noop_without_events": bare_celery,
        "celery_noop_without_events_runs": bare_celery_runs,
        "procrastinate_noop": peer,
        "procrastinate_noop_runs": peer_runs,
        "ratio_vs_celery": round(vs_celery, 3),
        "ratio_vs_celery_without_events": round(bare_vs_celery, 3),
        "ratio_vs_procrastinate": round(vs_peer, 3),
        "targets": {
            "at_least_half_of_celery": vs_celery >= 0.5,
            "at_least_half_of_celery_without_events": bare_vs_celery >= 0.5,
            "at_least_twice_procrastinate": vs_peer >= 2.0,
        },
    }
