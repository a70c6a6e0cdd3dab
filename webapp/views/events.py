"""Live events of a team as Server-Sent Events, tailed from the team's Redis event stream.

A stream holds a server thread (and a Redis connection) for its whole life, so each process
serves at most ORCH_EVENT_STREAMS_MAX at once and answers 503 beyond: dashboards can never
take every thread from the rest of the API. A shared reader fanning out to per-subscriber
queues would save Redis reads, not threads (a WSGI response is written by its own thread), so
each stream reads for itself, blocking briefly. A client that left is noticed when a write
to it fails, the second after it left, so heartbeats go out every few seconds; a stream also
ends after a bounded lifetime, and as soon as its token is revoked."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import redis
import sqlalchemy.exc
from flask import Response, current_app, request
from flask.blueprints import BlueprintSetupState

from orchestration import events, teams
from orchestration.config import get_settings
from orchestration.errors import InvalidInput
from webapp import auth
from webapp.errors import error_response
from webapp.parsing import Blueprint
from webapp.schemas import EventsQuerySchema, valid_stream_id

log = logging.getLogger(__name__)

# A client that left is noticed at the second write after it left: within 2 heartbeats.
HEARTBEAT_SECONDS = 2.0
# A stream ends after this, and its client resumes with Last-Event-ID (EventSource does so):
# its thread is not held for ever, and a reconnect may land on a less busy process.
LIFETIME_SECONDS = 600.0
BATCH = 100
RETRY_AFTER_SECONDS = 5  # a place is free again within 2 heartbeats of a client leaving
SLOTS_KEY = "orch_event_streams"

# One message of the stream (the schema of each event, not of the whole body).
SSE_EVENT = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "description": "the Redis stream id; resume with Last-Event-ID"},
        "event": {
            "type": "string",
            "description": "the kind, e.g. task.created; `reset` when events after Last-Event-ID "
            "were trimmed (refetch the state); `error` just before the stream ends on a failure "
            "or a revoked token",
        },
        "data": {"type": "string", "description": "a JSON object: task_id and the details"},
    },
}

blp = Blueprint(
    "events",
    __name__,
    url_prefix="/api/v1/teams/<uuid:team_id>/events",
    description="Events: task and team changes as a resumable text/event-stream.",
)


class StreamSlots:
    """The live streams one process serves at once, at most `limit`."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0
        self._lock = threading.Lock()

    def take(self) -> Callable[[], None] | None:
        """A place (its release, safe to call twice), or None when all are taken."""
        with self._lock:
            if self.open >= self.limit:
                return None
            self.open += 1
        released = threading.Event()

        def release() -> None:
            with self._lock:
                if not released.is_set():
                    released.set()
                    self.open -= 1

        return release


@blp.record_once
def _init_slots(state: BlueprintSetupState) -> None:
    state.app.extensions[SLOTS_KEY] = StreamSlots(get_settings().event_streams_max)


@blp.route("", methods=["GET"])
@blp.arguments(EventsQuerySchema, location="query")
@blp.response(
    200,
    SSE_EVENT,
    content_type="text/event-stream",
    description="`id:` the stream id, `event:` the kind, `data:` JSON; `: heartbeat` comments",
)
@blp.alt_response(404, response="NOT_FOUND")
@blp.alt_response(503, response="SERVICE_UNAVAILABLE")
def stream_events(query: dict[str, Any], team_id: uuid.UUID) -> Response:
    """The team's events after `Last-Event-ID` (header) or `last_event_id` (query), else from
    now on. Ends after `timeout` seconds when given (0: only what is already there), and after
    10 minutes anyway (resume with Last-Event-ID). 503 (with Retry-After) while this server
    process already serves as many streams as it may."""
    teams.get_team(team_id)
    after = request.headers.get("Last-Event-ID", "").strip() or query.get("last_event_id")
    if after is not None and not valid_stream_id(after):
        message = "Last-Event-ID must be a stream id such as 1700000000000-0"
        raise InvalidInput(message, {"last_event_id": [message]})
    resumed = after is not None
    if after is None:
        after = teams.latest_event_id(team_id)
    config = current_app.config
    heartbeat = float(config.get("ORCH_SSE_HEARTBEAT", HEARTBEAT_SECONDS))
    lifetime = float(config.get("ORCH_SSE_LIFETIME", LIFETIME_SECONDS))
    timeout = query.get("timeout")
    duration = lifetime if timeout is None else min(timeout, lifetime)
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    if request.method == "HEAD":  # no body: never start an endless stream nobody reads
        return Response(status=200, mimetype="text/event-stream", headers=headers)
    slots: StreamSlots = current_app.extensions[SLOTS_KEY]
    release = slots.take()
    if release is None:
        log.warning("event stream of team %s refused: %d streams open", team_id, slots.open)
        return error_response(
            503,
            f"this server already serves {slots.limit} live event streams; retry later",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    stream = _Stream(team_id, after, resumed, heartbeat, auth.token_check())
    response = Response(
        stream.messages(time.monotonic() + duration),
        status=200,
        mimetype="text/event-stream",
        headers=headers,
    )
    # On close, not in the generator: a body never started is closed all the same. And should
    # the response be dropped unclosed (an error after the view), once it is collected.
    response.call_on_close(release)
    weakref.finalize(response, release)
    return response


def _message(entry_id: str, kind: str, data: dict[str, Any]) -> str:
    kind = kind.replace("\r", " ").replace("\n", " ")
    return f"id: {entry_id}\nevent: {kind}\ndata: {json.dumps(data, default=str)}\n\n"


def _event(kind: str, data: dict[str, Any]) -> str:
    """A message without an id: the client's Last-Event-ID stays where it was."""
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n"


class _Stream:
    def __init__(
        self,
        team_id: uuid.UUID,
        after: str,
        resumed: bool,
        heartbeat: float,
        authorized: Callable[[], bool],
    ) -> None:
        self.team_id = team_id
        self.after = after
        self.resumed = resumed
        self.heartbeat = heartbeat
        self.authorized = authorized

    def reset(self) -> str | None:
        """`event: reset` when events after the position were trimmed away."""
        first_id = events.trimmed_after(self.team_id, self.after)
        if first_id is None:
            return None
        if first_id == "0-0":
            return _event("reset", {"reason": "events lost"})
        return _event("reset", {"reason": "events trimmed", "first_id": first_id})

    def messages(self, deadline: float) -> Iterator[str]:
        yield ": connected\nretry: 3000\n\n"
        if not self.resumed:  # the position, so that a reconnect resumes here
            yield f"id: {self.after}\n\n"
        now = time.monotonic()
        heartbeat_at = now + self.heartbeat
        checked_at = now  # the token was checked for this request
        block_ms: int | None = None  # first drain what is there without waiting
        try:
            reset = self.reset() if self.resumed else None
            if reset:
                yield reset
            while True:
                batch = events.read(self.team_id, self.after, block_ms=block_ms, count=BATCH)
                now = time.monotonic()
                # At most once a heartbeat, and before writing: a revoked token gets nothing more.
                if (batch or now >= heartbeat_at) and now - checked_at >= self.heartbeat:
                    if not self.authorized():
                        log.info("event stream of team %s ended: token revoked", self.team_id)
                        yield _event("error", {"message": "the token was revoked"})
                        return
                    checked_at = now
                for entry_id, kind, data in batch:
                    yield _message(entry_id, kind, data)
                    self.after = entry_id
                if now >= heartbeat_at:
                    yield ": heartbeat\n\n"
                    heartbeat_at = now + self.heartbeat
                if len(batch) == BATCH:
                    block_ms = None  # more is waiting, unless trimming overtook this reader
                    reset = self.reset()
                    if reset:
                        yield reset
                    continue
                if now >= deadline:
                    return
                wait = min(heartbeat_at, deadline) - now
                block_ms = max(1, int(wait * 1000))
        except (redis.RedisError, sqlalchemy.exc.SQLAlchemyError) as exc:
            log.warning("event stream of team %s ended: %s", self.team_id, exc)
            yield _event("error", {"message": "event stream unavailable"})
