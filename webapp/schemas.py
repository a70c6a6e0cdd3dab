"""Request and response schemas. Request limits match the database's CHECK constraints, so no
input that passes validation can fail in PostgreSQL; unknown fields are refused (422)."""

from __future__ import annotations

import re
from enum import Enum
from typing import Any

import marshmallow as ma
from marshmallow import fields, validate

from db.models import DecompositionStatus, MemberRole, MemberStatus, TaskStatus, TeamStatus
from orchestration.decomposition import MAX_HIERARCHY_DEPTH
from orchestration.plans import (
    DEFAULT_MAX_DEPTH,
    MAX_DEPTH_LIMIT,
    PlanSchema,
    skill_name,
)
from orchestration.text import not_blank

MAX_TITLE = 500
MAX_GOAL = 10_000
MAX_DESCRIPTION = 20_000
MAX_NAME = 200
MAX_AGENT_ID = 200
MAX_SPECIALIZATION = 200
MAX_CRITERION = 1_000
MAX_CRITERIA = 50
MAX_REQUIRED_SKILLS = 20
MAX_SKILLS = 100
MAX_DEPENDS_ON = 100
MAX_TOKENS = 10_000_000
STREAM_ID_PATTERN = r"^[0-9]{1,20}(-[0-9]{1,20})?$"
MAX_STREAM_ID_PART = 2**64 - 1
MAX_EVENTS_TIMEOUT = 3600.0


class StrictFloat(fields.Float):
    """A JSON number only: no numeric strings, no booleans."""

    def _validated(self, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.make_error("invalid")
        return super()._validated(value)


def _choice(enum_cls: type[Enum], **kwargs: Any) -> fields.String:
    """One of an enum's values (loads and dumps plain strings)."""
    return fields.String(validate=validate.OneOf([m.value for m in enum_cls]), **kwargs)


def _int(minimum: int, maximum: int, **kwargs: Any) -> fields.Integer:
    return fields.Integer(strict=True, validate=validate.Range(min=minimum, max=maximum), **kwargs)


def _skills(**kwargs: Any) -> fields.Dict:
    return fields.Dict(
        keys=skill_name(),
        values=StrictFloat(validate=validate.Range(min=0, max=1)),
        validate=validate.Length(max=MAX_SKILLS),
        metadata={"description": "skill -> proficiency in [0, 1]"},
        **kwargs,
    )


class RequestSchema(ma.Schema):
    class Meta:
        unknown = ma.RAISE


# --- teams -------------------------------------------------------------------------------------


MAX_TOKEN_BUDGET = 10**15


class TeamCreateSchema(RequestSchema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=MAX_NAME))
    description = fields.String(
        allow_none=True, load_default=None, validate=validate.Length(max=MAX_DESCRIPTION)
    )
    token_budget = fields.Integer(
        allow_none=True,
        load_default=None,
        strict=True,
        validate=validate.Range(min=0, max=MAX_TOKEN_BUDGET),
        metadata={"description": "tokens the team may use; when spent, the team pauses"},
    )


class TeamUpdateSchema(RequestSchema):
    name = fields.String(validate=validate.Length(min=1, max=MAX_NAME))
    description = fields.String(allow_none=True, validate=validate.Length(max=MAX_DESCRIPTION))
    token_budget = fields.Integer(
        allow_none=True, strict=True, validate=validate.Range(min=0, max=MAX_TOKEN_BUDGET)
    )


class TaskCountsSchema(ma.Schema):
    pending = fields.Integer(required=True)
    blocked = fields.Integer(required=True)
    assigned = fields.Integer(required=True)
    in_progress = fields.Integer(required=True)
    review = fields.Integer(required=True)
    completed = fields.Integer(required=True)
    failed = fields.Integer(required=True)
    cancelled = fields.Integer(required=True)


class TeamSchema(ma.Schema):
    id = fields.UUID(required=True)
    name = fields.String(required=True)
    description = fields.String(required=True, allow_none=True)
    status = _choice(TeamStatus, required=True)
    status_reason = fields.String(required=True, allow_none=True)
    token_budget = fields.Integer(required=True, allow_none=True)
    created_at = fields.DateTime(required=True)
    updated_at = fields.DateTime(required=True)
    started_at = fields.DateTime(required=True, allow_none=True)
    paused_at = fields.DateTime(required=True, allow_none=True)
    task_counts = fields.Nested(TaskCountsSchema, required=True)


class TokenSchema(ma.Schema):
    token = fields.String(required=True, metadata={"description": "shown once; keep it"})
    id = fields.UUID(required=True, metadata={"description": "to revoke it with"})
    prefix = fields.String(required=True, metadata={"description": "its first characters"})


class TokenInfoSchema(ma.Schema):
    """A team token as listed: never the token itself, which only its creation shows."""

    id = fields.UUID(required=True)
    prefix = fields.String(required=True, metadata={"description": "the token's first characters"})
    created_at = fields.DateTime(required=True)
    last_used_at = fields.DateTime(
        required=True, allow_none=True, metadata={"description": "to the minute"}
    )


# --- members -----------------------------------------------------------------------------------


class MemberCreateSchema(RequestSchema):
    role = _choice(MemberRole, required=True)
    specialization = fields.String(
        allow_none=True,
        load_default=None,
        validate=validate.Length(min=1, max=MAX_SPECIALIZATION),
        metadata={"description": "e.g. Technical Executor, Content Creator, Researcher/Analyzer"},
    )
    skills = _skills(allow_none=True, load_default=None)
    max_concurrent_tasks = _int(1, 1000, load_default=3)
    agent_id = fields.String(
        allow_none=True,
        load_default=None,
        validate=validate.Length(min=1, max=MAX_AGENT_ID),
        metadata={"description": "generated when absent"},
    )


class MemberUpdateSchema(RequestSchema):
    status = fields.String(
        validate=validate.OneOf([MemberStatus.IDLE.value, MemberStatus.OFFLINE.value]),
        metadata={"description": "idle: online (active while it has work); offline: no new work"},
    )
    max_concurrent_tasks = _int(1, 1000)
    skills = _skills()


class MemberSchema(ma.Schema):
    id = fields.UUID(required=True)
    team_id = fields.UUID(required=True)
    agent_id = fields.String(required=True)
    role = _choice(MemberRole, required=True)
    specialization = fields.String(required=True, allow_none=True)
    skills = fields.Dict(
        keys=fields.String(), values=fields.Float(), required=True, allow_none=True
    )
    status = _choice(MemberStatus, required=True)
    current_workload = fields.Integer(required=True)
    max_concurrent_tasks = fields.Integer(required=True)
    tasks_completed = fields.Integer(required=True)
    tasks_failed = fields.Integer(required=True)
    total_tokens_used = fields.Integer(required=True)
    total_cost = fields.Float(required=True)
    joined_at = fields.DateTime(required=True)
    last_active_at = fields.DateTime(required=True, allow_none=True)


# --- tasks -------------------------------------------------------------------------------------


def _texts(max_items: int, max_len: int) -> fields.List:
    return fields.List(
        fields.String(validate=validate.Length(min=1, max=max_len)),
        validate=validate.Length(max=max_items),
    )


def _unique(values: list[Any]) -> list[Any]:
    return list(dict.fromkeys(values))


class TaskCreateSchema(RequestSchema):
    title = fields.String(
        required=True, validate=[validate.Length(min=1, max=MAX_TITLE), not_blank]
    )
    description = fields.String(
        allow_none=True, load_default=None, validate=validate.Length(max=MAX_DESCRIPTION)
    )
    acceptance_criteria = _texts(MAX_CRITERIA, MAX_CRITERION)
    required_skills = fields.List(skill_name(), validate=validate.Length(max=MAX_REQUIRED_SKILLS))
    priority = _int(0, 10, load_default=5)
    estimated_tokens = _int(0, MAX_TOKENS, allow_none=True, load_default=None)
    max_revisions = _int(0, 100, load_default=3)
    parent_task_id = fields.UUID(allow_none=True, load_default=None)
    depends_on = fields.List(fields.UUID(), validate=validate.Length(max=MAX_DEPENDS_ON))
    input_data = fields.Dict(
        keys=fields.String(),
        allow_none=True,
        metadata={
            "description": 'any JSON object; "simulate": {"duration", "fail"} steers the '
            "simulated executor"
        },
    )

    @ma.post_load
    def _defaults(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        data["acceptance_criteria"] = list(data.get("acceptance_criteria") or [])
        data["required_skills"] = _unique(list(data.get("required_skills") or []))
        data["depends_on"] = _unique(list(data.get("depends_on") or []))
        data["input_data"] = dict(data.get("input_data") or {})
        return data


class CursorPageSchema(ma.Schema):
    """A page of a keyset-paged list (orchestration.paging)."""

    limit = fields.Integer(
        load_default=100,
        validate=validate.Range(min=1, max=1000),
        metadata={
            "description": "at most this many (a page). A page followed by more carries the "
            "next page's cursor in `X-Next-Cursor` and its address in `Link` "
            '(`rel="next"`)'
        },
    )
    after = fields.String(
        validate=validate.Length(min=1, max=200),
        metadata={"description": "the `X-Next-Cursor` of the page before: this page follows it"},
    )


class TaskListQuerySchema(CursorPageSchema):
    status = _choice(TaskStatus)
    limit = fields.Integer(
        validate=validate.Range(min=1, max=1000),
        metadata={
            "description": "at most this many tasks (a page); without it, every task. A page "
            "followed by more carries the next page's cursor in `X-Next-Cursor` and its "
            'address in `Link` (`rel="next"`)'
        },
    )


class TaskSchema(ma.Schema):
    id = fields.UUID(required=True)
    team_id = fields.UUID(required=True)
    parent_task_id = fields.UUID(required=True, allow_none=True)
    title = fields.String(required=True)
    description = fields.String(required=True, allow_none=True)
    acceptance_criteria = fields.List(fields.String(), required=True, allow_none=True)
    assigned_to = fields.UUID(required=True, allow_none=True)
    assigned_by = fields.UUID(required=True, allow_none=True)
    status = _choice(TaskStatus, required=True)
    priority = fields.Integer(required=True)
    start_time = fields.DateTime(required=True, allow_none=True)
    completion_time = fields.DateTime(required=True, allow_none=True)
    revision_count = fields.Integer(required=True)
    max_revisions = fields.Integer(required=True)
    input_data = fields.Dict(keys=fields.String(), required=True, allow_none=True)
    output_data = fields.Dict(keys=fields.String(), required=True, allow_none=True)
    error_message = fields.String(required=True, allow_none=True)
    required_skills = fields.List(fields.String(), required=True, allow_none=True)
    estimated_tokens = fields.Integer(required=True, allow_none=True)
    actual_tokens = fields.Integer(required=True, allow_none=True)
    created_at = fields.DateTime(required=True)
    updated_at = fields.DateTime(required=True)


class HierarchyQuerySchema(ma.Schema):
    max_depth = fields.Integer(
        validate=validate.Range(min=0, max=MAX_HIERARCHY_DEPTH),
        metadata={
            "description": "only this many levels of subtasks below the task (0: the task "
            "alone); without it, all of them"
        },
    )


class TaskTreeSchema(ma.Schema):
    task = fields.Nested(TaskSchema, required=True)
    subtasks = fields.List(fields.Nested(lambda: TaskTreeSchema()), required=True)


class DecomposeGoalSchema(RequestSchema):
    """Documentation of the goal form of DecomposeSchema."""

    goal = fields.String(required=True, validate=[validate.Length(min=1, max=MAX_GOAL), not_blank])
    max_depth = _int(0, MAX_DEPTH_LIMIT, load_default=DEFAULT_MAX_DEPTH)


class DecomposePlanSchema(RequestSchema):
    """Documentation of the plan form of DecomposeSchema."""

    plan = fields.Nested(PlanSchema, required=True)
    max_depth = _int(0, MAX_DEPTH_LIMIT, load_default=DEFAULT_MAX_DEPTH)


class DecomposeSchema(RequestSchema):
    """Either form: a goal for the planner or a ready-made plan."""

    goal = fields.String(validate=[validate.Length(min=1, max=MAX_GOAL), not_blank])
    plan = fields.Nested(PlanSchema)
    max_depth = _int(0, MAX_DEPTH_LIMIT, load_default=DEFAULT_MAX_DEPTH)

    @ma.validates_schema
    def _goal_or_plan(self, data: dict[str, Any], **_: Any) -> None:
        if ("goal" in data) == ("plan" in data):
            raise ma.ValidationError("give exactly one of goal and plan", "_schema")


class DecompositionSchema(ma.Schema):
    id = fields.UUID(required=True)
    team_id = fields.UUID(required=True)
    goal = fields.String(required=True)
    max_depth = fields.Integer(required=True)
    status = _choice(
        DecompositionStatus,
        required=True,
        metadata={
            "description": "queued, then planning (by a worker's planner), then succeeded, "
            "failed or cancelled"
        },
    )
    attempts = fields.Integer(
        required=True,
        metadata={"description": "planning attempts begun (a lost worker's is begun again)"},
    )
    error = fields.String(required=True, allow_none=True)
    task_ids = fields.List(
        fields.UUID(),
        required=True,
        allow_none=True,
        metadata={"description": "once succeeded: the tasks created, parents before children"},
    )
    tokens_used = fields.Integer(required=True)
    cost = fields.Float(required=True)
    created_at = fields.DateTime(required=True)
    queued_at = fields.DateTime(
        required=True, metadata={"description": "when last queued: at creation, or a retry"}
    )
    started_at = fields.DateTime(required=True, allow_none=True)
    finished_at = fields.DateTime(required=True, allow_none=True)


class IdempotencyHeaderSchema(ma.Schema):
    class Meta:
        unknown = ma.EXCLUDE

    idempotency_key = fields.String(
        data_key="Idempotency-Key",
        validate=[validate.Length(min=1, max=200), not_blank],
        metadata={
            "description": "the same key (for the same goal and max_depth) gives back the "
            "decomposition it first made instead of queuing another: retry a request freely"
        },
    )


class DecompositionListQuerySchema(CursorPageSchema):
    status = _choice(DecompositionStatus)


# --- dependencies ------------------------------------------------------------------------------


class DependencyCreateSchema(RequestSchema):
    depends_on_task_id = fields.UUID(required=True)


class EdgeSchema(RequestSchema):
    task_id = fields.UUID(required=True)
    depends_on_task_id = fields.UUID(required=True)


class DependencyBatchSchema(RequestSchema):
    edges = fields.List(
        fields.Nested(EdgeSchema),
        required=True,
        validate=validate.Length(min=1, max=10_000),
        metadata={"description": "task_id waits for depends_on_task_id; all are added or none"},
    )


class DependencyBatchResultSchema(ma.Schema):
    created = fields.Integer(required=True)
    existing = fields.Integer(required=True)


class DependencySchema(ma.Schema):
    id = fields.UUID(required=True)
    task_id = fields.UUID(required=True)
    depends_on_task_id = fields.UUID(required=True)
    dependency_type = fields.String(required=True)
    created_at = fields.DateTime(required=True)


class GraphNodeSchema(ma.Schema):
    id = fields.UUID(required=True)
    title = fields.String(required=True)
    status = _choice(TaskStatus, required=True)
    parent_task_id = fields.UUID(required=True, allow_none=True)


class GraphEdgeSchema(ma.Schema):
    task_id = fields.UUID(required=True)
    depends_on_task_id = fields.UUID(required=True)


class DependencyGraphSchema(ma.Schema):
    nodes = fields.List(fields.Nested(GraphNodeSchema), required=True)
    edges = fields.List(fields.Nested(GraphEdgeSchema), required=True)


# --- assignments -------------------------------------------------------------------------------


# Skipping rows costs as much as reading them: beyond this, page with `after`.
MAX_OFFSET = 10_000


class PageQuerySchema(CursorPageSchema):
    offset = fields.Integer(
        load_default=0,
        validate=validate.Range(
            min=0,
            max=MAX_OFFSET,
            error=f"must be between 0 and {MAX_OFFSET:,}: page further with `after` "
            "(the X-Next-Cursor of the page before)",
        ),
        metadata={"description": "skip this many (after `after`, if given)"},
    )


class BreakdownSchema(ma.Schema):
    skill = fields.Float(required=True, allow_none=True)
    workload = fields.Float(required=True, allow_none=True)
    success_rate = fields.Float(required=True, allow_none=True)


class AssignmentSchema(ma.Schema):
    task_id = fields.UUID(required=True, allow_none=True)
    worker_id = fields.UUID(required=True, allow_none=True)
    score = fields.Float(required=True, allow_none=True)
    breakdown = fields.Nested(BreakdownSchema, required=True, allow_none=True)
    explanation = fields.String(required=True)
    created_at = fields.DateTime(required=True)


# --- events and operations ---------------------------------------------------------------------


def valid_stream_id(value: str) -> bool:
    if not re.fullmatch(STREAM_ID_PATTERN, value):
        return False
    return all(int(part) <= MAX_STREAM_ID_PART for part in value.split("-"))


class EventsQuerySchema(ma.Schema):
    last_event_id = fields.String(
        validate=validate.Regexp(STREAM_ID_PATTERN, error="a stream id such as 1700000000000-0"),
        metadata={"description": "resume after this event id (the Last-Event-ID header wins)"},
    )
    timeout = fields.Float(
        validate=validate.Range(min=0, max=MAX_EVENTS_TIMEOUT),
        metadata={
            "description": "end the stream after this many seconds; a stream ends after "
            "10 minutes anyway (resume with Last-Event-ID)"
        },
    )

    @ma.validates("last_event_id")
    def _in_range(self, value: str, **_: Any) -> None:
        if not valid_stream_id(value):
            raise ma.ValidationError("a stream id such as 1700000000000-0")


class HealthSchema(ma.Schema):
    status = fields.String(required=True)


class ReadySchema(ma.Schema):
    status = fields.String(required=True)
    checks = fields.Dict(keys=fields.String(), values=fields.String(), required=True)
