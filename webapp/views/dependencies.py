"""Dependencies between a team's tasks, and the team's dependency graph."""

from __future__ import annotations

import uuid
from typing import Any

from flask import Response

from db.models import TaskDependency
from orchestration import dependencies
from webapp.parsing import Blueprint
from webapp.schemas import (
    DependencyBatchResultSchema,
    DependencyBatchSchema,
    DependencyCreateSchema,
    DependencyGraphSchema,
    DependencySchema,
    GraphEdgeSchema,
    GraphNodeSchema,
)
from webapp.streaming import json_object, started, streamed

blp = Blueprint(
    "dependencies",
    __name__,
    url_prefix="/api/v1/teams/<uuid:team_id>",
    description="Dependencies: a task waits for the tasks it depends on; cycles are refused.",
)


@blp.route("/tasks/<uuid:task_id>/dependencies", methods=["POST"])
@blp.arguments(DependencyCreateSchema)
@blp.response(201, DependencySchema)
@blp.alt_response(200, schema=DependencySchema, description="the edge already existed")
@blp.alt_response(404, response="NOT_FOUND")
@blp.alt_response(409, response="CONFLICT")
def add_dependency(
    body: dict[str, Any], team_id: uuid.UUID, task_id: uuid.UUID
) -> tuple[TaskDependency, int]:
    """Make the task wait for another task of the team. A cycle (hierarchy included) is a 409
    naming it in `errors.cycle`."""
    edge, created = dependencies.add_dependency(team_id, task_id, body["depends_on_task_id"])
    return edge, 201 if created else 200


@blp.route("/dependencies", methods=["POST"])
@blp.arguments(DependencyBatchSchema)
@blp.response(201, DependencyBatchResultSchema)
@blp.alt_response(404, response="NOT_FOUND")
@blp.alt_response(409, response="CONFLICT")
def add_dependencies(body: dict[str, Any], team_id: uuid.UUID) -> dict[str, int]:
    """Add many dependencies in one transaction, all or none (a cycle anywhere is a 409 naming
    it in `errors.cycle`, and nothing is added)."""
    created, existing = dependencies.add_dependencies(
        team_id, [(e["task_id"], e["depends_on_task_id"]) for e in body["edges"]]
    )
    return {"created": created, "existing": existing}


@blp.route("/tasks/<uuid:task_id>/dependencies/<uuid:depends_on_task_id>", methods=["DELETE"])
@blp.response(204)
@blp.alt_response(404, response="NOT_FOUND")
def remove_dependency(
    team_id: uuid.UUID, task_id: uuid.UUID, depends_on_task_id: uuid.UUID
) -> Response:
    dependencies.remove_dependency(team_id, task_id, depends_on_task_id)
    return Response(status=204)


@blp.route("/dependency-graph", methods=["GET"])
@blp.response(200, DependencyGraphSchema)
@blp.alt_response(404, response="NOT_FOUND")
def dependency_graph(team_id: uuid.UUID) -> Response:
    """Every task as a node and every dependency as an edge, each in creation order."""
    dumps = {"nodes": GraphNodeSchema().dump, "edges": GraphEdgeSchema().dump}
    return streamed(json_object(started(dependencies.graph_chunks(team_id)), dumps))
