"""Redis Streams delivery: one stream and one consumer group per team (seed layout).

An assignment is committed to PostgreSQL first, then emitted here. An entry is acknowledged
only after its outcome is committed; entries of silent consumers are reclaimed after the
visibility timeout; trimming never drops an entry that is pending or not yet delivered.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import redis

from orchestration import keys
from orchestration.redis_client import get_redis

# Broadcast doorbell: "team X has new entries", so idle consumers wake at once.
NOTIFY_STREAM = "orchestration:notify"
NOTIFY_MAXLEN = 1000
# Broadcast doorbell: "these tasks were cancelled", so the processes running them tell their
# agents at once instead of at their next check.
CANCEL_STREAM = "orchestration:cancelled"
# Broadcast doorbell: "a decomposition was queued", so an idle planning thread takes it at once
# instead of at its next look (orchestration.planning).
PLANNING_STREAM = "orchestration:decompositions"
DEAD_LETTER_MAXLEN = 10_000


@dataclass(frozen=True)
class Entry:
    team_id: uuid.UUID
    entry_id: str
    task_id: uuid.UUID
    worker_id: uuid.UUID
    priority: int
    timestamp: float
    assignment: uuid.UUID | None = None  # None: emitted before entries carried it

    @classmethod
    def parse(cls, team_id: uuid.UUID, entry_id: str, fields: dict[str, str]) -> Entry:
        return cls(
            team_id=team_id,
            entry_id=entry_id,
            task_id=uuid.UUID(fields["task_id"]),
            worker_id=uuid.UUID(fields["worker_id"]),
            priority=int(fields.get("priority", 5)),
            timestamp=float(fields.get("timestamp", 0)),
            assignment=uuid.UUID(fields["assignment"]) if fields.get("assignment") else None,
        )


@dataclass(frozen=True)
class Assignment:
    task_id: uuid.UUID
    worker_id: uuid.UUID
    priority: int
    assignment: uuid.UUID | None = None  # None: assigned before tasks carried one


def ensure_group(team_id: uuid.UUID, client: redis.Redis | None = None) -> None:
    """Create the team's stream and group if missing; the group starts at 0 so entries added
    before it existed are still delivered."""
    r = client or get_redis()
    try:
        r.xgroup_create(
            keys.task_stream(team_id), keys.consumer_group(team_id), id="0", mkstream=True
        )
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def emit(team_id: uuid.UUID, assignments: Iterable[Assignment]) -> list[str]:
    """Add committed assignments to the team's stream (one round trip) and ring the doorbell."""
    batch = list(assignments)
    if not batch:
        return []
    pipe = get_redis().pipeline(transaction=False)
    queued = queue_emit(pipe, team_id, batch)
    return emitted(pipe.execute(raise_on_error=False)[:queued])


def queue_emit(pipe: Any, team_id: uuid.UUID, batch: list[Assignment]) -> int:
    """Queue the emission of `batch` on a pipeline; returns how many replies it will take
    (pass them to `emitted`)."""
    stream, group = keys.task_stream(team_id), keys.consumer_group(team_id)
    now = f"{time.time():.6f}"
    pipe.xgroup_create(stream, group, id="0", mkstream=True)
    for a in batch:
        fields = {
            "task_id": str(a.task_id),
            "team_id": str(team_id),
            "worker_id": str(a.worker_id),
            "priority": str(a.priority),
            "timestamp": now,
        }
        if a.assignment is not None:
            fields["assignment"] = str(a.assignment)
        pipe.xadd(stream, fields)
    pipe.xadd(NOTIFY_STREAM, {"team_id": str(team_id)}, maxlen=NOTIFY_MAXLEN, approximate=True)
    return len(batch) + 2


def queue_cancelled(pipe: Any, task_ids: list[uuid.UUID]) -> None:
    """Queue the cancellation doorbell for tasks that were running or about to."""
    if task_ids:
        fields = {"tasks": ",".join(str(t) for t in task_ids)}
        pipe.xadd(CANCEL_STREAM, fields, maxlen=NOTIFY_MAXLEN, approximate=True)


def queue_planning(pipe: Any) -> None:
    """Queue the planning doorbell: a decomposition waits for a planner."""
    pipe.xadd(PLANNING_STREAM, {"queued": "1"}, maxlen=NOTIFY_MAXLEN, approximate=True)


class Doorbell:
    """A reader of a broadcast doorbell stream that remembers its place: every process sees
    every ring from the time it first listened."""

    def __init__(self, stream: str) -> None:
        self.stream = stream
        self._last = "$"

    def wait(self, seconds: float) -> list[dict[str, str]]:
        """The rings since the last call, waiting up to `seconds` for one."""
        r = get_redis()
        if self._last == "$":
            newest = r.xrevrange(self.stream, count=1)
            self._last = newest[0][0] if newest else "0-0"
        reply = r.xread({self.stream: self._last}, block=max(1, int(seconds * 1000)), count=100)
        if not reply:
            # Quiet for a while: re-read the position (Redis may have restarted empty).
            self._last = "$"
            return []
        rings: list[dict[str, str]] = []
        for _stream, entries in reply:
            for entry_id, fields in entries:
                self._last = entry_id
                rings.append(fields)
        return rings


def emitted(replies: list[Any]) -> list[str]:
    """The entry ids of a queued emission, or its error (an existing group is no error)."""
    group_result = replies[0]
    if isinstance(group_result, Exception) and "BUSYGROUP" not in str(group_result):
        raise group_result
    for result in replies[1:]:
        if isinstance(result, Exception):
            raise result
    return [str(x) for x in replies[1:-1]]


def ack_many(entries: Iterable[Entry]) -> None:
    """Acknowledge entries of any teams: one XACK per team, in one round trip."""
    pipe = get_redis().pipeline(transaction=False)
    if queue_ack(pipe, entries):
        pipe.execute()


def queue_ack(pipe: Any, entries: Iterable[Entry]) -> int:
    """Queue one XACK per team of `entries` on a pipeline; returns how many."""
    by_team: dict[uuid.UUID, list[str]] = {}
    for entry in entries:
        by_team.setdefault(entry.team_id, []).append(entry.entry_id)
    for team_id, ids in by_team.items():
        pipe.xack(keys.task_stream(team_id), keys.consumer_group(team_id), *ids)
    return len(by_team)


def dead_letter(entry: Entry, deliveries: int, reason: str) -> None:
    """Move an entry delivered too often to the team's dead-letter stream."""
    r = get_redis()
    pipe = r.pipeline(transaction=False)
    pipe.xadd(
        keys.dead_letter(entry.team_id),
        {
            "task_id": str(entry.task_id),
            "team_id": str(entry.team_id),
            "worker_id": str(entry.worker_id),
            "entry_id": entry.entry_id,
            "deliveries": str(deliveries),
            "reason": reason,
            "timestamp": f"{time.time():.6f}",
        },
        maxlen=DEAD_LETTER_MAXLEN,
        approximate=True,
    )
    pipe.xack(keys.task_stream(entry.team_id), keys.consumer_group(entry.team_id), entry.entry_id)
    pipe.execute()


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def live_entries(team_id: uuid.UUID) -> dict[uuid.UUID, str]:
    """task_id -> entry id of every entry still to be handled: pending (delivered, not
    acknowledged) or not yet delivered to the group."""
    r = get_redis()
    stream, group = keys.task_stream(team_id), keys.consumer_group(team_id)
    if not r.exists(stream):
        return {}
    last_delivered = "0-0"
    for info in r.xinfo_groups(stream):
        if info["name"] == group:
            last_delivered = info["last-delivered-id"]
            break
    else:
        ensure_group(team_id, r)
    pending: set[str] = set()
    start = "-"
    while True:
        page = r.xpending_range(stream, group, min=start, max="+", count=1000)
        pending.update(p["message_id"] for p in page)
        if len(page) < 1000:
            break
        start = "(" + page[-1]["message_id"]
    live: dict[uuid.UUID, str] = {}
    threshold = _id_key(last_delivered)
    # Only from the oldest pending entry (or past the last delivered one), a page at a time:
    # the acknowledged entries before it, thousands between trims, are never read.
    oldest = min(pending, key=_id_key) if pending else None
    start = oldest if oldest and _id_key(oldest) <= threshold else f"({last_delivered}"
    while True:
        page = r.xrange(stream, min=start, max="+", count=1000)
        for entry_id, fields in page:
            if entry_id in pending or _id_key(entry_id) > threshold:
                live[uuid.UUID(fields["task_id"])] = entry_id
        if len(page) < 1000:
            return live
        start = "(" + page[-1][0]


def trim(team_id: uuid.UUID, live: dict[uuid.UUID, str]) -> int:
    """Drop the entries the group has delivered and had acknowledged: those before its oldest
    pending entry, the first it has not delivered and the oldest of `live`. The group is read
    here, not when `live` was: an entry emitted since (by a concurrent pass) is past its
    last-delivered id, or pending, and stays."""
    r = get_redis()
    stream, group = keys.task_stream(team_id), keys.consumer_group(team_id)
    # One MULTI: the cursor and the pending list as of one moment.
    pipe = r.pipeline(transaction=True)
    pipe.xinfo_groups(stream)
    pipe.xpending(stream, group)
    groups, pending = pipe.execute(raise_on_error=False)
    for reply in (groups, pending):
        if isinstance(reply, redis.ResponseError):
            if "no such key" in str(reply).lower() or "NOGROUP" in str(reply):
                return 0  # no stream, or no group to say what was delivered: keep everything
            raise reply
    last_delivered = next(g["last-delivered-id"] for g in groups if g["name"] == group)
    ms, seq = _id_key(last_delivered)
    keep = [f"{ms}-{seq + 1}", *live.values()]
    if pending["pending"]:
        keep.append(pending["min"])
    return int(r.xtrim(stream, minid=min(keep, key=_id_key), approximate=False))
