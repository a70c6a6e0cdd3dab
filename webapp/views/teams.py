"""Teams: create, list, read, start/pause/resume; team tokens."""

from __future__ import annotations

import uuid
from typing import Any

from flask import Response

from db.models import Team
from orchestration import lifecycle, teams
from webapp.auth import admin_only, current_principal
from webapp.parsing import Blueprint
from webapp.schemas import (
    TeamCreateSchema,
    TeamSchema,
    TeamUpdateSchema,
    TokenInfoSchema,
    TokenSchema,
)

blp = Blueprint(
    "teams",
    __name__,
    url_prefix="/api/v1/teams",
    description="Teams: a manager and workers; tasks are assigned only while a team is active.",
)

TEAM_COLUMNS = tuple(name for name in TeamSchema().fields if name != "task_counts")


def with_counts(rows: list[Team]) -> list[dict[str, Any]]:
    """Teams as documented: their columns plus task counts by status."""
    counts = teams.task_counts([row.id for row in rows])
    return [
        {**{name: getattr(row, name) for name in TEAM_COLUMNS}, "task_counts": counts[row.id]}
        for row in rows
    ]


@blp.route("", methods=["POST"])
@admin_only
@blp.arguments(TeamCreateSchema)
@blp.response(201, TeamSchema)
@blp.alt_response(403, response="FORBIDDEN")
def create_team(body: dict[str, Any]) -> dict[str, Any]:
    """Create a team (admin token only); it starts `inactive`."""
    return with_counts(
        [teams.create_team(body["name"], body["description"], body["token_budget"])]
    )[0]


@blp.route("", methods=["GET"])
@blp.response(200, TeamSchema(many=True))
def list_teams() -> list[dict[str, Any]]:
    """The teams this token reaches (a team token: its own)."""
    return with_counts(teams.list_teams(current_principal().visible_teams()))


@blp.route("/<uuid:team_id>", methods=["GET"])
@blp.response(200, TeamSchema)
@blp.alt_response(404, response="NOT_FOUND")
def get_team(team_id: uuid.UUID) -> dict[str, Any]:
    return with_counts([teams.get_team(team_id)])[0]


@blp.route("/<uuid:team_id>", methods=["PATCH"])
@admin_only
@blp.arguments(TeamUpdateSchema)
@blp.response(200, TeamSchema)
@blp.alt_response(403, response="FORBIDDEN")
@blp.alt_response(404, response="NOT_FOUND")
def update_team(body: dict[str, Any], team_id: uuid.UUID) -> dict[str, Any]:
    """Rename the team, or set or clear (null) its token budget (admin token only)."""
    return with_counts([teams.update_team(team_id, body)])[0]


@blp.route("/<uuid:team_id>", methods=["DELETE"])
@admin_only
@blp.response(204)
@blp.alt_response(403, response="FORBIDDEN")
@blp.alt_response(404, response="NOT_FOUND")
@blp.alt_response(409, response="CONFLICT")
def delete_team(team_id: uuid.UUID) -> Response:
    """Delete the team with its members, tasks, log, history and tokens (admin token only);
    409 while it is active or has tasks assigned or running."""
    teams.delete_team(team_id)
    return Response(status=204)


@blp.route("/<uuid:team_id>/start", methods=["POST"])
@blp.response(200, TeamSchema)
@blp.alt_response(404, response="NOT_FOUND")
@blp.alt_response(409, response="CONFLICT")
def start_team(team_id: uuid.UUID) -> dict[str, Any]:
    """inactive -> active: assignments begin."""
    return with_counts([lifecycle.start_team(team_id)])[0]


@blp.route("/<uuid:team_id>/pause", methods=["POST"])
@blp.response(200, TeamSchema)
@blp.alt_response(404, response="NOT_FOUND")
@blp.alt_response(409, response="CONFLICT")
def pause_team(team_id: uuid.UUID) -> dict[str, Any]:
    """active -> paused: no new assignments; work in flight finishes."""
    return with_counts([lifecycle.pause_team(team_id)])[0]


@blp.route("/<uuid:team_id>/resume", methods=["POST"])
@blp.response(200, TeamSchema)
@blp.alt_response(404, response="NOT_FOUND")
@blp.alt_response(409, response="CONFLICT")
def resume_team(team_id: uuid.UUID) -> dict[str, Any]:
    """paused -> active."""
    return with_counts([lifecycle.resume_team(team_id)])[0]


@blp.route("/<uuid:team_id>/tokens", methods=["POST"])
@admin_only
@blp.response(201, TokenSchema)
@blp.alt_response(403, response="FORBIDDEN")
@blp.alt_response(404, response="NOT_FOUND")
def create_token(team_id: uuid.UUID) -> teams.NewToken:
    """A bearer token reaching this team only (admin token only). Shown once, stored hashed."""
    return teams.create_token(team_id)


@blp.route("/<uuid:team_id>/tokens", methods=["GET"])
@admin_only
@blp.response(200, TokenInfoSchema(many=True))
@blp.alt_response(403, response="FORBIDDEN")
@blp.alt_response(404, response="NOT_FOUND")
def list_tokens(team_id: uuid.UUID) -> list[Any]:
    """The team's tokens (admin token only): id, prefix and use, never the token."""
    return teams.list_tokens(team_id)


@blp.route("/<uuid:team_id>/tokens/<uuid:token_id>", methods=["DELETE"])
@admin_only
@blp.response(204)
@blp.alt_response(403, response="FORBIDDEN")
@blp.alt_response(404, response="NOT_FOUND")
def revoke_token(team_id: uuid.UUID, token_id: uuid.UUID) -> Response:
    """Revoke a team token (admin token only): requests bearing it answer 401 from now on."""
    teams.revoke_token(team_id, token_id)
    return Response(status=204)
