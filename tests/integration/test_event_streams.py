"""Live event streams may not hurt the rest of the API: a cap per process (503 beyond it), a
client that left noticed within seconds, a bounded lifetime, a revoked token's stream ended,
and a resume across trimmed events announced with `event: reset`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import requests

from orchestration import keys
from tests.integration.test_api_events import kept_after, parse, publish, stream_ids, url
from tests.support.processes import Procs
from tests.support.services import free_port
from webapp.testing import ADMIN_TOKEN, V1, ApiClient, assert_error, environment, make_app


class Stream:
    """An open event stream of the Flask test client, read a chunk at a time."""

    def __init__(self, client: ApiClient, path: str, **kwargs: Any) -> None:
        self.response = client.get(path, buffered=False, **kwargs)
        self.chunks = self.response.iter_encoded()
        self.text = ""
        self.ended = False

    def read_until(self, needle: str, limit: float = 5.0) -> bool:
        """Read until `needle` has come or the stream ends (False then)."""
        deadline = time.monotonic() + limit
        while needle not in self.text and not self.ended:
            assert time.monotonic() < deadline, self.text
            try:
                chunk = next(self.chunks)
            except StopIteration:
                self.ended = True
                break
            self.text += chunk.decode()
        return needle in self.text

    def close(self) -> None:
        self.response.close()


def test_streams_beyond_the_cap_answer_503(database: str, team: dict[str, Any]) -> None:
    with environment(ORCH_EVENT_STREAMS_MAX="2"):
        client = ApiClient(make_app().test_client())
    limit = {"timeout": 5}  # each would end by itself then
    first = Stream(client, url(team["id"]), query_string=limit)
    second = Stream(client, url(team["id"]), query_string=limit)
    assert first.response.status_code == second.response.status_code == 200
    refused = client.get(url(team["id"]), query_string=limit)
    body = assert_error(refused, 503)
    assert "event streams" in body["message"]
    assert int(refused.headers["Retry-After"]) > 0
    assert client.get(f"{V1}/teams/{team['id']}").status_code == 200  # the rest still answers
    first.close()  # a stream that ends gives its place back
    third = Stream(client, url(team["id"]), query_string=limit)
    assert third.response.status_code == 200
    for stream in (second, third):
        stream.close()


def test_a_stream_ends_after_its_lifetime(database: str, team: dict[str, Any]) -> None:
    client = ApiClient(make_app(ORCH_SSE_LIFETIME=0.5, ORCH_SSE_HEARTBEAT=0.2).test_client())
    started = time.monotonic()
    response = client.get(url(team["id"]), query_string={"timeout": 5})
    body = response.get_data(as_text=True)
    assert response.status_code == 200
    assert time.monotonic() - started < 3
    # It says where it stood, so that a reconnecting client misses nothing.
    assert "\nid: 0-0\n" in body


def test_a_revoked_tokens_stream_ends(database: str, api: ApiClient, team: dict[str, Any]) -> None:
    client = ApiClient(make_app(ORCH_SSE_HEARTBEAT=0.2).test_client())
    created = client.post(f"{V1}/teams/{team['id']}/tokens").get_json()
    stream = Stream(client.as_token(created["token"]), url(team["id"]), query_string={"timeout": 5})
    assert stream.response.status_code == 200
    publish(team["id"], "before")
    assert stream.read_until("event: before")
    revoked = client.delete(f"{V1}/teams/{team['id']}/tokens/{created['id']}")
    assert revoked.status_code == 204
    time.sleep(0.5)
    publish(team["id"], "after")
    started = time.monotonic()
    assert not stream.read_until("event: after")
    assert time.monotonic() - started < 2  # ended, not run until its timeout
    messages = parse(stream.text)
    assert messages[-1]["event"] == "error"
    assert "revoked" in messages[-1]["data"]["message"]
    # The admin token's stream goes on.
    admin = Stream(client, url(team["id"]), query_string={"timeout": 0.7})
    publish(team["id"], "later")
    assert admin.read_until("event: later")
    admin.close()


def test_resume_across_trimmed_events_sends_reset_first(
    api: ApiClient, team: dict[str, Any], redis_client: redis.Redis
) -> None:
    for n in range(6):
        publish(team["id"], "tick", n=n)
    ids = stream_ids(redis_client, team["id"])
    redis_client.xtrim(keys.events(team["id"]), maxlen=3, approximate=False)
    for last in (ids[0], "0"):
        messages = kept_after(api, team["id"], last)
        assert messages[0]["event"] == "reset"
        assert messages[0]["data"] == {"reason": "events trimmed", "first_id": ids[3]}
        assert "id" not in messages[0]
        assert [m["data"]["n"] for m in messages[1:]] == [3, 4, 5]
    # From an id still kept nothing is missing: no reset.
    assert [m["data"]["n"] for m in kept_after(api, team["id"], ids[3])] == [4, 5]


def test_a_reader_overtaken_by_trimming_gets_reset(
    api: ApiClient, team: dict[str, Any], redis_client: redis.Redis
) -> None:
    for n in range(250):
        publish(team["id"], "tick", n=n)
    ids = stream_ids(redis_client, team["id"])
    stream = Stream(api, url(team["id"]), query_string={"timeout": 0, "last_event_id": "0"})
    assert stream.read_until(f"id: {ids[0]}\n")  # the first batch is being written
    redis_client.xtrim(keys.events(team["id"]), maxlen=20, approximate=False)
    stream.read_until("never", limit=10)
    messages = parse(stream.text)
    kinds = [m["event"] for m in messages]
    assert kinds.count("reset") == 1
    at = kinds.index("reset")
    assert [m["data"]["n"] for m in messages[:at]] == list(range(100))
    assert messages[at]["data"]["first_id"] == ids[230]
    assert [m["data"]["n"] for m in messages[at + 1 :]] == list(range(230, 250))


def test_a_lost_stream_sends_reset(
    api: ApiClient, team: dict[str, Any], redis_client: redis.Redis
) -> None:
    publish(team["id"], "tick")
    last = stream_ids(redis_client, team["id"])[0]
    redis_client.delete(keys.events(team["id"]))  # as after a Redis restart without data
    response = api.get(url(team["id"]), query_string={"timeout": 0, "last_event_id": last})
    messages = parse(response.get_data(as_text=True))
    assert [m["event"] for m in messages] == ["reset"]
    assert messages[0]["data"]["reason"] == "events lost"


# --- served by gunicorn, as in production ---------------------------------------------------


@pytest.fixture
def gunicorn_url(database: str, procs: Procs) -> Iterator[str]:
    """gunicorn -k gthread with one process of 4 threads, at most 2 of them for streams."""
    procs.env_vars.update(ORCH_ADMIN_TOKEN=ADMIN_TOKEN, ORCH_EVENT_STREAMS_MAX="2")
    base, server = procs.api(free_port(), workers=1, threads=4)
    yield base
    procs.kill(server)  # a graceful stop would wait for the streams still open to end


def health_latency(base: str, times: int = 5) -> float:
    """The slowest of a few /health requests (2 s: the server does not answer)."""
    worst = 0.0
    for _ in range(times):
        started = time.monotonic()
        try:
            assert requests.get(f"{base}/health", timeout=2).status_code == 200
        except requests.Timeout:
            return 2.0
        worst = max(worst, time.monotonic() - started)
    return worst


def test_streams_never_starve_gunicorn(gunicorn_url: str, team: dict[str, Any]) -> None:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    events_url = f"{gunicorn_url}{url(team['id'])}"

    def open_stream() -> requests.Response:
        return requests.get(events_url, headers=headers, stream=True, timeout=(2, 5))

    idle = health_latency(gunicorn_url)
    opened = [open_stream() for _ in range(4)]
    try:
        assert [r.status_code for r in opened] == [200, 200, 503, 503]
        assert opened[2].headers["Retry-After"] and opened[2].json()["code"] == 503
        busy = health_latency(gunicorn_url)
        team_page = requests.get(f"{gunicorn_url}{V1}/teams/{team['id']}", headers=headers)
        assert team_page.status_code == 200
    finally:
        for response in opened:
            response.close()
    left = time.monotonic()  # the clients are gone: their places come back within seconds
    while (again := open_stream()).status_code != 200:
        again.close()
        assert time.monotonic() - left < 8, "a stream whose client left still holds its place"
        time.sleep(0.2)
    freed = time.monotonic() - left
    again.close()
    print(f"/health: {idle * 1000:.0f} ms idle, {busy * 1000:.0f} ms with 2 streams open and 2")
    print(f"refused; a departed client's place back after {freed:.1f} s")
    assert busy < 1.0
