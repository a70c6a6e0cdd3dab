"""Team members: the manager and the workers, their skills, capacity and availability."""

from __future__ import annotations

import uuid
from typing import Any

from db.models import TeamMember
from orchestration import teams
from webapp.parsing import Blueprint
from webapp.schemas import MemberCreateSchema, MemberSchema, MemberUpdateSchema

blp = Blueprint(
    "members",
    __name__,
    url_prefix="/api/v1/teams/<uuid:team_id>/members",
    description="Members: one manager (needed to decompose goals) and workers.",
)


@blp.route("", methods=["POST"])
@blp.arguments(MemberCreateSchema)
@blp.response(201, MemberSchema)
@blp.alt_response(404, response="NOT_FOUND")
@blp.alt_response(409, response="CONFLICT")
def add_member(body: dict[str, Any], team_id: uuid.UUID) -> TeamMember:
    """Add a manager or a worker; `agent_id` is generated when absent."""
    return teams.add_member(team_id, **body)


@blp.route("", methods=["GET"])
@blp.response(200, MemberSchema(many=True))
@blp.alt_response(404, response="NOT_FOUND")
def list_members(team_id: uuid.UUID) -> list[TeamMember]:
    return teams.list_members(team_id)


@blp.route("/<uuid:member_id>", methods=["PATCH"])
@blp.arguments(MemberUpdateSchema)
@blp.response(200, MemberSchema)
@blp.alt_response(404, response="NOT_FOUND")
def update_member(body: dict[str, Any], team_id: uuid.UUID, member_id: uuid.UUID) -> TeamMember:
    """`status: offline` stops new assignments (work in flight finishes); `idle` brings the
    member back online."""
    return teams.update_member(team_id, member_id, **body)
