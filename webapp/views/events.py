"""Live events of a team as Server-Sent Events, tailed from the team's Redis event stream."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

import redis
from flask import Response, current_app, request

from orchestration import events, teams
from orchestration.errors import InvalidInput
from webapp.parsing import Blueprint
from webapp.schemas import EventsQuerySchema, valid_stream_id

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 15.0
BATCH = 100

# One message of the stream (the schema of each event, not of the whole body).
SSE_EVENT = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "description": "the Redis stream id; resume with Last-Event-ID"},
        "event": {"type": "string", "description": "the kind, e.g. task.created"},
        "data": {"type": "string", "description": "a JSON object: task_id and the details"},
    },
}

blp = Blueprint(
    "events",
    __name__,
    url_prefix="/api/v1/teams/<uuid:team_id>/events",
    description="Events: task and team changes as a resumable text/event-stream.",
)


@blp.route("", methods=["GET"])
@blp.arguments(EventsQuerySchema, location="query")
@blp.response(
    200,
    SSE_EVENT,
    content_type="text/event-stream",
    description="`id:` the stream id, `event:` the kind, `data:` JSON; `: heartbeat` comments",
)
@blp.alt_response(404, response="NOT_FOUND")
def stream_events(query: dict[str, Any], team_id: uuid.UUID) -> Response:
    """The team's events after `Last-Event-ID` (header) or `last_event_id` (query), else from
    now on. Ends after `timeout` seconds when given (0: only what is already there)."""
    teams.get_team(team_id)
    after = request.headers.get("Last-Event-ID", "").strip() or query.get("last_event_id")
    if after is not None and not valid_stream_id(after):
        message = "Last-Event-ID must be a stream id such as 1700000000000-0"
        raise InvalidInput(message, {"last_event_id": [message]})
    if after is None:
        after = teams.latest_event_id(team_id)
    heartbeat = float(current_app.config.get("ORCH_SSE_HEARTBEAT", HEARTBEAT_SECONDS))
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    if request.method == "HEAD":  # no body: never start an endless stream nobody reads
        return Response(status=200, mimetype="text/event-stream", headers=headers)
    return Response(
        _sse(team_id, after, query.get("timeout"), heartbeat),
        status=200,
        mimetype="text/event-stream",
        headers=headers,
    )


def _message(entry_id: str, kind: str, data: dict[str, Any]) -> str:
    kind = kind.replace("\r", " ").replace("\n", " ")
    return f"id: {entry_id}\nevent: {kind}\ndata: {json.dumps(data, default=str)}\n\n"


def _sse(team_id: uuid.UUID, after: str, timeout: float | None, heartbeat: float) -> Iterator[str]:
    deadline = None if timeout is None else time.monotonic() + timeout
    heartbeat_at = time.monotonic() + heartbeat
    yield ": connected\nretry: 3000\n\n"
    block_ms: int | None = None  # first drain what is there without waiting
    try:
        while True:
            batch = events.read(team_id, after, block_ms=block_ms, count=BATCH)
            for entry_id, kind, data in batch:
                yield _message(entry_id, kind, data)
                after = entry_id
            now = time.monotonic()
            if now >= heartbeat_at:
                yield ": heartbeat\n\n"
                heartbeat_at = now + heartbeat
            if len(batch) == BATCH:
                block_ms = None  # more is waiting
                continue
            if deadline is not None and now >= deadline:
                return
            wait = heartbeat_at - now
            if deadline is not None:
                wait = min(wait, deadline - now)
            block_ms = max(1, int(wait * 1000))
    except redis.RedisError as exc:
        log.warning("event stream of team %s ended: %s", team_id, exc)
        yield f"event: error\ndata: {json.dumps({'message': 'event stream unavailable'})}\n\n"
