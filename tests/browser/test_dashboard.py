"""The dashboard in real headless Chromium: the page loads, the dependency graph shows every node
and edge of a seeded team, a status change appears live over the event stream, and a screenshot
is saved to tests/artifacts/dashboard.png."""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from db.models import TaskStatus
from orchestration import decomposition, lifecycle, orchestrator, planning, teams
from orchestration.plans import PlanSchema
from tests.browser.conftest import ARTIFACTS, LiveServer, PageProblems, dashboard_app
from webapp.testing import ADMIN_TOKEN, environment

pytestmark = pytest.mark.xdist_group("browser")

STATIC = Path(__file__).resolve().parents[2] / "webapp"
CANCELLED_FILL = "rgb(100, 116, 139)"  # --cancelled in dashboard.css

PLAN: dict[str, Any] = {
    "title": "Launch the documentation site",
    "description": "Plan, write and publish the docs",
    "subtasks": [
        {
            "key": "research",
            "title": "Survey what users ask",
            "required_skills": ["research", "analysis"],
        },
        {
            "key": "outline",
            "title": "Design the outline",
            "depends_on": ["research"],
            "subtasks": [
                {"key": "draft", "title": "Draft the outline", "required_skills": ["writing"]},
                {
                    "key": "check",
                    "title": "Check the outline",
                    "depends_on": ["draft"],
                    "required_skills": ["editing"],
                },
            ],
        },
        {
            "key": "api",
            "title": "Write the API reference",
            "depends_on": ["outline"],
            "required_skills": ["coding", "documentation"],
        },
        {
            "key": "tutorials",
            "title": "Write the tutorials",
            "depends_on": ["outline"],
            "required_skills": ["writing"],
        },
        {
            "key": "publish",
            "title": "Publish the site",
            "depends_on": ["api", "tutorials"],
            "required_skills": ["deployment"],
        },
        {"key": "ci", "title": "Set up the docs CI", "required_skills": ["coding", "testing"]},
    ],
}


@dataclass
class Seeded:
    team_id: uuid.UUID
    ids: dict[str, uuid.UUID]  # title -> task id


def run_one(team_id: uuid.UUID, task_id: uuid.UUID, tokens: int, cost: str) -> None:
    """Execute one assigned task as its worker would: claim, then complete."""
    task = decomposition.get_task(team_id, task_id)
    assert task.assigned_to is not None
    claimed = lifecycle.claim(task_id, task.assigned_to, "browser-test")
    assert claimed is not None
    done = lifecycle.complete(
        task_id, "browser-test", claimed.status, {"summary": "done"}, tokens, Decimal(cost)
    )
    assert done


def seed_team() -> Seeded:
    """A started team with a manager, three workers and a plan with a hierarchy and a diamond
    (outline -> api, tutorials -> publish); some work done, some running, some waiting."""
    team = teams.create_team("Docs squad", "Seeded by the dashboard's browser test")
    teams.add_member(team.id, "manager", "Researcher/Analyzer", agent_id="lead")
    teams.add_member(team.id, "worker", "Technical Executor", agent_id="coder-1")
    teams.add_member(team.id, "worker", "Content Creator", agent_id="writer-1")
    teams.add_member(team.id, "worker", "Researcher/Analyzer", agent_id="analyst-1")
    tasks = decomposition.create_plan(team.id, PlanSchema().load(PLAN), max_depth=3)
    ids = {t.title: t.id for t in tasks}
    lifecycle.start_team(team.id)
    orchestrator.run_pass(team.id)  # research and ci are ready
    run_one(team.id, ids["Survey what users ask"], 1830, "0.0183")
    orchestrator.run_pass(team.id)  # the outline's draft is now ready
    draft = decomposition.get_task(team.id, ids["Draft the outline"])
    assert draft.assigned_to is not None
    assert lifecycle.claim(draft.id, draft.assigned_to, "browser-test") is not None
    return Seeded(team.id, ids)


def get_json(server: LiveServer, path: str) -> Any:
    request = urllib.request.Request(
        server.url + "/api/v1" + path, headers={"Authorization": f"Bearer {server.token}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def sign_in(page: Any, token: str) -> None:
    page.wait_for_selector("#token-form", state="visible")
    page.fill("#token-input", token)
    page.click("#token-submit")


def status_of(page: Any, task_id: uuid.UUID) -> dict[str, Any]:
    return dict(
        page.evaluate(
            """id => {
                const g = document.querySelector(`#dag g.node[data-task-id="${id}"]`);
                const row = document.querySelector(`#task-tree li[data-task-id="${id}"] .badge`);
                return {
                    status: g && g.getAttribute("data-status"),
                    fill: g && getComputedStyle(g.querySelector("rect")).fill,
                    badge: row && row.dataset.status,
                };
            }""",
            str(task_id),
        )
    )


def test_team_page_graph_and_live_update(
    live_server: LiveServer, page: Any, page_problems: PageProblems
) -> None:
    started = time.monotonic()
    seeded = seed_team()
    graph = get_json(live_server, f"/teams/{seeded.team_id}/dependency-graph")
    node_ids = {n["id"] for n in graph["nodes"]}
    edges = {(e["depends_on_task_id"], e["task_id"]) for e in graph["edges"]}
    parents = {(n["parent_task_id"], n["id"]) for n in graph["nodes"] if n["parent_task_id"]}
    assert len(node_ids) == len(PLAN["subtasks"]) + 3  # root, 6 children, 2 grandchildren
    assert len(edges) == 6  # a diamond, a chain, and a dependency between siblings

    page.goto(f"{live_server.url}/dashboard/teams/{seeded.team_id}")
    sign_in(page, live_server.token)
    page.wait_for_selector("#content[data-loaded=true]")
    assert live_server.token not in page.url
    page.wait_for_function(
        "n => document.querySelectorAll('#dag g.node').length === n", arg=len(node_ids)
    )

    # Every node and every edge of GET /dependency-graph, and nothing else.
    svg_nodes = page.eval_on_selector_all(
        "#dag g.node", "gs => gs.map(g => g.getAttribute('data-task-id'))"
    )
    assert sorted(svg_nodes) == sorted(node_ids)
    svg_edges = page.eval_on_selector_all(
        "#dag path.edge-dep",
        "ps => ps.map(p => [p.getAttribute('data-from'), p.getAttribute('data-to')])",
    )
    assert len(svg_edges) == len(edges)
    assert {tuple(e) for e in svg_edges} == edges
    svg_tree = page.eval_on_selector_all(
        "#dag path.edge-tree",
        "ps => ps.map(p => [p.getAttribute('data-parent'), p.getAttribute('data-child')])",
    )
    assert {tuple(e) for e in svg_tree} == parents
    # Every arrow points right (layered left to right), and nodes do not overlap.
    boxes = page.evaluate(
        """() => Object.fromEntries([...document.querySelectorAll('#dag g.node')].map(g => {
            const b = g.getBoundingClientRect();
            return [g.dataset.taskId, [b.x, b.y, b.width, b.height]];
        }))"""
    )
    for before, after in edges | parents:
        assert boxes[before][0] < boxes[after][0], (before, after)
    rects = list(boxes.values())
    for i, a in enumerate(rects):
        for b in rects[i + 1 :]:
            overlap_x = a[0] < b[0] + b[2] and b[0] < a[0] + a[2]
            overlap_y = a[1] < b[1] + b[3] and b[1] < a[1] + a[3]
            assert not (overlap_x and overlap_y), (a, b)

    # Statuses as the API has them, in the graph and in the tree.
    by_status = {n["id"]: n["status"] for n in graph["nodes"]}
    for task_id, status in by_status.items():
        shown = status_of(page, task_id)
        assert shown["status"] == status and shown["badge"] == status, (task_id, shown)
    assert by_status[str(seeded.ids["Survey what users ask"])] == "completed"
    assert by_status[str(seeded.ids["Draft the outline"])] == "in_progress"

    # Workers, with load, success rate and tokens; the log with explanations; the legend.
    page.wait_for_selector("#workers-body tr >> nth=3")
    workers = page.inner_text("#workers-table")
    for agent in ("lead", "coder-1", "writer-1", "analyst-1"):
        assert agent in workers
    assert "1,830" in workers and "100.0%" in workers
    explanations = page.eval_on_selector_all("#assignments pre", "ps => ps.map(p => p.textContent)")
    assert len(explanations) == 3
    assert all(text.startswith("Assigned to ") for text in explanations)
    assert "Skill Match:" in explanations[0]
    legend = page.eval_on_selector_all(
        "#legend li[data-status]", "ls => ls.map(l => l.dataset.status)"
    )
    assert legend == [s.value for s in TaskStatus]

    # A status change appears live (over the event stream, no reload).
    page.wait_for_selector("#live[data-state=connected]")
    page.evaluate("window.__sameDocument = true")
    tutorials = seeded.ids["Write the tutorials"]
    assert status_of(page, tutorials)["status"] == "blocked"
    changed_at = time.monotonic()
    lifecycle.cancel_task(seeded.team_id, tutorials)
    page.wait_for_function(
        """([id, fill]) => {
            const g = document.querySelector(`#dag g.node[data-task-id="${id}"]`);
            return g && g.getAttribute("data-status") === "cancelled"
                && getComputedStyle(g.querySelector("rect")).fill === fill;  // after the fade
        }""",
        arg=[str(tutorials), CANCELLED_FILL],
        timeout=5_000,
    )
    latency = time.monotonic() - changed_at
    shown = status_of(page, tutorials)
    assert shown == {"status": "cancelled", "fill": CANCELLED_FILL, "badge": "cancelled"}
    assert page.evaluate("window.__sameDocument") is True
    # What waited for it (publishing) is cancelled with it, and shows so live too; the
    # debounced refetch brings the counts up to date.
    publish = seeded.ids["Publish the site"]
    page.wait_for_function(
        "id => document.querySelector(`#dag g.node[data-task-id='${id}']`)"
        "?.getAttribute('data-status') === 'cancelled'",
        arg=str(publish),
        timeout=5_000,
    )
    page.wait_for_selector("#team-counts .badge.status-cancelled[data-count='2']")

    # A team change shows live as well.
    lifecycle.pause_team(seeded.team_id)
    page.wait_for_selector("#team-status[data-status=paused]", timeout=5_000)
    page.wait_for_selector("#btn-resume:not([hidden])")

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

    assert not page_problems.errors, (page_problems.errors, page_problems.failed)
    assert not page_problems.external, page_problems.external
    print(f"live update after {latency:.2f}s; test body {time.monotonic() - started:.1f}s")


@pytest.mark.app_config(ORCH_DASHBOARD_GRAPH_LIMIT=3)
def test_a_team_too_large_to_draw(
    live_server: LiveServer, page: Any, page_problems: PageProblems
) -> None:
    """Beyond the limit the page reads no graph and only the first page of tasks, and says so;
    what it shows still follows the event stream."""
    team = teams.create_team("Large team")
    made = [
        decomposition.create_task(team.id, {"title": f"task {i}", "priority": i}) for i in range(5)
    ]
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(f"{live_server.url}/dashboard/teams/{team.id}")
    sign_in(page, live_server.token)
    page.wait_for_selector("#content[data-loaded=true]")
    assert page.is_hidden("#graph-wrap")
    assert "5 tasks" in page.inner_text("#graph-too-large")
    assert "up to 3" in page.inner_text("#graph-too-large")
    assert "first 3 of 5" in page.inner_text("#tree-partial")
    listed = page.eval_on_selector_all(
        "#task-tree li[data-task-id]", "items => items.map(i => i.dataset.taskId)"
    )
    assert listed == [str(t.id) for t in reversed(made)][:3]
    assert not [u for u in requests if "/dependency-graph" in u]
    assert [u for u in requests if u.endswith("/tasks?limit=3")]
    lifecycle.cancel_task(team.id, made[4].id)
    page.wait_for_selector(
        f"#task-tree li[data-task-id='{made[4].id}'] > .row > .badge[data-status=cancelled]"
    )
    assert not page_problems.errors, (page_problems.errors, page_problems.failed)


def test_pause_and_resume_buttons(live_server: LiveServer, page: Any) -> None:
    seeded = seed_team()
    page.goto(f"{live_server.url}/dashboard/teams/{seeded.team_id}")
    sign_in(page, live_server.token)
    page.click("#btn-pause")
    page.wait_for_selector("#team-status[data-status=paused]")
    assert get_json(live_server, f"/teams/{seeded.team_id}")["status"] == "paused"
    page.click("#btn-resume")
    page.wait_for_selector("#team-status[data-status=active]")
    assert get_json(live_server, f"/teams/{seeded.team_id}")["status"] == "active"


def test_teams_page_lists_teams_with_counts(
    live_server: LiveServer, page: Any, page_problems: PageProblems
) -> None:
    seeded = seed_team()
    other = teams.create_team("Empty team")
    page.goto(f"{live_server.url}/dashboard")
    sign_in(page, live_server.token)
    page.wait_for_selector(f"tr[data-team-id='{other.id}']")
    row = page.inner_text(f"tr[data-team-id='{seeded.team_id}']")
    assert "Docs squad" in row and "active" in row
    assert re.search(r"\b9\b", row), row  # nine tasks
    assert "1 completed" in row and "3 in progress" in row  # the draft and its ancestors
    assert "no tasks" in page.inner_text(f"tr[data-team-id='{other.id}']")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-teams.png"))
    page.click(f"tr[data-team-id='{seeded.team_id}'] a")
    page.wait_for_url(f"**/dashboard/teams/{seeded.team_id}")
    # The token is kept for the tab: no second sign-in.
    page.wait_for_selector("#content[data-loaded=true]")
    assert page.is_hidden("#login")
    assert not page_problems.errors, (page_problems.errors, page_problems.failed)
    assert not page_problems.external, page_problems.external


def test_a_refused_token_asks_again(live_server: LiveServer, page: Any) -> None:
    page.goto(f"{live_server.url}/dashboard")
    sign_in(page, "not-the-token")
    page.wait_for_selector("#login-error:not([hidden])")
    assert "refused" in page.inner_text("#login-error")
    assert page.is_hidden("#content")
    assert "not-the-token" not in page.url
    assert page.evaluate("sessionStorage.length") == 0
    sign_in(page, ADMIN_TOKEN)
    page.wait_for_selector("#teams-empty:not([hidden])")


def test_pages_are_static_shells(database: str) -> None:
    """No data and no token in the HTML; served without a token; nothing loaded from elsewhere."""
    with environment(ORCH_ADMIN_TOKEN=ADMIN_TOKEN, ORCH_AUTH=None):
        client = dashboard_app().test_client()
    team = teams.create_team("Secret project name")
    for path in ("/dashboard", f"/dashboard/teams/{team.id}"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert response.mimetype == "text/html"
        html = response.get_data(as_text=True)
        assert "Secret project name" not in html
        assert ADMIN_TOKEN not in html
        csp = response.headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "connect-src 'self'" in csp
        for src in re.findall(r'(?:src|href)="([^"]+)"', html):
            assert src.startswith("/"), src
            if src.startswith("/dashboard/static/"):
                assert client.get(src).status_code == 200, src
    assert client.get("/dashboard/teams/not-a-uuid").status_code == 404
    assert client.get("/dashboard/static/../dashboard.py").status_code == 404
    # No URL to anywhere else in the templates or scripts (the SVG namespace is a name).
    for folder in ("templates", "static"):
        for file in (STATIC / folder).iterdir():
            urls = re.findall(r"(?:https?:)?//[\w.-]+\.[a-z]{2,}[^\s\"')]*", file.read_text())
            assert set(urls) <= {"http://www.w3.org/2000/svg"}, (file, urls)


def decomposition_rows(page: Any) -> dict[str, dict[str, str]]:
    return {
        row["id"]: row
        for row in page.eval_on_selector_all(
            "#decompositions-body tr",
            """rows => rows.map(r => ({
                id: r.dataset.decompositionId,
                goal: r.cells[0].textContent,
                status: r.querySelector('.badge').dataset.status,
                tasks: r.cells[3].textContent,
            }))""",
        )
    }


def test_background_decompositions_show_and_follow_events(
    live_server: LiveServer, page: Any, page_problems: PageProblems
) -> None:
    seeded = seed_team()
    planned, _ = planning.submit(seeded.team_id, "Translate the docs", 2)
    assert planning.run_next("browser-test", threading.Event())
    waiting, _ = planning.submit(seeded.team_id, "Record the screencasts", 2)
    page.goto(f"{live_server.url}/dashboard/teams/{seeded.team_id}")
    sign_in(page, live_server.token)
    page.wait_for_selector("#decompositions-card", state="visible")
    rows = decomposition_rows(page)
    assert rows[str(planned.id)]["status"] == "succeeded"
    assert rows[str(planned.id)]["tasks"] == str(
        len(planning.get(seeded.team_id, planned.id).task_ids or [])
    )
    assert rows[str(waiting.id)] == {
        "id": str(waiting.id),
        "goal": "Record the screencasts",
        "status": "queued",
        "tasks": "—",
    }
    # A cancel elsewhere reaches the page through the event stream.
    planning.cancel(seeded.team_id, waiting.id)
    page.wait_for_selector(
        f"#decompositions-body tr[data-decomposition-id='{waiting.id}'] "
        ".badge[data-status=cancelled]"
    )
    assert not page_problems.errors, (page_problems.errors, page_problems.failed)
    assert not page_problems.failed, page_problems.failed
