"""Errors are JSON in the contract's shape, whatever the request: never HTML, never a 5xx
for bad input."""

from __future__ import annotations

import logging
from typing import Any

import psycopg.errors
import pytest
import redis
import sqlalchemy.exc

from orchestration import errors, teams
from webapp.parsing import MAX_JSON_DEPTH
from webapp.testing import V1, ApiClient, assert_error

# Routes that read a JSON body: (method, path with {team}/{task}/{member}).
BODY_ROUTES = [
    ("POST", "/teams"),
    ("POST", "/teams/{team}/members"),
    ("PATCH", "/teams/{team}/members/{member}"),
    ("POST", "/teams/{team}/tasks"),
    ("POST", "/teams/{team}/decompose"),
    ("POST", "/teams/{team}/tasks/{task}/dependencies"),
]


@pytest.fixture
def ids(api: ApiClient, team: dict[str, Any]) -> dict[str, str]:
    member = api.add_member(team["id"], "manager")
    task = api.create_task(team["id"], "t")
    return {"team": team["id"], "task": task["id"], "member": member["id"]}


def send(api: ApiClient, route: tuple[str, str], ids: dict[str, str], data: bytes) -> Any:
    method, path = route
    return api.request(
        method, V1 + path.format(**ids), data=data, headers={"Content-Type": "application/json"}
    )


MALFORMED = [
    b"{",
    b'{"name": }',
    b"{'name': 'single quotes'}",
    b'{"title": "x"} trailing',
    b'{"priority": NaN}',
    b'{"priority": Infinity}',
    b'{"priority": -Infinity}',
    b'{"x": 1e999}',
    b'{"x": ' + b"9" * 5000 + b"}",
    b"\xff\xfe\x00",
    b"[" * 100_000 + b"]" * 100_000,
    b'{"a":' * 200 + b"1" + b"}" * 200,
    b'{"a": [' + b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH + b"]}",
]
NOT_OBJECTS = [b"[]", b'"text"', b"42", b"null", b"true", b'[{"title": "x"}]']


@pytest.mark.parametrize("route", BODY_ROUTES, ids=lambda r: f"{r[0]} {r[1]}")
def test_malformed_json_is_400(api: ApiClient, ids: dict[str, str], route: tuple[str, str]) -> None:
    for data in MALFORMED:
        response = send(api, route, ids, data)
        assert response.status_code == 400, data[:40]
        assert_error(response, 400)


@pytest.mark.parametrize("route", BODY_ROUTES, ids=lambda r: f"{r[0]} {r[1]}")
def test_json_that_is_not_an_object_is_422(
    api: ApiClient, ids: dict[str, str], route: tuple[str, str]
) -> None:
    for data in NOT_OBJECTS:
        response = send(api, route, ids, data)
        assert response.status_code == 422, data
        assert_error(response, 422, errors=True)


@pytest.mark.parametrize("route", BODY_ROUTES, ids=lambda r: f"{r[0]} {r[1]}")
def test_unstorable_strings_are_422(
    api: ApiClient, ids: dict[str, str], route: tuple[str, str]
) -> None:
    for data in (b'{"title": "a\\u0000b"}', b'{"title": "\\ud800"}', b'{"\\u0000": 1}'):
        assert_error(send(api, route, ids, data), 422, errors=True)


def test_body_without_content_type_is_read_as_json(api: ApiClient) -> None:
    response = api.request("POST", f"{V1}/teams", data=b'{"name": "plain"}')
    assert response.status_code == 201


def test_body_over_one_mib_is_413(api: ApiClient, team: dict[str, Any]) -> None:
    big = b'{"title": "x", "description": "' + b"d" * (1024 * 1024) + b'"}'
    response = api.request(
        "POST",
        f"{V1}/teams/{team['id']}/tasks",
        data=big,
        headers={"Content-Type": "application/json"},
    )
    assert_error(response, 413)
    # Even where no body is read.
    assert_error(api.request("GET", f"{V1}/teams", data=big), 413)


@pytest.mark.parametrize(
    "path",
    [
        "/nowhere",
        "/",
        f"{V1}",
        f"{V1}/nowhere",
        f"{V1}/teams/",
        f"{V1}/teams/not-a-uuid",
        f"{V1}/teams/123",
        f"{V1}/teams/{{team}}/tasks/not-a-uuid",
        f"{V1}/teams/{{team}}/members/xyz",
        f"{V1}/teams/{{team}}/tasks/{{team}}-0/hierarchy",
    ],
)
def test_unknown_routes_and_malformed_ids_are_404(
    api: ApiClient, team: dict[str, Any], path: str
) -> None:
    assert_error(api.get(path.format(team=team["id"])), 404)


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/teams", {"GET", "POST"}),
        ("PUT", "/teams/{team}", {"GET"}),
        ("GET", "/teams/{team}/start", {"POST"}),
        ("DELETE", "/teams/{team}/tasks", {"GET", "POST"}),
        ("POST", "/teams/{team}/dependency-graph", {"GET"}),
        ("POST", "/health", {"GET"}),
    ],
)
def test_wrong_method_is_405(
    api: ApiClient, team: dict[str, Any], method: str, path: str, allowed: set[str]
) -> None:
    full = path.format(team=team["id"])
    response = api.request(method, full if full == "/health" else V1 + full)
    assert_error(response, 405)
    assert allowed <= {m.strip() for m in response.headers["Allow"].split(",")}


def test_unexpected_error_is_a_logged_json_500(
    api: ApiClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*_: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(teams, "list_teams", broken)
    body = assert_error(api.get(f"{V1}/teams"), 500, errors=False)
    assert "boom" not in body["message"]
    assert any(r.exc_info and "boom" in str(r.exc_info[1]) for r in caplog.records)


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (errors.NotFound("gone"), 404),
        (errors.InvalidInput("bad", {"field": ["bad"]}), 422),
        (errors.Conflict("clash"), 409),
        (errors.InvalidTransition("no"), 409),
        (errors.NoManager("hire one"), 409),
        (errors.DependencyCycle(["a", "b", "a"]), 409),
        (errors.SelfDependency("a"), 409),
        (errors.AgentError("model down"), 502),
        (errors.Unavailable("db down"), 503),
        (sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("refused")), 503),
        (redis.ConnectionError("refused"), 503),
        (redis.TimeoutError("slow"), 503),
        (sqlalchemy.exc.ProgrammingError("SELECT", {}, psycopg.errors.UndefinedTable("no")), 503),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_error_classes_map_to_statuses(
    api: ApiClient, monkeypatch: pytest.MonkeyPatch, exc: BaseException, code: int
) -> None:
    def failing(*_: Any) -> Any:
        raise exc

    monkeypatch.setattr(teams, "list_teams", failing)
    body = assert_error(api.get(f"{V1}/teams"), code)
    if isinstance(getattr(exc, "orig", None), psycopg.errors.UndefinedTable):
        assert "run make migrate" in body["message"]
    if isinstance(exc, errors.OrchestrationError):
        assert body["message"] == exc.message
        if exc.errors:
            assert body["errors"] == exc.errors


def test_cycle_errors_name_the_cycle(api: ApiClient, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(*_: Any) -> Any:
        raise errors.DependencyCycle(["a", "b", "a"])

    monkeypatch.setattr(teams, "list_teams", failing)
    body = assert_error(api.get(f"{V1}/teams"), 409, errors=True)
    assert body["errors"] == {"cycle": ["a", "b", "a"]}


def test_validation_message_says_what_to_fix(api: ApiClient, team: dict[str, Any]) -> None:
    body = assert_error(api.post(f"{V1}/teams/{team['id']}/tasks", {"priority": 99}), 422)
    assert "title" in body["message"] and "priority" in body["message"]
    assert set(body["errors"]) == {"title", "priority"}


def test_nested_validation_errors(api: ApiClient, team: dict[str, Any]) -> None:
    plan = {"title": "root", "subtasks": [{"title": "ok"}, {"title": "", "priority": 50}]}
    body = assert_error(api.post(f"{V1}/teams/{team['id']}/decompose", {"plan": plan}), 422)
    assert set(body["errors"]["plan"]["subtasks"]["1"]) == {"title", "priority"}


def test_server_errors_are_logged_without_tokens(
    api: ApiClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    def broken(*_: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(teams, "list_teams", broken)
    api.get(f"{V1}/teams")
    from webapp.testing import ADMIN_TOKEN

    assert ADMIN_TOKEN not in caplog.text


def test_no_static_route(anonymous: ApiClient) -> None:
    assert_error(anonymous.get("/static/app.js"), 404)
