"""Trimming a team's stream against the consumer group as it stands: an entry goes only when the
group has delivered it and had it acknowledged, whatever was emitted since the live entries were
read (DESIGN.md: trimming never drops an unacknowledged entry)."""

from __future__ import annotations

import uuid

import pytest
import redis

from orchestration import keys, orchestrator, streams
from orchestration.decomposition import create_task
from tests.factories import ManagerFactory, TeamFactory, WorkerFactory


def active_team(workers: int = 1, capacity: int = 2) -> uuid.UUID:
    team = TeamFactory(active=True)
    ManagerFactory(team=team)
    for _ in range(workers):
        WorkerFactory(team=team, max_concurrent_tasks=capacity)
    return uuid.UUID(str(team.id))


def task_ids(entries: list[tuple[str, dict[str, str]]]) -> list[str]:
    return [fields["task_id"] for _id, fields in entries]


def test_an_entry_emitted_between_the_live_read_and_the_trim_is_kept(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    team_id = active_team()
    stream, group = keys.task_stream(team_id), keys.consumer_group(team_id)
    # One entry delivered and acknowledged: nothing is live.
    create_task(team_id, {"title": "done"})
    orchestrator.run_pass(team_id)
    [(_stream, [(done, _fields)])] = redis_client.xreadgroup(group, "c1", {stream: ">"})
    redis_client.xack(stream, group, done)
    late = create_task(team_id, {"title": "assigned while reconcile runs"}).id
    read = streams.live_entries

    def read_then_pass(team: uuid.UUID) -> dict[uuid.UUID, str]:
        live = read(team)
        # Another process's pass commits and emits between reconcile's read and its trim.
        assert [a.task_id for a in orchestrator.run_pass(team).assigned] == [late]
        return live

    monkeypatch.setattr(streams, "live_entries", read_then_pass)
    result = orchestrator.reconcile(team_id, grace=5)
    assert (result.reemitted, result.trimmed) == (0, 1)
    assert task_ids(redis_client.xrange(stream)) == [str(late)]
    delivered = redis_client.xreadgroup(group, "c2", {stream: ">"})
    assert [t for _s, entries in delivered for t in task_ids(entries)] == [str(late)]


def test_a_pending_entry_is_kept_when_its_task_has_a_newer_entry(
    redis_client: redis.Redis,
) -> None:
    # A task retried while its first entry is still pending (the consumer commits the retry,
    # then acknowledges) is assigned and emitted again: live maps it to the newer entry only.
    team_id, worker = uuid.uuid4(), uuid.uuid4()
    retried, other = uuid.uuid4(), uuid.uuid4()
    stream, group = keys.task_stream(team_id), keys.consumer_group(team_id)
    [first] = streams.emit(team_id, [streams.Assignment(retried, worker, 5)])
    redis_client.xreadgroup(group, "c1", {stream: ">"})
    [acked] = streams.emit(team_id, [streams.Assignment(other, worker, 5)])
    redis_client.xreadgroup(group, "c1", {stream: ">"})
    redis_client.xack(stream, group, acked)
    [again] = streams.emit(team_id, [streams.Assignment(retried, worker, 5)])
    live = streams.live_entries(team_id)
    assert live == {retried: again}
    assert streams.trim(team_id, live) == 0
    assert [e[0] for e in redis_client.xrange(stream)] == [first, acked, again]
    # Once the first is acknowledged, it and the acknowledged one before it go.
    redis_client.xack(stream, group, first)
    assert streams.trim(team_id, streams.live_entries(team_id)) == 2
    assert [e[0] for e in redis_client.xrange(stream)] == [again]


def test_only_delivered_and_acknowledged_entries_are_trimmed(redis_client: redis.Redis) -> None:
    team_id, worker = uuid.uuid4(), uuid.uuid4()
    stream, group = keys.task_stream(team_id), keys.consumer_group(team_id)
    ids = streams.emit(team_id, [streams.Assignment(uuid.uuid4(), worker, 5) for _ in range(4)])
    # Nothing delivered yet: nothing goes, even with nothing said to be live.
    assert streams.trim(team_id, {}) == 0
    redis_client.xreadgroup(group, "c1", {stream: ">"}, count=2)
    redis_client.xack(stream, group, ids[0], ids[1])
    assert streams.trim(team_id, {}) == 2
    assert [e[0] for e in redis_client.xrange(stream)] == ids[2:]
    # A stream without its group (Redis lost the group, not the entries) loses nothing.
    redis_client.xgroup_destroy(stream, group)
    assert streams.trim(team_id, {}) == 0
    assert redis_client.xlen(stream) == 2
