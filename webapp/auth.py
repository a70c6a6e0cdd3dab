"""Bearer tokens. The admin token (ORCH_ADMIN_TOKEN) reaches every team; a team token reaches
its own team only, and another team's resources answer 404 to it, exactly as unknown ids do.

Checked before the view runs (so no body is parsed for an anonymous caller): every route needs a
token except those marked `public`; a route with a `team_id` in its path is reachable only by
a principal of that team; routes marked `admin_only` answer 403 to team tokens.
Tokens are never logged.
"""

from __future__ import annotations

import hmac
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from flask import Flask, current_app, g, request
from werkzeug.exceptions import Forbidden, NotFound, Unauthorized

from orchestration import teams

F = TypeVar("F", bound=Callable[..., Any])

PUBLIC_ATTR = "_orch_public"
ADMIN_ONLY_ATTR = "_orch_admin_only"
MAX_TOKEN_LENGTH = 512


@dataclass(frozen=True)
class Principal:
    admin: bool
    team_id: uuid.UUID | None = None

    def can_access(self, team_id: uuid.UUID) -> bool:
        return self.admin or self.team_id == team_id

    def visible_teams(self) -> list[uuid.UUID] | None:
        """None for every team (admin), else the token's own team."""
        return None if self.admin else [self.team_id] if self.team_id else []


ADMIN = Principal(admin=True)


def public(view: F) -> F:
    """Mark a view as reachable without a token."""
    setattr(view, PUBLIC_ATTR, True)
    return view


def admin_only(view: F) -> F:
    """Mark a view as reachable with the admin token only."""
    setattr(view, ADMIN_ONLY_ATTR, True)
    return view


def current_principal() -> Principal:
    principal = g.get("principal")
    if not isinstance(principal, Principal):  # never reached through a routed view
        raise Unauthorized()
    return principal


def token_check() -> Callable[[], bool]:
    """For a response that outlives its request (an event stream): whether the request's token
    still grants it. A team token is looked up again by its hash (one indexed read), so a
    revoked one fails; the admin token and ORCH_AUTH=off hold for the life of the process."""
    principal = current_principal()
    if principal.admin:
        return lambda: True
    token = _bearer_token()
    return lambda: teams.team_for_token(token) == principal.team_id


def _bearer_token() -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("a bearer token is required (Authorization: Bearer <token>)")
    if len(token) > MAX_TOKEN_LENGTH:
        raise Unauthorized("invalid token")
    return token


def _same(token: str, secret: str | None) -> bool:
    return bool(secret) and hmac.compare_digest(
        token.encode("utf-8", "surrogateescape"), str(secret).encode("utf-8", "surrogateescape")
    )


def check_scraper() -> None:
    """For /metrics: with ORCH_METRICS_TOKEN set, only it or the admin token may read (the
    series name every team); unset, anyone may, as the contract has it."""
    metrics_token = current_app.config.get("ORCH_METRICS_TOKEN")
    if not metrics_token or not current_app.config["ORCH_AUTH_ENABLED"]:
        return
    token = _bearer_token()
    if not (_same(token, metrics_token) or _same(token, current_app.config["ORCH_ADMIN_TOKEN"])):
        raise Unauthorized("invalid token: /metrics takes ORCH_METRICS_TOKEN")


def _authenticate(token: str) -> Principal:
    if _same(token, current_app.config["ORCH_ADMIN_TOKEN"]):
        return ADMIN
    team_id = teams.team_for_token(token)
    if team_id is None:
        raise Unauthorized("invalid token")
    return Principal(admin=False, team_id=team_id)


def check_request() -> None:
    """before_request: authenticate and authorize the routed view."""
    if request.routing_exception is not None or request.endpoint is None:
        return  # 404/405 answer as such, token or not
    view = current_app.view_functions.get(request.endpoint)
    if view is None or getattr(view, PUBLIC_ATTR, False):
        return
    if not current_app.config["ORCH_AUTH_ENABLED"]:
        g.principal = ADMIN
        return
    principal = _authenticate(_bearer_token())
    g.principal = principal
    team_id = (request.view_args or {}).get("team_id")
    if isinstance(team_id, uuid.UUID) and not principal.can_access(team_id):
        raise NotFound(f"team {team_id} not found")
    if getattr(view, ADMIN_ONLY_ATTR, False) and not principal.admin:
        raise Forbidden("only the admin token may do this")


def init_app(app: Flask) -> None:
    app.before_request(check_request)
