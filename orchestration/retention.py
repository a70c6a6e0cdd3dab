"""History retention: the event history (task_events), the message log (assignments) and the
decompositions that ended, older than ORCH_HISTORY_DAYS, go, a batch per transaction, so that
months of work do not grow the database for ever. 0 (the default) keeps everything."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from db.engine import statement_scope
from db.queries import Q
from orchestration.config import get_settings

log = logging.getLogger(__name__)

BATCH = 10_000
# Per run and table: a large backlog drains over several runs instead of one long one.
MOST_BATCHES = 100


@dataclass(frozen=True)
class Pruned:
    events: int
    messages: int
    decompositions: int


def prune_history(now: datetime | None = None) -> Pruned:
    """Delete what is older than the retention; how many rows of each went."""
    days = get_settings().history_days
    if days <= 0:
        return Pruned(0, 0, 0)
    cutoff = (now or datetime.now(UTC)) - timedelta(days=days)
    pruned = Pruned(
        _prune("prune_events", cutoff),
        _prune("prune_messages", cutoff),
        _prune("prune_decompositions", cutoff),
    )
    if pruned.events or pruned.messages or pruned.decompositions:
        log.info(
            "history before %s pruned: %d events, %d messages, %d decompositions",
            cutoff.isoformat(timespec="seconds"),
            pruned.events,
            pruned.messages,
            pruned.decompositions,
        )
    return pruned


def _prune(statement: str, cutoff: datetime) -> int:
    total = 0
    for _ in range(MOST_BATCHES):
        with statement_scope() as conn:
            deleted = int(
                conn.execute(Q[statement], {"cutoff": cutoff, "batch": BATCH}).scalar_one()
            )
        total += deleted
        if deleted < BATCH:
            break
    return total
