"""The read paths at size: a hierarchy of any size, the task list's deep pages, the assignment
log's cursor, retry's lookups, and a stalled reader of a streamed list."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

import db.engine
from db.engine import driver_sql, get_engine
from orchestration import decomposition, dependencies, lifecycle
from webapp.testing import V1, ApiClient, assert_error, unknown_id

BIG = 65_600  # descendants: more than the 65,535 bind parameters one statement may carry


def tasks_url(team_id: str) -> str:
    return f"{V1}/teams/{team_id}/tasks"


def bulk_children(session: Session, team_id: str, parent_id: str, count: int) -> None:
    """count subtasks of parent_id in one statement (ranks as the schema requires, priorities
    and creation times varied so that the order is not the insertion order)."""
    session.execute(
        text(
            """
            INSERT INTO tasks (team_id, parent_task_id, title, priority, created_at,
                               start_rank, end_rank)
            SELECT :team_id, :parent_id, 'child ' || g, (g * 7) % 11,
                   now() - (g % 1000) * interval '1 second', 1000000 + 2 * g, 1000001 + 2 * g
            FROM generate_series(1, :count) g
            """
        ),
        {"team_id": team_id, "parent_id": parent_id, "count": count},
    )
    session.execute(text("UPDATE tasks SET is_summary = true WHERE id = :id"), {"id": parent_id})
    session.commit()


def children_in_list_order(session: Session, parent_id: str) -> list[str]:
    rows = session.execute(
        text(
            "SELECT id FROM tasks WHERE parent_task_id = :p ORDER BY priority DESC, created_at, id"
        ),
        {"p": parent_id},
    )
    return [str(r.id) for r in rows]


# --- hierarchy -----------------------------------------------------------------------------------


def test_hierarchy_beyond_65535_descendants(
    api: ApiClient, team: dict[str, Any], session: Session
) -> None:
    """It answered 503 (one bind parameter per descendant); now the whole tree, each task's
    subtasks in list order."""
    root = api.create_task(team["id"], "root")
    bulk_children(session, team["id"], root["id"], BIG)
    response = api.get(f"{tasks_url(team['id'])}/{root['id']}/hierarchy")
    assert response.status_code == 200, response.get_data(as_text=True)[:300]
    tree = response.get_json()
    assert tree["task"]["id"] == root["id"]
    assert [s["task"]["id"] for s in tree["subtasks"]] == children_in_list_order(
        session, root["id"]
    )
    assert all(s["subtasks"] == [] for s in tree["subtasks"])


def test_hierarchy_is_written_depth_first_and_max_depth_cuts_it(
    api: ApiClient, team: dict[str, Any]
) -> None:
    root = api.create_task(team["id"], "root")
    low = api.create_task(team["id"], "low", parent_task_id=root["id"], priority=2)
    high = api.create_task(team["id"], "high", parent_task_id=root["id"], priority=9)
    leaf1 = api.create_task(team["id"], "leaf1", parent_task_id=low["id"])
    deep = api.create_task(team["id"], "deep", parent_task_id=leaf1["id"])
    leaf2 = api.create_task(team["id"], "leaf2", parent_task_id=low["id"], priority=7)
    url = f"{tasks_url(team['id'])}/{root['id']}/hierarchy"

    def shape(node: dict[str, Any]) -> Any:
        return (node["task"]["title"], [shape(s) for s in node["subtasks"]])

    whole = api.get(url).get_json()
    assert shape(whole) == (
        "root",
        [("high", []), ("low", [("leaf2", []), ("leaf1", [("deep", [])])])],
    )
    assert (
        whole["subtasks"][1]["subtasks"][0]["task"]
        == api.get(f"{tasks_url(team['id'])}/{leaf2['id']}").get_json()
    )
    assert shape(api.get(url, query_string={"max_depth": 0}).get_json()) == ("root", [])
    assert shape(api.get(url, query_string={"max_depth": 1}).get_json()) == (
        "root",
        [("high", []), ("low", [])],
    )
    # A subtree alone, its own root first.
    sub = api.get(f"{tasks_url(team['id'])}/{low['id']}/hierarchy").get_json()
    assert shape(sub) == ("low", [("leaf2", []), ("leaf1", [("deep", [])])])
    assert sub["task"]["parent_task_id"] == root["id"]
    assert high["id"] and deep["id"]
    assert_error(api.get(url, query_string={"max_depth": -1}), 422)
    assert_error(api.get(f"{tasks_url(team['id'])}/{unknown_id()}/hierarchy"), 404)


def test_hierarchy_of_another_teams_task_is_unknown(
    api: ApiClient, team: dict[str, Any], other_team: dict[str, Any]
) -> None:
    mine = api.create_task(team["id"], "mine")
    assert_error(api.get(f"{tasks_url(other_team['id'])}/{mine['id']}/hierarchy"), 404)


# --- plans: the index ranges the read paths rely on ---------------------------------------------


def plan_of(session: Session, sql: str, params: dict[str, Any]) -> str:
    """The plan of sql (in the driver's form: %(name)s parameters) when PostgreSQL may neither
    scan the table nor use bitmaps: it shows what an index can bound, whatever the size of the
    test's tables."""
    session.execute(text("SET LOCAL enable_seqscan = off"))
    session.execute(text("SET LOCAL enable_bitmapscan = off"))
    rows = session.connection().exec_driver_sql(f"EXPLAIN (COSTS OFF) {sql}", params)
    plan = "\n".join(r[0] for r in rows)
    session.rollback()
    return plan


def test_a_deep_task_page_is_an_index_range(
    api: ApiClient, team: dict[str, Any], session: Session
) -> None:
    """After a cursor, both the rest of its priority and the lower priorities are index ranges
    (the OR of the two was a filter over the whole team)."""
    for i in range(3):
        api.create_task(team["id"], f"t{i}", priority=5)
    team_id = uuid.UUID(team["id"])
    _, cursor = decomposition.task_page(team_id, 1)
    for status in (None, "pending"):
        sql, params = statement_of(partial(decomposition.task_page, team_id, 100, status, cursor))
        plan = plan_of(session, sql, params)
        index = "ix_tasks_team_order" if status is None else "ix_tasks_team_status_order"
        assert plan.count(f"Index Scan using {index}") == 2, plan
        assert "ROW(created_at, id) > ROW(" in plan and "(priority < 5)" in plan, plan
        assert "Filter" not in plan, plan


def statement_of(read: Callable[[], object]) -> tuple[str, Any]:
    """The SQL text and parameters of the last statement read() sends that reads tasks."""
    seen: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if "FROM tasks" in statement:
            seen.append((statement, params))

    event.listen(get_engine(), "before_cursor_execute", record)
    try:
        read()
    finally:
        event.remove(get_engine(), "before_cursor_execute", record)
    return seen[-1]


def test_retry_reads_what_a_failure_stopped_by_index(
    api: ApiClient, team: dict[str, Any], session: Session
) -> None:
    """Each round of a retry looked for the tasks a failure stopped in every team's tasks."""
    root = api.create_task(team["id"], "root")
    bulk_children(session, team["id"], root["id"], 2000)
    session.execute(text("ANALYZE tasks"))
    session.commit()
    params = {"ids": [uuid.uuid4()], "team_id": team["id"]}
    plan = plan_of(session, driver_sql(lifecycle._STOPPED_BY), params)
    assert "Index Scan using ix_tasks_stopped_by" in plan, plan


@pytest.mark.parametrize(
    ("table", "column", "index"),
    [
        ("messages", "task_id", "ix_messages_task"),
        ("messages", "worker_id", "ix_messages_worker"),
    ],
)
def test_foreign_keys_are_looked_up_by_index(
    session: Session, table: str, column: str, index: str
) -> None:
    """What a deleted task or member's ON DELETE action runs, once per deleted row: it scanned
    the whole table."""
    lookup = f"SELECT 1 FROM {table} WHERE {column} = %(id)s"
    plan = plan_of(session, lookup, {"id": uuid.uuid4()})
    assert f"using {index}" in plan, plan


# --- assignments ---------------------------------------------------------------------------------


def log_assignments(session: Session, team_id: str, at: datetime, count: int) -> None:
    """count assignment messages logged at the same instant (as one pass logs them)."""
    session.execute(
        text(
            """
            INSERT INTO messages (team_id, message_type, content, metadata, created_at)
            SELECT :team_id, 'task_assignment', 'decision ' || g,
                   jsonb_build_object('score', g), :at
            FROM generate_series(1, :count) g
            """
        ),
        {"team_id": team_id, "at": at, "count": count},
    )
    session.commit()


def assignment_pages(api: ApiClient, team_id: str, **query: Any) -> list[list[str]]:
    """The explanations of each page, following each page's Link until a page has none."""
    pages: list[list[str]] = []
    response = api.get(f"{V1}/teams/{team_id}/assignments", query_string=query)
    while True:
        assert response.status_code == 200, response.get_json()
        pages.append([a["explanation"] for a in response.get_json()])
        cursor, link = response.headers.get("X-Next-Cursor"), response.headers.get("Link")
        assert (cursor is None) == (link is None)
        if link is None:
            return pages
        following = link[1 : link.index(">")]
        assert f"after={cursor}" in following and "offset" not in following
        response = api.get(following)


def test_assignment_pages_follow_a_cursor(
    api: ApiClient, team: dict[str, Any], session: Session
) -> None:
    """Pages by cursor neither repeat nor skip a decision, ties on the time included, and
    decisions logged meanwhile do not shift them (an offset does)."""
    now = datetime.now(UTC)
    log_assignments(session, team["id"], now - timedelta(minutes=1), 7)
    log_assignments(session, team["id"], now, 5)
    url = f"{V1}/teams/{team['id']}/assignments"
    whole = [a["explanation"] for a in api.get(url).get_json()]
    assert len(whole) == 12
    pages = assignment_pages(api, team["id"], limit=5)
    assert [len(p) for p in pages] == [5, 5, 2]
    assert [e for p in pages for e in p] == whole

    first = api.get(url, query_string={"limit": 4})
    log_assignments(session, team["id"], now + timedelta(minutes=1), 3)
    following = api.get(url, query_string={"limit": 4, "after": first.headers["X-Next-Cursor"]})
    assert [a["explanation"] for a in following.get_json()] == whole[4:8]
    # An offset still counts from the newest (or from the cursor).
    shifted = api.get(url, query_string={"limit": 4, "offset": 4}).get_json()
    assert [a["explanation"] for a in shifted] == whole[1:5]
    assert (
        api.get(
            url, query_string={"limit": 2, "offset": 1, "after": first.headers["X-Next-Cursor"]}
        ).get_json()
        == following.get_json()[1:3]
    )


def test_assignment_offset_is_capped_and_cursors_checked(
    api: ApiClient, team: dict[str, Any]
) -> None:
    url = f"{V1}/teams/{team['id']}/assignments"
    assert api.get(url, query_string={"offset": 10_000}).get_json() == []
    body = assert_error(api.get(url, query_string={"offset": 10_001}), 422)
    assert "after" in body["errors"]["offset"][0]
    for bad in ("zzz", "WzEsMiwzXQ"):  # the second, [1,2,3], is not a position in this log
        body = assert_error(api.get(url, query_string={"after": bad}), 422)
        assert "after" in body["errors"]


# --- a stalled reader ----------------------------------------------------------------------------


def idle_in_transaction(session: Session) -> list[int]:
    rows = session.execute(
        text(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND state = 'idle in transaction' AND pid <> pg_backend_pid()"
        )
    )
    pids = [r.pid for r in rows]
    session.rollback()
    return pids


@pytest.mark.parametrize("stream", ["tasks", "graph"])
def test_a_stalled_reader_loses_its_transaction(
    api: ApiClient,
    team: dict[str, Any],
    session: Session,
    monkeypatch: pytest.MonkeyPatch,
    stream: str,
) -> None:
    """A reader that stops between two chunks held its transaction (a snapshot, a connection)
    for ever; past STREAM_IDLE_TIMEOUT PostgreSQL ends it, the read fails (a response is cut
    off), and the pool goes on with a fresh connection."""
    monkeypatch.setattr(db.engine, "STREAM_IDLE_TIMEOUT", 0.5, raising=False)
    monkeypatch.setattr(db.engine, "CHUNK_ROWS", 2)
    for i in range(5):
        api.create_task(team["id"], f"t{i}")
    team_id = uuid.UUID(team["id"])
    chunks: Any = (
        decomposition.task_chunks(team_id)
        if stream == "tasks"
        else dependencies.graph_chunks(team_id)
    )
    next(chunks)
    try:
        assert len(idle_in_transaction(session)) == 1
        deadline = time.monotonic() + 5
        while idle_in_transaction(session) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert idle_in_transaction(session) == []
    except AssertionError:
        chunks.close()  # else the open transaction blocks the next test's TRUNCATE
        raise
    invalidated: list[object] = []

    def on_invalidate(*args: object) -> None:
        invalidated.append(args)

    event.listen(get_engine(), "invalidate", on_invalidate)
    try:
        with pytest.raises(DBAPIError):
            for _ in chunks:
                pass
    finally:
        event.remove(get_engine(), "invalidate", on_invalidate)
    assert len(invalidated) == 1  # the pool drops the dead connection
    assert len(decomposition.list_tasks(team_id)) == 5
