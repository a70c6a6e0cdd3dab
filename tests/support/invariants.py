"""The invariants of DESIGN.md, checked against PostgreSQL after every pipeline scenario."""

from __future__ import annotations

import uuid

from sqlalchemy import text

from db.engine import get_engine


def check_invariants(team_id: uuid.UUID, *, all_done: bool = True) -> dict[str, int]:
    """No task lost, none completed twice, no worker over capacity, counters exact.

    Returns the task counts by status for further assertions."""
    with get_engine().connect() as conn:
        counts: dict[str, int] = dict(
            conn.execute(
                text("SELECT status, count(*) FROM tasks WHERE team_id = :t GROUP BY status"),
                {"t": team_id},
            ).all()
        )
        # None completed twice: one completion event per task at most.
        twice = conn.execute(
            text(
                "SELECT task_id, count(*) FROM task_events WHERE team_id = :t "
                "AND kind = 'task.completed' GROUP BY task_id HAVING count(*) > 1"
            ),
            {"t": team_id},
        ).all()
        assert not twice, f"tasks completed more than once: {twice}"
        # Counters never drift: load equals work in flight; outcomes counted once.
        drift = conn.execute(
            text(
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
            ),
            {"t": team_id},
        ).all()
        for row in drift:
            assert row.current_workload == row.in_flight, f"workload drift: {row}"
            assert row.current_workload <= row.max_concurrent_tasks, f"over capacity: {row}"
            assert row.tasks_completed == row.completed, f"completed counter drift: {row}"
            assert row.tasks_failed == row.failed, f"failed counter drift: {row}"
        # Readiness is consistent: unmet counts equal the unfinished dependencies.
        unmet = conn.execute(
            text(
                """
                SELECT t.id, t.unmet_dependencies,
                       count(d.id) FILTER (WHERE dep.status <> 'completed') AS actual
                FROM tasks t
                LEFT JOIN task_dependencies d ON d.task_id = t.id
                LEFT JOIN tasks dep ON dep.id = d.depends_on_task_id
                WHERE t.team_id = :t AND t.status IN ('pending', 'blocked')
                GROUP BY t.id HAVING t.unmet_dependencies <> count(d.id) FILTER (
                    WHERE dep.status <> 'completed')
                """
            ),
            {"t": team_id},
        ).all()
        assert not unmet, f"unmet dependency counts drifted: {unmet}"
        # Order: nothing started before all it depends on had completed.
        early = conn.execute(
            text(
                """
                SELECT t.id, dep.id AS dep_id FROM tasks t
                JOIN task_dependencies d ON d.task_id = t.id
                JOIN tasks dep ON dep.id = d.depends_on_task_id
                WHERE t.team_id = :t AND t.start_time IS NOT NULL AND NOT t.is_summary
                  AND (dep.completion_time IS NULL OR t.start_time < dep.completion_time)
                """
            ),
            {"t": team_id},
        ).all()
        assert not early, f"tasks started before their dependencies completed: {early}"
    if all_done:
        open_tasks = {
            s: n for s, n in counts.items() if s not in ("completed", "failed", "cancelled")
        }
        assert not open_tasks, f"tasks lost (not finished): {open_tasks}"
    return {str(k): int(v) for k, v in counts.items()}
