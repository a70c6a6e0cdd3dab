"""State changes of teams and tasks.

Every change is one conditional statement (db/queries.sql or a conditional update here) that
moves a row only from the state it expects, inside a transaction that also records its events.
Readiness is kept incrementally: a completed task lowers its dependents' unmet counts and frees
the ones with nothing left to wait for; a final subtask rolls its summary task up.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session

from db.engine import retry_deadlocks, statement_scope
from db.models import (
    FINAL,
    IN_FLIGHT,
    STOPPING,
    MemberRole,
    Task,
    TaskStatus,
    Team,
    TeamMember,
    TeamStatus,
)
from db.queries import Q
from orchestration import events, streams
from orchestration.agents.base import AgentProfile, DependencyOutput, TaskContext, jsonable
from orchestration.errors import InvalidTransition, NotFound
from orchestration.locks import lock_graph

# ---------------------------------------------------------------------------------------------
# Teams


_TEAM_MOVES: dict[str, tuple[TeamStatus, TeamStatus, str]] = {
    "start": (TeamStatus.INACTIVE, TeamStatus.ACTIVE, "team.started"),
    "pause": (TeamStatus.ACTIVE, TeamStatus.PAUSED, "team.paused"),
    "resume": (TeamStatus.PAUSED, TeamStatus.ACTIVE, "team.resumed"),
}
# What to do instead, by the team's status: the move that gets it where the caller meant.
_TEAM_HINTS = {
    TeamStatus.INACTIVE: "start it first",
    TeamStatus.ACTIVE: "it is running already",
    TeamStatus.PAUSED: "resume it to go on",
}


def _move_team(team_id: uuid.UUID, action: str) -> Team:
    source, target, kind = _TEAM_MOVES[action]
    values: dict[str, Any] = {"status": target, "updated_at": func.now(), "status_reason": None}
    if action == "start":
        values["started_at"] = func.now()
    if action == "pause":
        values["paused_at"] = func.now()
    with events.transaction() as session:
        team = session.execute(
            update(Team)
            .where(Team.id == team_id, Team.status == source)
            .values(**values)
            .returning(Team)
        ).scalar_one_or_none()
        if team is None:
            current = session.get(Team, team_id)
            if current is None:
                raise NotFound(f"team {team_id} not found")
            raise InvalidTransition(
                f"cannot {action} a team that is {current.status.value}: "
                f"{_TEAM_HINTS[current.status]}"
            )
        events.record(session, team_id, kind, status=target.value)
    if target is TeamStatus.ACTIVE:
        _request_pass(team_id)
    return team


def start_team(team_id: uuid.UUID) -> Team:
    """inactive -> active: passes begin."""
    return _move_team(team_id, "start")


def pause_team(team_id: uuid.UUID) -> Team:
    """active -> paused: no new assignments; work in flight finishes."""
    return _move_team(team_id, "pause")


def resume_team(team_id: uuid.UUID) -> Team:
    """paused -> active (refused while the token budget is spent)."""
    with events.transaction() as session:
        team = session.get(Team, team_id)
        if team is not None and team.token_budget is not None:
            used = session.execute(
                select(func.coalesce(func.sum(TeamMember.total_tokens_used), 0)).where(
                    TeamMember.team_id == team_id
                )
            ).scalar_one()
            if used >= team.token_budget:
                raise InvalidTransition(
                    f"the team's token budget is spent ({used} of {team.token_budget} tokens); "
                    "raise token_budget before resuming"
                )
    return _move_team(team_id, "resume")


# ---------------------------------------------------------------------------------------------
# Execution: claim, review, complete, retry, fail


@dataclass(frozen=True)
class Claimed:
    """A task taken for execution by one consumer, with what its agent needs."""

    task_id: uuid.UUID
    team_id: uuid.UUID
    status: TaskStatus
    previous_status: TaskStatus
    attempts: int
    revision_count: int
    max_revisions: int
    has_criteria: bool
    output: dict[str, Any] | None
    context: TaskContext
    # First start of a task that waited for dependencies: how long after the last completed.
    unblock_latency: float | None = None


@dataclass(frozen=True)
class ClaimRequest:
    """A stream entry asking to run its task as its assigned worker, under a fresh claim token:
    for its assignment (None: any, for entries emitted before they carried it)."""

    task_id: uuid.UUID
    worker_id: uuid.UUID
    token: str
    assignment: uuid.UUID | None = None


def claim(task_id: uuid.UUID, worker_id: uuid.UUID, token: str) -> Claimed | None:
    """Take the task for its assigned worker; None when it is no longer that worker's to run."""
    return claim_many([ClaimRequest(task_id, worker_id, token)])[0]


def claim_many(requests: list[ClaimRequest]) -> list[Claimed | None]:
    """Take several tasks in one transaction (one statement): for each request, what its agent
    needs, or None when the task is no longer that worker's to run (or another request of the
    batch took it)."""
    if not requests:
        return []
    with events.transaction() as session:
        rows = {
            (row["id"], row["claim"]): row
            for row in session.execute(
                Q["claim"],
                {
                    "task_ids": [r.task_id for r in requests],
                    "worker_ids": [r.worker_id for r in requests],
                    "claims": [r.token for r in requests],
                    "assignments": [r.assignment for r in requests],
                },
            ).mappings()
        }
        if not rows:
            return [None] * len(requests)
        first = [row for row in rows.values() if row["previous_status"] == "assigned"]
        events.written(
            session,
            [
                events.Event(
                    row["team_id"],
                    "task.started",
                    row["id"],
                    {"worker_id": str(row["assigned_to"])},
                )
                for row in first
            ],
        )
        below = [row["id"] for row in first if row["parent_task_id"] is not None]
        if below:
            session.execute(Q["start_ancestors"], {"task_ids": below})
        waiting = [row["id"] for row in rows.values() if row["has_dependencies"]]
        outputs: dict[uuid.UUID, list[Any]] = {}
        if waiting:
            for dep in session.execute(Q["dependency_outputs"], {"task_ids": waiting}):
                outputs.setdefault(dep.for_task, []).append(dep)
        return [
            _claimed(row, outputs.get(r.task_id, []))
            if (row := rows.get((r.task_id, r.token))) is not None
            else None
            for r in requests
        ]


def _claimed(row: Any, deps: list[Any]) -> Claimed:
    previous = TaskStatus(row["previous_status"])
    agent = AgentProfile(
        member_id=row["assigned_to"],
        agent_id=row["agent_id"],
        role=str(row["agent_role"]),
        specialization=row["agent_specialization"],
        skills=dict(row["agent_skills"] or {}),
    )
    context = TaskContext(
        task_id=row["id"],
        team_id=row["team_id"],
        title=row["title"],
        description=row["description"],
        acceptance_criteria=list(row["acceptance_criteria"] or []),
        required_skills=list(row["required_skills"] or []),
        input_data=dict(row["input_data"] or {}),
        agent=agent,
        attempt=row["attempts"],
        revision=row["revision_count"],
        feedback=row["review_feedback"],
        dependency_outputs=[DependencyOutput(d.id, d.title, d.output_data) for d in deps],
    )
    return Claimed(
        task_id=row["id"],
        team_id=row["team_id"],
        status=TaskStatus(row["status"]),
        previous_status=previous,
        attempts=row["attempts"],
        revision_count=row["revision_count"],
        max_revisions=row["max_revisions"],
        has_criteria=bool(row["acceptance_criteria"]),
        output=row["output_data"],
        context=context,
        unblock_latency=_waited(previous, row["start_time"], [d.completion_time for d in deps]),
    )


def _waited(previous: TaskStatus, started: Any, completions: list[Any]) -> float | None:
    done = [c for c in completions if c is not None]
    if previous is not TaskStatus.ASSIGNED or not done or started is None:
        return None
    return max(0.0, (started - max(done)).total_seconds())


def agent_profile(member: TeamMember | None) -> AgentProfile:
    """A team member as the agent plug-ins see it."""
    if member is None:
        return AgentProfile(None, "unknown", MemberRole.WORKER.value, None, {})
    return AgentProfile(
        member_id=member.id,
        agent_id=member.agent_id,
        role=member.role.value,
        specialization=member.specialization,
        skills=dict(member.skills or {}),
    )


def touch(running: list[tuple[uuid.UUID, str]]) -> None:
    """A consumer's heartbeat over (task id, claim) pairs: these runs are alive, so
    reconciliation leaves them be."""
    if not running:
        return
    with events.transaction() as session:
        session.execute(
            text(
                "UPDATE tasks t SET updated_at = now() "
                "FROM unnest(CAST(:ids AS uuid[]), CAST(:claims AS text[])) AS r(id, claim) "
                "WHERE t.id = r.id AND t.claim = r.claim "
                "AND t.status IN ('in_progress', 'review')"
            ),
            {"ids": [i for i, _ in running], "claims": [c for _, c in running]},
        )


def lost_claims(running: list[tuple[uuid.UUID, str]]) -> set[uuid.UUID]:
    """Of a consumer's runs (task id, claim), the tasks no longer theirs: cancelled, failed
    or claimed by another run meanwhile."""
    if not running:
        return set()
    with statement_scope() as conn:
        return set(
            conn.execute(
                Q["lost_claims"],
                {"task_ids": [i for i, _ in running], "claims": [c for _, c in running]},
            ).scalars()
        )


def team_manager(session: Session, team_id: uuid.UUID) -> TeamMember | None:
    """The team's manager (the first to join, if several)."""
    return session.execute(
        select(TeamMember)
        .where(TeamMember.team_id == team_id, TeamMember.role == MemberRole.MANAGER)
        .order_by(TeamMember.joined_at, TeamMember.id)
        .limit(1)
    ).scalar_one_or_none()


def _stored_json(value: Any) -> str | None:
    return None if value is None else json.dumps(jsonable(value))


def _usage(tokens: int, cost: Decimal) -> dict[str, Any]:
    return {"tokens": int(tokens), "cost": Decimal(cost)}


def submit_for_review(
    task_id: uuid.UUID, token: str, output: dict[str, Any], tokens: int, cost: Decimal
) -> bool:
    with events.transaction() as session:
        row = session.execute(
            Q["submit_for_review"],
            {
                "task_id": task_id,
                "claim": token,
                "output": _stored_json(output),
                **_usage(tokens, cost),
            },
        ).first()
        if row is None:
            return False
        team_id = session.execute(select(Task.team_id).where(Task.id == task_id)).scalar_one()
        events.record(session, team_id, "task.review", task_id)
        return True


def send_back(task_id: uuid.UUID, token: str, feedback: str) -> int | None:
    """The reviewer rejected the output: the revision number, or None if the claim is stale."""
    feedback = jsonable(feedback)
    with events.transaction() as session:
        revision = session.execute(
            Q["send_back"], {"task_id": task_id, "claim": token, "feedback": feedback}
        ).scalar_one_or_none()
        if revision is None:
            return None
        team_id = session.execute(select(Task.team_id).where(Task.id == task_id)).scalar_one()
        events.record(
            session, team_id, "task.revision", task_id, revision=revision, feedback=feedback
        )
        return int(revision)


def record_manager_usage(team_id: uuid.UUID, tokens: int, cost: Decimal) -> None:
    """The planner and the reviewer work as the team's manager: their usage counts on it."""
    if tokens <= 0 and cost <= 0:
        return
    with events.transaction() as session:
        manager = team_manager(session, team_id)
        if manager is None:
            return
        session.execute(
            update(TeamMember)
            .where(TeamMember.id == manager.id)
            .values(
                total_tokens_used=TeamMember.total_tokens_used + int(tokens),
                total_cost=TeamMember.total_cost + Decimal(cost),
                last_active_at=func.now(),
            )
        )


@dataclass(frozen=True)
class Completion:
    """An execution's outcome to commit: the task, the claim it ran under, the state it is
    expected to be in, and what it produced and used."""

    task_id: uuid.UUID
    token: str
    from_status: TaskStatus
    output: dict[str, Any] | None
    tokens: int = 0
    cost: Decimal = Decimal(0)


def complete(
    task_id: uuid.UUID,
    token: str,
    from_status: TaskStatus,
    output: dict[str, Any] | None,
    tokens: int = 0,
    cost: Decimal = Decimal(0),
) -> bool:
    """Finish the task and unblock what waited for it; False when the claim is stale."""
    done = complete_many([Completion(task_id, token, from_status, output, tokens, cost)])
    return task_id in done


def complete_many(
    completions: list[Completion], also: Callable[[Any], object] | None = None
) -> set[uuid.UUID]:
    """Finish several tasks in one transaction (one statement, then the unblocking and
    roll-ups they cause); returns the ids completed, leaving out stale claims. `also` queues
    Redis commands to send after the commit with the events (events.publish)."""
    if not completions:
        return set()
    with events.transaction(also) as session:
        done = session.execute(
            Q["complete"],
            {
                "task_ids": [c.task_id for c in completions],
                "claims": [c.token for c in completions],
                "from_statuses": [c.from_status.value for c in completions],
                "outputs": [_stored_json(c.output) for c in completions],
                "tokens": [int(c.tokens) for c in completions],
                "costs": [Decimal(c.cost) for c in completions],
            },
        ).all()
        events.written(
            session,
            [
                events.Event(
                    row.team_id,
                    "task.completed",
                    row.id,
                    {"worker_id": str(row.assigned_to) if row.assigned_to else None},
                )
                for row in done
            ],
        )
        by_team: dict[uuid.UUID, list[tuple[uuid.UUID, uuid.UUID | None, TaskStatus]]] = {}
        for row in done:
            by_team.setdefault(row.team_id, []).append(
                (row.id, row.parent_task_id, TaskStatus.COMPLETED)
            )
        # A statement of its own, not a column of the one above: that one's snapshot predates
        # an edge whose transaction held a finished task's row until it committed.
        ids = [row.id for row in done]
        dependents = (
            {r[0] for r in session.execute(_WITH_DEPENDENTS, {"ids": ids})} if ids else set()
        )
        # Teams in a fixed order: each settle takes its team's graph lock.
        for team_id in sorted(by_team):
            settle(session, team_id, by_team[team_id], dependents)
        return {row.id for row in done}


def retry_later(
    task_id: uuid.UUID,
    token: str,
    error: str,
    backoff: float,
    tokens: int = 0,
    cost: Decimal = Decimal(0),
) -> bool:
    """An attempt failed with attempts left: pending again after `backoff` seconds."""
    error = jsonable(error)
    with events.transaction() as session:
        row = session.execute(
            Q["retry_later"],
            {
                "task_id": task_id,
                "claim": token,
                "error": error,
                "backoff": float(backoff),
                **_usage(tokens, cost),
            },
        ).first()
        if row is None:
            return False
        events.record(
            session, row.team_id, "task.retrying", task_id, error=error, backoff=float(backoff)
        )
        return True


def fail(
    task_id: uuid.UUID,
    token: str | None,
    error: str,
    tokens: int = 0,
    cost: Decimal = Decimal(0),
) -> bool:
    """Fail the task for good (token None: whoever holds it); False when already settled."""
    error = jsonable(error)
    with events.transaction() as session:
        gone = session.execute(
            Q["fail"],
            {"task_id": task_id, "claim": token, "error": error, **_usage(tokens, cost)},
        ).first()
        if gone is None:
            return False
        events.record(session, gone.team_id, "task.failed", task_id, error=error)
        settle(session, gone.team_id, [(gone.id, gone.parent_task_id, TaskStatus.FAILED)])
        return True


_WITH_DEPENDENTS = text(
    "SELECT DISTINCT depends_on_task_id FROM task_dependencies "
    "WHERE depends_on_task_id = ANY(CAST(:ids AS uuid[]))"
)


def settle(
    session: Session,
    team_id: uuid.UUID,
    finished: list[tuple[uuid.UUID, uuid.UUID | None, TaskStatus]],
    dependents: set[uuid.UUID] | None = None,
) -> None:
    """After tasks of the team reached a final state: unblock dependents of completed ones, end
    the same way those waiting for failed or cancelled ones (they can never run), and roll up
    their summary tasks, repeating for every task that becomes final.
    `dependents`: which of `finished` have dependents, when the caller knows already."""
    queue = list(finished)
    locked = False
    while queue:
        completed = [task_id for task_id, _, status in queue if status is TaskStatus.COMPLETED]
        ended = [(task_id, status) for task_id, _, status in queue if status in STOPPING]
        if dependents is not None:
            unblocking = [task_id for task_id in completed if task_id in dependents]
            dependents = None  # summary tasks rolled up below are not known: ask
        elif completed:
            unblocking = [r[0] for r in session.execute(_WITH_DEPENDENTS, {"ids": completed})]
        else:
            unblocking = []
        parents = [(task_id, parent_id) for task_id, parent_id, _ in queue if parent_id]
        queue = []
        if not unblocking and not parents and not ended:
            break
        if not locked:
            # Serialises with dependency edits and sibling roll-ups; the next statement reads
            # what they committed.
            lock_graph(session, team_id)
            locked = True
        if unblocking:
            counted = session.execute(Q["dependents_met"], {"task_ids": unblocking}).all()
            # The statement logged these itself.
            events.written(
                session,
                [
                    events.Event(team_id, "task.unblocked", r.id, {"after": r.after})
                    for r in counted
                    if r.freed
                ],
            )
            summaries = [r.id for r in counted if r.freed and r.is_summary]
            if summaries:
                after = {r.id: r.after for r in counted}
                below = session.execute(Q["free_subtasks"], {"task_ids": summaries}).all()
                events.record_many(
                    session,
                    [
                        events.Event(
                            team_id,
                            "task.unblocked",
                            r.id,
                            # A subtask freed with its summary task: after the same one.
                            {"after": after.get(r.id, str(unblocking[0]))},
                        )
                        for r in below
                    ],
                )
        if ended:
            stopped = session.execute(
                Q["stop_dependents"],
                {"task_ids": [t for t, _ in ended], "statuses": [s.value for _, s in ended]},
            ).all()
            events.written(  # the statement logged these itself
                session,
                [
                    events.Event(
                        team_id,
                        f"task.{r.status}",
                        r.id,
                        {"error": r.error_message, "dependency": str(r.cause)},
                    )
                    for r in stopped
                ],
            )
            queue += [(r.id, r.parent_task_id, TaskStatus(r.status)) for r in stopped]
        for task_id, parent_id in parents:
            rolled = session.execute(
                Q["roll_up"],
                {"task_id": parent_id, "error": f"subtask {task_id} failed"},
            ).first()
            if rolled is not None:
                rolled_status = TaskStatus(rolled.status)
                events.record(
                    session, team_id, f"task.{rolled_status.value}", rolled.id, summary=True
                )
                queue.append((rolled.id, rolled.parent_task_id, rolled_status))


# ---------------------------------------------------------------------------------------------
# Cancel and retry (API)


_SUBTREE = text(
    """
    WITH RECURSIVE sub(id) AS (
        SELECT CAST(:task_id AS uuid)
        UNION
        SELECT t.id FROM tasks t JOIN sub ON t.parent_task_id = sub.id
    )
    SELECT id FROM sub
    """
)

_CANCEL = text(
    """
    UPDATE tasks t
    SET status = 'cancelled', claim = NULL, completion_time = now(), updated_at = now()
    FROM (SELECT id, status FROM tasks WHERE id = ANY(CAST(:ids AS uuid[])) FOR UPDATE) old
    WHERE t.id = old.id AND t.status NOT IN ('completed', 'failed', 'cancelled')
    RETURNING t.id, t.parent_task_id, t.assigned_to, old.status AS previous_status
    """
)

_RELEASE = text(
    """
    UPDATE team_members m
    SET current_workload = m.current_workload - n.released,
        status = CASE WHEN m.status = 'active' AND m.current_workload = n.released THEN 'idle'
                      ELSE m.status END
    FROM (SELECT w AS id, count(*) AS released FROM unnest(CAST(:workers AS uuid[])) AS w
          GROUP BY w) n
    WHERE m.id = n.id
    """
)


def _task_of_team(session: Session, team_id: uuid.UUID, task_id: uuid.UUID) -> Task:
    task = session.execute(
        select(Task).where(Task.id == task_id, Task.team_id == team_id).with_for_update()
    ).scalar_one_or_none()
    if task is None:
        raise NotFound(f"task {task_id} not found")
    return task


@retry_deadlocks
def cancel_task(team_id: uuid.UUID, task_id: uuid.UUID) -> Task:
    """Cancel a task that has not finished, and everything unfinished below it; the
    processes running any of them hear it at once (streams.CANCEL_STREAM)."""
    released: list[uuid.UUID] = []
    stopping: list[uuid.UUID] = []

    def ring(pipe: Any) -> None:
        streams.queue_cancelled(pipe, stopping)

    with events.transaction(also=ring) as session:
        lock_graph(session, team_id)
        task = _task_of_team(session, team_id, task_id)
        if task.status in FINAL:
            raise InvalidTransition(f"cannot cancel a task that is {task.status.value}")
        ids = [r.id for r in session.execute(_SUBTREE, {"task_id": task_id})]
        cancelled = session.execute(_CANCEL, {"ids": ids}).all()
        for r in cancelled:
            if r.assigned_to is not None and TaskStatus(r.previous_status) in IN_FLIGHT:
                released.append(r.assigned_to)
                stopping.append(r.id)
        if released:
            session.execute(_RELEASE, {"workers": released})
        events.record_many(
            session, [events.Event(team_id, "task.cancelled", r.id, {}) for r in cancelled]
        )
        # Every task cancelled, so that what waits for any of them stops too.
        settle(
            session, team_id, [(r.id, r.parent_task_id, TaskStatus.CANCELLED) for r in cancelled]
        )
        session.flush()
        session.refresh(task)
    _request_pass(team_id)
    return task


@retry_deadlocks
def retry_task(team_id: uuid.UUID, task_id: uuid.UUID) -> Task:
    """Run a failed or cancelled task again (for a summary task: its failed or cancelled
    subtasks); its summary tasks reopen, and so does, in turn, every task its failure or
    cancellation stopped (stop_dependents). Refused while the task, or a task above it, waits
    for one that failed or was cancelled and is not retried with it: that one comes first."""
    with events.transaction() as session:
        lock_graph(session, team_id)
        task = _task_of_team(session, team_id, task_id)
        if task.status not in (TaskStatus.FAILED, TaskStatus.CANCELLED):
            raise InvalidTransition(f"cannot retry a task that is {task.status.value}")
        subtree, ancestors = _retried_around(session, task_id)
        waiting = session.execute(
            _WAITS_ON_ENDED, {"ids": [*subtree, *ancestors], "outside": subtree}
        ).first()
        if waiting is not None:
            raise InvalidTransition(
                f"task {waiting.task_id} waits for {waiting.dep_id}, which "
                f"{'failed' if waiting.status == 'failed' else 'was cancelled'}: retry that "
                "first (or a summary task above both)"
            )
        reopened = _reopen(session, subtree, ancestors)
        everything = list(reopened)
        # What their failure or cancellation stopped runs again too, round by round.
        while reopened:
            rows = session.execute(_STOPPED_BY, {"team_id": team_id, "ids": reopened}).all()
            stopped = {r.id for r in rows}
            reopened = [
                reset
                for r in rows
                if r.parent_task_id not in stopped  # a subtask comes with its summary
                for reset in _reopen(session, *_retried_around(session, r.id))
            ]
            everything += reopened
        # One of them may wait for another task that failed or was cancelled: it stops again.
        ended = session.execute(_ENDED_DEPENDENCIES, {"ids": everything}).all()
        if ended:
            settle(
                session, team_id, [(r.id, r.parent_task_id, TaskStatus(r.status)) for r in ended]
            )
        events.record(session, team_id, "task.retried", task_id)
        session.flush()
        session.refresh(task)
    _request_pass(team_id)
    return task


def _retried_around(
    session: Session, task_id: uuid.UUID
) -> tuple[list[uuid.UUID], list[uuid.UUID]]:
    """The failed or cancelled tasks of task_id's subtree, parents first, and the tasks above
    it, the highest first. The status is read on the way down (ix_tasks_parent): a join back to
    tasks was planned for the whole table and read it all for each task retried."""
    subtree = session.execute(
        text(
            """
            WITH RECURSIVE sub(id, status, depth) AS (
                SELECT id, status, 0 FROM tasks WHERE id = :task_id
                UNION ALL
                SELECT t.id, t.status, sub.depth + 1
                FROM tasks t JOIN sub ON t.parent_task_id = sub.id
            )
            SELECT id FROM sub WHERE status IN ('failed', 'cancelled') ORDER BY depth
            """
        ),
        {"task_id": task_id},
    ).scalars()
    ancestors = session.execute(
        text(
            """
            WITH RECURSIVE up(id, depth) AS (
                SELECT parent_task_id, 1 FROM tasks
                WHERE id = :task_id AND parent_task_id IS NOT NULL
                UNION ALL
                SELECT t.parent_task_id, up.depth + 1 FROM tasks t JOIN up ON t.id = up.id
                WHERE t.parent_task_id IS NOT NULL
            )
            SELECT id FROM up ORDER BY depth DESC
            """
        ),
        {"task_id": task_id},
    ).scalars()
    return list(subtree), list(ancestors)


def _reopen(
    session: Session, subtree: list[uuid.UUID], ancestors: list[uuid.UUID]
) -> list[uuid.UUID]:
    """Reopen the summary tasks above (top-down), then reset the subtree's failed and cancelled
    tasks (parents first); the ids of those that were failed or cancelled."""
    reopened = [
        ancestor_id
        for ancestor_id in ancestors
        if session.execute(_REOPEN_SUMMARY, {"id": ancestor_id}).first() is not None
    ]
    for target_id in subtree:
        session.execute(_RESET, {"id": target_id})
    return [*reopened, *subtree]


# Of the tasks :ids, one that waits for a task failed or cancelled outside :outside.
_WAITS_ON_ENDED = text(
    """
    SELECT d.task_id, d.depends_on_task_id AS dep_id, dep.status
    FROM task_dependencies d JOIN tasks dep ON dep.id = d.depends_on_task_id
    WHERE d.task_id = ANY(CAST(:ids AS uuid[]))
      AND dep.status IN ('failed', 'cancelled')
      AND NOT dep.id = ANY(CAST(:outside AS uuid[]))
    ORDER BY d.task_id, d.depends_on_task_id
    LIMIT 1
    """
)

# The failed or cancelled tasks, other than :ids, that one of :ids waits for.
_ENDED_DEPENDENCIES = text(
    """
    SELECT DISTINCT dep.id, dep.parent_task_id, dep.status::text AS status
    FROM task_dependencies d JOIN tasks dep ON dep.id = d.depends_on_task_id
    WHERE d.task_id = ANY(CAST(:ids AS uuid[])) AND NOT dep.id = ANY(CAST(:ids AS uuid[]))
      AND dep.status IN ('failed', 'cancelled')
    """
)

# The tasks of :team_id that a failure or cancellation of one of :ids ended (and are ended
# still), read by ix_tasks_stopped_by.
_STOPPED_BY = text(
    """
    SELECT id, parent_task_id FROM tasks
    WHERE stopped_by = ANY(CAST(:ids AS uuid[])) AND team_id = :team_id
      AND status IN ('failed', 'cancelled')
    ORDER BY id
    """
)


# A retried task waits again if a dependency of it or of a task above it is unmet.
_RESET = text(
    """
    UPDATE tasks t
    SET status = CASE
            WHEN t.unmet_dependencies > 0 OR p.status = 'blocked' THEN 'blocked'::task_status
            ELSE 'pending' END,
        assigned_to = NULL, claim = NULL, attempts = 0, revision_count = 0, stopped_by = NULL,
        error_message = NULL, review_feedback = NULL, output_data = NULL,
        not_before = NULL, start_time = NULL, completion_time = NULL, updated_at = now()
    FROM tasks self LEFT JOIN tasks p ON p.id = self.parent_task_id
    WHERE t.id = :id AND self.id = t.id AND t.status IN ('failed', 'cancelled')
    """
)

# A summary task above a retried one reopens (top-down); should another of its subtasks still
# be failed, the next roll-up fails it again.
_REOPEN_SUMMARY = text(
    """
    UPDATE tasks t
    SET status = CASE
            WHEN EXISTS (SELECT 1 FROM tasks c WHERE c.parent_task_id = t.id
                         AND c.status IN ('completed', 'assigned', 'in_progress', 'review'))
                THEN 'in_progress'::task_status
            WHEN t.unmet_dependencies > 0 OR p.status = 'blocked' THEN 'blocked'
            ELSE 'pending' END,
        error_message = NULL, stopped_by = NULL, completion_time = NULL, updated_at = now()
    FROM tasks self LEFT JOIN tasks p ON p.id = self.parent_task_id
    WHERE t.id = :id AND self.id = t.id AND t.status IN ('failed', 'cancelled')
    RETURNING t.id
    """
)


def _request_pass(team_id: uuid.UUID) -> None:
    from orchestration.orchestrator import request_pass

    request_pass(team_id)
