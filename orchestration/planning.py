"""Decompositions: goals planned in the background (`POST /teams/{id}/decompositions`).

A decomposition is a job row in PostgreSQL. Submitting it rings a doorbell stream; the agent
consumer of every `celery worker` runs planning threads that claim the longest-queued one under
a lease (claim_decomposition), renews the lease while the manager's planner works, and creates
the plan's tasks in the transaction that marks it succeeded, only if its attempt still holds it:
a cancelled decomposition, or one whose consumer was presumed dead and re-run elsewhere, creates
nothing. A consumer that dies mid-plan leaves its lease to run out; another then plans it again,
up to MAX_ATTEMPTS times in all. The lease is ORCH_VISIBILITY_TIMEOUT, as for a stream entry
of a silent consumer, renewed every RENEW_EVERY seconds at most (three times a lease at least);
a renewal that finds the decomposition cancelled stops its planner."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session

from db.engine import session_scope
from db.models import Decomposition, Task, Team
from db.queries import Q
from orchestration import decomposition, events, streams
from orchestration.config import get_settings
from orchestration.errors import (
    AgentError,
    AgentTimeout,
    Conflict,
    InvalidTransition,
    NoManager,
    NotFound,
    OrchestrationError,
)
from orchestration.lifecycle import record_manager_usage, team_manager
from orchestration.logs import log_context
from orchestration.paging import decode_cursor, encode_cursor, timestamp_and_id
from orchestration.text import made_storable

log = logging.getLogger(__name__)

# Attempts whose consumer was lost before the decomposition fails (a planner's own failure is
# final at once: the planner already retried and re-asked).
MAX_ATTEMPTS = 3
# Seconds between lease renewals at most: a cancel reaches the planner (which stops between its
# model calls) within this.
RENEW_EVERY = 2.0


@dataclass(frozen=True)
class Claimed:
    id: uuid.UUID
    team_id: uuid.UUID
    goal: str
    max_depth: int
    attempt: int
    claim: str  # unique to this claim: every later statement of the attempt is fenced by it


class _ClaimLost(Exception):
    """The attempt no longer holds its decomposition: what it made is undone."""


# --- the API's side ----------------------------------------------------------------------------


def submit(
    team_id: uuid.UUID, goal: str, max_depth: int, idempotency_key: str | None = None
) -> tuple[Decomposition, bool]:
    """Queue a goal for the manager's planner; (the decomposition, whether it is new). A key
    already used by the team with the same goal and depth gives back that decomposition; with
    another goal or depth, Conflict."""
    with events.transaction(also=streams.queue_planning) as session:
        _check_team(session, team_id)
        if team_manager(session, team_id) is None:
            raise NoManager("decomposition needs a manager: add a member with role 'manager'")
        new_id = session.execute(
            insert(Decomposition)
            .values(
                team_id=team_id, goal=goal, max_depth=max_depth, idempotency_key=idempotency_key
            )
            .on_conflict_do_nothing(
                index_elements=["team_id", "idempotency_key"],
                index_where=Decomposition.idempotency_key.is_not(None),
            )
            .returning(Decomposition.id)
        ).scalar_one_or_none()
        if new_id is None:
            found = session.execute(
                select(Decomposition).where(
                    Decomposition.team_id == team_id,
                    Decomposition.idempotency_key == idempotency_key,
                )
            ).scalar_one()
            if (found.goal, found.max_depth) != (goal, max_depth):
                raise Conflict(
                    f"Idempotency-Key {idempotency_key!r} was used for decomposition {found.id}, "
                    "of another goal or max_depth: use a new key for a new request"
                )
            return found, False
        events.record(session, team_id, "decomposition.queued", decomposition_id=str(new_id))
        return session.get_one(Decomposition, new_id), True


def _check_team(session: Session, team_id: uuid.UUID) -> None:
    if session.get(Team, team_id) is None:
        raise NotFound(f"team {team_id} not found")


def get(team_id: uuid.UUID, decomposition_id: uuid.UUID) -> Decomposition:
    with session_scope() as session:
        found = session.execute(
            select(Decomposition).where(
                Decomposition.id == decomposition_id, Decomposition.team_id == team_id
            )
        ).scalar_one_or_none()
        if found is None:
            raise NotFound(f"decomposition {decomposition_id} not found")
        return found


def page(
    team_id: uuid.UUID, limit: int, status: str | None = None, after: str | None = None
) -> tuple[list[Decomposition], str | None]:
    """The team's decompositions, newest first, at most limit, from just after the cursor
    `after`; with the cursor of the next page (None at the end)."""
    query = select(Decomposition).where(Decomposition.team_id == team_id)
    if status is not None:
        query = query.where(Decomposition.status == status)
    if after is not None:
        at, last_id = timestamp_and_id(*decode_cursor(after, 2))
        query = query.where(
            (Decomposition.created_at, Decomposition.id) < (at, last_id)  # type: ignore[operator]
        )
    query = query.order_by(Decomposition.created_at.desc(), Decomposition.id.desc())
    with session_scope() as session:
        _check_team(session, team_id)
        found = list(session.scalars(query.limit(limit + 1)))
    if len(found) <= limit:
        return found, None
    last = found[limit - 1]
    return found[:limit], encode_cursor([last.created_at.isoformat(), str(last.id)])


def cancel(team_id: uuid.UUID, decomposition_id: uuid.UUID) -> Decomposition:
    """Cancel a decomposition not planned yet: a plan that arrives later creates nothing (its
    planner hears it at the lease's next renewal and stops between model calls; what it is
    billed still counts)."""
    return _move(
        team_id,
        decomposition_id,
        "cancel_decomposition",
        "decomposition.cancelled",
        "only a queued or planning one can be cancelled",
    )


def retry(team_id: uuid.UUID, decomposition_id: uuid.UUID) -> Decomposition:
    """Queue a failed or cancelled decomposition again (attempts start over)."""
    return _move(
        team_id,
        decomposition_id,
        "retry_decomposition",
        "decomposition.queued",
        "only a failed or cancelled one can be retried",
        ring=True,
    )


def _move(
    team_id: uuid.UUID,
    decomposition_id: uuid.UUID,
    statement: str,
    kind: str,
    refused: str,
    ring: bool = False,
) -> Decomposition:
    """Change a decomposition's state by one conditional statement, with its event (and the
    planning doorbell when `ring`); NotFound for an unknown one or another team's,
    InvalidTransition (saying `refused`) from a state the statement does not move."""
    with events.transaction(also=streams.queue_planning if ring else None) as session:
        moved = session.execute(
            Q[statement], {"id": decomposition_id, "team_id": team_id}
        ).scalar_one_or_none()
        if moved is None:
            found = session.execute(
                select(Decomposition.status).where(
                    Decomposition.id == decomposition_id, Decomposition.team_id == team_id
                )
            ).scalar_one_or_none()
            if found is None:
                raise NotFound(f"decomposition {decomposition_id} not found")
            raise InvalidTransition(f"decomposition {decomposition_id} is {found.value}: {refused}")
        events.record(session, team_id, kind, decomposition_id=str(decomposition_id))
    return get(team_id, decomposition_id)


# --- the planning thread's side ----------------------------------------------------------------


def run_next(consumer: str, stopping: threading.Event) -> bool:
    """Plan the longest-queued open decomposition, if there is one (False: there was none)."""
    claimed = claim_next(consumer)
    if claimed is None:
        return False
    plan(claimed, stopping)
    return True


def claim_next(consumer: str) -> Claimed | None:
    """Fail the decompositions lost every attempt; then claim the longest-queued one for this
    consumer, if there is one."""
    _fail_abandoned()
    return _claim(consumer)


def plan(claimed: Claimed, stopping: threading.Event) -> str:
    """Plan a claimed decomposition: what became of it, "succeeded", "failed", "requeued"
    (given back) or "discarded" (cancelled, or taken over by another consumer meanwhile).
    Setting `stopping` (the process shuts down) ends the planner early and gives the
    decomposition back for another consumer, unless its plan came first."""
    with log_context(team_id=claimed.team_id):
        log.info("decomposition %s: planning, attempt %d", claimed.id, claimed.attempt)
        return _plan(claimed, stopping)


def _lease() -> float:
    """Seconds a claim lasts unrenewed: a consumer lost mid-plan is replaced that long after."""
    return get_settings().visibility_timeout


def _claim(consumer: str) -> Claimed | None:
    # The consumer's name says who plans it; the suffix makes each claim its own, even when a
    # retried decomposition's attempt numbers start over.
    claim = f"{consumer}/{uuid.uuid4().hex[:8]}"
    with session_scope() as session:
        row = session.execute(
            Q["claim_decomposition"],
            {"claim": claim, "lease": _lease(), "max_attempts": MAX_ATTEMPTS},
        ).one_or_none()
    if row is None:
        return None
    return Claimed(row.id, row.team_id, row.goal, row.max_depth, row.attempts, claim)


def _fail_abandoned() -> None:
    with events.transaction() as session:
        rows = session.execute(Q["abandon_decompositions"], {"max_attempts": MAX_ATTEMPTS}).all()
        events.record_many(session, [_failed_event(r.team_id, r.id, r.error) for r in rows])
    for r in rows:
        log.warning("decomposition %s failed: %s", r.id, r.error)


def _failed_event(team_id: uuid.UUID, decomposition_id: uuid.UUID, error: str) -> events.Event:
    return events.Event(
        team_id,
        "decomposition.failed",
        None,
        {"decomposition_id": str(decomposition_id), "error": error},
    )


class _Lease:
    """While the planner works, a thread of its own renews the claim (every RENEW_EVERY s, or
    three times a lease if that is shorter) and sets `stop` (which the planner watches) once
    the claim is gone (`lost`: cancelled, or taken over) or the process is stopping."""

    def __init__(self, claimed: Claimed, stopping: threading.Event) -> None:
        self.claimed = claimed
        self.stopping = stopping
        self.stop = threading.Event()
        self.lost = threading.Event()
        self._done = threading.Event()
        if stopping.is_set():
            self.stop.set()  # no model call starts in a process already stopping
        self._thread = threading.Thread(target=self._keep, name="planning-lease", daemon=True)
        self._thread.start()

    def _keep(self) -> None:
        lease = _lease()
        every = max(0.2, min(RENEW_EVERY, lease / 3))
        renew_at = time.monotonic() + every
        while not self._done.wait(min(0.5, every)):
            if self.stopping.is_set():
                self.stop.set()
            if time.monotonic() < renew_at:
                continue
            renew_at = time.monotonic() + every
            try:
                with session_scope() as session:
                    held = session.execute(
                        Q["renew_decomposition"],
                        {"id": self.claimed.id, "claim": self.claimed.claim, "lease": lease},
                    ).scalar_one_or_none()
            except Exception as exc:
                # Renewed three times a lease at least: a missed renewal or two is harmless.
                log.warning("decomposition %s: lease not renewed: %s", self.claimed.id, exc)
                continue
            if held is None:
                self.lost.set()
                self.stop.set()

    def end(self) -> None:
        self._done.set()
        self._thread.join()


def _plan(claimed: Claimed, stopping: threading.Event) -> str:
    lease = _Lease(claimed, stopping)
    tokens, cost = 0, Decimal(0)
    try:
        try:
            goal_plan, tokens, cost = decomposition.planned(
                claimed.team_id, claimed.goal, claimed.max_depth, lease.stop
            )
        except AgentError as exc:
            tokens, cost = exc.tokens, Decimal(exc.cost)
            if lease.lost.is_set():
                log.info("decomposition %s: no longer this attempt's", claimed.id)
                return "discarded"
            if stopping.is_set() and not isinstance(exc, AgentTimeout):
                return "requeued" if _requeue(claimed) else "discarded"
            return _failed(claimed, str(exc))
        except (NoManager, NotFound) as exc:
            return _failed(claimed, str(exc))
        try:
            tasks = _create(claimed, goal_plan, lease)
        except _ClaimLost:
            log.info("decomposition %s: cancelled or taken over; its plan is discarded", claimed.id)
            return "discarded"
        except OrchestrationError as exc:
            # The plan itself cannot be created (a cycle, a depth that merges one, ...).
            return _failed(claimed, str(exc))
        log.info("decomposition %s: %d tasks created", claimed.id, len(tasks))
        return "succeeded"
    except Exception as exc:
        log.exception("decomposition %s: unexpected error", claimed.id)
        return _failed(claimed, f"unexpected error: {type(exc).__name__}: {exc}")
    finally:
        lease.end()
        _record_usage(claimed, tokens, Decimal(cost))


def _create(claimed: Claimed, plan: dict[str, Any], lease: _Lease) -> list[Task]:
    """The plan's tasks, created with the decomposition's success. A plan is paid for: while
    the database is away (and the claim not lost) it is tried again for up to a lease, after
    which the lease runs out and another attempt plans again."""
    give_up = time.monotonic() + _lease()
    wait = 0.5
    while True:
        try:
            return decomposition.create_plan(
                claimed.team_id,
                plan,
                claimed.max_depth,
                also=lambda session, ids: _succeeded(session, claimed, ids),
            )
        except (OperationalError, InterfaceError) as exc:
            if lease.lost.is_set() or time.monotonic() + wait > give_up:
                raise
            log.warning("decomposition %s: tasks not created (%s); trying again", claimed.id, exc)
            time.sleep(wait)
            wait = min(wait * 2, 5.0)


def _succeeded(session: Session, claimed: Claimed, task_ids: Sequence[uuid.UUID]) -> None:
    held = session.execute(
        Q["decomposition_succeeded"],
        {"id": claimed.id, "claim": claimed.claim, "task_ids": list(task_ids)},
    ).scalar_one_or_none()
    if held is None:
        raise _ClaimLost()
    events.record(
        session,
        claimed.team_id,
        "decomposition.succeeded",
        decomposition_id=str(claimed.id),
        tasks=len(task_ids),
    )


def _failed(claimed: Claimed, error: str) -> str:
    """Fail the decomposition if this attempt still holds it: "failed", else "discarded"."""
    error = made_storable(error)
    with events.transaction() as session:
        team_id = session.execute(
            Q["decomposition_failed"],
            {"id": claimed.id, "claim": claimed.claim, "error": error},
        ).scalar_one_or_none()
        if team_id is not None:
            events.record_many(session, [_failed_event(team_id, claimed.id, error)])
    if team_id is None:
        return "discarded"
    log.warning("decomposition %s failed: %s", claimed.id, error)
    return "failed"


def _requeue(claimed: Claimed) -> bool:
    """Give the decomposition back if this attempt still holds it (False: it does not)."""
    with session_scope() as session:
        given_back = session.execute(
            Q["requeue_decomposition"], {"id": claimed.id, "claim": claimed.claim}
        ).scalar_one_or_none()
    if given_back is None:
        return False
    log.info("decomposition %s: given back for another consumer (this one stops)", claimed.id)
    events.publish([], also=streams.queue_planning)  # best effort: consumers look anyway
    return True


def _record_usage(claimed: Claimed, tokens: int, cost: Decimal) -> None:
    if tokens <= 0 and cost <= 0:
        return
    with session_scope() as session:
        session.execute(
            Q["decomposition_usage"], {"id": claimed.id, "tokens": int(tokens), "cost": cost}
        )
    record_manager_usage(claimed.team_id, tokens, cost)
