"""Tasks: create, list, read, hierarchy, cancel, retry; decompose a goal or a plan."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

from flask import Response, current_app

from db.models import Task
from orchestration import decomposition, lifecycle
from webapp.paging import NEXT_PAGE_HEADERS, next_page_headers
from webapp.parsing import Blueprint
from webapp.schemas import (
    DecomposeGoalSchema,
    DecomposePlanSchema,
    DecomposeSchema,
    HierarchyQuerySchema,
    TaskCreateSchema,
    TaskListQuerySchema,
    TaskSchema,
    TaskTreeSchema,
)
from webapp.streaming import json_array, started, streamed

# Documented as the two forms it accepts; validated by DecomposeSchema.
DECOMPOSE_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": {"oneOf": [DecomposeGoalSchema, DecomposePlanSchema]}}
    },
}

blp = Blueprint(
    "tasks",
    __name__,
    url_prefix="/api/v1/teams/<uuid:team_id>",
    description="Tasks: a tree of work with dependencies, assigned to the best available worker.",
)


@blp.route("/tasks", methods=["POST"])
@blp.arguments(TaskCreateSchema)
@blp.response(201, TaskSchema)
@blp.alt_response(404, response="NOT_FOUND")
@blp.alt_response(409, response="CONFLICT")
def create_task(body: dict[str, Any], team_id: uuid.UUID) -> Task:
    """A task waits (`blocked`) until every task in `depends_on` has completed."""
    return decomposition.create_task(team_id, body)


@blp.route("/tasks", methods=["GET"])
@blp.arguments(TaskListQuerySchema, location="query")
@blp.response(200, TaskSchema(many=True), headers=NEXT_PAGE_HEADERS)
@blp.alt_response(404, response="NOT_FOUND")
def list_tasks(
    query: dict[str, Any], team_id: uuid.UUID
) -> Response | tuple[list[Task], dict[str, str]]:
    """Highest priority first, then oldest; with `limit`, a page at a time."""
    status, after = query.get("status"), query.get("after")
    if "limit" not in query:
        chunks = started(decomposition.task_chunks(team_id, status, after))
        return streamed(json_array(chunks, TaskSchema().dump))
    found, cursor = decomposition.task_page(team_id, query["limit"], status, after)
    return found, next_page_headers("tasks.list_tasks", query, cursor, team_id=team_id)


@blp.route("/tasks/<uuid:task_id>", methods=["GET"])
@blp.response(200, TaskSchema)
@blp.alt_response(404, response="NOT_FOUND")
def get_task(team_id: uuid.UUID, task_id: uuid.UUID) -> Task:
    return decomposition.get_task(team_id, task_id)


@blp.route("/tasks/<uuid:task_id>/hierarchy", methods=["GET"])
@blp.arguments(HierarchyQuerySchema, location="query")
@blp.response(200, TaskTreeSchema)
@blp.alt_response(404, response="NOT_FOUND")
def task_hierarchy(query: dict[str, Any], team_id: uuid.UUID, task_id: uuid.UUID) -> Response:
    """The task and its subtasks, recursively (with `max_depth`, that many levels below it)."""
    chunks = started(decomposition.hierarchy_chunks(team_id, task_id, query.get("max_depth")))
    return streamed(json_tree(chunks))


def json_tree(chunks: Iterator[list[Task]]) -> Iterator[str]:
    """TaskTreeSchema's output written a chunk at a time from tasks in depth-first order (the
    first one the root; see decomposition.hierarchy_chunks): each task's object is opened when
    it comes and closed when the next one is not below it. It holds the path from the root to
    the current task, never the tree, and does not recurse (a deep tree must not exhaust the
    stack)."""
    encode = current_app.json.dumps
    dump = TaskSchema().dump
    path: list[uuid.UUID] = []  # the tasks whose subtasks are being written, the root first
    for chunk in chunks:
        pieces = []
        for task in chunk:
            closed = 0
            while path and path[-1] != task.parent_task_id:
                path.pop()
                closed += 1
            pieces.append("]}" * closed + ("," if closed else ""))
            pieces.append('{"task":' + encode(dump(task), separators=(",", ":")) + ',"subtasks":[')
            path.append(task.id)
        yield "".join(pieces)
    yield "]}" * len(path)


@blp.route("/tasks/<uuid:task_id>/cancel", methods=["POST"])
@blp.response(200, TaskSchema)
@blp.alt_response(404, response="NOT_FOUND")
@blp.alt_response(409, response="CONFLICT")
def cancel_task(team_id: uuid.UUID, task_id: uuid.UUID) -> Task:
    return lifecycle.cancel_task(team_id, task_id)


@blp.route("/tasks/<uuid:task_id>/retry", methods=["POST"])
@blp.response(200, TaskSchema)
@blp.alt_response(404, response="NOT_FOUND")
@blp.alt_response(409, response="CONFLICT")
def retry_task(team_id: uuid.UUID, task_id: uuid.UUID) -> Task:
    """Give a failed or cancelled task another go."""
    return lifecycle.retry_task(team_id, task_id)


@blp.route("/decompose", methods=["POST"])
@blp.arguments(DecomposeSchema)
@blp.doc(requestBody=DECOMPOSE_BODY)
@blp.response(201, TaskSchema(many=True))
@blp.alt_response(404, response="NOT_FOUND")
@blp.alt_response(409, response="CONFLICT")
@blp.alt_response(502, response="BAD_GATEWAY")
@blp.alt_response(504, response="GATEWAY_TIMEOUT")
def decompose(body: dict[str, Any], team_id: uuid.UUID) -> list[Task]:
    """Turn a goal (through the planner) or a ready-made plan into tasks, parents before
    children; nodes deeper than `max_depth` are not created. Needs a manager member."""
    if "plan" in body:
        return decomposition.create_plan(team_id, body["plan"], body["max_depth"])
    return decomposition.decompose_goal(team_id, body["goal"], body["max_depth"])
