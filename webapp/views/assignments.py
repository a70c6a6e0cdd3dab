"""The assignment log: which worker got which task, with the score that decided it."""

from __future__ import annotations

import uuid
from typing import Any

from orchestration import teams
from webapp.paging import NEXT_PAGE_HEADERS, next_page_headers
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
@blp.response(200, AssignmentSchema(many=True), headers=NEXT_PAGE_HEADERS)
@blp.alt_response(404, response="NOT_FOUND")
def list_assignments(
    query: dict[str, Any], team_id: uuid.UUID
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Newest first, a page at a time: follow `X-Next-Cursor` (or `Link`) for the next one."""
    found, cursor = teams.list_assignments(
        team_id, limit=query["limit"], offset=query["offset"], after=query.get("after")
    )
    return found, next_page_headers("assignments.list_assignments", query, cursor, team_id=team_id)
