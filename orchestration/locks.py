"""Per-team advisory locks (transaction-scoped: released at commit or rollback)."""

from __future__ import annotations

import uuid

from sqlalchemy import text
from sqlalchemy.orm import Session

# Dependency edges, readiness and roll-ups of one team change one transaction at a time.
_GRAPH = text("SELECT pg_advisory_xact_lock(hashtextextended('graph:' || :team_id, 0))")


# The same lock, in the round trip that finds the team (the key is the same text).
_TEAM_GRAPH = text(
    "SELECT pg_advisory_xact_lock(hashtextextended('graph:' || id::text, 0)) "
    "FROM teams WHERE id = :team_id"
)


def lock_graph(session: Session, team_id: uuid.UUID) -> None:
    session.execute(_GRAPH, {"team_id": str(team_id)})


def lock_team_graph(session: Session, team_id: uuid.UUID) -> bool:
    """lock_graph for a team that may not exist: False, and nothing locked, when it does not."""
    return session.execute(_TEAM_GRAPH, {"team_id": team_id}).first() is not None
