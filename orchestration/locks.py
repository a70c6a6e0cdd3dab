"""Per-team advisory locks (transaction-scoped: released at commit or rollback)."""

from __future__ import annotations

import uuid

from sqlalchemy import text
from sqlalchemy.orm import Session

# Dependency edges, readiness and roll-ups of one team change one transaction at a time.
_GRAPH = text("SELECT pg_advisory_xact_lock(hashtextextended('graph:' || :team_id, 0))")


def lock_graph(session: Session, team_id: uuid.UUID) -> None:
    session.execute(_GRAPH, {"team_id": str(team_id)})
