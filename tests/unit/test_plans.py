"""The TaskNode plan: validation, cycles, and flattening to max_depth."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from marshmallow import ValidationError

from orchestration.errors import InvalidInput
from orchestration.plans import (
    MAX_PLAN_NODES,
    PlannedTask,
    PlanSchema,
    flatten,
    iter_nodes,
    plan_cycle,
)
from webapp.parsing import check_storable

Node = dict[str, Any]


def sample_plan() -> Node:
    return {
        "key": "root",
        "title": "Ship the release",
        "description": "All of it",
        "acceptance_criteria": ["released"],
        "priority": 7,
        "subtasks": [
            {
                "key": "build",
                "title": "Build",
                "required_skills": ["coding", "testing"],
                "estimated_tokens": 1200,
                "subtasks": [
                    {"key": "compile", "title": "Compile"},
                    {"key": "unit", "title": "Unit tests", "depends_on": ["compile"]},
                ],
            },
            {"key": "docs", "title": "Docs", "required_skills": ["writing"]},
            {"title": "Announce", "depends_on": ["build", "docs"]},
        ],
    }


# --- validation ------------------------------------------------------------------------------


def test_accepts_a_valid_nested_plan() -> None:
    loaded = PlanSchema().load(sample_plan())
    assert loaded == sample_plan()
    assert [n["title"] for n, _, _ in iter_nodes(loaded)] == [
        "Ship the release",
        "Build",
        "Compile",
        "Unit tests",
        "Docs",
        "Announce",
    ]


def test_accepts_a_minimal_plan() -> None:
    assert PlanSchema().load({"title": "Just do it"}) == {"title": "Just do it"}


def test_rejects_duplicate_keys() -> None:
    plan = sample_plan()
    plan["subtasks"][1]["key"] = "compile"
    with pytest.raises(ValidationError) as info:
        PlanSchema().load(plan)
    assert "key" in info.value.messages


def test_rejects_unknown_depends_on_keys() -> None:
    plan = sample_plan()
    plan["subtasks"][2]["depends_on"] = ["build", "nowhere"]
    with pytest.raises(ValidationError) as info:
        PlanSchema().load(plan)
    assert "depends_on" in info.value.messages


def test_rejects_too_many_nodes() -> None:
    per_branch = 200
    branches = MAX_PLAN_NODES // per_branch + 1
    plan = {
        "title": "big",
        "subtasks": [
            {"title": f"b{b}", "subtasks": [{"title": f"b{b}-{i}"} for i in range(per_branch)]}
            for b in range(branches)
        ],
    }
    assert len(list(iter_nodes(plan))) > MAX_PLAN_NODES
    with pytest.raises(ValidationError):
        PlanSchema().load(plan)


def test_accepts_exactly_the_node_limit() -> None:
    leaves: list[Node] = [{"title": f"c{i}"} for i in range(MAX_PLAN_NODES - 3)]
    subtasks: list[Node] = [
        {"title": "first", "subtasks": leaves[:199]},
        {"title": "second", "subtasks": leaves[199:398]},
        *leaves[398:],
    ]
    plan: Node = {"title": "big", "subtasks": subtasks}
    assert len(list(iter_nodes(plan))) == MAX_PLAN_NODES
    PlanSchema().load(plan)


@pytest.mark.parametrize(
    "patch",
    [
        {"title": 5},
        {"title": ""},
        {"title": None},
        {"priority": "5"},
        {"priority": 11},
        {"priority": -1},
        {"priority": 2.5},
        {"estimated_tokens": -1},
        {"estimated_tokens": "many"},
        {"required_skills": "coding"},
        {"required_skills": ["two\nlines"]},
        {"required_skills": [""]},
        {"depends_on": "build"},
        {"acceptance_criteria": [3]},
        {"subtasks": "none"},
        {"subtasks": [{"description": "no title"}]},
        {"subtasks": [{"title": "x", "priority": "high"}]},
        {"key": ""},
    ],
)
def test_rejects_bad_types(patch: Node) -> None:
    plan = {"title": "root", **patch}
    with pytest.raises(ValidationError):
        PlanSchema().load(plan)


def test_rejects_a_missing_title() -> None:
    with pytest.raises(ValidationError) as info:
        PlanSchema().load({"key": "a"})
    assert "title" in info.value.messages


def test_a_deeply_nested_plan_is_a_validation_error_not_a_crash() -> None:
    """A plan well under the node limit but nested deeper than the interpreter's recursion can
    follow must be refused as invalid (a 422), never raise RecursionError (a 500)."""
    node: Node = {"title": "leaf"}
    for i in range(200):
        node = {"title": f"level {i}", "subtasks": [node]}
    assert len(list(iter_nodes_iteratively(node))) < MAX_PLAN_NODES
    with pytest.raises(ValidationError):
        PlanSchema().load(node)


def iter_nodes_iteratively(root: Node) -> list[Node]:
    result, stack = [], [root]
    while stack:
        node = stack.pop()
        result.append(node)
        stack.extend(node.get("subtasks") or [])
    return result


# --- plan_cycle ------------------------------------------------------------------------------


def test_no_cycle_in_the_sample() -> None:
    assert plan_cycle(sample_plan()) is None


def test_dependency_cycle() -> None:
    plan = {
        "title": "root",
        "subtasks": [
            {"key": "a", "title": "A", "depends_on": ["b"]},
            {"key": "b", "title": "B", "depends_on": ["c"]},
            {"key": "c", "title": "C", "depends_on": ["a"]},
        ],
    }
    PlanSchema().load(plan)  # cycles are the service's to refuse, with a 409
    cycle = plan_cycle(plan)
    assert cycle is not None
    assert cycle[0] == cycle[-1]
    assert set(cycle) == {"a", "b", "c"}


def test_self_dependency_is_a_cycle() -> None:
    plan = {"title": "root", "subtasks": [{"key": "a", "title": "A", "depends_on": ["a"]}]}
    assert plan_cycle(plan) == ["a", "a"]


@pytest.mark.parametrize(
    ("dependent", "dependency"),
    [("child", "parent"), ("parent", "child"), ("grandchild", "top"), ("top", "grandchild")],
)
def test_hierarchy_cycle(dependent: str, dependency: str) -> None:
    plan = {
        "key": "top",
        "title": "Top",
        "subtasks": [
            {
                "key": "parent",
                "title": "Parent",
                "subtasks": [
                    {
                        "key": "child",
                        "title": "Child",
                        "subtasks": [{"key": "grandchild", "title": "Grandchild"}],
                    }
                ],
            }
        ],
    }
    node = next(n for n, _, _ in iter_nodes(plan) if n["key"] == dependent)
    node["depends_on"] = [dependency]
    cycle = plan_cycle(plan)
    assert cycle is not None
    assert cycle[0] == cycle[-1]
    assert {dependent, dependency} <= set(cycle)


def test_sibling_and_cousin_dependencies_are_not_cycles() -> None:
    plan = {
        "title": "root",
        "subtasks": [
            {"key": "p", "title": "P", "subtasks": [{"key": "p1", "title": "P1"}]},
            {"key": "q", "title": "Q", "depends_on": ["p"], "subtasks": [{"title": "Q1"}]},
            {"key": "r", "title": "R", "subtasks": [{"title": "R1", "depends_on": ["p1"]}]},
        ],
    }
    assert plan_cycle(plan) is None


def test_cycle_names_keyless_nodes_by_position_and_title() -> None:
    plan = {
        "title": "root",
        "depends_on": ["x"],
        "subtasks": [{"key": "x", "title": "X"}],
    }
    cycle = plan_cycle(plan)
    assert cycle is not None
    assert "x" in cycle
    assert "#0:root" in cycle


# --- flatten ---------------------------------------------------------------------------------


def test_flatten_keeps_everything_when_deep_enough() -> None:
    plan = sample_plan()
    planned = flatten(plan, max_depth=3)
    assert [p.node["title"] for p in planned] == [n["title"] for n, _, _ in iter_nodes(plan)]
    by_title = {p.node["title"]: p for p in planned}
    assert by_title["Ship the release"].parent_index is None
    assert by_title["Unit tests"].depends_on == (by_title["Compile"].index,)
    assert by_title["Announce"].depends_on == (by_title["Build"].index, by_title["Docs"].index)


def test_flatten_cuts_below_max_depth_and_moves_dependencies_to_the_stand_in() -> None:
    plan = {
        "title": "root",
        "subtasks": [
            {
                "key": "build",
                "title": "Build",
                "subtasks": [{"key": "compile", "title": "Compile"}],
            },
            {"key": "ship", "title": "Ship", "depends_on": ["compile"]},
        ],
    }
    planned = flatten(plan, max_depth=1)
    assert [p.node["title"] for p in planned] == ["root", "Build", "Ship"]
    assert planned[2].depends_on == (1,)  # Compile was cut; Build stands for it
    assert flatten(plan, max_depth=0) == [
        PlannedTask(index=0, node=plan, depth=0, parent_index=None, depends_on=())
    ]


def test_flatten_moves_a_cut_nodes_own_dependencies_to_its_stand_in() -> None:
    """Build stands for the cut Compile; Compile waited for Fetch, so Build must too, or the
    work Build now represents could run before its prerequisite."""
    plan = {
        "title": "root",
        "subtasks": [
            {"key": "fetch", "title": "Fetch"},
            {
                "key": "build",
                "title": "Build",
                "subtasks": [{"key": "compile", "title": "Compile", "depends_on": ["fetch"]}],
            },
        ],
    }
    planned = flatten(plan, max_depth=1)
    assert [p.node["title"] for p in planned] == ["root", "Fetch", "Build"]
    assert planned[2].depends_on == (1,)


# Random plans: a tree of up to ~20 nodes, every node keyed, random dependencies.


@st.composite
def random_plans(draw: st.DrawFn) -> Node:
    n = draw(st.integers(min_value=1, max_value=20))
    nodes: list[Node] = [{"key": f"k{i}", "title": f"T{i}"} for i in range(n)]
    for i in range(1, n):
        parent = nodes[draw(st.integers(0, i - 1))]
        parent.setdefault("subtasks", []).append(nodes[i])
    for i in range(n):
        deps = draw(st.lists(st.integers(0, n - 1), max_size=3))
        if deps:
            nodes[i]["depends_on"] = [f"k{d}" for d in deps]
    return nodes[0]


@given(random_plans(), st.integers(min_value=0, max_value=6))
def test_flatten_properties(plan: Node, max_depth: int) -> None:
    original = copy.deepcopy(plan)
    planned = flatten(plan, max_depth)
    assert plan == original  # flatten does not modify its input

    depth_of: dict[str, int] = {}
    parent_of: dict[str, str | None] = {}
    node_of: dict[str, Node] = {}
    stack: list[tuple[Node, int, str | None]] = [(plan, 0, None)]
    while stack:
        node, depth, parent = stack.pop()
        depth_of[node["key"]], parent_of[node["key"]], node_of[node["key"]] = depth, parent, node
        stack.extend((child, depth + 1, node["key"]) for child in node.get("subtasks") or [])

    kept = [p.node["key"] for p in planned]
    assert set(kept) == {k for k, d in depth_of.items() if d <= max_depth}
    assert kept == [n["key"] for n, _, _ in iter_nodes(plan) if depth_of[n["key"]] <= max_depth]
    for p in planned:
        key = p.node["key"]
        assert p.node is node_of[key]
        assert planned[p.index] is p
        assert p.depth == depth_of[key] <= max_depth
        if parent_of[key] is None:
            assert p.parent_index is None
        else:
            assert p.parent_index is not None
            assert p.parent_index < p.index  # parents before children
            assert planned[p.parent_index].node["key"] == parent_of[key]
        assert all(0 <= d < len(planned) for d in p.depends_on)

    def stand_in(key: str) -> str:
        while depth_of[key] > max_depth:
            parent = parent_of[key]
            assert parent is not None
            key = parent
        return key

    index_of = {key: i for i, key in enumerate(kept)}
    for p in planned:
        expected: list[int] = []
        for dep in p.node.get("depends_on") or []:
            target = index_of[stand_in(dep)]
            if target != p.index and target not in expected:
                expected.append(target)
        # every dependency of a kept node survives, moved to its deepest kept ancestor
        assert list(p.depends_on)[: len(expected)] == expected


# --- strings every way in must refuse ----------------------------------------------------------


@pytest.mark.parametrize(
    ("patch", "problem"),
    [
        ({"title": "A\x00B"}, "must not contain NUL characters"),
        ({"description": "x\x00"}, "must not contain NUL characters"),
        ({"key": "k\x00"}, "must not contain NUL characters"),
        ({"acceptance_criteria": ["done\x00"]}, "must not contain NUL characters"),
        ({"title": "R \ud800"}, "must not contain unpaired surrogates"),
        ({"description": "\udfff"}, "must not contain unpaired surrogates"),
        ({"required_skills": ["C\ud800"]}, "must not contain unpaired surrogates"),
        ({"title": "   "}, "must not be blank"),
        ({"title": "\t\n"}, "must not be blank"),
    ],
)
def test_rejects_strings_that_cannot_be_stored_or_say_nothing(patch: Node, problem: str) -> None:
    # A model's plan reaches the schema without the HTTP parser's checks.
    plan = {"title": "root", "subtasks": [{"title": "child", **patch}]}
    with pytest.raises(ValidationError) as info:
        PlanSchema().load(plan)
    assert problem in str(info.value.messages)


def test_the_http_parser_and_the_schema_refuse_the_same_strings() -> None:
    for text in ("a\x00", "\ud800x", "ok"):
        try:
            check_storable({"title": text})
            by_parser = None
        except InvalidInput as exc:
            by_parser = exc.errors
        try:
            PlanSchema().load({"title": text})
            by_schema = None
        except ValidationError as exc:
            by_schema = exc.messages
        assert by_parser == by_schema


@pytest.mark.parametrize("skill", ["C++", "C#", "UI/UX", ".NET", "R&D", "Node.js", "data science"])
def test_accepts_real_skill_names(skill: str) -> None:
    assert PlanSchema().load({"title": "t", "required_skills": [skill]})["required_skills"] == [
        skill
    ]


@pytest.mark.parametrize(
    "skill", ["", " lead", "trail ", "two\nlines", "tab\there", "x" * 65, "a\n"]
)
def test_rejects_skill_names_that_would_not_match(skill: str) -> None:
    with pytest.raises(ValidationError):
        PlanSchema().load({"title": "t", "required_skills": [skill]})
