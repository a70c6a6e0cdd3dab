"""The orchestration pass (seed epic 1) and the reconciliation of streams with the database.

A pass for one team, under the team's pass lock: the ready tasks (no more than the free
capacity), the available workers (row-locked), the scorer's choice for each task with the
worker's load raised before the next task is scored, then one statement that assigns, counts
and logs; after the commit, one pipeline that emits the entries. Its cost is
O(ready tasks + workers), whatever the backlog of blocked or finished tasks.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import redis
from psycopg.errors import DeadlockDetected
from sqlalchemy import select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from db.engine import session_scope
from db.models import Team, TeamStatus
from db.queries import Q
from orchestration import events, keys, metrics, streams
from orchestration.config import get_settings
from orchestration.redis_client import get_redis
from orchestration.scoring import AssignmentScorer

log = logging.getLogger(__name__)

SCORER = AssignmentScorer()
MAX_LOOPS = 10


@dataclass
class PassResult:
    team_id: uuid.UUID
    assigned: list[streams.Assignment] = field(default_factory=list)
    ready: int = 0
    workers: int = 0
    skipped: bool = False
    duration: float = 0.0


@dataclass
class _Candidate:
    """A worker as the pass scores it; its load is raised after each assignment."""

    id: uuid.UUID
    agent_id: str
    specialization: str | None
    skills: dict[str, Any] | None
    current_workload: int
    max_concurrent_tasks: int
    tasks_completed: int
    tasks_failed: int

    @classmethod
    def of(cls, w: dict[str, Any]) -> _Candidate:
        return cls(
            uuid.UUID(w["id"]),
            w["agent_id"],
            w["specialization"],
            w["skills"],
            w["current_workload"],
            w["max_concurrent_tasks"],
            w["tasks_completed"],
            w["tasks_failed"],
        )


@dataclass(frozen=True)
class _Ready:
    """A ready task as the pass scores it."""

    id: uuid.UUID
    priority: int
    required_skills: list[str] | None


def run_pass(team_id: uuid.UUID) -> PassResult:
    """Assign what is ready; when another pass holds the lock, ask it to go round again."""
    total = PassResult(team_id)
    started = time.perf_counter()
    for _ in range(MAX_LOOPS):
        began = time.perf_counter()
        result, again = _one_pass(team_id)
        if result is None:
            # Another process holds the pass: flag it. The holder takes the flag after its
            # commit; if it may have done so already, try once more, so that either we run
            # or the holder sees the flag.
            if _flag_again(team_id):
                total.skipped = True
                break
            began = time.perf_counter()
            result, again = _one_pass(team_id)
            if result is None:
                total.skipped = True
                break
        metrics.inc("orch_passes", team_id=team_id)
        metrics.observe("orch_pass_duration_seconds", time.perf_counter() - began)
        if result.assigned:
            metrics.inc("orch_assignments", len(result.assigned), team_id=team_id)
        total.assigned.extend(result.assigned)
        total.ready, total.workers = result.ready, result.workers
        if not again:
            break
    else:
        # The last loop took a flag it will not serve, and whoever set it ran no pass of its
        # own: queue one (behind other teams' passes, rather than loop on).
        request_pass(team_id)
    total.duration = time.perf_counter() - started
    return total


def _one_pass(team_id: uuid.UUID) -> tuple[PassResult | None, bool]:
    """One pass under the team's pass lock: (None, False) when another pass holds it; else
    its result, and whether another pass was asked for while it ran."""
    result = PassResult(team_id)
    marked = False
    try:
        with session_scope() as session:
            team = session.execute(Q["pass_start"], {"team_id": team_id}).first()
            if team is not None and not team.locked:
                return None, False
            _mark_running(team_id)
            marked = True
            if team is not None and team.status == TeamStatus.ACTIVE.value:
                _assign(session, team, result)
            published = events.take_pending(session)
    except _CapacityChanged:
        log.info("team %s: a worker's capacity changed during the pass; passing again", team_id)
        _deliver(team_id, [], [])  # clears the running mark, as every pass that set it does
        return PassResult(team_id), True
    except Exception as exc:
        if not marked:
            raise
        if isinstance(exc, OperationalError) and isinstance(exc.orig, DeadlockDetected):
            # Broken by PostgreSQL against a graph edit locking the same tasks: nothing
            # committed, and the next loop passes again.
            log.info("team %s: the pass was a deadlock's victim; passing again", team_id)
            _deliver(team_id, [], [])
            return PassResult(team_id), True
        _abandon(team_id)
        raise
    return result, _deliver(team_id, result.assigned, published)


def _abandon(team_id: uuid.UUID) -> None:
    """A pass that failed: its running mark goes, and a pass asked for meanwhile is queued
    rather than left to the flag only this pass would have taken."""
    if _deliver(team_id, [], []):
        request_pass(team_id)


class _CapacityChanged(Exception):
    """A worker went offline or lost capacity between the pass's read and its assignment."""


def _assign(session: Session, team: Any, result: PassResult) -> None:
    team_id = result.team_id
    if team.token_budget is not None and _budget_spent(session, team_id, team.token_budget):
        return
    work = session.execute(Q["workers_and_ready_tasks"], {"team_id": team_id}).one()
    loads = [_Candidate.of(w) for w in work.workers]
    result.workers = len(loads)
    ready = [_Ready(uuid.UUID(t["id"]), t["priority"], t["required_skills"]) for t in work.ready]
    result.ready = len(ready)
    if not loads:  # the ready tasks read are as many as the free capacity: none here
        _say_if_stalled(session, team_id)
    elif loads and team.status_reason == NO_WORKERS:
        session.execute(_UNSTALLED, {"team_id": team_id, "reason": NO_WORKERS})
    if not ready:
        return
    chosen: list[dict[str, object]] = []
    for task in ready:
        free = [w for w in loads if w.current_workload < w.max_concurrent_tasks]
        if not free:
            break
        best = SCORER.find_best_worker(task, free)
        parts = SCORER.breakdown(task, best)
        chosen.append(
            {
                "task_id": task.id,
                "worker_id": best.id,
                "agent_id": best.agent_id,
                "score": parts.total,
                "breakdown": json.dumps(parts.as_dict()),
                "explanation": SCORER.explain(task, best),
            }
        )
        best.current_workload += 1
    moved = session.execute(
        Q["assign"],
        {
            "team_id": team_id,
            "manager_id": team.manager_id,
            "manager_agent_id": team.manager_agent_id,
            **{
                column: [c[key] for c in chosen]
                for column, key in (
                    ("task_ids", "task_id"),
                    ("worker_ids", "worker_id"),
                    ("agent_ids", "agent_id"),
                    ("scores", "score"),
                    ("breakdowns", "breakdown"),
                    ("explanations", "explanation"),
                )
            },
        },
    ).all()
    if moved and not moved[0].fits:
        raise _CapacityChanged(team_id)
    events.written(
        session,
        [
            events.Event(
                team_id,
                "task.assigned",
                row.id,
                {"worker_id": str(row.assigned_to), "score": row.score},
            )
            for row in moved
        ],
    )
    result.assigned = [
        streams.Assignment(row.id, row.assigned_to, row.priority, row.assignment) for row in moved
    ]


def _deliver(
    team_id: uuid.UUID, assigned: list[streams.Assignment], published: list[events.Event]
) -> bool:
    """After the commit, one round trip: emit the assignments, publish the events, and take
    the flag of a pass asked for meanwhile."""
    try:
        # One MULTI: the running mark goes with the flag's taking (see _flag_again).
        pipe = get_redis().pipeline(transaction=True)
        queued = streams.queue_emit(pipe, team_id, assigned) if assigned else 0
        events.queue(pipe, published)
        pipe.delete(keys.pass_running(team_id))
        pipe.getdel(keys.pass_again(team_id))
        replies = pipe.execute(raise_on_error=False)
    except redis.RedisError as exc:
        # Committed but not delivered: reconciliation re-emits them.
        log.warning("assignments of team %s not emitted: %s", team_id, exc)
        return False
    if queued:
        try:
            streams.emitted(replies[:queued])
        except redis.RedisError as exc:
            log.warning("assignments of team %s not emitted: %s", team_id, exc)
    again = replies[-1]
    return again is not None and not isinstance(again, Exception)


_TOKENS_USED = text(
    "SELECT coalesce(sum(total_tokens_used), 0) FROM team_members WHERE team_id = :team_id"
)
# The team stops taking new work when its token budget is spent; work in flight finishes.
_BUDGET_PAUSE = text(
    """
    UPDATE teams SET status = 'paused', paused_at = now(), updated_at = now(),
        status_reason = :reason
    WHERE id = :team_id AND status = 'active'
    RETURNING id
    """
)


def _budget_spent(session: Session, team_id: uuid.UUID, budget: int) -> bool:
    used = int(session.execute(_TOKENS_USED, {"team_id": team_id}).scalar_one())
    if used < budget:
        return False
    reason = f"token budget exhausted: {used} of {budget} tokens used"
    if session.execute(_BUDGET_PAUSE, {"team_id": team_id, "reason": reason}).first():
        events.record(
            session, team_id, "team.budget_exhausted", status="paused", used=used, budget=budget
        )
        log.warning("team %s paused: %s", team_id, reason)
    return True


# Why an active team's ready tasks wait, when no worker could ever take them.
NO_WORKERS = "no worker can take its tasks: add a worker member, or set an offline one idle"
_STALLED = text(
    """
    UPDATE teams SET status_reason = :reason, updated_at = now()
    WHERE id = :team_id AND status = 'active' AND status_reason IS NULL
      AND NOT EXISTS (SELECT 1 FROM team_members
                      WHERE team_id = :team_id AND role = 'worker' AND status <> 'offline')
      AND EXISTS (SELECT 1 FROM tasks
                  WHERE team_id = :team_id AND status = 'pending' AND NOT is_summary)
    RETURNING id
    """
)
_UNSTALLED = text(
    "UPDATE teams SET status_reason = NULL, updated_at = now() "
    "WHERE id = :team_id AND status_reason = :reason"
)


def _say_if_stalled(session: Session, team_id: uuid.UUID) -> None:
    """No free worker: when the team has tasks ready and no worker that is not offline (not
    merely busy ones), say so on the team, once, with a team.stalled event."""
    if session.execute(_STALLED, {"team_id": team_id, "reason": NO_WORKERS}).first():
        events.record(session, team_id, "team.stalled", reason=NO_WORKERS)
        log.warning("team %s: %s", team_id, NO_WORKERS)


# Longer than any pass: a mark left by a process that died goes, and then flaggers retry.
RUNNING_MARK_MS = 10_000


def _mark_running(team_id: uuid.UUID) -> None:
    """Mark that this process holds the team's pass and has not yet taken the flag."""
    with contextlib.suppress(redis.RedisError):
        get_redis().set(keys.pass_running(team_id), "1", px=RUNNING_MARK_MS)


def _flag_again(team_id: uuid.UUID) -> bool:
    """Ask the pass holder to go round again; True when it is sure to see the flag: the
    running mark was there when the flag was set (both in one MULTI), and the holder deletes
    the mark and takes the flag together, after its commit. Without it, the caller tries
    the pass itself, as a pass that ran on a stale flag costs less than one never run."""
    try:
        pipe = get_redis().pipeline(transaction=True)
        pipe.set(keys.pass_again(team_id), "1", ex=60)
        pipe.exists(keys.pass_running(team_id))
        return bool(pipe.execute()[1])
    except redis.RedisError:
        return False


def request_pass(team_id: uuid.UUID, countdown: float = 0.0) -> None:
    """Ask for a pass of this team soon; requests close together make one pass."""
    try:
        first = get_redis().set(keys.pass_requested(team_id), "1", nx=True, px=1000)
    except redis.RedisError as exc:
        log.warning("pass for team %s not requested (beat will run it): %s", team_id, exc)
        return
    if not first and countdown <= 0:
        return
    from orchestration.tasks import orchestrate_team

    try:
        orchestrate_team.apply_async(
            args=[str(team_id)],
            countdown=countdown or None,
            expires=max(30.0, countdown + 30.0),
        )
    except Exception as exc:  # the broker is Redis: any failure here leaves it to beat
        log.warning("pass for team %s not queued (beat will run it): %s", team_id, exc)


def clear_request(team_id: uuid.UUID) -> None:
    with contextlib.suppress(redis.RedisError):
        get_redis().delete(keys.pass_requested(team_id))


def active_team_ids() -> list[uuid.UUID]:
    with events.transaction() as session:
        return list(
            session.scalars(
                select(Team.id).where(Team.status == TeamStatus.ACTIVE).order_by(Team.id)
            )
        )


def working_team_ids() -> list[uuid.UUID]:
    """Teams whose streams may hold work: active ones and paused ones finishing theirs."""
    with events.transaction() as session:
        return list(
            session.scalars(
                select(Team.id)
                .where(Team.status.in_([TeamStatus.ACTIVE, TeamStatus.PAUSED]))
                .order_by(Team.id)
            )
        )


@dataclass
class ReconcileResult:
    team_id: uuid.UUID
    reemitted: int = 0
    trimmed: int = 0


def reconcile(team_id: uuid.UUID, grace: float | None = None) -> ReconcileResult:
    """Re-emit assigned tasks whose stream entry is gone (Redis lost it), then trim what has
    been acknowledged. An assigned task changed within `grace` seconds is left alone (its entry
    may be on its way), and so is a running task whose consumer's heartbeat touched it within
    the visibility timeout (it is still being worked on)."""
    settings = get_settings()
    grace = settings.reconcile_interval if grace is None else grace
    result = ReconcileResult(team_id)
    live = streams.live_entries(team_id)
    with events.transaction() as session:
        rows = session.execute(
            text(
                """
                SELECT id, assigned_to, priority, assignment FROM tasks
                WHERE team_id = :team_id AND assigned_to IS NOT NULL AND (
                    (status = 'assigned' AND updated_at < now() - make_interval(secs => :grace))
                    OR (status IN ('in_progress', 'review')
                        AND updated_at < now() - make_interval(secs => :silence)))
                """
            ),
            {
                "team_id": team_id,
                "grace": float(grace),
                "silence": max(float(grace), settings.visibility_timeout),
            },
        ).all()
    missing = [
        streams.Assignment(r.id, r.assigned_to, r.priority, r.assignment)
        for r in rows
        if r.id not in live
    ]
    if missing:
        log.warning(
            "team %s: re-emitting %d assignments with no stream entry", team_id, len(missing)
        )
        ids = streams.emit(team_id, missing)
        live.update({a.task_id: i for a, i in zip(missing, ids, strict=True)})
        result.reemitted = len(missing)
        metrics.inc("orch_reemitted", len(missing), team_id=team_id)
    result.trimmed = streams.trim(team_id, live)
    return result
