"""The assignment log: which worker got which task, with the score that decided it."""

from __future__ import annotations

import uuid
from typing import Any

from orchestration import teams
from webapp.parsing import Blueprint
from webapp.schemas import AssignmentSchema, PageQuerySchema

blp = Blueprint(
    "assignments",
    __name__,
    url_prefix="/api/v1/teams/<uuid:team_id>/assignments",
    description="Assignments: every decision with its score breakdown and explanation.",
)


@blp.route("", methods=["GET"])
@blp.arguments(PageQuerySchema, location="query")
@blp.response(200, AssignmentSchema(many=True))
@blp.alt_response(404, response="NOT_FOUND")
def list_assignments(query: dict[str, Any], team_id: uuid.UUID) -> list[dict[str, Any]]:
    """Newest first."""
    return teams.list_assignments(team_id, limit=query["limit"], offset=query["offset"])
