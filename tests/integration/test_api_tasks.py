"""Tasks: create, list, read, hierarchy, cancel, retry, decompose."""

from __future__ import annotations

import base64
import uuid
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session

import db.engine
from db.models import Task, TaskStatus
from orchestration.plans import MAX_DEPTH_LIMIT
from webapp.testing import V1, ApiClient, assert_error, unknown_id

TASK_KEYS = {
    "id",
    "team_id",
    "parent_task_id",
    "title",
    "description",
    "acceptance_criteria",
    "assigned_to",
    "assigned_by",
    "status",
    "priority",
    "start_time",
    "completion_time",
    "revision_count",
    "max_revisions",
    "input_data",
    "output_data",
    "error_message",
    "required_skills",
    "estimated_tokens",
    "actual_tokens",
    "created_at",
    "updated_at",
}


def tasks(team_id: str) -> str:
    return f"{V1}/teams/{team_id}/tasks"


def set_status(session: Session, task_id: str, status: TaskStatus) -> None:
    session.execute(update(Task).where(Task.id == uuid.UUID(task_id)).values(status=status))
    session.commit()


def test_create_task_with_defaults(api: ApiClient, team: dict[str, Any]) -> None:
    response = api.post(tasks(team["id"]), {"title": "write the report"})
    assert response.status_code == 201
    body = response.get_json()
    assert set(body) == TASK_KEYS
    assert body["title"] == "write the report"
    assert body["team_id"] == team["id"]
    assert body["status"] == "pending"
    assert body["priority"] == 5
    assert body["max_revisions"] == 3
    assert body["revision_count"] == 0
    assert body["parent_task_id"] is None
    assert body["assigned_to"] is None
    assert body["estimated_tokens"] is None


def test_create_task_with_everything(api: ApiClient, team: dict[str, Any]) -> None:
    first = api.create_task(team["id"], "first")
    parent = api.create_task(team["id"], "parent")
    body = {
        "title": "second",
        "description": "details",
        "acceptance_criteria": ["has a title", "is short"],
        "required_skills": ["writing", "research"],
        "priority": 9,
        "estimated_tokens": 1200,
        "max_revisions": 0,
        "parent_task_id": parent["id"],
        "depends_on": [first["id"]],
        "input_data": {"simulate": {"duration": 0.01, "fail": False}, "n": [1, 2.5, None]},
    }
    response = api.post(tasks(team["id"]), body)
    assert response.status_code == 201
    task = response.get_json()
    assert task["status"] == "blocked"
    for key in (
        "description",
        "acceptance_criteria",
        "required_skills",
        "priority",
        "estimated_tokens",
        "max_revisions",
        "parent_task_id",
        "input_data",
    ):
        assert task[key] == body[key], key
    graph = api.get(f"{V1}/teams/{team['id']}/dependency-graph").get_json()
    assert {"task_id": task["id"], "depends_on_task_id": first["id"]} in graph["edges"]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"title": ""},
        {"title": "t" * 501},
        {"title": 3},
        {"title": None},
        {"title": ["a"]},
        {"title": "ok", "description": "d" * 20_001},
        {"title": "ok", "priority": -1},
        {"title": "ok", "priority": 11},
        {"title": "ok", "priority": "5"},
        {"title": "ok", "priority": 5.5},
        {"title": "ok", "priority": False},
        {"title": "ok", "priority": 10**40},
        {"title": "ok", "estimated_tokens": -1},
        {"title": "ok", "estimated_tokens": 10_000_001},
        {"title": "ok", "max_revisions": -1},
        {"title": "ok", "max_revisions": 101},
        {"title": "ok", "parent_task_id": "not-a-uuid"},
        {"title": "ok", "parent_task_id": 12},
        {"title": "ok", "depends_on": ["nope"]},
        {"title": "ok", "depends_on": "a-string"},
        {"title": "ok", "depends_on": [str(uuid.uuid4()) for _ in range(101)]},
        {"title": "ok", "acceptance_criteria": [""]},
        {"title": "ok", "acceptance_criteria": "one"},
        {"title": "ok", "acceptance_criteria": ["c"] * 51},
        {"title": "ok", "required_skills": [" padded"]},
        {"title": "ok", "required_skills": [""]},
        {"title": "ok", "input_data": [1, 2]},
        {"title": "ok", "input_data": "x"},
        {"title": "ok", "input_data": {"k": "nul\x00"}},
        {"title": "ok", "input_data": {"nul\x00": 1}},
        {"title": "ok", "status": "completed"},
        {"title": "ok", "assigned_to": str(uuid.uuid4())},
    ],
)
def test_create_task_validation(api: ApiClient, team: dict[str, Any], body: dict[str, Any]) -> None:
    assert_error(api.post(tasks(team["id"]), body), 422, errors=True)


def test_create_task_in_unknown_team(api: ApiClient) -> None:
    assert_error(api.post(tasks(unknown_id()), {"title": "x"}), 404)


def test_dependency_on_another_teams_task(
    api: ApiClient, team: dict[str, Any], other_team: dict[str, Any]
) -> None:
    foreign = api.create_task(other_team["id"], "theirs")
    body = assert_error(
        api.post(tasks(team["id"]), {"title": "x", "depends_on": [foreign["id"]]}), 422, errors=True
    )
    assert "depends_on" in body["errors"]
    body = assert_error(
        api.post(tasks(team["id"]), {"title": "x", "depends_on": [unknown_id()]}), 422, errors=True
    )
    assert "depends_on" in body["errors"]


def test_parent_in_another_team(
    api: ApiClient, team: dict[str, Any], other_team: dict[str, Any]
) -> None:
    foreign = api.create_task(other_team["id"], "theirs")
    assert_error(api.post(tasks(team["id"]), {"title": "x", "parent_task_id": foreign["id"]}), 404)
    assert_error(api.post(tasks(team["id"]), {"title": "x", "parent_task_id": unknown_id()}), 404)


def test_parent_already_finished(api: ApiClient, team: dict[str, Any], session: Session) -> None:
    parent = api.create_task(team["id"], "done")
    set_status(session, parent["id"], TaskStatus.COMPLETED)
    assert_error(api.post(tasks(team["id"]), {"title": "x", "parent_task_id": parent["id"]}), 409)


def test_list_tasks_order_and_filter(
    api: ApiClient, team: dict[str, Any], other_team: dict[str, Any]
) -> None:
    low = api.create_task(team["id"], "low", priority=1)
    high = api.create_task(team["id"], "high", priority=9)
    mid1 = api.create_task(team["id"], "mid1")
    mid2 = api.create_task(team["id"], "mid2", depends_on=[low["id"]])
    api.create_task(other_team["id"], "elsewhere")
    response = api.get(tasks(team["id"]))
    assert response.status_code == 200
    assert [t["id"] for t in response.get_json()] == [high["id"], mid1["id"], mid2["id"], low["id"]]
    assert all(set(t) == TASK_KEYS for t in response.get_json())
    blocked = api.get(tasks(team["id"]), query_string={"status": "blocked"})
    assert [t["id"] for t in blocked.get_json()] == [mid2["id"]]
    assert api.get(tasks(team["id"]), query_string={"status": "failed"}).get_json() == []


def page_walk(api: ApiClient, first: str, **query: Any) -> list[list[str]]:
    """The ids of each page, following each page's Link to the next (checked against its
    X-Next-Cursor) until a page has none."""
    pages: list[list[str]] = []
    response = api.get(first, query_string=query)
    while True:
        assert response.status_code == 200, response.get_json()
        pages.append([t["id"] for t in response.get_json()])
        cursor, link = response.headers.get("X-Next-Cursor"), response.headers.get("Link")
        assert (cursor is None) == (link is None)
        if link is None:
            return pages
        assert link.startswith("<") and link.endswith('>; rel="next"')
        following = link[1 : link.index(">")]
        assert f"after={cursor}" in following
        response = api.get(following)


def test_list_tasks_in_pages(api: ApiClient, team: dict[str, Any], session: Session) -> None:
    created = [api.create_task(team["id"], f"t{i}", priority=i % 3 * 4)["id"] for i in range(11)]
    # Ties on priority and creation time are broken by id, so no page repeats or skips one.
    tied = created[:6:3]
    stamp = session.scalar(select(Task.created_at).where(Task.id == uuid.UUID(tied[0])))
    session.execute(
        update(Task).where(Task.id.in_([uuid.UUID(t) for t in tied])).values(created_at=stamp)
    )
    session.commit()
    whole = [t["id"] for t in api.get(tasks(team["id"])).get_json()]
    assert sorted(whole) == sorted(created)
    for limit in (1, 3, 4, 11):
        pages = page_walk(api, tasks(team["id"]), limit=limit)
        assert [t for page in pages for t in page] == whole
        assert [len(page) for page in pages[:-1]] == [limit] * (len(pages) - 1)
        assert 1 <= len(pages[-1]) <= limit
    assert page_walk(api, tasks(team["id"]), limit=12) == [whole]


def test_the_whole_list_is_written_a_chunk_at_a_time(
    api: ApiClient, team: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db.engine, "CHUNK_ROWS", 2)
    assert api.get(tasks(team["id"])).get_json() == []
    created = [api.create_task(team["id"], f"t{i}", priority=i % 4)["id"] for i in range(7)]
    response = api.get(tasks(team["id"]))
    assert response.status_code == 200 and response.mimetype == "application/json"
    whole = response.get_json()
    assert sorted(t["id"] for t in whole) == sorted(created)
    assert all(set(t) == TASK_KEYS for t in whole)
    pages = page_walk(api, tasks(team["id"]), limit=3)
    assert [t for page in pages for t in page] == [t["id"] for t in whole]
    # Each task as a page serialises it.
    assert api.get(tasks(team["id"]), query_string={"limit": 7}).get_json() == whole
    page = api.get(tasks(team["id"]), query_string={"limit": 2})
    rest = api.get(tasks(team["id"]), query_string={"after": page.headers["X-Next-Cursor"]})
    assert page.get_json() + rest.get_json() == whole
    assert api.get(tasks(team["id"]), query_string={"status": "failed"}).get_json() == []
    assert_error(api.get(tasks(unknown_id())), 404)


def test_a_list_read_in_part_gives_its_connection_back(
    api: ApiClient, team: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that goes away mid-list ends the stream's transaction: its connection goes
    back to the pool, not left idle in a transaction."""
    monkeypatch.setattr(db.engine, "CHUNK_ROWS", 2)
    for i in range(6):
        api.create_task(team["id"], f"t{i}")
    pool = db.engine.get_engine().pool
    before = pool.checkedout()  # type: ignore[attr-defined]
    response = api.get(tasks(team["id"]), buffered=False)
    pieces = iter(response.response)
    assert next(pieces) == b"["
    assert next(pieces).count(b'"id"') == 2
    assert pool.checkedout() == before + 1  # type: ignore[attr-defined]
    response.close()
    assert pool.checkedout() == before  # type: ignore[attr-defined]


def test_list_tasks_pages_keep_the_filter(api: ApiClient, team: dict[str, Any]) -> None:
    first = api.create_task(team["id"], "first")
    waiting = [
        api.create_task(team["id"], f"w{i}", depends_on=[first["id"]])["id"] for i in range(5)
    ]
    api.create_task(team["id"], "ready too")
    pages = page_walk(api, tasks(team["id"]), status="blocked", limit=2)
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [t for page in pages for t in page] == waiting


def test_a_cursor_is_a_position(api: ApiClient, team: dict[str, Any]) -> None:
    """Tasks created after a page was read show where they rank: after the cursor, in a later
    page; before it, not at all."""
    low = api.create_task(team["id"], "low", priority=1)["id"]
    mid = api.create_task(team["id"], "mid", priority=5)["id"]
    page = api.get(tasks(team["id"]), query_string={"limit": 1})
    assert [t["id"] for t in page.get_json()] == [mid]
    cursor = page.headers["X-Next-Cursor"]
    api.create_task(team["id"], "urgent", priority=9)
    later = api.create_task(team["id"], "later", priority=5)["id"]
    rest = api.get(tasks(team["id"]), query_string={"after": cursor})
    assert [t["id"] for t in rest.get_json()] == [later, low]
    assert "X-Next-Cursor" not in rest.headers


@pytest.mark.parametrize(
    "after",
    [
        "zzz",
        "not base64!",
        "é",
        base64.urlsafe_b64encode(b"[5, 1]").decode(),
        base64.urlsafe_b64encode(b'{"a": 1, "b": 2, "c": 3}').decode(),
        base64.urlsafe_b64encode(
            b'[11, "2026-01-01T00:00:00+00:00", "00000000-0000-0000-0000-000000000000"]'
        ).decode(),
        base64.urlsafe_b64encode(
            b'[5, "2026-01-01T00:00:00", "00000000-0000-0000-0000-000000000000"]'
        ).decode(),
        base64.urlsafe_b64encode(
            b'[true, "2026-01-01T00:00:00+00:00", "00000000-0000-0000-0000-000000000000"]'
        ).decode(),
        base64.urlsafe_b64encode(
            b'[99999999999999999999, "2026-01-01T00:00:00+00:00", '
            b'"00000000-0000-0000-0000-000000000000"]'
        ).decode(),
        base64.urlsafe_b64encode(b'[5, "2026-01-01T00:00:00+00:00", 7]').decode(),
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
        "x" * 201,
    ],
)
def test_list_tasks_refuses_what_is_not_a_cursor(
    api: ApiClient, team: dict[str, Any], after: str
) -> None:
    api.create_task(team["id"], "one")
    body = assert_error(api.get(tasks(team["id"]), query_string={"after": after}), 422)
    assert "after" in body["errors"]


@pytest.mark.parametrize("limit", ["0", "1001", "-1", "ten", "1.5"])
def test_list_tasks_refuses_a_bad_limit(api: ApiClient, team: dict[str, Any], limit: str) -> None:
    body = assert_error(api.get(tasks(team["id"]), query_string={"limit": limit}), 422)
    assert "limit" in body["errors"]


def test_list_tasks_unknown_status(api: ApiClient, team: dict[str, Any]) -> None:
    body = assert_error(api.get(tasks(team["id"]), query_string={"status": "done"}), 422)
    assert "status" in body["errors"]


def test_list_tasks_of_unknown_team(api: ApiClient) -> None:
    assert_error(api.get(tasks(unknown_id())), 404)


def test_get_task(api: ApiClient, team: dict[str, Any], other_team: dict[str, Any]) -> None:
    task = api.create_task(team["id"], "mine")
    response = api.get(f"{tasks(team['id'])}/{task['id']}")
    assert response.status_code == 200
    assert response.get_json() == task
    assert_error(api.get(f"{tasks(team['id'])}/{unknown_id()}"), 404)
    # A task through another team's path is unknown there.
    assert_error(api.get(f"{tasks(other_team['id'])}/{task['id']}"), 404)


def test_hierarchy(api: ApiClient, team: dict[str, Any]) -> None:
    root = api.create_task(team["id"], "root")
    child = api.create_task(team["id"], "child", parent_task_id=root["id"])
    grandchild = api.create_task(team["id"], "grandchild", parent_task_id=child["id"])
    sibling = api.create_task(team["id"], "sibling", parent_task_id=root["id"], priority=1)
    response = api.get(f"{tasks(team['id'])}/{root['id']}/hierarchy")
    assert response.status_code == 200
    tree = response.get_json()
    assert set(tree) == {"task", "subtasks"}
    assert tree["task"]["id"] == root["id"]
    assert set(tree["task"]) == TASK_KEYS
    assert [s["task"]["id"] for s in tree["subtasks"]] == [child["id"], sibling["id"]]
    assert tree["subtasks"][0]["subtasks"] == [
        {"task": api.get(f"{tasks(team['id'])}/{grandchild['id']}").get_json(), "subtasks": []}
    ]
    assert tree["subtasks"][1]["subtasks"] == []
    assert_error(api.get(f"{tasks(team['id'])}/{unknown_id()}/hierarchy"), 404)


def test_cancel_and_retry(api: ApiClient, team: dict[str, Any]) -> None:
    task = api.create_task(team["id"], "x")
    url = f"{tasks(team['id'])}/{task['id']}"
    cancelled = api.post(f"{url}/cancel")
    assert cancelled.status_code == 200
    assert cancelled.get_json()["status"] == "cancelled"
    assert set(cancelled.get_json()) == TASK_KEYS
    assert_error(api.post(f"{url}/cancel"), 409)
    retried = api.post(f"{url}/retry")
    assert retried.status_code == 200
    assert retried.get_json()["status"] == "pending"


def test_retry_is_only_for_failed_or_cancelled(api: ApiClient, team: dict[str, Any]) -> None:
    task = api.create_task(team["id"], "x")
    assert_error(api.post(f"{tasks(team['id'])}/{task['id']}/retry"), 409)


def test_retry_failed(api: ApiClient, team: dict[str, Any], session: Session) -> None:
    task = api.create_task(team["id"], "x")
    set_status(session, task["id"], TaskStatus.FAILED)
    response = api.post(f"{tasks(team['id'])}/{task['id']}/retry")
    assert response.status_code == 200
    assert response.get_json()["status"] == "pending"


@pytest.mark.parametrize("action", ["cancel", "retry"])
def test_cancel_retry_unknown_task(api: ApiClient, team: dict[str, Any], action: str) -> None:
    assert_error(api.post(f"{tasks(team['id'])}/{unknown_id()}/{action}"), 404)


# --- decompose ---------------------------------------------------------------------------------

PLAN = {
    "key": "root",
    "title": "ship the feature",
    "subtasks": [
        {"key": "design", "title": "design", "required_skills": ["analysis"]},
        {
            "key": "build",
            "title": "build",
            "depends_on": ["design"],
            "subtasks": [
                {"key": "code", "title": "code", "required_skills": ["coding"]},
                {"key": "test", "title": "test", "depends_on": ["code"]},
            ],
        },
    ],
}


def decompose(team_id: str) -> str:
    return f"{V1}/teams/{team_id}/decompose"


def test_decompose_needs_a_manager(api: ApiClient, team: dict[str, Any]) -> None:
    api.add_member(team["id"], "worker")
    assert_error(api.post(decompose(team["id"]), {"plan": PLAN}), 409)
    assert_error(api.post(decompose(team["id"]), {"goal": "write a blog post"}), 409)


def test_decompose_plan(api: ApiClient, team: dict[str, Any]) -> None:
    api.add_member(team["id"], "manager")
    response = api.post(decompose(team["id"]), {"plan": PLAN})
    assert response.status_code == 201
    created = response.get_json()
    assert [t["title"] for t in created] == ["ship the feature", "design", "build", "code", "test"]
    assert all(set(t) == TASK_KEYS for t in created)
    by_title = {t["title"]: t for t in created}
    assert by_title["design"]["parent_task_id"] == by_title["ship the feature"]["id"]
    assert by_title["code"]["parent_task_id"] == by_title["build"]["id"]
    seen: set[str] = set()
    for task in created:  # parents before children
        assert task["parent_task_id"] is None or task["parent_task_id"] in seen
        seen.add(task["id"])


def test_decompose_plan_max_depth(api: ApiClient, team: dict[str, Any]) -> None:
    api.add_member(team["id"], "manager")
    response = api.post(decompose(team["id"]), {"plan": PLAN, "max_depth": 1})
    assert response.status_code == 201
    assert [t["title"] for t in response.get_json()] == ["ship the feature", "design", "build"]
    only_root = api.post(decompose(team["id"]), {"plan": PLAN, "max_depth": 0})
    assert [t["title"] for t in only_root.get_json()] == ["ship the feature"]


def test_decompose_plan_cycle(api: ApiClient, team: dict[str, Any]) -> None:
    api.add_member(team["id"], "manager")
    plan = {
        "title": "root",
        "subtasks": [
            {"key": "a", "title": "a", "depends_on": ["b"]},
            {"key": "b", "title": "b", "depends_on": ["a"]},
        ],
    }
    body = assert_error(api.post(decompose(team["id"]), {"plan": plan}), 409, errors=True)
    assert set(body["errors"]["cycle"]) == {"a", "b"}
    assert api.get(tasks(team["id"])).get_json() == []


def test_decompose_goal(api: ApiClient, team: dict[str, Any]) -> None:
    api.add_member(team["id"], "manager")
    api.add_member(team["id"], "worker", specialization="Technical Executor")
    response = api.post(decompose(team["id"]), {"goal": "build a small web service"})
    assert response.status_code == 201
    created = response.get_json()
    assert created, "the planner created no task"
    assert all(set(t) == TASK_KEYS for t in created)
    seen: set[str] = set()
    for task in created:
        assert task["parent_task_id"] is None or task["parent_task_id"] in seen
        seen.add(task["id"])
    listed = {t["id"] for t in api.get(tasks(team["id"])).get_json()}
    assert listed == seen


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"goal": ""},
        {"goal": "g" * 10_001},
        {"goal": 5},
        {"goal": "ok", "plan": {"title": "x"}},
        {"goal": "ok", "max_depth": -1},
        {"goal": "ok", "max_depth": MAX_DEPTH_LIMIT + 1},
        {"goal": "ok", "max_depth": "2"},
        {"goal": "ok", "max_depth": 1.5},
        {"goal": "ok", "extra": True},
        {"plan": {}},
        {"plan": {"title": ""}},
        {"plan": "a plan"},
        {"plan": {"title": "x", "subtasks": [{"title": "y", "depends_on": ["nope"]}]}},
        {
            "plan": {
                "title": "x",
                "subtasks": [{"key": "k", "title": "a"}, {"key": "k", "title": "b"}],
            }
        },
        {"plan": {"title": "x", "priority": 11}},
        {"plan": {"title": "x", "unknown": 1}},
    ],
)
def test_decompose_validation(api: ApiClient, team: dict[str, Any], body: dict[str, Any]) -> None:
    api.add_member(team["id"], "manager")
    assert_error(api.post(decompose(team["id"]), body), 422, errors=True)


def test_decompose_unknown_team(api: ApiClient) -> None:
    assert_error(api.post(decompose(unknown_id()), {"goal": "x"}), 404)
