"""The HTTP API (CONTRACT.md, HTTP API): `flask --app webapp run`, or any WSGI server serving
`webapp:create_app()` (e.g. `gunicorn -k gthread --threads 8 'webapp:create_app()'`; a
thread per live event stream)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask, request
from flask_smorest import Api
from werkzeug.exceptions import RequestEntityTooLarge

from orchestration.agents import AgentConfigError, check_agents
from orchestration.config import get_settings
from orchestration.logs import configure_logging
from webapp import auth, errors, metrics
from webapp.auth import MAX_TOKEN_LENGTH

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
API_PREFIX = "/api/v1"

__all__ = ["ConfigurationError", "create_app"]


class ConfigurationError(RuntimeError):
    """The app cannot start as configured."""


class OrchestrationApi(Api):
    """flask-smorest's Api with the contract's error body (see webapp.errors)."""

    ERROR_SCHEMA = errors.ErrorSchema

    def _register_error_handlers(self) -> None:
        errors.register(self._app)


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app. Refuses to start without ORCH_ADMIN_TOKEN unless ORCH_AUTH=off, and with
    a planner (ORCH_PLANNER) that cannot be built."""
    settings = get_settings()
    app = Flask(__name__, static_folder=None)
    app.config.update(
        MAX_CONTENT_LENGTH=MAX_BODY_BYTES,
        ORCH_ADMIN_TOKEN=settings.admin_token,
        ORCH_METRICS_TOKEN=settings.metrics_token,
        ORCH_AUTH_ENABLED=settings.auth_enabled,
        ORCH_DASHBOARD_GRAPH_LIMIT=settings.dashboard_graph_limit,
        API_TITLE="Agent orchestration",
        API_VERSION="v1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX=API_PREFIX,
        OPENAPI_JSON_PATH="openapi.json",
        API_SPEC_OPTIONS={
            "info": {
                "description": "Teams of AI agents: task trees, dependencies, skill-based "
                "assignment. Every route but /health, /ready and /metrics needs "
                "`Authorization: Bearer <token>`.",
            },
            "components": {"securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}}},
            "security": [{"bearerAuth": []}],
        },
    )
    app.config.update(config or {})
    if not app.testing:
        configure_logging(settings.log_format, settings.log_level)
    _check_auth_config(app)
    _check_planner()
    app.json.sort_keys = False  # type: ignore[attr-defined]

    metrics.init_app(app)  # first: times every request, refused ones included
    auth.init_app(app)
    app.before_request(_refuse_oversized_body)

    from webapp.views import BLUEPRINTS, ops

    api = OrchestrationApi(app)
    for blueprint in BLUEPRINTS:
        api.register_blueprint(blueprint)
    api.register_blueprint(ops.blp, url_prefix=API_PREFIX, name="ops-v1")
    from webapp import dashboard

    app.register_blueprint(dashboard.bp)
    return app


def _check_auth_config(app: Flask) -> None:
    if not app.config["ORCH_AUTH_ENABLED"]:
        log.warning(
            "ORCH_AUTH=off: the API accepts every request without a token; "
            "never run it like this where anyone else can reach it"
        )
        return
    if not app.config.get("ORCH_ADMIN_TOKEN"):
        raise ConfigurationError(
            "ORCH_ADMIN_TOKEN is not set: the API refuses to start without an admin token. "
            "Set ORCH_ADMIN_TOKEN to a long random secret "
            "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`), "
            "or set ORCH_AUTH=off for a local, private run."
        )
    problem = _admin_token_problem(app.config["ORCH_ADMIN_TOKEN"])
    if problem is not None:
        raise ConfigurationError(
            f"ORCH_ADMIN_TOKEN {problem}: the API refuses to start. Set it to a long random "
            "secret (e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)."
        )


# Shorter is guessable: the API allows hundreds of tries a second and never locks out.
MIN_ADMIN_TOKEN_LENGTH = 16


def _admin_token_problem(token: str) -> str | None:
    """Why no request could (or should) authenticate with this admin token, or None."""
    if token != token.strip():
        return "starts or ends with whitespace, which no request can send"
    if len(token) > MAX_TOKEN_LENGTH:
        return f"is longer than {MAX_TOKEN_LENGTH} characters, which requests may not send"
    if len(token) < MIN_ADMIN_TOKEN_LENGTH:
        return f"is shorter than {MIN_ADMIN_TOKEN_LENGTH} characters"
    return None


def _check_planner() -> None:
    """`POST .../decompose` runs the planner: a setting that cannot work refuses the start,
    rather than every decomposition failing later."""
    try:
        check_agents("planner")
    except AgentConfigError as exc:
        raise ConfigurationError(f"the API refuses to start: {exc}") from None


def _refuse_oversized_body() -> None:
    """413 as soon as a declared length is over the limit, whether or not the view reads it."""
    limit = request.max_content_length
    if limit is not None and (request.content_length or 0) > limit:
        raise RequestEntityTooLarge()
