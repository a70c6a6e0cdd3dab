"""The invariants of DESIGN.md, read from PostgreSQL after a pipeline scenario: no task lost,
none completed twice, no worker over capacity, counters equal to the work they count; and, once
every task is final, no entry of the team's task stream left delivered but unacknowledged."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import redis
from sqlalchemy import text

from db.engine import get_engine
from db.queries import Q
from orchestration import keys
from orchestration.redis_client import get_redis

FINAL = ("completed", "failed", "cancelled")

_COUNTS = text("SELECT status::text, count(*) FROM tasks WHERE team_id = :t GROUP BY 1")
# Tasks with more than one completion event.
_COMPLETED_TWICE = text(
    "SELECT task_id, count(*) FROM task_events WHERE team_id = :t "
    "AND kind = 'task.completed' GROUP BY task_id HAVING count(*) > 1"
)
# Each member's counters beside the tasks they count.
_MEMBERS = text(
    """
    SELECT m.agent_id, m.current_workload, m.max_concurrent_tasks,
           m.tasks_completed, m.tasks_failed,
           count(t.id) FILTER (WHERE t.status IN ('assigned', 'in_progress', 'review'))
               AS in_flight,
           count(t.id) FILTER (WHERE t.status = 'completed') AS completed,
           count(t.id) FILTER (WHERE t.status = 'failed') AS failed
    FROM team_members m LEFT JOIN tasks t ON t.assigned_to = m.id AND NOT t.is_summary
    WHERE m.team_id = :t
    GROUP BY m.id
    """
)
# Waiting tasks whose unmet count differs from their unfinished dependencies.
_UNMET = text(
    """
    SELECT t.id, t.unmet_dependencies,
           count(d.id) FILTER (WHERE dep.status <> 'completed') AS actual
    FROM tasks t
    LEFT JOIN task_dependencies d ON d.task_id = t.id
    LEFT JOIN tasks dep ON dep.id = d.depends_on_task_id
    WHERE t.team_id = :t AND t.status IN ('pending', 'blocked')
    GROUP BY t.id
    HAVING t.unmet_dependencies <> count(d.id) FILTER (WHERE dep.status <> 'completed')
    """
)
# Tasks that started before a task they depend on had completed.
_EARLY = text(
    """
    SELECT t.id, dep.id AS dep_id FROM tasks t
    JOIN task_dependencies d ON d.task_id = t.id
    JOIN tasks dep ON dep.id = d.depends_on_task_id
    WHERE t.team_id = :t AND t.start_time IS NOT NULL AND NOT t.is_summary
      AND (dep.completion_time IS NULL OR t.start_time < dep.completion_time)
    """
)


@dataclass
class Invariants:
    status_counts: dict[str, int]
    completed_twice: list[Any] = field(default_factory=list)
    counted_twice: list[Any] = field(default_factory=list)
    over_capacity: list[Any] = field(default_factory=list)
    workload_drift: list[Any] = field(default_factory=list)
    outcome_drift: list[Any] = field(default_factory=list)
    unmet_drift: list[Any] = field(default_factory=list)
    early_starts: list[Any] = field(default_factory=list)
    # Waits-for edges the tasks' ranks do not order (see orchestration/graph.py).
    rank_violations: int = 0

    @property
    def lost(self) -> int:
        """Tasks not in a final state (lost, for a run that should have finished)."""
        return sum(n for s, n in self.status_counts.items() if s not in FINAL)


def measure_invariants(team_id: uuid.UUID) -> Invariants:
    with get_engine().connect() as conn:
        params = {"t": team_id}
        found = Invariants({str(s): int(n) for s, n in conn.execute(_COUNTS, params)})
        found.completed_twice = list(conn.execute(_COMPLETED_TWICE, params))
        for row in conn.execute(_MEMBERS, params):
            if row.tasks_completed > row.completed:
                found.counted_twice.append(row)
            if max(row.current_workload, row.in_flight) > row.max_concurrent_tasks:
                found.over_capacity.append(row)
            if row.current_workload != row.in_flight:
                found.workload_drift.append(row)
            # A failure retried since stays in the member's record (its success rate).
            if row.tasks_completed != row.completed or row.tasks_failed < row.failed:
                found.outcome_drift.append(row)
        found.unmet_drift = list(conn.execute(_UNMET, params))
        found.early_starts = list(conn.execute(_EARLY, params))
        found.rank_violations = int(
            conn.execute(Q["rank_violations"], {"team_id": team_id}).scalar_one()
        )
    return found


# An outcome is acknowledged in the round trip right after its commit: a pending entry may
# outlive its task's final state by that long, not by a visibility timeout (after which a
# consumer would reclaim the entry, find it stale and acknowledge it, hiding a missing ack).
ACK_GRACE = 1.0


def unacknowledged(team_id: uuid.UUID, grace: float = ACK_GRACE) -> list[dict[str, Any]]:
    """The entries of the team's task stream delivered and not acknowledged, once `grace`
    seconds have not seen them all acknowledged (none without a stream or group)."""
    r = get_redis()
    stream, group = keys.task_stream(team_id), keys.consumer_group(team_id)
    deadline = time.monotonic() + grace
    while True:
        try:
            pending = r.xpending_range(stream, group, min="-", max="+", count=100)
        except redis.ResponseError as exc:
            if "no such key" in str(exc).lower() or "NOGROUP" in str(exc):
                return []  # nothing ever emitted (or Redis lost it all): nothing pending
            raise
        if not pending or time.monotonic() >= deadline:
            return list(pending)
        time.sleep(0.02)


def check_invariants(team_id: uuid.UUID, *, all_done: bool = True) -> dict[str, int]:
    """Assert every invariant (and, with all_done, that every task finished and every entry of
    the team's task stream was acknowledged); returns the task counts by status for further
    assertions."""
    found = measure_invariants(team_id)
    assert not found.completed_twice, f"tasks completed more than once: {found.completed_twice}"
    assert not found.counted_twice, f"completions counted twice: {found.counted_twice}"
    assert not found.over_capacity, f"over capacity: {found.over_capacity}"
    assert not found.workload_drift, f"workload drift: {found.workload_drift}"
    assert not found.outcome_drift, f"outcome counter drift: {found.outcome_drift}"
    assert not found.unmet_drift, f"unmet dependency counts drifted: {found.unmet_drift}"
    assert not found.early_starts, f"started before their dependencies: {found.early_starts}"
    assert not found.rank_violations, f"edges out of rank order: {found.rank_violations}"
    if all_done:
        open_tasks = {s: n for s, n in found.status_counts.items() if s not in FINAL}
        assert not open_tasks, f"tasks lost (not finished): {open_tasks}"
        held = unacknowledged(team_id)
        assert not held, f"entries never acknowledged though every task is final: {held}"
    return found.status_counts
