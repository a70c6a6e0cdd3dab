"""Operations: /health, /ready, /metrics (no token), also under /api/v1."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from orchestration import teams
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
