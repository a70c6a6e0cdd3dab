"""Every error is JSON: `{"code", "status", "message", "errors"?}` (CONTRACT.md, HTTP API).

Each error class maps to one status here, and only here."""

from __future__ import annotations

import http
import logging
from collections.abc import Mapping
from typing import Any

import marshmallow as ma
import redis
import sqlalchemy.exc
from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from db.engine import migration_needed
from orchestration import errors

log = logging.getLogger(__name__)

# Most specific first: the first class an exception is an instance of decides.
STATUS_BY_ERROR: tuple[tuple[type[BaseException], int], ...] = (
    (errors.NotFound, 404),
    (errors.InvalidInput, 422),
    (errors.Conflict, 409),
    (errors.AgentTimeout, 504),
    (errors.AgentError, 502),
    (errors.Unavailable, 503),
)

UNAVAILABLE: tuple[tuple[type[BaseException], str], ...] = (
    (sqlalchemy.exc.OperationalError, "the database does not answer"),
    (sqlalchemy.exc.InterfaceError, "the database does not answer"),
    (sqlalchemy.exc.TimeoutError, "the database connection pool is exhausted"),
    (redis.ConnectionError, "redis does not answer"),
    (redis.TimeoutError, "redis does not answer"),
)

DEFAULT_MESSAGES = {
    400: "the request is malformed",
    401: "a valid bearer token is required (Authorization: Bearer <token>)",
    403: "this token may not do that",
    404: "no such resource",
    405: "this method is not allowed here",
    409: "the request conflicts with the current state",
    413: "the request body is larger than 1 MiB",
    422: "the request failed validation",
    500: "internal error",
    502: "an agent failed",
    504: "an agent did not answer in time",
    503: "a backing service does not answer",
}


class ErrorSchema(ma.Schema):
    """The error body (documentation only; errors are built by `error_response`)."""

    code = ma.fields.Integer(required=True, metadata={"description": "the HTTP status"})
    status = ma.fields.String(required=True, metadata={"description": "the HTTP reason phrase"})
    message = ma.fields.String(required=True, metadata={"description": "what to fix"})
    errors = ma.fields.Dict(
        keys=ma.fields.String(),
        metadata={"description": "details by field, e.g. validation messages or a cycle"},
    )


def error_response(
    code: int,
    message: str | None = None,
    errors: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    body: dict[str, Any] = {
        "code": code,
        "status": _phrase(code),
        "message": message or DEFAULT_MESSAGES.get(code) or _phrase(code),
    }
    if errors:
        body["errors"] = _stringify_keys(errors)
    response = jsonify(body)
    response.status_code = code
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def handle_http_exception(exc: HTTPException) -> Response:
    code = exc.code or 500
    data = getattr(exc, "data", None) or {}
    errors = data.get("errors") or data.get("messages")
    if isinstance(errors, Mapping):
        errors = _merge_locations(errors)
    message = data.get("message")
    if message is None:
        if code == 422 and errors:
            message = "invalid request: " + _summary(errors)
        elif exc.description and exc.description != getattr(type(exc), "description", None):
            message = exc.description
    headers = {k: v for k, v in exc.get_headers() if k.lower() != "content-type"}
    headers.update(data.get("headers") or {})
    if code == 401:
        headers.setdefault("WWW-Authenticate", 'Bearer realm="api"')
    if code >= 500:
        log.error("HTTP %s: %s", code, exc.description)
    return error_response(code, message, errors, headers)


def handle_orchestration_error(exc: errors.OrchestrationError) -> Response:
    for cls, code in STATUS_BY_ERROR:
        if isinstance(exc, cls):
            if code >= 500:
                log.warning("%s: %s", type(exc).__name__, exc.message)
            return error_response(code, exc.message, exc.errors)
    log.error("unmapped orchestration error", exc_info=exc)
    return error_response(500)


def handle_unexpected(exc: Exception) -> Response:
    fix = migration_needed(exc)
    if fix is not None:
        log.error("%s: %s", fix, _first_line(exc))
        return error_response(503, fix, headers={"Retry-After": "5"})
    for cls, message in UNAVAILABLE:
        if isinstance(exc, cls):
            log.warning("unavailable: %s: %s", type(exc).__name__, _first_line(exc))
            return error_response(503, message, headers={"Retry-After": "5"})
    log.exception("unexpected error")
    return error_response(500)


def register(app: Flask) -> None:
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(errors.OrchestrationError, handle_orchestration_error)
    app.register_error_handler(Exception, handle_unexpected)


def _phrase(code: int) -> str:
    try:
        return http.HTTPStatus(code).phrase
    except ValueError:
        return "Error"


def _merge_locations(messages: Mapping[str, Any]) -> dict[str, Any]:
    """webargs nests errors by location ({"json": {...}, "query": {...}}): flatten that level."""
    merged: dict[str, Any] = {}
    for location, value in messages.items():
        if location in ("json", "query", "querystring", "headers", "view_args", "form"):
            if isinstance(value, Mapping):
                merged.update(value)
            else:
                merged["_schema"] = value
        else:
            merged[location] = value
    return merged


def _summary(errors: Mapping[str, Any], limit: int = 3) -> str:
    parts: list[str] = []
    for path, message in _flatten(errors):
        parts.append(f"{path}: {message}")
        if len(parts) == limit:
            break
    return "; ".join(parts)


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(value, Mapping):
        out: list[tuple[str, str]] = []
        for key, child in value.items():
            out.extend(_flatten(child, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(value, list | tuple):
        out = []
        for child in value:
            out.extend(_flatten(child, prefix))
        return out
    return [(prefix or "_schema", str(value))]


def _stringify_keys(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _stringify_keys(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_stringify_keys(v) for v in value]
    return value


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [""])[0][:200]
