"""Helpers and pytest fixtures for testing the API with Flask's test client.

The fixtures are a pytest plugin (`pytest_plugins = ["webapp.testing"]` in tests/conftest.py):
test modules name them as parameters and import only the helpers. They need the harness's
`database` fixture (tests/conftest.py)."""

from __future__ import annotations

import http
import os
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from orchestration.config import reload_settings
from webapp import create_app

ADMIN_TOKEN = "test-admin-token-0123456789abcdef"
V1 = "/api/v1"
ERROR_KEYS = {"code", "status", "message", "errors"}


@contextmanager
def environment(**values: str | None) -> Iterator[None]:
    """Set (or, with None, unset) environment variables and reload the settings; restore both."""
    saved = {name: os.environ.get(name) for name in values}
    try:
        for name, value in values.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        reload_settings()
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        reload_settings()


class ApiClient:
    """The test client with a bearer token (the admin's unless told otherwise)."""

    def __init__(self, client: FlaskClient, token: str | None = ADMIN_TOKEN) -> None:
        self.client = client
        self.token = token

    def as_token(self, token: str | None) -> ApiClient:
        return ApiClient(self.client, token)

    def request(
        self,
        method: str,
        path: str,
        json: Any = None,
        *,
        headers: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> TestResponse:
        all_headers = dict(headers or {})
        if self.token is not None:
            all_headers.setdefault("Authorization", f"Bearer {self.token}")
        if json is not None:
            kwargs["json"] = json
        return self.client.open(path, method=method, headers=all_headers, **kwargs)

    def get(self, path: str, **kwargs: Any) -> TestResponse:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, json: Any = None, **kwargs: Any) -> TestResponse:
        return self.request("POST", path, json, **kwargs)

    def patch(self, path: str, json: Any = None, **kwargs: Any) -> TestResponse:
        return self.request("PATCH", path, json, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> TestResponse:
        return self.request("DELETE", path, **kwargs)

    # Shortcuts through the API itself.

    def create_team(self, name: str = "team", **body: Any) -> dict[str, Any]:
        response = self.post(f"{V1}/teams", {"name": name, **body})
        assert response.status_code == 201, response.get_json()
        return dict(response.get_json())

    def add_member(self, team_id: Any, role: str = "worker", **body: Any) -> dict[str, Any]:
        response = self.post(f"{V1}/teams/{team_id}/members", {"role": role, **body})
        assert response.status_code == 201, response.get_json()
        return dict(response.get_json())

    def create_task(self, team_id: Any, title: str = "task", **body: Any) -> dict[str, Any]:
        response = self.post(f"{V1}/teams/{team_id}/tasks", {"title": title, **body})
        assert response.status_code == 201, response.get_json()
        return dict(response.get_json())

    def create_token(self, team_id: Any) -> str:
        response = self.post(f"{V1}/teams/{team_id}/tokens")
        assert response.status_code == 201, response.get_json()
        return str(response.get_json()["token"])


def assert_error(
    response: TestResponse, code: int, *, errors: bool | None = None
) -> dict[str, Any]:
    """The contract's error shape with this status; returns the body."""
    assert response.status_code == code, (response.status_code, response.get_data(as_text=True))
    assert response.mimetype == "application/json", response.mimetype
    body = response.get_json()
    assert isinstance(body, dict), body
    assert set(body) <= ERROR_KEYS, body
    assert {"code", "status", "message"} <= set(body), body
    assert body["code"] == code
    assert body["status"] == http.HTTPStatus(code).phrase
    assert isinstance(body["message"], str) and body["message"]
    if errors is True:
        assert isinstance(body.get("errors"), dict) and body["errors"], body
    elif errors is False:
        assert "errors" not in body, body
    return dict(body)


def unknown_id() -> str:
    return str(uuid.uuid4())


def make_app(**config: Any) -> Flask:
    settings: dict[str, Any] = {
        "ORCH_ADMIN_TOKEN": ADMIN_TOKEN,
        "ORCH_AUTH_ENABLED": True,
        "TESTING": True,
    }
    settings.update(config)
    return create_app(settings)


@pytest.fixture
def app(database: str) -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def api(client: FlaskClient) -> ApiClient:
    return ApiClient(client)


@pytest.fixture
def anonymous(client: FlaskClient) -> ApiClient:
    return ApiClient(client, token=None)


@pytest.fixture
def team(api: ApiClient) -> dict[str, Any]:
    return api.create_team("alpha")


@pytest.fixture
def other_team(api: ApiClient) -> dict[str, Any]:
    return api.create_team("beta")
