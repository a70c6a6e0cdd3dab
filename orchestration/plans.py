"""The TaskNode plan: one marshmallow schema shared by the API and the planners."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from marshmallow import Schema, ValidationError, fields, pre_load, validate, validates_schema

from orchestration import graph
from orchestration.text import not_blank, storable

MAX_PLAN_NODES = 500
MAX_PLAN_NESTING = 32
MAX_DEPTH_LIMIT = 10
DEFAULT_MAX_DEPTH = 3
# Skills are matched as exact strings (scoring.SkillProfile) and stored as JSON, so any
# printable name works: "C++", "C#", "UI/UX", ".NET". Refused: control characters (line
# breaks included) and spaces at either end, which would make "coding " miss "coding".
# ($(?!\n): Python's $ also matches before a final line break.)
SKILL_PATTERN = r"^[^\s\x00-\x1f\x7f](?:[^\x00-\x1f\x7f]{0,62}[^\s\x00-\x1f\x7f])?$(?!\n)"
SKILL_RULE = (
    "a skill name is 1 to 64 characters, such as coding, C++ or UI/UX, without line breaks "
    "or control characters and without spaces at either end"
)


def skill_name(**kwargs: Any) -> fields.String:
    """One skill name (a task's required skill, a member's skill)."""
    return fields.String(
        validate=[
            validate.Regexp(SKILL_PATTERN, error="{input!r} is not a skill name: " + SKILL_RULE),
            storable,
        ],
        **kwargs,
    )


def _text(max_len: int, *, min_len: int = 0, **kwargs: Any) -> fields.String:
    """A string PostgreSQL can store (the HTTP parser checks that too, a model's answer not)."""
    return fields.String(validate=[validate.Length(min=min_len, max=max_len), storable], **kwargs)


def _strings(max_items: int, item: fields.String) -> fields.List:
    return fields.List(item, validate=validate.Length(max=max_items))


class TaskNodeSchema(Schema):
    key = _text(100, min_len=1)
    title = fields.String(
        required=True, validate=[validate.Length(min=1, max=500), not_blank, storable]
    )
    description = _text(20_000, allow_none=True)
    acceptance_criteria = _strings(50, _text(1_000, min_len=1))
    required_skills = _strings(20, skill_name())
    estimated_tokens = fields.Integer(
        allow_none=True, validate=validate.Range(min=0, max=10_000_000), strict=True
    )
    priority = fields.Integer(validate=validate.Range(min=0, max=10), strict=True)
    depends_on = _strings(100, _text(100, min_len=1))
    subtasks = fields.List(
        fields.Nested(lambda: TaskNodeSchema()), validate=validate.Length(max=200)
    )


class PlanSchema(TaskNodeSchema):
    """A whole plan: the root node, checked as a tree (size, nesting, keys)."""

    @pre_load
    def _check_nesting(self, data: Any, **_: Any) -> Any:
        # Refused before the recursive load, which would otherwise exhaust the stack.
        stack = [(data, 0)]
        seen = 0
        while stack:
            node, depth = stack.pop()
            seen += 1
            if depth > MAX_PLAN_NESTING:
                raise ValidationError(f"a plan nests at most {MAX_PLAN_NESTING} levels", "subtasks")
            if seen > MAX_PLAN_NODES:
                raise ValidationError(f"a plan has at most {MAX_PLAN_NODES} nodes", "subtasks")
            if isinstance(node, dict) and isinstance(node.get("subtasks"), list):
                stack.extend((child, depth + 1) for child in node["subtasks"])
        return data

    @validates_schema(skip_on_field_errors=True)
    def _check_tree(self, data: dict[str, Any], **_: Any) -> None:
        check_plan(data)


def iter_nodes(
    node: dict[str, Any], depth: int = 0, parent: dict[str, Any] | None = None
) -> Iterator[tuple[dict[str, Any], int, dict[str, Any] | None]]:
    """Every node with its depth and parent, parents before children."""
    yield node, depth, parent
    for child in node.get("subtasks") or []:
        yield from iter_nodes(child, depth + 1, node)


def check_plan(root: dict[str, Any]) -> None:
    """Raise ValidationError for an oversized plan, duplicate or unknown keys.

    Cycles are the service's to refuse (a 409 naming the cycle, see plan_cycle)."""
    nodes = list(iter_nodes(root))
    if len(nodes) > MAX_PLAN_NODES:
        raise ValidationError(f"a plan has at most {MAX_PLAN_NODES} nodes", "subtasks")
    keys: dict[str, dict[str, Any]] = {}
    for node, _, _ in nodes:
        key = node.get("key")
        if key is None:
            continue
        if key in keys:
            raise ValidationError(f"duplicate key {key!r}", "key")
        keys[key] = node
    for node, _, _ in nodes:
        for dep in node.get("depends_on") or []:
            if dep not in keys:
                raise ValidationError(f"depends_on names unknown key {dep!r}", "depends_on")


def plan_cycle(root: dict[str, Any]) -> list[str] | None:
    """A cycle of the plan, hierarchy included, as node keys (titles where a node has no key)."""
    ids: dict[int, str] = {}
    parent_of: dict[str, str | None] = {}
    depends_on: dict[str, list[str]] = {}
    for index, (node, _, _parent) in enumerate(iter_nodes(root)):
        ids[id(node)] = node.get("key") or f"#{index}:{node.get('title', '')}"
    for node, _, parent in iter_nodes(root):
        name = ids[id(node)]
        parent_of[name] = ids[id(parent)] if parent is not None else None
        depends_on[name] = list(node.get("depends_on") or [])
    for name, deps in depends_on.items():
        if name in deps:
            return [name, name]
    cycle = graph.find_cycle(graph.waits_for_graph(parent_of, depends_on))
    return graph.cycle_tasks(cycle) if cycle else None


@dataclass(frozen=True)
class PlannedTask:
    """One node to create: its fields, its parent's index and its dependencies' indexes."""

    index: int
    node: dict[str, Any]
    depth: int
    parent_index: int | None
    depends_on: tuple[int, ...]


def flatten(root: dict[str, Any], max_depth: int) -> list[PlannedTask]:
    """The nodes within max_depth, parents first. A dependency on a node cut by max_depth
    moves to its deepest kept ancestor, which now stands for that work."""
    kept: list[tuple[dict[str, Any], int, dict[str, Any] | None]] = []
    stand_in: dict[int, int] = {}
    index_of: dict[int, int] = {}
    for node, depth, parent in iter_nodes(root):
        if depth <= max_depth:
            index_of[id(node)] = len(kept)
            kept.append((node, depth, parent))
            stand_in[id(node)] = index_of[id(node)]
        else:
            assert parent is not None
            stand_in[id(node)] = stand_in[id(parent)]
    by_key = {node["key"]: node for node, _, _ in iter_nodes(root) if node.get("key") is not None}
    # A cut node's own dependencies hold back the task that stands in for it.
    wanted: dict[int, list[str]] = {}
    for node, _, _ in iter_nodes(root):
        wanted.setdefault(stand_in[id(node)], []).extend(node.get("depends_on") or [])
    result: list[PlannedTask] = []
    for index, (node, depth, parent) in enumerate(kept):
        deps: list[int] = []
        for key in wanted.get(index, []):
            target = stand_in[id(by_key[key])]
            if target != index and target not in deps:
                deps.append(target)
        result.append(
            PlannedTask(
                index=index,
                node=node,
                depth=depth,
                parent_index=index_of[id(parent)] if parent is not None else None,
                depends_on=tuple(deps),
            )
        )
    return result
