"""Live events: a text/event-stream of the team's events, resumable with Last-Event-ID."""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any

import pytest
import redis

from orchestration import events, keys
from webapp.testing import V1, ApiClient, assert_error, make_app, unknown_id


def publish(team_id: str, kind: str, **data: Any) -> None:
    events.publish([events.Event(uuid.UUID(team_id), kind, None, data)])


def parse(text: str) -> list[dict[str, Any]]:
    """The SSE messages (comments and retry lines dropped)."""
    messages = []
    for block in text.split("\n\n"):
        fields: dict[str, Any] = {}
        for line in block.splitlines():
            if line.startswith(":") or not line:
                continue
            name, _, value = line.partition(": ")
            fields[name] = value
        if "data" in fields:
            fields["data"] = json.loads(fields["data"])
            messages.append(fields)
    return messages


def stream_ids(redis_client: redis.Redis, team_id: str) -> list[str]:
    return [entry_id for entry_id, _ in redis_client.xrange(keys.events(team_id))]


def url(team_id: str) -> str:
    return f"{V1}/teams/{team_id}/events"


def kept_after(api: ApiClient, team_id: str, last_event_id: str) -> list[dict[str, Any]]:
    """The messages a client resuming after `last_event_id` gets of what is kept now."""
    response = api.get(
        url(team_id), query_string={"timeout": 0}, headers={"Last-Event-ID": last_event_id}
    )
    assert response.status_code == 200, response.get_json()
    return parse(response.get_data(as_text=True))


def test_resume_after_last_event_id(
    api: ApiClient, team: dict[str, Any], redis_client: redis.Redis
) -> None:
    for n in range(3):
        publish(team["id"], "task.created", n=n)
    ids = stream_ids(redis_client, team["id"])
    assert len(ids) == 3
    response = api.get(
        url(team["id"]), query_string={"timeout": 0}, headers={"Last-Event-ID": ids[0]}
    )
    assert response.status_code == 200
    assert response.mimetype == "text/event-stream"
    assert response.headers["Cache-Control"] == "no-cache"
    messages = parse(response.get_data(as_text=True))
    assert [m["id"] for m in messages] == ids[1:]
    assert [m["event"] for m in messages] == ["task.created", "task.created"]
    assert [m["data"]["n"] for m in messages] == [1, 2]
    assert messages[0]["data"]["task_id"] is None


def test_resume_with_query_parameter(
    api: ApiClient, team: dict[str, Any], redis_client: redis.Redis
) -> None:
    for n in range(2):
        publish(team["id"], "team.started", n=n)
    ids = stream_ids(redis_client, team["id"])
    response = api.get(url(team["id"]), query_string={"timeout": 0, "last_event_id": "0"})
    assert [m["id"] for m in parse(response.get_data(as_text=True))] == ids
    # The header wins over the query parameter.
    response = api.get(
        url(team["id"]),
        query_string={"timeout": 0, "last_event_id": "0"},
        headers={"Last-Event-ID": ids[1]},
    )
    assert parse(response.get_data(as_text=True)) == []


def test_without_last_event_id_only_new_events(
    api: ApiClient, team: dict[str, Any], redis_client: redis.Redis
) -> None:
    publish(team["id"], "old")

    def later() -> None:
        time.sleep(0.4)
        publish(team["id"], "new", n=1)

    thread = threading.Thread(target=later)
    thread.start()
    started = time.monotonic()
    response = api.get(url(team["id"]), query_string={"timeout": 1.5})
    thread.join()
    messages = parse(response.get_data(as_text=True))
    assert [m["event"] for m in messages] == ["new"]
    assert time.monotonic() - started >= 1.4


def test_long_backlog_is_drained(
    api: ApiClient, team: dict[str, Any], redis_client: redis.Redis
) -> None:
    for n in range(250):
        publish(team["id"], "tick", n=n)
    response = api.get(url(team["id"]), query_string={"timeout": 0, "last_event_id": "0-0"})
    assert [m["data"]["n"] for m in parse(response.get_data(as_text=True))] == list(range(250))


def test_events_are_per_team(
    api: ApiClient, team: dict[str, Any], other_team: dict[str, Any]
) -> None:
    publish(other_team["id"], "theirs")
    publish(team["id"], "mine")
    response = api.get(url(team["id"]), query_string={"timeout": 0, "last_event_id": "0"})
    assert [m["event"] for m in parse(response.get_data(as_text=True))] == ["mine"]


def test_service_events_reach_the_stream(api: ApiClient, team: dict[str, Any]) -> None:
    api.add_member(team["id"], agent_id="w1")
    api.create_task(team["id"], "x")
    response = api.get(url(team["id"]), query_string={"timeout": 0, "last_event_id": "0"})
    kinds = [m["event"] for m in parse(response.get_data(as_text=True))]
    assert "member.added" in kinds
    assert "task.created" in kinds


def test_heartbeat(database: str, team: dict[str, Any]) -> None:
    app = make_app(ORCH_SSE_HEARTBEAT=0.2)
    client = ApiClient(app.test_client())
    response = client.get(url(team["id"]), query_string={"timeout": 0.7})
    assert response.status_code == 200
    assert response.get_data(as_text=True).count(": heartbeat\n\n") >= 2


@pytest.mark.parametrize(
    "last_event_id", ["abc", "1-2-3", "-1", "1-", "99999999999999999999-0", "1.5"]
)
def test_bad_last_event_id(api: ApiClient, team: dict[str, Any], last_event_id: str) -> None:
    header = api.get(url(team["id"]), headers={"Last-Event-ID": last_event_id})
    assert_error(header, 422, errors=True)
    query = api.get(url(team["id"]), query_string={"last_event_id": last_event_id})
    assert_error(query, 422, errors=True)


@pytest.mark.parametrize("timeout", ["-1", "3601", "soon", "nan", "inf"])
def test_bad_timeout(api: ApiClient, team: dict[str, Any], timeout: str) -> None:
    assert_error(api.get(url(team["id"]), query_string={"timeout": timeout}), 422, errors=True)


def test_unknown_team(api: ApiClient) -> None:
    assert_error(api.get(url(unknown_id()), query_string={"timeout": 0}), 404)


def test_head_does_not_stream(api: ApiClient, team: dict[str, Any]) -> None:
    response = api.request("HEAD", url(team["id"]))
    assert response.status_code == 200
    assert response.mimetype == "text/event-stream"
    assert response.get_data() == b""
