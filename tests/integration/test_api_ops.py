"""Operations: /health, /ready, /metrics (no token), also under /api/v1."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy
from prometheus_client.parser import text_string_to_metric_families

from db import migrate
from db.engine import get_engine, reset_engine
from orchestration import teams
from tests.conftest import run_tag, scratch_database_url, worker_id
from webapp import readiness
from webapp.testing import V1, ApiClient, assert_error, environment

PREFIXES = ["", V1]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("prefix", PREFIXES)
def test_health(anonymous: ApiClient, prefix: str) -> None:
    response = anonymous.get(f"{prefix}/health")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


@pytest.mark.parametrize("prefix", PREFIXES)
def test_ready(anonymous: ApiClient, prefix: str) -> None:
    response = anonymous.get(f"{prefix}/ready")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "checks": {"postgres": "ok", "redis": "ok"}}


def test_not_ready_without_redis(anonymous: ApiClient) -> None:
    with environment(REDIS_URL=f"redis://127.0.0.1:{closed_port()}/0"):
        body = assert_error(anonymous.get("/ready"), 503, errors=True)
    assert set(body["errors"]) == {"redis"}
    assert "redis" in body["message"]
    assert "postgres" not in body["message"]


def test_not_ready_without_postgres(anonymous: ApiClient, monkeypatch: pytest.MonkeyPatch) -> None:
    def down() -> None:
        raise ConnectionRefusedError("no")

    monkeypatch.setattr(teams, "check_database", down)
    body = assert_error(anonymous.get("/ready"), 503, errors=True)
    assert set(body["errors"]) == {"postgres"}
    assert "postgres" in body["message"]


@pytest.fixture
def unmigrated(anonymous: ApiClient) -> Iterator[str]:
    """The app pointed at a database that exists but was never migrated; its URL."""
    url = scratch_database_url(f"orch_test_{run_tag()}_unmigrated_{worker_id()}")
    migrate.drop_database(url)
    migrate.ensure_database(url)
    readiness.forget()
    try:
        with environment(DATABASE_URL=url):
            reset_engine()
            yield url
    finally:
        reset_engine()
        readiness.forget()
        migrate.drop_database(url)


def test_not_ready_when_the_schema_is_not_migrated(anonymous: ApiClient, unmigrated: str) -> None:
    body = assert_error(anonymous.get("/ready"), 503, errors=True)
    assert body["message"] == "not ready: postgres: schema not migrated (run make migrate)"
    assert body["errors"] == {"postgres": ["postgres: schema not migrated (run make migrate)"]}


def test_a_database_that_does_not_exist_says_to_run_make_migrate(
    anonymous: ApiClient, api: ApiClient, unmigrated: str
) -> None:
    migrate.drop_database(unmigrated)
    missing = "the database DATABASE_URL names does not exist (run make migrate, which creates it)"
    body = assert_error(anonymous.get("/ready"), 503, errors=True)
    assert body["errors"] == {"postgres": [f"postgres: {missing}"]}
    assert assert_error(api.get(f"{V1}/teams"), 503)["message"] == missing


def test_not_ready_while_the_schema_is_behind_then_ready_and_asked_once(
    anonymous: ApiClient, unmigrated: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    migrate.upgrade(unmigrated, "0004")
    body = assert_error(anonymous.get(f"{V1}/ready"), 503, errors=True)
    assert set(body["errors"]) == {"postgres"}
    assert "schema at revision 0004, behind" in body["message"]
    assert "run make migrate" in body["message"]

    migrate.upgrade(unmigrated)
    assert anonymous.get("/ready").status_code == 200

    # At head once, the schema is not read again: /ready is polled.
    def not_again() -> Any:
        raise AssertionError("the revision was read again")

    monkeypatch.setattr(readiness, "current_revisions", not_again)
    assert anonymous.get("/ready").status_code == 200


def test_a_route_on_a_missing_table_is_503_saying_to_migrate(
    api: ApiClient, unmigrated: str
) -> None:
    for response in (api.get(f"{V1}/teams"), api.post(f"{V1}/teams", {"name": "x"})):
        body = assert_error(response, 503, errors=False)
        assert "run make migrate" in body["message"]
    with get_engine().begin() as conn:  # a table of an older schema, a column missing
        conn.execute(sqlalchemy.text("CREATE TABLE teams (id uuid PRIMARY KEY)"))
    body = assert_error(api.get(f"{V1}/teams"), 503, errors=False)
    assert "run make migrate" in body["message"]


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


@pytest.mark.parametrize("prefix", PREFIXES)
def test_metrics(api: ApiClient, anonymous: ApiClient, team: dict[str, Any], prefix: str) -> None:
    api.create_task(team["id"], "a")
    api.create_task(team["id"], "b")
    api.post(f"{V1}/teams/{team['id']}/start")
    api.get(f"{V1}/teams/{team['id']}")
    api.get(f"{V1}/teams/not-a-uuid")
    response = anonymous.get(f"{prefix}/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    found = samples(response.get_data(as_text=True))
    get_team = frozenset(
        {"route": "/api/v1/teams/<uuid:team_id>", "method": "GET", "status": "200"}.items()
    )
    assert found[("orch_api_requests_total", get_team)] == 1
    assert found[("orch_api_request_duration_seconds_count", get_team)] == 1
    unmatched = frozenset({"route": "<unmatched>", "method": "other", "status": "404"}.items())
    assert found[("orch_api_requests_total", unmatched)] == 1
    pending = frozenset({"team_id": team["id"], "status": "pending"}.items())
    assert found[("orch_tasks", pending)] == 2
    assert (
        found[("orch_tasks", frozenset({"team_id": team["id"], "status": "failed"}.items()))] == 0
    )
    assert ("orch_stream_length", frozenset({"team_id": team["id"]}.items())) in found
    assert ("orch_stream_pending", frozenset({"team_id": team["id"]}.items())) in found
    assert found[("orch_pipeline_scrape_ok", frozenset())] == 1


def test_metrics_survive_a_database_outage(
    anonymous: ApiClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def down() -> teams.PipelineStats:
        raise ConnectionRefusedError("no")

    monkeypatch.setattr(teams, "pipeline_stats", down)
    response = anonymous.get("/metrics")
    assert response.status_code == 200
    assert samples(response.get_data(as_text=True))[("orch_pipeline_scrape_ok", frozenset())] == 0
