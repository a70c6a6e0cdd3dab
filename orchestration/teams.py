"""Teams, members, API tokens and the assignment log; plus the read-only probes the API's
operations routes need (readiness, pipeline gauges, the newest event id).

Every function opens its own unit of work (db.engine.session_scope) and returns ORM rows
detached (the sessions do not expire on commit), so callers read attributes freely.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy import delete, func, select, text, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.engine import session_scope
from db.models import (
    IN_FLIGHT,
    OPEN_DECOMPOSITION,
    ApiToken,
    Decomposition,
    DecompositionStatus,
    MemberRole,
    MemberStatus,
    Message,
    Task,
    TaskStatus,
    Team,
    TeamMember,
    TeamStatus,
)
from db.queries import Q
from orchestration import events, keys, metrics
from orchestration.config import get_settings
from orchestration.errors import Conflict, InvalidInput, InvalidTransition, NotFound
from orchestration.paging import decode_cursor, encode_cursor, timestamp_and_id
from orchestration.redis_client import get_redis

log = logging.getLogger(__name__)

ASSIGNMENT_MESSAGE = "task_assignment"
TOKEN_PREFIX = "orch_"
TOKEN_PREFIX_LENGTH = 12
TOKEN_TOUCH_INTERVAL = timedelta(minutes=1)
ALL_TASK_STATUSES = tuple(s.value for s in TaskStatus)


# --- teams -------------------------------------------------------------------------------------


def create_team(name: str, description: str | None = None, token_budget: int | None = None) -> Team:
    with session_scope() as session:
        team = Team(
            name=name,
            description=description,
            status=TeamStatus.INACTIVE,
            token_budget=token_budget,
        )
        session.add(team)
        session.flush()
        session.refresh(team)
        return team


TEAM_EDITABLE = ("name", "description", "token_budget")


def update_team(team_id: uuid.UUID, changes: dict[str, Any]) -> Team:
    """Rename, describe, or set or clear (None) the token budget. A team paused by a spent
    budget stays paused until it is resumed."""
    values = {k: v for k, v in changes.items() if k in TEAM_EDITABLE}
    with events.transaction() as session:
        team = session.get(Team, team_id, with_for_update=True)
        if team is None:
            raise NotFound(f"team {team_id} not found")
        for name, value in values.items():
            setattr(team, name, value)
        team.updated_at = func.now()
        session.flush()
        session.refresh(team)
        if values:
            events.record(session, team_id, "team.updated", **values)
    if "token_budget" in values:
        from orchestration.orchestrator import request_pass

        request_pass(team_id)
    return team


def delete_team(team_id: uuid.UUID) -> None:
    """Delete the team and everything it holds: members, tasks and their edges, its log and
    history, its tokens; then its Redis streams and its metrics. Refused while it is active or
    has work in flight (pause it, let that work finish or cancel it, then delete): a worker
    would otherwise commit an outcome for a task that is gone."""
    with session_scope() as session:
        team = session.get(Team, team_id, with_for_update=True)
        if team is None:
            raise NotFound(f"team {team_id} not found")
        if team.status is TeamStatus.ACTIVE:
            raise InvalidTransition(
                f"team {team_id} is active: pause it first, then delete it once its work in "
                "flight has finished"
            )
        in_flight = session.execute(
            select(func.count())
            .select_from(Task)
            .where(Task.team_id == team_id, Task.status.in_(IN_FLIGHT))
        ).scalar_one()
        if in_flight:
            raise InvalidTransition(
                f"team {team_id} has {in_flight} task(s) assigned or running: let them finish "
                "(or cancel them), then delete it"
            )
        session.execute(delete(Team).where(Team.id == team_id))
    try:
        get_redis().delete(*keys.of_team(team_id))
        metrics.forget_team(team_id)
    except redis.RedisError as exc:
        # PostgreSQL is the truth: the team is gone; its keys only take space.
        log.warning("team %s deleted; its Redis keys not removed: %s", team_id, exc)
    log.info("team %s deleted", team_id)


def list_teams(team_ids: list[uuid.UUID] | None) -> list[Team]:
    """Every team (None), or the named ones that exist; oldest first."""
    with session_scope() as session:
        query = select(Team).order_by(Team.created_at, Team.id)
        if team_ids is not None:
            if not team_ids:
                return []
            query = query.where(Team.id.in_(team_ids))
        return list(session.scalars(query))


def get_team(team_id: uuid.UUID) -> Team:
    with session_scope() as session:
        team = session.get(Team, team_id)
        if team is None:
            raise NotFound(f"team {team_id} not found")
        return team


def task_counts(team_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, dict[str, int]]:
    """Tasks per status for each team (every status present, 0 when none), in one query."""
    ids = list(dict.fromkeys(team_ids))
    counts: dict[uuid.UUID, dict[str, int]] = {
        team_id: dict.fromkeys(ALL_TASK_STATUSES, 0) for team_id in ids
    }
    if not ids:
        return counts
    with session_scope() as session:
        rows = session.execute(
            select(Task.team_id, Task.status, func.count())
            .where(Task.team_id.in_(ids))
            .group_by(Task.team_id, Task.status)
        )
        for team_id, status, count in rows:
            counts[team_id][TaskStatus(status).value] = int(count)
    return counts


def _require_team(session: Session, team_id: uuid.UUID, *, lock: bool = False) -> Team:
    query = select(Team).where(Team.id == team_id)
    if lock:
        query = query.with_for_update()
    team = session.scalars(query).one_or_none()
    if team is None:
        raise NotFound(f"team {team_id} not found")
    return team


# --- members -----------------------------------------------------------------------------------


def add_member(
    team_id: uuid.UUID,
    role: MemberRole | str,
    specialization: str | None = None,
    skills: dict[str, float] | None = None,
    max_concurrent_tasks: int = 3,
    agent_id: str | None = None,
) -> TeamMember:
    role = MemberRole(role)
    if agent_id is None:
        agent_id = f"{role.value}-{secrets.token_hex(4)}"
    try:
        with session_scope() as session:
            _require_team(session, team_id)
            taken = session.scalar(
                select(TeamMember.id).where(
                    TeamMember.team_id == team_id, TeamMember.agent_id == agent_id
                )
            )
            if taken is not None:
                raise Conflict(f"agent_id {agent_id!r} is already a member of team {team_id}")
            member = TeamMember(
                team_id=team_id,
                agent_id=agent_id,
                role=role,
                specialization=specialization,
                status=MemberStatus.IDLE,
                max_concurrent_tasks=max_concurrent_tasks,
            )
            if skills is not None:  # an explicit None would store a JSON null, not SQL NULL
                member.skills = dict(skills)
            session.add(member)
            session.flush()
            session.refresh(member)
            events.record(
                session,
                team_id,
                "member.added",
                member_id=str(member.id),
                agent_id=member.agent_id,
                role=role.value,
            )
            batch = events.take_pending(session)
    except IntegrityError as exc:
        # Two concurrent requests for the same agent_id: the unique constraint decides.
        if "team_members_agent_unique" in str(exc.orig):
            raise Conflict(f"agent_id {agent_id!r} is already a member of team {team_id}") from None
        raise
    events.publish(batch)
    if role is MemberRole.WORKER:
        _request_pass(team_id)
    return member


def list_members(team_id: uuid.UUID) -> list[TeamMember]:
    with session_scope() as session:
        _require_team(session, team_id)
        return list(
            session.scalars(
                select(TeamMember)
                .where(TeamMember.team_id == team_id)
                .order_by(TeamMember.joined_at, TeamMember.id)
            )
        )


def update_member(
    team_id: uuid.UUID,
    member_id: uuid.UUID,
    status: MemberStatus | str | None = None,
    max_concurrent_tasks: int | None = None,
    skills: dict[str, float] | None = None,
) -> TeamMember:
    """Change a member's availability, capacity or skills.

    `idle` means "online": stored as `active` while the member has work in flight, else `idle`.
    `offline` stops new assignments; work it has started finishes, and what was assigned to it
    but not started goes back to pending, for other workers. A change that may free capacity
    asks for an orchestration pass once committed."""
    new_status = MemberStatus(status) if status is not None else None
    if new_status is MemberStatus.ACTIVE:
        raise InvalidInput(
            "status must be idle or offline", {"status": ["must be idle or offline"]}
        )
    with session_scope() as session:
        member = session.scalars(
            select(TeamMember)
            .where(TeamMember.id == member_id, TeamMember.team_id == team_id)
            .with_for_update()
        ).one_or_none()
        if member is None:
            raise NotFound(f"member {member_id} not found in team {team_id}")
        may_free_capacity = False
        if new_status is MemberStatus.OFFLINE:
            member.status = MemberStatus.OFFLINE
        elif new_status is MemberStatus.IDLE:
            may_free_capacity = member.status is MemberStatus.OFFLINE
            member.status = (
                MemberStatus.ACTIVE if member.current_workload > 0 else MemberStatus.IDLE
            )
        if max_concurrent_tasks is not None:
            may_free_capacity |= max_concurrent_tasks > member.max_concurrent_tasks
            member.max_concurrent_tasks = max_concurrent_tasks
        if skills is not None:
            may_free_capacity = True  # a better match may now exist for a waiting task
            member.skills = dict(skills)
        session.flush()
        session.refresh(member)
        events.record(
            session,
            team_id,
            "member.updated",
            member_id=str(member.id),
            agent_id=member.agent_id,
            status=member.status.value,
            max_concurrent_tasks=member.max_concurrent_tasks,
        )
        batch = events.take_pending(session)
    events.publish(batch)
    if new_status is MemberStatus.OFFLINE:
        # Its own transaction, tasks locked before the member as a pass locks them.
        may_free_capacity |= bool(release_assigned(team_id, member_id))
    elif member.current_workload > member.max_concurrent_tasks:
        # Capacity lowered below its load: what it has not started goes to other workers
        # (what it has started finishes here, the load above the new limit until then).
        may_free_capacity |= bool(release_assigned(team_id, member_id, beyond_capacity=True))
    if may_free_capacity and member.role is MemberRole.WORKER:
        _request_pass(team_id)
    return member


def release_assigned(
    team_id: uuid.UUID, member_id: uuid.UUID, *, beyond_capacity: bool = False
) -> list[uuid.UUID]:
    """Give back the tasks assigned to a member that it has not started (all of them, or as
    many as its load exceeds its capacity by): pending again, for other workers (those started
    finish where they are)."""
    with events.transaction() as session:
        released = list(
            session.execute(
                Q["release_assigned"],
                {"member_id": member_id, "beyond_capacity": beyond_capacity},
            ).scalars()
        )
        events.written(
            session,
            [
                events.Event(team_id, "task.unassigned", t, {"worker_id": str(member_id)})
                for t in released
            ],
        )
    if released:
        why = "capacity lowered" if beyond_capacity else "went offline"
        log.info("member %s %s: %d assigned tasks released", member_id, why, len(released))
    return released


def _request_pass(team_id: uuid.UUID) -> None:
    """Ask for a pass now; the beat catches up if the request cannot be sent."""
    from orchestration.orchestrator import request_pass

    try:
        request_pass(team_id)
    except Exception:
        log.warning("could not request an orchestration pass for team %s", team_id, exc_info=True)


# --- tokens ------------------------------------------------------------------------------------


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class NewToken:
    token: str  # the only time it shows: only its hash is stored
    id: uuid.UUID
    prefix: str


def create_token(team_id: uuid.UUID) -> NewToken:
    """A new bearer token for the team."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    prefix = token[:TOKEN_PREFIX_LENGTH]
    with session_scope() as session:
        _require_team(session, team_id)
        row = ApiToken(team_id=team_id, token_hash=hash_token(token), prefix=prefix)
        session.add(row)
        session.flush()
        token_id = row.id
    log.info("API token %s created for team %s", token_id, team_id)
    return NewToken(token, token_id, prefix)


def list_tokens(team_id: uuid.UUID) -> list[ApiToken]:
    """The team's tokens, oldest first (their hashes, never the tokens)."""
    with session_scope() as session:
        _require_team(session, team_id)
        rows = list(
            session.scalars(
                select(ApiToken)
                .where(ApiToken.team_id == team_id)
                .order_by(ApiToken.created_at, ApiToken.id)
            )
        )
        session.expunge_all()
        return rows


def revoke_token(team_id: uuid.UUID, token_id: uuid.UUID) -> None:
    """Delete the token: the next request bearing it answers 401."""
    with session_scope() as session:
        gone = session.execute(
            delete(ApiToken)
            .where(ApiToken.id == token_id, ApiToken.team_id == team_id)
            .returning(ApiToken.id)
        ).scalar_one_or_none()
    if gone is None:
        raise NotFound(f"token {token_id} of team {team_id} not found")
    log.info("API token %s of team %s revoked", token_id, team_id)


def team_for_token(token: str) -> uuid.UUID | None:
    """The team a token belongs to, or None. Records the use at most once a minute."""
    if not token:
        return None
    digest = hash_token(token)
    with session_scope() as session:
        row = session.scalars(select(ApiToken).where(ApiToken.token_hash == digest)).one_or_none()
        if row is None or not hmac.compare_digest(row.token_hash, digest):
            return None
        now = datetime.now(UTC)
        if row.last_used_at is None or now - row.last_used_at >= TOKEN_TOUCH_INTERVAL:
            row.last_used_at = now
        return row.team_id


# --- the assignment log ------------------------------------------------------------------------


def list_assignments(
    team_id: uuid.UUID, limit: int = 100, offset: int = 0, after: str | None = None
) -> tuple[list[dict[str, Any]], str | None]:
    """At most limit of the team's assignment decisions, newest first, from just after the
    cursor `after` (from the newest: None) and offset more, with the cursor of the next page
    (None when this one reaches the end). A cursor is a position (created_at, id): pages read
    by cursor neither repeat nor skip a decision while new ones are logged, and a deep one
    costs as little as the first (an offset costs what it skips)."""
    query = (
        select(Message)
        .where(Message.team_id == team_id, Message.message_type == ASSIGNMENT_MESSAGE)
        .order_by(Message.created_at.desc(), Message.id.desc())
    )
    if after is not None:
        created_at, message_id = timestamp_and_id(*decode_cursor(after, 2))
        query = query.where(tuple_(Message.created_at, Message.id) < tuple_(created_at, message_id))
    with session_scope() as session:
        _require_team(session, team_id)
        rows = list(session.scalars(query.limit(limit + 1).offset(offset)))
    if len(rows) <= limit:
        return [_assignment(row) for row in rows], None
    last = rows[limit - 1]
    cursor = encode_cursor([last.created_at.isoformat(), str(last.id)])
    return [_assignment(row) for row in rows[:limit]], cursor


def _assignment(row: Message) -> dict[str, Any]:
    meta = row.meta or {}
    score = meta.get("score")
    raw = meta.get("breakdown")
    breakdown = None
    if isinstance(raw, dict):
        breakdown = {k: _number(raw.get(k)) for k in ("skill", "workload", "success_rate")}
    return {
        "task_id": row.task_id,
        "worker_id": row.worker_id,
        "score": _number(score),
        "breakdown": breakdown,
        "explanation": row.content,
        "created_at": row.created_at,
    }


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


# --- operations probes -------------------------------------------------------------------------


def check_database() -> None:
    """Raise when PostgreSQL does not answer."""
    with session_scope() as session:
        session.execute(text("SELECT 1"))


def check_redis(timeout: float = 2.0) -> None:
    """Raise when Redis does not answer (a short-lived client: no retries, short timeouts)."""
    client = redis.Redis.from_url(
        get_settings().redis_url,
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
        retry=Retry(backoff=NoBackoff(), retries=0),
    )
    try:
        client.ping()
    finally:
        client.close()


@dataclass(frozen=True)
class StreamStats:
    team_id: uuid.UUID
    length: int
    pending: int


@dataclass(frozen=True)
class PipelineStats:
    tasks: dict[uuid.UUID, dict[str, int]]
    streams: list[StreamStats]
    decompositions: dict[str, int]  # open ones (queued, planning), every team's
    oldest_queued: float  # seconds the oldest queued decomposition has waited (0: none)


def pipeline_stats() -> PipelineStats:
    """Tasks per team and status (one query); for each active team, its task stream's length
    and unacknowledged entries; the decompositions waiting for a planner or being planned."""
    with session_scope() as session:
        rows = session.execute(
            select(Task.team_id, Task.status, func.count()).group_by(Task.team_id, Task.status)
        ).all()
        active = list(session.scalars(select(Team.id).where(Team.status == TeamStatus.ACTIVE)))
        open_plans = session.execute(
            select(
                Decomposition.status,
                func.count(),
                func.extract("epoch", func.now() - func.min(Decomposition.queued_at)),
            )
            .where(Decomposition.status.in_(OPEN_DECOMPOSITION))
            .group_by(Decomposition.status)
        ).all()
    decompositions = dict.fromkeys((d.value for d in OPEN_DECOMPOSITION), 0)
    oldest_queued = 0.0
    for state, count, waited in open_plans:
        decompositions[DecompositionStatus(state).value] = int(count)
        if state == DecompositionStatus.QUEUED:
            oldest_queued = float(waited)
    tasks: dict[uuid.UUID, dict[str, int]] = {}
    for team_id, status, count in rows:
        tasks.setdefault(team_id, dict.fromkeys(ALL_TASK_STATUSES, 0))[TaskStatus(status).value] = (
            int(count)
        )
    streams: list[StreamStats] = []
    if active:
        client = get_redis()
        pipe = client.pipeline(transaction=False)
        for team_id in active:
            pipe.xlen(keys.task_stream(team_id))
            pipe.xpending(keys.task_stream(team_id), keys.consumer_group(team_id))
        replies = pipe.execute(raise_on_error=False)
        for index, team_id in enumerate(active):
            length, pending = replies[2 * index], replies[2 * index + 1]
            streams.append(
                StreamStats(
                    team_id=team_id,
                    length=length if isinstance(length, int) else 0,
                    pending=int(pending.get("pending", 0)) if isinstance(pending, dict) else 0,
                )
            )
    return PipelineStats(
        tasks=tasks, streams=streams, decompositions=decompositions, oldest_queued=oldest_queued
    )


def latest_event_id(team_id: uuid.UUID) -> str:
    """The id of the newest entry of the team's event stream ("0-0" when it is empty): a live
    view that starts here misses nothing published after it connected."""
    newest = get_redis().xrevrange(keys.events(team_id), count=1)
    return str(newest[0][0]) if newest else "0-0"
