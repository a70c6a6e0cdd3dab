"""The heuristic planner: valid, acyclic, deterministic plans with sensible skills and order."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestration.agents import AgentConfigError, build_planner, get_planner
from orchestration.agents.base import AgentProfile
from orchestration.agents.heuristic import HeuristicPlanner, build_plan
from orchestration.config import reload_settings
from orchestration.plans import MAX_DEPTH_LIMIT, MAX_PLAN_NODES, PlanSchema, iter_nodes, plan_cycle
from orchestration.scoring import SPECIALIZATION_PRESETS

EBIKES = (
    "Research the market for electric bikes, then write a report summarizing the findings and "
    "build a price comparison dashboard. Finally, test and deploy the dashboard."
)


def _long_goal(sentences: int) -> str:
    topics = ["pricing", "competitors", "logistics", "marketing", "support", "hiring", "finance"]
    forms = [
        "Research {t} in region {i}.",
        "Then write a memo about {t} for region {i}.",
        "Build a {t} dashboard for region {i} and test it.",
        "Analyze the {t} data of region {i}.",
    ]
    return " ".join(
        forms[i % len(forms)].format(t=topics[i % len(topics)], i=i) for i in range(sentences)
    )


GOALS: dict[str, str] = {
    "ebikes": EBIKES,
    "single-sentence": "Write a blog post about Rust async programming",
    "bullets-nested": (
        "- Build the backend\n"
        "  - design the database schema\n"
        "  - implement the REST API\n"
        "    - add authentication\n"
        "    - add rate limiting\n"
        "- Write the user documentation\n"
        "- Deploy to production"
    ),
    "numbered-with-intro": (
        "Launch our new website:\n1. Design the homepage\n2. Write the copy and proofread it\n"
        "3. Deploy the site"
    ),
    "inline-numbered": "Do this: 1) gather the sales data 2) clean it 3) analyze trends "
    "4) present the results",
    "context-and-once": (
        "We run a small bakery in Berlin. Set up an online shop, write product descriptions "
        "for our 20 cakes and promote the shop on Instagram. Once the shop is live, collect "
        "customer feedback."
    ),
    "before-and-after-that": (
        "Analyze the quarterly sales data and summarize the key trends, after that write a memo "
        "to the CEO; also update the dashboard. Before deploying the new dashboard, test it."
    ),
    "lowercase-lines": "research competitors\nwrite a comparison table\nship the landing page",
    "unknown-verbs": "Organize a team offsite and book a venue. Then send invitations.",
    "very-long": _long_goal(60),
    "empty-ish": "and then",
    "blank": "   ",
    "punctuation": "... ?!",
}

KNOWN_SKILLS = {skill for preset in SPECIALIZATION_PRESETS.values() for skill in preset}


def _nodes(plan: dict[str, Any]) -> list[tuple[dict[str, Any], int, dict[str, Any] | None]]:
    return list(iter_nodes(plan))


def _by_title(plan: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {node["title"]: node for node, _, _ in _nodes(plan)}


def _leaves(plan: dict[str, Any]) -> list[dict[str, Any]]:
    return [node for node, _, _ in _nodes(plan) if not node.get("subtasks")]


def _waits_for(plan: dict[str, Any], later: str, earlier: str) -> bool:
    """Does the task titled later (transitively, hierarchy included) wait for earlier?"""
    nodes = _nodes(plan)
    by_key = {n["key"]: n for n, _, _ in nodes}
    parent = {id(n): p for n, _, p in nodes}
    titles = _by_title(plan)
    target = titles[earlier]

    def subtree(node: dict[str, Any]) -> list[dict[str, Any]]:
        return [n for n, _, _ in iter_nodes(node)]

    seen: set[int] = set()
    frontier = [titles[later]]
    while frontier:
        node = frontier.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        up = parent.get(id(node))
        if up is not None:
            frontier.append(up)
        for key in node.get("depends_on") or []:
            dep = by_key[key]
            if any(n is target for n in subtree(dep)):
                return True
            frontier.append(dep)
    return False


@pytest.mark.parametrize("max_depth", [0, 1, 2, 3, 5])
@pytest.mark.parametrize("name", list(GOALS))
def test_plans_are_valid_acyclic_and_within_limits(name: str, max_depth: int) -> None:
    plan = build_plan(GOALS[name], [], max_depth)
    loaded = PlanSchema().load(plan)  # raises on any schema or tree error
    assert loaded["title"]
    assert plan_cycle(plan) is None
    nodes = _nodes(plan)
    assert len(nodes) <= MAX_PLAN_NODES
    assert max(depth for _, depth, _ in nodes) <= max_depth
    keys = [node.get("key") for node, _, _ in nodes]
    assert all(keys) and len(set(keys)) == len(keys)
    for node, _, _ in nodes:
        assert node["acceptance_criteria"], node["title"]
        assert isinstance(node["estimated_tokens"], int) and node["estimated_tokens"] > 0
        assert 0 <= node["priority"] <= 10
        if node.get("subtasks"):
            assert node["required_skills"] == []  # summary tasks are never assigned
        else:
            assert len(node["required_skills"]) <= 3
            assert set(node["required_skills"]) <= KNOWN_SKILLS


@pytest.mark.parametrize("name", list(GOALS))
def test_same_goal_same_tree(name: str) -> None:
    first = build_plan(GOALS[name], [], 3)
    again = HeuristicPlanner().plan(GOALS[name], [], 3)
    assert json.dumps(first, sort_keys=True) == json.dumps(again, sort_keys=True)


def test_ebikes_goal_is_decomposed_sensibly() -> None:
    plan = build_plan(EBIKES, [], 3)
    leaves = {leaf["title"]: leaf for leaf in _leaves(plan)}
    assert set(leaves) == {
        "Research the market for electric bikes",
        "Write a report summarizing the findings",
        "Build a price comparison dashboard",
        "Test the dashboard",
        "Deploy the dashboard",
    }
    assert leaves["Research the market for electric bikes"]["required_skills"] == ["research"]
    assert leaves["Write a report summarizing the findings"]["required_skills"][0] == "writing"
    assert leaves["Build a price comparison dashboard"]["required_skills"] == ["coding"]
    assert leaves["Test the dashboard"]["required_skills"] == ["testing"]
    assert leaves["Deploy the dashboard"]["required_skills"] == ["deployment"]
    # "then": the report and the dashboard wait for the research
    assert _waits_for(
        plan, "Write a report summarizing the findings", "Research the market for electric bikes"
    )
    assert _waits_for(
        plan, "Build a price comparison dashboard", "Research the market for electric bikes"
    )
    # "finally": testing waits for the dashboard; deploying waits for testing
    assert _waits_for(plan, "Test the dashboard", "Build a price comparison dashboard")
    assert _waits_for(plan, "Deploy the dashboard", "Test the dashboard")
    assert not _waits_for(plan, "Research the market for electric bikes", "Test the dashboard")
    # "write ... and build ..." are side by side
    assert not _waits_for(
        plan, "Build a price comparison dashboard", "Write a report summarizing the findings"
    )
    for leaf in leaves.values():
        assert leaf["estimated_tokens"] >= 500
        assert len(leaf["acceptance_criteria"]) >= 2


@pytest.mark.parametrize(
    ("goal", "later", "earlier"),
    [
        ("Collect the data, then clean the data.", "Clean the data", "Collect the data"),
        ("Write the draft. After that, edit the draft.", "Edit the draft", "Write the draft"),
        (
            "Design the API. Write the docs. Finally, publish everything.",
            "Publish everything",
            "Write the docs",
        ),
        (
            "Design the API. Write the docs. Finally, publish everything.",
            "Publish everything",
            "Design the API",
        ),
        (
            "1. Gather sources\n2. Read the papers\n3. Summarize them",
            "Read the papers",
            "Gather sources",
        ),
        (
            "1. Gather sources\n2. Read the papers\n3. Summarize them",
            "Summarize the papers",
            "Gather sources",
        ),
        (
            "Build the API. Write the user guide. Once the API is built, write integration tests.",
            "Write integration tests",
            "Build the API",
        ),
        ("Write tests before deploying the service.", "Deploy the service", "Write tests"),
        (
            "Before launching the campaign, review the copy.",
            "Launch the campaign",
            "Review the copy",
        ),
        ("Deploy the app after testing the app.", "Deploy the app", "Test the app"),
        ("Test and deploy the dashboard.", "Deploy the dashboard", "Test the dashboard"),
        (
            "Build a dashboard. Test the dashboard. Deploy it.",
            "Test the dashboard",
            "Build a dashboard",
        ),
        (
            "Build a dashboard. Test the dashboard. Deploy it.",
            "Deploy the dashboard",
            "Test the dashboard",
        ),
    ],
)
def test_order_words_become_dependencies(goal: str, later: str, earlier: str) -> None:
    plan = build_plan(goal, [], 3)
    assert later in _by_title(plan) and earlier in _by_title(plan), list(_by_title(plan))
    assert _waits_for(plan, later, earlier)
    assert not _waits_for(plan, earlier, later)


@pytest.mark.parametrize(
    "goal",
    [
        "- Write the press release\n- Build the landing page\n- Research competitors",
        "Write the press release. Build the landing page. Research competitors.",
    ],
)
def test_no_order_words_no_dependencies(goal: str) -> None:
    plan = build_plan(goal, [], 3)
    assert all(not node["depends_on"] for node, _, _ in _nodes(plan))


@pytest.mark.parametrize(
    ("action", "skill"),
    [
        ("Implement the login endpoint", "coding"),
        ("Fix the crash in the importer", "debugging"),
        ("Write unit tests for the parser", "testing"),
        ("Deploy the service to production", "deployment"),
        ("Write a blog post about our launch", "writing"),
        ("Proofread the newsletter", "editing"),
        ("Research competitors in Germany", "research"),
        ("Write the API documentation", "documentation"),
        ("Analyze the churn metrics", "analysis"),
        ("Clean the customer dataset", "data_processing"),
        ("Summarize the interview notes", "summarization"),
    ],
)
def test_skills_are_inferred(action: str, skill: str) -> None:
    plan = build_plan(f"{action}. Then report to the team.", [], 1)
    node = _by_title(plan)[action]
    assert node["required_skills"][0] == skill


def test_team_skills_are_preferred_and_named_skills_used() -> None:
    goal = "Write a report summarizing the findings. Build a price dashboard in Python."
    nobody = build_plan(goal, [], 2)
    assert _by_title(nobody)["Write a report summarizing the findings"]["required_skills"] == [
        "writing"
    ]
    team = [
        AgentProfile(None, "boss", "manager", "Content Creator"),
        AgentProfile(None, "ana", "worker", "Researcher/Analyzer"),
        AgentProfile(None, "dev", "worker", "Technical Executor", {"python": 0.9}),
    ]
    plan = build_plan(goal, team, 2)
    titles = _by_title(plan)
    # nobody but the manager writes: the summarizing part of the task is asked for instead
    assert titles["Write a report summarizing the findings"]["required_skills"] == ["summarization"]
    assert titles["Build a price dashboard in Python"]["required_skills"] == ["coding", "python"]
    assert build_plan(goal, team, 2) == plan


def test_max_depth_zero_is_the_root_only() -> None:
    plan = build_plan(EBIKES, [], 0)
    assert "subtasks" not in plan
    assert plan["depends_on"] == []
    # the root now stands for all the work: its skills and criteria cover it
    assert plan["required_skills"] == ["research", "writing", "coding"]
    assert len(plan["acceptance_criteria"]) >= 5
    assert plan["description"] == EBIKES


def test_depth_limit_folds_deeper_work_into_ancestors() -> None:
    goal = GOALS["bullets-nested"]
    deep = build_plan(goal, [], 5)
    assert max(d for _, d, _ in _nodes(deep)) == 3
    shallow = build_plan(goal, [], 1)
    assert max(d for _, d, _ in _nodes(shallow)) == 1
    backend = _by_title(shallow)["Build the backend"]
    assert "subtasks" not in backend
    assert "Add authentication" in backend["description"]
    assert "coding" in backend["required_skills"]
    assert len(_nodes(shallow)) == 4


def test_max_depth_is_clamped() -> None:
    assert build_plan(EBIKES, [], MAX_DEPTH_LIMIT + 5) == build_plan(EBIKES, [], MAX_DEPTH_LIMIT)
    assert build_plan(EBIKES, [], -1) == build_plan(EBIKES, [], 0)


def test_single_action_goal_gets_stages_of_work() -> None:
    plan = build_plan("Write a blog post about Rust async programming", [], 3)
    titles = [node["title"] for node in plan["subtasks"]]
    assert titles == [
        "Outline the blog post about Rust async programming",
        "Draft the blog post about Rust async programming",
        "Edit and proofread the blog post about Rust async programming",
    ]
    assert [n["depends_on"] for n in plan["subtasks"]] == [[], ["step-1"], ["step-2"]]
    assert plan["subtasks"][2]["required_skills"] == ["editing"]


def test_context_sentences_are_not_tasks() -> None:
    plan = build_plan(GOALS["context-and-once"], [], 3)
    titles = set(_by_title(plan))
    assert not any("bakery" in title for title in titles - {plan["title"]})
    assert "Collect customer feedback" in titles


def test_long_goals_are_grouped_and_stay_under_the_node_limit() -> None:
    plan = build_plan(_long_goal(60), [], 3)
    assert len(plan["subtasks"]) <= 30
    assert plan["subtasks"][0]["title"].startswith("Part 1 of")
    huge = build_plan(_long_goal(900), [], 3)
    PlanSchema().load(huge)
    assert plan_cycle(huge) is None
    assert len(_nodes(huge)) <= MAX_PLAN_NODES


@pytest.mark.parametrize(
    "goal",
    [
        "Build, test, deploy, " * 40_000,
        " ".join(f"Once the dashboard is built, test the dashboard {i}." for i in range(20_000)),
        "- build it\n" * 90_000,
        "x. " * 300_000,
    ],
    ids=["one-huge-sentence", "many-conditions", "many-bullets", "many-sentences"],
)
def test_megabyte_goals_are_planned_quickly(goal: str) -> None:
    started = time.monotonic()
    plan = build_plan(goal, [], 3)
    assert time.monotonic() - started < 10
    PlanSchema().load(plan)
    assert plan_cycle(plan) is None
    assert len(plan["description"]) <= 20_000


def test_empty_goal_gives_a_valid_root() -> None:
    for goal in ("", "   ", "and then"):
        plan = build_plan(goal, [], 3)
        PlanSchema().load(plan)
        assert plan["title"]


GOAL_WORDS = [
    *[
        "build",
        "test",
        "deploy",
        "write",
        "research",
        "analyze",
        "summarize",
        "fix",
        "document",
        "edit",
    ],
    *[
        "the",
        "a",
        "dashboard",
        "report",
        "API",
        "it",
        "them",
        "data",
        "market",
        "prices",
        "Python",
        "bug",
    ],
    *[
        "and",
        "then",
        ",",
        ".",
        ";",
        ":",
        "!",
        "?",
        "once",
        "after",
        "before",
        "when",
        "finally",
        "first",
        "next",
        "also",
        "is",
        "done",
    ],
    "\n",
    "\n- ",
    "\n  - ",
    "\n    * ",
    "1.",
    "2)",
    "(3)",
    "Step 4:",
    "e.g.",
    "after that",
    "Once",
    "Before",
    "We",
    "please",
    "set up",
]


def _assert_sound(plan: dict[str, Any], max_depth: int) -> None:
    PlanSchema().load(plan)
    assert plan_cycle(plan) is None
    assert max(depth for _, depth, _ in _nodes(plan)) <= max(0, min(max_depth, MAX_DEPTH_LIMIT))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(GOAL_WORDS), max_size=40), st.integers(-1, 5))
def test_any_goal_words_give_a_sound_plan(parts: list[str], max_depth: int) -> None:
    goal = " ".join(parts)
    team = [AgentProfile(None, "dev", "worker", "Technical Executor", {"python": 1.0})]
    plan = build_plan(goal, team, max_depth)
    _assert_sound(plan, max_depth)
    assert build_plan(goal, team, max_depth) == plan


# Any text a goal can be: the API refuses NUL characters and unpaired surrogates
# (webapp.parsing), as the plan schema does.
GOAL_TEXT = st.text(
    st.characters(exclude_characters="\x00", exclude_categories=["Cs"]), max_size=400
)


@settings(max_examples=100, deadline=None)
@given(GOAL_TEXT, st.integers(0, 4))
def test_any_text_gives_a_sound_plan(goal: str, max_depth: int) -> None:
    _assert_sound(build_plan(goal, [], max_depth), max_depth)


@pytest.fixture
def planner_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    yield monkeypatch
    monkeypatch.undo()
    reload_settings()


def test_get_planner_follows_settings(planner_env: pytest.MonkeyPatch) -> None:
    planner_env.setenv("ORCH_PLANNER", "heuristic")
    reload_settings()
    planner = get_planner()
    assert isinstance(planner, HeuristicPlanner)
    assert get_planner() is planner  # cached
    assert planner.plan(EBIKES, [], 3) == build_plan(EBIKES, [], 3)
    planner_env.setenv("ORCH_PLANNER", "telepathy")
    reload_settings()
    with pytest.raises(AgentConfigError, match="ORCH_PLANNER"):
        get_planner()
    planner_env.setenv("ORCH_PLANNER", "llm")
    planner_env.delenv("LLM_BASE_URL", raising=False)
    settings = reload_settings()
    with pytest.raises(AgentConfigError, match="LLM_BASE_URL"):
        build_planner(settings)
