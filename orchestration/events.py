"""Task and team events: recorded in PostgreSQL with the change they describe, then
published to the team's bounded Redis stream (`team:{id}:events`) for live views."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import redis
from sqlalchemy import insert
from sqlalchemy.orm import Session

from db.engine import session_scope
from db.models import TaskEvent
from orchestration import keys
from orchestration.config import get_settings
from orchestration.redis_client import get_redis

log = logging.getLogger(__name__)

PENDING_KEY = "orchestration.pending_events"
_INSERT = insert(TaskEvent.metadata.tables["task_events"])


@dataclass(frozen=True)
class Event:
    team_id: uuid.UUID
    kind: str
    task_id: uuid.UUID | None
    data: dict[str, Any]


def record(
    session: Session,
    team_id: uuid.UUID,
    kind: str,
    task_id: uuid.UUID | None = None,
    **data: Any,
) -> None:
    """Add an event to the session's transaction; publish_after(session) sends it once committed."""
    record_many(session, [Event(team_id, kind, task_id, data)])


def record_many(session: Session, batch: list[Event]) -> None:
    if not batch:
        return
    # Core, not the ORM's bulk insert: this runs in every transition.
    session.connection().execute(
        _INSERT,
        [
            {"team_id": e.team_id, "task_id": e.task_id, "kind": e.kind, "data": _jsonable(e.data)}
            for e in batch
        ],
    )
    written(session, batch)


def written(session: Session, batch: list[Event]) -> None:
    """Events a statement of this transaction inserted itself: published once it commits."""
    session.info.setdefault(PENDING_KEY, []).extend(batch)


def take_pending(session: Session) -> list[Event]:
    """The events recorded in this session; call after commit and pass them to publish."""
    return list(session.info.pop(PENDING_KEY, []))


def publish(batch: list[Event], also: Callable[[Any], object] | None = None) -> None:
    """Best effort: PostgreSQL keeps the history even when Redis is down. `also` queues
    other commands that follow the commit on the same pipeline (one round trip)."""
    if not batch and also is None:
        return
    try:
        pipe = get_redis().pipeline(transaction=False)
        queue(pipe, batch)
        if also is not None:
            also(pipe)
        pipe.execute()
    except redis.RedisError as exc:
        log.warning("events (and what followed the commit) not sent to Redis: %s", exc)


def queue(pipe: Any, batch: list[Event]) -> None:
    """Queue the publication of `batch` on a pipeline that also carries other commands."""
    maxlen = get_settings().events_maxlen
    for e in batch:
        payload = {"task_id": str(e.task_id) if e.task_id else None, **e.data}
        pipe.xadd(
            keys.events(e.team_id),
            {"event": e.kind, "data": json.dumps(payload, default=str)},
            maxlen=maxlen,
            approximate=True,
        )


def read(
    team_id: uuid.UUID, after: str | None, block_ms: int | None = None, count: int = 100
) -> list[tuple[str, str, dict[str, Any]]]:
    """Events after the stream id `after` ("$" or None: only new ones), oldest first."""
    start = after or "$"
    reply = get_redis().xread({keys.events(team_id): start}, count=count, block=block_ms)
    result: list[tuple[str, str, dict[str, Any]]] = []
    for _stream, entries in reply or []:
        for entry_id, fields in entries:
            result.append((entry_id, fields.get("event", "message"), json.loads(fields["data"])))
    return result


def trimmed_after(team_id: uuid.UUID, after: str) -> str | None:
    """When events after the stream id `after` may have been trimmed away (a reader resuming
    there would skip them without knowing): the id of the first entry still kept, "0-0" if
    the stream itself is gone. Else None. Trimming keeps no record of what it dropped, so a
    reader whose last id is exactly the newest dropped entry is told so too: harmless, it
    refetches once. Needs Redis >= 7 (`entries-added`); older servers are never told."""
    try:
        info = get_redis().xinfo_stream(keys.events(team_id))
    except redis.ResponseError:  # no such key: Redis lost it, or the team has had no events
        return "0-0" if _stream_id(after) > (0, 0) else None
    added = info.get("entries-added")
    first = info.get("first-entry")
    if added is None or added <= info["length"]:  # nothing was ever dropped
        return None
    first_id = str(first[0]) if first else str(info["last-generated-id"])
    return first_id if _stream_id(after) < _stream_id(first_id) else None


def _stream_id(value: str) -> tuple[int, int]:
    """A stream id ("1700000000000-0", or just the milliseconds) as comparable numbers."""
    millis, _, sequence = value.partition("-")
    return int(millis), int(sequence or 0)


def _jsonable(data: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(data, default=str))


@contextmanager
def transaction(also: Callable[[Any], object] | None = None) -> Iterator[Session]:
    """A unit of work; the events it recorded are published once it has committed (with
    `also`'s commands, see publish)."""
    with session_scope() as session:
        yield session
        batch = take_pending(session)
    publish(batch, also)
