"""Benchmark 3: the cost of one orchestration pass against the backlog of blocked tasks.

A team with `workers` workers of capacity `ready / workers` (free capacity = ready), `ready`
pending tasks and B blocked tasks. Each blocked task waits (unmet_dependencies = 1, one
dependency row) on a gate task that is pending with a retry backoff far in the future, so the
gate is not ready either. Each sample: reset the ready tasks to pending and the workers' load to
0 (outside the timing), then time orchestrator.run_pass in this process (it assigns all `ready`
tasks and emits them to the private Redis stream).
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text

from bench import harness
from bench.harness import BulkTask, log


def _reset(team: uuid.UUID, ready: list[uuid.UUID]) -> None:
    from db.engine import get_engine
    from orchestration import keys
    from orchestration.redis_client import get_redis

    with get_engine().begin() as conn:
        conn.execute(
            text(
                "UPDATE tasks SET status = 'pending', assigned_to = NULL, assigned_by = NULL "
                "WHERE id = ANY(:ids)"
            ),
            {"ids": ready},
        )
        conn.execute(
            text(
                "UPDATE team_members SET current_workload = 0, status = 'idle' WHERE team_id = :t"
            ),
            {"t": team},
        )
        conn.execute(text("DELETE FROM messages WHERE team_id = :t"), {"t": team})
        conn.execute(text("DELETE FROM task_events WHERE team_id = :t"), {"t": team})
    get_redis().delete(keys.task_stream(team))


def measure(blocked: int, ready: int, workers: int, samples: int) -> dict[str, Any]:
    from db.engine import get_engine
    from orchestration import lifecycle, orchestrator

    with harness.stack("passcost"):
        team = harness.make_team(workers=workers, capacity=max(1, ready // workers))
        gate = BulkTask(
            uuid.uuid4(), status="pending", not_before=datetime.now(UTC) + timedelta(days=1)
        )
        ready_tasks = [BulkTask(uuid.uuid4()) for _ in range(ready)]
        backlog = [BulkTask(uuid.uuid4(), [gate.id]) for _ in range(blocked)]
        loaded = time.monotonic()
        harness.bulk_insert(team, [gate, *ready_tasks, *backlog])
        load_s = time.monotonic() - loaded
        with get_engine().begin() as conn:
            conn.execute(text("UPDATE teams SET status = 'active' WHERE id = :t"), {"t": team})
        del lifecycle  # the team is made active directly: no Celery pass request
        ids = [t.id for t in ready_tasks]
        durations = []
        for i in range(samples + 2):
            _reset(team, ids)
            result = orchestrator.run_pass(team)
            if len(result.assigned) != ready:
                raise RuntimeError(f"pass assigned {len(result.assigned)} of {ready}")
            if i >= 2:  # two warm-up passes
                durations.append(result.duration)
        ms = [d * 1000 for d in durations]
        return {
            "blocked": blocked,
            "ready": ready,
            "workers": workers,
            "samples": samples,
            "median_ms": round(harness.median(ms), 2),
            "p90_ms": round(harness.percentile(ms, 90), 2),
            "min_ms": round(min(ms), 2),
            "load_s": round(load_s, 1),
        }


def run(
    backlogs: list[int], ready: int = 50, workers: int = 10, samples: int = 20
) -> dict[str, Any]:
    rows = []
    for blocked in backlogs:
        log(f"pass cost: {blocked} blocked, {ready} ready")
        row = measure(blocked, ready, workers, samples)
        log(f"  median {row['median_ms']} ms (p90 {row['p90_ms']} ms)")
        rows.append(row)
    ratio = rows[-1]["median_ms"] / rows[0]["median_ms"] if rows else float("nan")
    return {
        "rows": rows,
        "ratio_largest_vs_smallest": round(ratio, 3),
        "targets": {"within_2x": ratio <= 2.0},
    }
