"""Per-team advisory locks (transaction-scoped: released at commit or rollback)."""

from __future__ import annotations

import uuid

from sqlalchemy import text
from sqlalchemy.orm import Session

# Dependency edges, readiness and roll-ups of one team change one transaction at a time,
# except edges the ranks already order: they move no rank, so they share the lock (see
# dependencies.add_dependency) and wait only for the rest.
_GRAPH = text("SELECT pg_advisory_xact_lock(hashtextextended('graph:' || :team_id, 0))")


# The same lock, in the round trip that finds the team (the key is the same text).
_TEAM_GRAPH = text(
    "SELECT pg_advisory_xact_lock(hashtextextended('graph:' || id::text, 0)) "
    "FROM teams WHERE id = :team_id"
)
_TEAM_GRAPH_SHARED = text(
    "SELECT pg_advisory_xact_lock_shared(hashtextextended('graph:' || id::text, 0)) "
    "FROM teams WHERE id = :team_id"
)


_TRY_GRAPH = text("SELECT pg_try_advisory_xact_lock(hashtextextended('graph:' || :team_id, 0))")


def lock_graph(session: Session, team_id: uuid.UUID) -> None:
    session.execute(_GRAPH, {"team_id": str(team_id)})


def try_lock_graph(session: Session, team_id: uuid.UUID) -> bool:
    """lock_graph without waiting: False when another transaction holds the lock or waits for
    it. A holder of the shared lock takes it so: nothing to wait for, no deadlock."""
    return bool(session.execute(_TRY_GRAPH, {"team_id": str(team_id)}).scalar())


def lock_team_graph(session: Session, team_id: uuid.UUID, *, shared: bool = False) -> bool:
    """lock_graph for a team that may not exist: False, and nothing locked, when it does not.
    shared: beside other shared holders, for a change that moves no rank."""
    statement = _TEAM_GRAPH_SHARED if shared else _TEAM_GRAPH
    return session.execute(statement, {"team_id": team_id}).first() is not None
