"""Bearer tokens: 401 without a valid one on every protected route, 404 for another team's
resources, admin-only routes, and the refusal to start without an admin token."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import ApiToken
from webapp import ConfigurationError, create_app
from webapp.testing import ADMIN_TOKEN, V1, ApiClient, assert_error, environment

# Every protected route: (method, path with {team}/{task}/{dep}/{member}, JSON body).
ROUTES: list[tuple[str, str, Any]] = [
    ("GET", "/teams", None),
    ("POST", "/teams", {"name": "t"}),
    ("GET", "/teams/{team}", None),
    ("POST", "/teams/{team}/start", None),
    ("POST", "/teams/{team}/pause", None),
    ("POST", "/teams/{team}/resume", None),
    ("POST", "/teams/{team}/tokens", None),
    ("PATCH", "/teams/{team}", {"token_budget": 1000}),
    ("DELETE", "/teams/{team}", None),
    ("POST", "/teams/{team}/members", {"role": "worker"}),
    ("GET", "/teams/{team}/members", None),
    ("PATCH", "/teams/{team}/members/{member}", {"status": "offline"}),
    ("POST", "/teams/{team}/tasks", {"title": "t"}),
    ("GET", "/teams/{team}/tasks", None),
    ("GET", "/teams/{team}/tasks/{task}", None),
    ("GET", "/teams/{team}/tasks/{task}/hierarchy", None),
    ("POST", "/teams/{team}/tasks/{task}/cancel", None),
    ("POST", "/teams/{team}/tasks/{task}/retry", None),
    ("POST", "/teams/{team}/decompose", {"goal": "g"}),
    ("POST", "/teams/{team}/tasks/{task}/dependencies", {"depends_on_task_id": "{dep}"}),
    (
        "POST",
        "/teams/{team}/dependencies",
        {"edges": [{"task_id": "{task}", "depends_on_task_id": "{dep}"}]},
    ),
    ("DELETE", "/teams/{team}/tasks/{task}/dependencies/{dep}", None),
    ("GET", "/teams/{team}/dependency-graph", None),
    ("GET", "/teams/{team}/assignments", None),
    ("GET", "/teams/{team}/events?timeout=0", None),
    ("GET", "/openapi.json", None),
]
TEAM_ROUTES = [route for route in ROUTES if "{team}" in route[1]]


def route_id(route: tuple[str, str, Any]) -> str:
    return f"{route[0]} {route[1]}"


@pytest.fixture
def world(api: ApiClient, team: dict[str, Any]) -> dict[str, str]:
    """A team with a member, a task and a dependency target."""
    member = api.add_member(team["id"])
    dep = api.create_task(team["id"], "dep")
    task = api.create_task(team["id"], "task", depends_on=[dep["id"]])
    return {"team": team["id"], "task": task["id"], "dep": dep["id"], "member": member["id"]}


@pytest.fixture
def any_ids() -> dict[str, str]:
    """Ids for routes refused before any lookup."""
    return {name: str(uuid.uuid4()) for name in ("team", "task", "dep", "member")}


def fill(template: Any, ids: dict[str, str]) -> Any:
    if isinstance(template, str):
        return template.format(**ids)
    if isinstance(template, dict):
        return {k: fill(v, ids) for k, v in template.items()}
    if isinstance(template, list):
        return [fill(v, ids) for v in template]
    return template


def call(client: ApiClient, route: tuple[str, str, Any], ids: dict[str, str], **kwargs: Any) -> Any:
    method, path, body = route
    return client.request(method, V1 + fill(path, ids), fill(body, ids), **kwargs)


@pytest.mark.parametrize("route", ROUTES, ids=route_id)
def test_missing_token(anonymous: ApiClient, any_ids: dict[str, str], route: Any) -> None:
    response = call(anonymous, route, any_ids)
    assert_error(response, 401)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


WRONG_AUTHORIZATIONS = [
    "Bearer wrong-token",
    "Bearer ",
    "Bearer",
    "Basic dXNlcjpwYXNz",
    ADMIN_TOKEN,
    f"Bearer {ADMIN_TOKEN}x",
    f"Bearer {ADMIN_TOKEN[:-1]}",
    "Bearer " + "x" * 5000,
    "Bearer orch_" + "A" * 43,
]


@pytest.mark.parametrize("route", ROUTES, ids=route_id)
def test_wrong_token(anonymous: ApiClient, any_ids: dict[str, str], route: Any) -> None:
    for authorization in WRONG_AUTHORIZATIONS:
        response = call(anonymous, route, any_ids, headers={"Authorization": authorization})
        assert_error(response, 401)
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("route", TEAM_ROUTES, ids=route_id)
def test_another_teams_resources_answer_404(
    api: ApiClient, world: dict[str, str], other_team: dict[str, Any], route: Any
) -> None:
    outsider = api.as_token(api.create_token(other_team["id"]))
    assert_error(call(outsider, route, world), 404)


@pytest.mark.parametrize("route", TEAM_ROUTES, ids=route_id)
def test_own_team_token_is_not_refused(api: ApiClient, world: dict[str, str], route: Any) -> None:
    insider = api.as_token(api.create_token(world["team"]))
    response = call(insider, route, world)
    expected_forbidden = route[1] == "/teams/{team}/tokens" or (
        route[0] in ("PATCH", "DELETE") and route[1] == "/teams/{team}"
    )
    if expected_forbidden:
        assert_error(response, 403)
    else:
        assert response.status_code not in (401, 403, 404), (route, response.get_json())


def test_public_routes_need_no_token(anonymous: ApiClient) -> None:
    for path in ("/health", "/ready", "/metrics"):
        assert anonymous.get(path).status_code == 200, path


def test_metrics_take_their_own_token_when_one_is_set(
    database: str, api: ApiClient, team: dict[str, Any]
) -> None:
    """ORCH_METRICS_TOKEN: the series name every team, so a deployment may keep them to its
    scraper (and the admin); a team token is not enough."""
    team_token = api.create_token(team["id"])
    scraper_token = "metrics-scraper-token-0123"
    with environment(ORCH_ADMIN_TOKEN=ADMIN_TOKEN, ORCH_METRICS_TOKEN=scraper_token):
        app = create_app()
    client = ApiClient(app.test_client(), token=None)
    for token in (None, "wrong-token-0123456789", team_token):
        assert_error(client.as_token(token).get("/metrics"), 401)
    for token in (scraper_token, ADMIN_TOKEN):
        response = client.as_token(token).get("/metrics")
        assert response.status_code == 200 and "orch_tasks" in response.get_data(as_text=True)
    assert client.get("/health").status_code == 200  # only /metrics changes


def test_token_use_is_recorded(api: ApiClient, team: dict[str, Any], session: Session) -> None:
    token = api.create_token(team["id"])
    assert session.scalars(select(ApiToken.last_used_at)).one() is None
    api.as_token(token).get(f"{V1}/teams")
    session.expire_all()
    assert session.scalars(select(ApiToken.last_used_at)).one() is not None


def test_tokens_never_logged(
    api: ApiClient, team: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = api.create_token(team["id"])
    api.as_token(token).get(f"{V1}/teams")
    api.as_token(token + "x").get(f"{V1}/teams")
    api.as_token(token).get(f"{V1}/teams/{uuid.uuid4()}")
    api.get(f"{V1}/teams")
    assert caplog.records, "expected some log records"
    assert token not in caplog.text
    assert ADMIN_TOKEN not in caplog.text


def test_refuses_to_start_without_admin_token(database: str) -> None:
    with (
        environment(ORCH_ADMIN_TOKEN=None, ORCH_AUTH=None),
        pytest.raises(ConfigurationError, match="ORCH_ADMIN_TOKEN"),
    ):
        create_app()
    with (
        environment(ORCH_ADMIN_TOKEN="", ORCH_AUTH="on"),
        pytest.raises(ConfigurationError, match="ORCH_AUTH=off"),
    ):
        create_app()


@pytest.mark.parametrize(
    ("token", "problem"),
    [
        ("short-1", "shorter than 16 characters"),
        (" padded-admin-token-0123 ", "whitespace"),
        ("x" * 513, "longer than 512 characters"),
    ],
    ids=["short", "padded", "long"],
)
def test_refuses_to_start_with_an_admin_token_no_request_could_use_or_anyone_could_guess(
    database: str, token: str, problem: str
) -> None:
    with (
        environment(ORCH_ADMIN_TOKEN=token, ORCH_AUTH=None),
        pytest.raises(ConfigurationError, match=f"ORCH_ADMIN_TOKEN .*{problem}"),
    ):
        create_app()


def test_starts_with_admin_token_from_the_environment(database: str) -> None:
    with environment(ORCH_ADMIN_TOKEN="env-token-123456", ORCH_AUTH=None):
        app = create_app()
    client = ApiClient(app.test_client(), token="env-token-123456")
    assert client.get(f"{V1}/teams").status_code == 200
    assert_error(client.as_token(ADMIN_TOKEN).get(f"{V1}/teams"), 401)


def test_auth_off(database: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    with environment(ORCH_ADMIN_TOKEN=None, ORCH_AUTH="off"):
        app = create_app()
    assert any(
        "ORCH_AUTH=off" in r.getMessage() for r in caplog.records if r.levelname == "WARNING"
    )
    client: FlaskClient = app.test_client()
    created = client.post(f"{V1}/teams", json={"name": "open"})
    assert created.status_code == 201
    assert client.get(f"{V1}/teams").status_code == 200
