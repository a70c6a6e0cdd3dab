"""Decompositions: a goal planned in the background, to be polled (or followed on the team's
event stream) instead of holding the request while the planner works."""

from __future__ import annotations

import uuid
from typing import Any

from flask import url_for

from db.models import Decomposition
from orchestration import planning
from webapp.paging import NEXT_PAGE_HEADERS, next_page_headers
from webapp.parsing import Blueprint
from webapp.schemas import (
    DecomposeGoalSchema,
    DecompositionListQuerySchema,
    DecompositionSchema,
    IdempotencyHeaderSchema,
)

blp = Blueprint(
    "decompositions",
    __name__,
    url_prefix="/api/v1/teams/<uuid:team_id>/decompositions",
    description="Decompositions: goals the manager's planner turns into tasks in the background.",
)

SUBMITTED_HEADERS = {
    "Location": {"description": "the decomposition, to poll", "schema": {"type": "string"}},
    "Idempotent-Replayed": {
        "description": "`true` when an earlier request with this Idempotency-Key made it",
        "schema": {"type": "string"},
    },
}


@blp.route("", methods=["POST"])
@blp.arguments(DecomposeGoalSchema)
@blp.arguments(IdempotencyHeaderSchema, location="headers", as_kwargs=True)
@blp.response(202, DecompositionSchema, headers=SUBMITTED_HEADERS)
@blp.alt_response(404, response="NOT_FOUND")
@blp.alt_response(409, response="CONFLICT")
def submit(
    body: dict[str, Any], team_id: uuid.UUID, idempotency_key: str | None = None
) -> tuple[Decomposition, dict[str, str]]:
    """Queue a goal for the manager's planner and answer at once (202): a worker's planner
    makes its tasks, as `POST .../decompose` does while the caller waits. Poll `Location`,
    or follow the team's events (`decomposition.succeeded` / `.failed`). Needs a manager."""
    made, new = planning.submit(team_id, body["goal"], body["max_depth"], idempotency_key)
    headers = {
        "Location": url_for(
            "decompositions.get_decomposition", team_id=team_id, decomposition_id=made.id
        )
    }
    if not new:
        headers["Idempotent-Replayed"] = "true"
    return made, headers


@blp.route("", methods=["GET"])
@blp.arguments(DecompositionListQuerySchema, location="query")
@blp.response(200, DecompositionSchema(many=True), headers=NEXT_PAGE_HEADERS)
@blp.alt_response(404, response="NOT_FOUND")
def list_decompositions(
    query: dict[str, Any], team_id: uuid.UUID
) -> tuple[list[Decomposition], dict[str, str]]:
    """Newest first, a page at a time."""
    found, cursor = planning.page(team_id, query["limit"], query.get("status"), query.get("after"))
    headers = next_page_headers(
        "decompositions.list_decompositions", query, cursor, team_id=team_id
    )
    return found, headers


@blp.route("/<uuid:decomposition_id>", methods=["GET"])
@blp.response(200, DecompositionSchema)
@blp.alt_response(404, response="NOT_FOUND")
def get_decomposition(team_id: uuid.UUID, decomposition_id: uuid.UUID) -> Decomposition:
    return planning.get(team_id, decomposition_id)


@blp.route("/<uuid:decomposition_id>/cancel", methods=["POST"])
@blp.response(200, DecompositionSchema)
@blp.alt_response(404, response="NOT_FOUND")
@blp.alt_response(409, response="CONFLICT")
def cancel_decomposition(team_id: uuid.UUID, decomposition_id: uuid.UUID) -> Decomposition:
    """Cancel a queued or planning decomposition: no task is created from it."""
    return planning.cancel(team_id, decomposition_id)


@blp.route("/<uuid:decomposition_id>/retry", methods=["POST"])
@blp.response(200, DecompositionSchema)
@blp.alt_response(404, response="NOT_FOUND")
@blp.alt_response(409, response="CONFLICT")
def retry_decomposition(team_id: uuid.UUID, decomposition_id: uuid.UUID) -> Decomposition:
    """Queue a failed or cancelled decomposition again, its attempts starting over."""
    return planning.retry(team_id, decomposition_id)
