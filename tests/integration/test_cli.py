"""`orch` against a real API: the app served by werkzeug in a thread, on this worker's test
database and Redis db, driven with click's CliRunner."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
from click.testing import CliRunner, Result
from werkzeug.serving import make_server

from orchestration import events
from orchestration.cli import cli
from orchestration.config import reload_settings
from webapp import create_app
from webapp.views import events as events_view

ADMIN_TOKEN = "cli-admin-token-7f3a9c1e5b2d4f6a8c0e"
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass
class Orch:
    """Runs `orch` against the served API and keeps every output, to check for leaked tokens."""

    url: str
    outputs: list[str] = field(default_factory=list)

    def __call__(self, *args: str, token: str | None = ADMIN_TOKEN, ok: bool = True) -> Result:
        runner = CliRunner()
        env = {"ORCH_TOKEN": token, "ORCH_ADMIN_TOKEN": None, "ORCH_URL": self.url}
        env["COLUMNS"] = "80"  # a narrow terminal: full ids must still fit
        result = runner.invoke(cli, list(args), env=env, catch_exceptions=False)
        self.outputs.append(result.output)
        if ok:
            assert result.exit_code == 0, (args, result.exit_code, result.output)
        return result

    def http(self, method: str, path: str, **kwargs: Any) -> Any:
        response = requests.request(
            method,
            f"{self.url}/api/v1{path}",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            timeout=30,
            **kwargs,
        )
        assert response.status_code < 400, response.text
        return response.json() if response.content else None


@pytest.fixture
def orch(database: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Orch]:
    monkeypatch.setenv("ORCH_ADMIN_TOKEN", ADMIN_TOKEN)
    monkeypatch.delenv("ORCH_AUTH", raising=False)
    reload_settings()
    server = make_server("127.0.0.1", 0, create_app(), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    runner = Orch(f"http://127.0.0.1:{server.server_port}")
    try:
        yield runner
        everything = "\n".join(runner.outputs)
        assert ADMIN_TOKEN not in everything, "the admin token was printed"
    finally:
        server.shutdown()
        thread.join(10)
        server.server_close()
        monkeypatch.undo()
        reload_settings()


def created_id(result: Result) -> str:
    match = UUID_RE.search(result.output)
    assert match, result.output
    return match.group(0)


def row_of(table: str, text: str) -> str:
    """The lines of the table row (rows are separated by rules) that mention `text`."""
    rows = re.split(r"\n[├└┡].*\n", table)
    return next(row for row in rows if text in row)


def make_team(orch: Orch, name: str = "alpha") -> str:
    return created_id(orch("team", "create", name))


def test_team_create_start_pause_resume(orch: Orch) -> None:
    result = orch("team", "create", "alpha", "--description", "first")
    team_id = result.stdout.strip()  # only the id, for `TEAM=$(orch team create NAME)`
    assert UUID_RE.fullmatch(team_id), result.stdout
    assert "Created team alpha" in result.stderr and "inactive" in result.stderr
    assert orch.http("GET", f"/teams/{team_id}")["description"] == "first"

    assert "active" in orch("team", "start", team_id).output
    assert "paused" in orch("team", "pause", team_id).output
    result = orch("team", "resume", team_id)
    assert "Resumed team alpha" in result.output and "active" in result.output
    assert orch.http("GET", f"/teams/{team_id}")["status"] == "active"


def test_impossible_transition_is_a_clear_error(orch: Orch) -> None:
    team_id = make_team(orch)
    result = orch("team", "pause", team_id, ok=False)
    assert result.exit_code == 1
    assert result.output.startswith("Error: 409 Conflict: ")
    assert "Traceback" not in result.output


def test_teams_table(orch: Orch) -> None:
    assert "No teams yet" in orch("teams").output
    alpha = make_team(orch, "alpha")
    beta = make_team(orch, "beta")
    orch("member", "add", alpha, "--role", "manager", "--agent-id", "boss")
    orch("member", "add", alpha, "--specialization", "Technical Executor", "--agent-id", "coder")
    orch("team", "start", alpha)
    orch.http("POST", f"/teams/{alpha}/tasks", json={"title": "one"})
    orch.http("POST", f"/teams/{alpha}/tasks", json={"title": "two"})

    output = orch("teams").output
    alpha_row = row_of(output, alpha)
    beta_row = row_of(output, beta)
    assert "alpha" in alpha_row and "active" in alpha_row and "beta" not in alpha_row
    assert "boss (manager)" in alpha_row and "coder 0/3" in alpha_row
    assert "2 total" in alpha_row  # two tasks, whatever their status by now
    assert "beta" in beta_row and "inactive" in beta_row
    assert "0 total" in beta_row and "none" in beta_row

    listed = json.loads(orch("--json", "teams").output)
    by_id = {t["id"]: t for t in listed}
    assert sum(by_id[alpha]["task_counts"].values()) == 2
    assert {m["agent_id"] for m in by_id[alpha]["members"]} == {"boss", "coder"}


def test_token_create_prints_the_token_once_and_it_works(orch: Orch) -> None:
    alpha = make_team(orch, "alpha")
    make_team(orch, "beta")
    result = orch("token", "create", alpha)
    token = result.stdout.strip()
    assert token and "\n" not in token and " " not in token
    assert "Shown once" in result.stderr
    # The team token reaches its own team only, and is never echoed back.
    output = orch("teams", token=token).output
    assert "alpha" in output and "beta" not in output
    assert token not in output
    denied = orch("token", "create", alpha, token=token, ok=False)
    assert denied.exit_code == 1 and "403" in denied.output
    assert token not in denied.output
    assert all(token not in text for text in orch.outputs[3:])  # after `token create`


def test_token_list_and_revoke(orch: Orch) -> None:
    alpha = make_team(orch, "alpha")
    assert "No tokens for this team" in orch("token", "list", alpha).output
    kept = orch("token", "create", alpha).stdout.strip()
    revoked = orch("token", "create", alpha).stdout.strip()
    orch("teams", token=kept)  # a use: its last_used_at is set
    listed = orch.http("GET", f"/teams/{alpha}/tokens")
    assert len(listed) == 2
    kept_info = next(t for t in listed if kept.startswith(t["prefix"]))
    revoked_info = next(t for t in listed if revoked.startswith(t["prefix"]))

    output = orch("token", "list", alpha).output
    assert "Tokens (2)" in output
    kept_row = row_of(output, kept_info["id"])
    revoked_row = row_of(output, revoked_info["id"])
    assert kept_info["prefix"] in kept_row and "never" not in kept_row
    assert re.search(r"\d{4}-\d\d-\d\d\s.*\d\d:\d\d:\d\dZ", kept_row, re.S), kept_row
    assert "never" in revoked_row
    assert kept not in output and revoked not in output  # prefixes only
    assert [t["id"] for t in json.loads(orch("token", "list", alpha, "--json").stdout)] == [
        t["id"] for t in listed
    ]
    denied = orch("token", "list", alpha, token=kept, ok=False)
    assert denied.exit_code == 1 and "403" in denied.output

    result = orch("token", "revoke", alpha, revoked_info["id"])
    assert f"Revoked token {revoked_info['id']}" in result.output
    refused = orch("teams", token=revoked, ok=False)
    assert refused.exit_code == 1 and "401" in refused.output
    assert "alpha" in orch("teams", token=kept).output  # the other one still works
    assert [t["id"] for t in orch.http("GET", f"/teams/{alpha}/tokens")] == [kept_info["id"]]
    again = orch("token", "revoke", alpha, revoked_info["id"], ok=False)
    assert again.exit_code == 1 and again.output.startswith("Error: 404 Not Found: ")


def test_member_add(orch: Orch) -> None:
    team_id = make_team(orch)
    result = orch(
        "member",
        "add",
        team_id,
        "--role",
        "worker",
        "--specialization",
        "Content Creator",
        "--max",
        "2",
        "--agent-id",
        "writer",
        "--skill",
        "writing=0.95",
        "--skill",
        "translation=0.5",
    )
    assert "Added worker writer" in result.output
    assert "Content Creator" in result.output and "max 2 tasks" in result.output
    [member] = orch.http("GET", f"/teams/{team_id}/members")
    assert member["max_concurrent_tasks"] == 2
    assert member["skills"] == {"writing": 0.95, "translation": 0.5}

    bad = orch("member", "add", team_id, "--max", "0", ok=False)
    assert bad.exit_code == 1
    assert "422" in bad.output and "max_concurrent_tasks" in bad.output

    for skill in ("coding=high", "coding", "coding=1.5", "=0.5"):
        usage = orch("member", "add", team_id, "--skill", skill, ok=False)
        assert usage.exit_code == 2, (skill, usage.output)
        assert "use NAME=LEVEL with LEVEL a proficiency in 0..1" in usage.output
    assert len(orch.http("GET", f"/teams/{team_id}/members")) == 1  # nothing was added


def test_member_list(orch: Orch) -> None:
    team_id = make_team(orch)
    assert "No members yet" in orch("member", "list", team_id).output
    orch("member", "add", team_id, "--role", "manager", "--agent-id", "boss")
    orch("member", "add", team_id, "-s", "Researcher/Analyzer", "--agent-id", "ana", "--max", "2")
    members = {m["agent_id"]: m for m in orch.http("GET", f"/teams/{team_id}/members")}

    output = orch("member", "list", team_id).output
    assert "Members (2)" in output
    assert output.index("boss") < output.index("ana")  # the manager first
    ana = row_of(output, members["ana"]["id"])
    assert "ana (worker, Researcher/Analyzer)" in ana
    assert re.search(r"\bidle\b.*\b0/2\b.*\b0/0\b", ana), ana  # status, load, done/failed
    boss = row_of(output, members["boss"]["id"])
    assert "boss (manager, Generalist)" in boss and "0/3" in boss

    listed = json.loads(orch("member", "list", team_id, "--json").stdout)
    assert {m["agent_id"] for m in listed} == {"boss", "ana"}

    missing = orch("member", "list", str(uuid.uuid4()), ok=False)
    assert missing.exit_code == 1 and missing.output.startswith("Error: 404 Not Found: ")


def test_member_set(orch: Orch) -> None:
    team_id = make_team(orch)
    member = orch.http("POST", f"/teams/{team_id}/members", json={"role": "worker"})
    result = orch(
        "member",
        "set",
        team_id,
        member["id"],
        "--status",
        "offline",
        "--capacity",
        "5",
        "--skill",
        "coding=0.9",
        "--skill",
        "testing=0.25",
    )
    assert f"Updated worker {member['agent_id']} {member['id']}: offline" in result.output
    assert "max 5 tasks" in result.output and "coding=0.9, testing=0.25" in result.output
    [stored] = orch.http("GET", f"/teams/{team_id}/members")
    assert stored["status"] == "offline" and stored["max_concurrent_tasks"] == 5
    assert stored["skills"] == {"coding": 0.9, "testing": 0.25}

    back = json.loads(
        orch("member", "set", team_id, member["id"], "--status", "idle", "--json").stdout
    )
    assert back["status"] == "idle" and back["max_concurrent_tasks"] == 5

    nothing = orch("member", "set", team_id, member["id"], ok=False)
    assert nothing.exit_code == 2
    assert "at least one of --status, --capacity, --skill" in nothing.output
    assert orch("member", "set", team_id, member["id"], "--status", "busy", ok=False).exit_code == 2
    bare = orch("member", "set", team_id, member["id"], "--skill", "coding", ok=False)
    assert bare.exit_code == 2 and "NAME=LEVEL" in bare.output
    bad = orch("member", "set", team_id, member["id"], "--capacity", "0", ok=False)
    assert bad.exit_code == 1 and "422" in bad.output and "max_concurrent_tasks" in bad.output
    missing = orch("member", "set", team_id, str(uuid.uuid4()), "--capacity", "2", ok=False)
    assert missing.exit_code == 1 and missing.output.startswith("Error: 404 Not Found: ")


def test_tasks_with_status_filter(orch: Orch) -> None:
    team_id = make_team(orch)  # inactive: nothing gets assigned
    first = orch.http("POST", f"/teams/{team_id}/tasks", json={"title": "first", "priority": 9})
    orch.http(
        "POST",
        f"/teams/{team_id}/tasks",
        json={"title": "second", "depends_on": [first["id"]]},
    )
    output = orch("tasks", team_id).output
    assert output.index("first") < output.index("second")  # priority desc
    assert "pending" in row_of(output, "first") and first["id"] in row_of(output, "first")
    assert "blocked" in row_of(output, "second")

    blocked = orch("tasks", team_id, "--status", "blocked").output
    assert "second" in blocked and "first" not in blocked
    assert orch("tasks", team_id, "--status", "done", ok=False).exit_code == 2
    assert (
        "No tasks with status completed." in orch("tasks", team_id, "--status", "completed").output
    )


def test_tasks_a_page_at_a_time(orch: Orch) -> None:
    team_id = make_team(orch)
    titles = [f"task-{i}" for i in range(5)]
    for priority, title in enumerate(titles):
        orch.http("POST", f"/teams/{team_id}/tasks", json={"title": title, "priority": priority})
    shown: list[str] = []
    args = ["tasks", team_id, "--limit", "2"]
    for _ in range(3):
        output = orch(*args).output
        shown += sorted((t for t in titles if t in output), key=output.index)
        more = re.search(r"More follow: add --after (\S+)", output)
        if more is None:
            break
        args = ["tasks", team_id, "--limit", "2", "--after", more.group(1)]
    assert shown == titles[::-1]
    assert more is None
    assert orch("tasks", team_id, "--limit", "0", ok=False).exit_code == 2
    assert orch("tasks", team_id, "--after", "nonsense", ok=False).exit_code == 1


def test_task_add_prints_only_the_id(orch: Orch) -> None:
    team_id = make_team(orch)  # inactive: nothing gets assigned
    result = orch("task", "add", team_id, "research")
    first = result.stdout.strip()  # only the id, for `TASK=$(orch task add T TITLE)`
    assert UUID_RE.fullmatch(first), result.stdout
    assert "Created task research: pending, priority 5" in result.stderr
    parent = orch.http("POST", f"/teams/{team_id}/tasks", json={"title": "report"})["id"]

    result = orch(
        "task",
        "add",
        team_id,
        "write",
        "--priority",
        "8",
        "--skill",
        "writing",
        "--skill",
        "editing",
        "--depends-on",
        first,
        "--parent",
        parent,
        "--description",
        "the report",
    )
    second = result.stdout.strip()
    assert UUID_RE.fullmatch(second), result.stdout
    assert "blocked" in result.stderr and "priority 8" in result.stderr
    task = orch.http("GET", f"/teams/{team_id}/tasks/{second}")
    assert task["title"] == "write" and task["description"] == "the report"
    assert task["priority"] == 8 and task["required_skills"] == ["writing", "editing"]
    assert task["parent_task_id"] == parent and task["status"] == "blocked"
    edges = orch.http("GET", f"/teams/{team_id}/dependency-graph")["edges"]
    assert edges == [{"task_id": second, "depends_on_task_id": first}]

    as_json = json.loads(orch("task", "add", team_id, "third", "--json").stdout)
    assert as_json["title"] == "third" and as_json["status"] == "pending"

    bad = orch("task", "add", team_id, "too urgent", "--priority", "11", ok=False)
    assert bad.exit_code == 1 and "422" in bad.output and "priority" in bad.output
    assert bad.stdout == ""  # no id for a script to pick up
    assert orch("task", "add", team_id, "x", "--priority", "high", ok=False).exit_code == 2
    assert len(orch.http("GET", f"/teams/{team_id}/tasks")) == 4  # nothing more was added


def test_task_cancel_and_retry(orch: Orch) -> None:
    team_id = make_team(orch)
    task = orch.http("POST", f"/teams/{team_id}/tasks", json={"title": "solo"})
    result = orch("task", "cancel", team_id, task["id"])
    assert f"Cancelled task solo {task['id']}: cancelled" in result.output
    again = orch("task", "cancel", team_id, task["id"], ok=False)
    assert again.exit_code == 1
    assert again.output.startswith("Error: 409 Conflict: ") and "cancelled" in again.output

    result = orch("task", "retry", team_id, task["id"])
    assert f"Retried task solo {task['id']}: pending" in result.output
    assert orch.http("GET", f"/teams/{team_id}/tasks/{task['id']}")["status"] == "pending"
    refused = orch("task", "retry", team_id, task["id"], ok=False)
    assert refused.exit_code == 1 and "409" in refused.output and "pending" in refused.output

    as_json = json.loads(orch("task", "cancel", team_id, task["id"], "--json").stdout)
    assert as_json["id"] == task["id"] and as_json["status"] == "cancelled"
    missing = orch("task", "retry", team_id, str(uuid.uuid4()), ok=False)
    assert missing.exit_code == 1 and missing.output.startswith("Error: 404 Not Found: ")


def test_a_task_may_be_named_by_the_start_of_its_id(orch: Orch) -> None:
    team_id = make_team(orch)
    parent = orch.http("POST", f"/teams/{team_id}/tasks", json={"title": "parent"})["id"]
    child = orch.http(
        "POST", f"/teams/{team_id}/tasks", json={"title": "child", "parent_task_id": parent}
    )["id"]
    assert parent[:8] in orch("tasks", team_id).output  # the parent column shows this much
    assert "child" in orch("tree", team_id, parent[:8]).output
    assert f"{child}: cancelled" in orch("task", "cancel", team_id, child[:8].upper()).output
    short = orch("tree", team_id, parent[:3], ok=False)
    assert short.exit_code == 2 and "at least its first 4 characters" in short.output
    unknown = "0000" if not {parent[:4], child[:4]} & {"0000"} else "ffff"
    none = orch("tree", team_id, unknown, ok=False)
    assert none.exit_code == 2 and "starts no task id of the team" in none.output


def test_depend_and_undepend(orch: Orch) -> None:
    team_id = make_team(orch)
    first = orch.http("POST", f"/teams/{team_id}/tasks", json={"title": "first"})["id"]
    second = orch.http("POST", f"/teams/{team_id}/tasks", json={"title": "second"})["id"]

    assert f"Task {second} waits for {first}" in orch("depend", team_id, second, first).output
    assert orch.http("GET", f"/teams/{team_id}/tasks/{second}")["status"] == "blocked"
    assert "already waits" in orch("depend", team_id, second, first).output
    edge = json.loads(orch("depend", team_id, second, first, "--json").stdout)
    assert edge["task_id"] == second and edge["depends_on_task_id"] == first

    cycle = orch("depend", team_id, first, second, ok=False)
    assert cycle.exit_code == 1
    assert cycle.output.startswith("Error: 409 Conflict: ") and "cycle" in cycle.output
    assert re.search(rf"cycle: ({first}|{second}) -> ({first}|{second}) -> ", cycle.output), (
        cycle.output
    )
    assert cycle.output.count(first) == 2 and cycle.output.count(second) == 1  # named once
    itself = orch("depend", team_id, first, first, ok=False)
    assert itself.exit_code == 1 and "409" in itself.output
    assert f"cycle: {first} -> {first}" in itself.output

    result = orch("undepend", team_id, second, first)
    assert f"Task {second} no longer waits for {first}" in result.output
    assert orch.http("GET", f"/teams/{team_id}/tasks/{second}")["status"] == "pending"
    gone = orch("undepend", team_id, second, first, ok=False)
    assert gone.exit_code == 1 and gone.output.startswith("Error: 404 Not Found: ")

    orch("depend", team_id, second, first)
    quiet = orch("undepend", team_id, second, first, "--json")
    assert quiet.stdout == "" and "no longer waits" in quiet.stderr


def test_decompose_and_tree(orch: Orch) -> None:
    team_id = make_team(orch)
    orch("member", "add", team_id, "--role", "manager", "--agent-id", "boss")
    orch("member", "add", team_id, "--specialization", "Researcher/Analyzer", "--agent-id", "ana")
    goal = "Research the market, then write a report summarizing the findings."
    result = orch("decompose", team_id, goal)
    match = re.search(r"The planner made (\d+) tasks", result.output)
    assert match and int(match.group(1)) >= 2, result.output

    tasks = orch.http("GET", f"/teams/{team_id}/tasks")
    root = next(t for t in tasks if t["parent_task_id"] is None)
    children = [t for t in tasks if t["parent_task_id"] == root["id"]]
    assert children
    tree = orch("tree", team_id, root["id"]).output
    assert root["title"] in tree
    for child in children:
        assert child["title"] in tree and child["id"] in tree
    # Children are drawn under their parent.
    assert any(ch in tree for ch in ("├──", "└──"))

    as_json = json.loads(orch("--json", "tree", team_id, root["id"]).output)
    assert as_json["task"]["id"] == root["id"]
    assert len(as_json["subtasks"]) == len(children)


def test_tree_shows_assignees(orch: Orch) -> None:
    team_id = make_team(orch)
    member = orch.http("POST", f"/teams/{team_id}/members", json={"role": "worker"})
    task = orch.http("POST", f"/teams/{team_id}/tasks", json={"title": "solo"})
    from sqlalchemy import update

    from db.engine import session_scope
    from db.models import Task

    with session_scope() as session:
        session.execute(
            update(Task)
            .where(Task.id == uuid.UUID(task["id"]))
            .values(assigned_to=uuid.UUID(member["id"]))
        )
    tree = orch("tree", team_id, task["id"]).output
    assert f"<- {member['agent_id']}" in tree


def test_decompose_without_manager_is_refused(orch: Orch) -> None:
    team_id = make_team(orch)
    result = orch("decompose", team_id, "write a report", ok=False)
    assert result.exit_code == 1
    assert "manager" in result.output and result.output.startswith("Error: ")


def test_events_history_and_timeout(orch: Orch) -> None:
    team_id = make_team(orch)
    events.publish([events.Event(uuid.UUID(team_id), "test.kept", None, {"n": 1})])

    history = orch("events", team_id).output
    assert "test.kept" in history and "n=1" in history

    def later() -> None:
        time.sleep(0.5)
        events.publish([events.Event(uuid.UUID(team_id), "test.live", None, {"n": 2})])

    publisher = threading.Thread(target=later)
    publisher.start()
    started = time.monotonic()
    result = orch("events", team_id, "--timeout", "2")
    publisher.join()
    assert 1.5 <= time.monotonic() - started < 15
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output  # only what arrived while following
    assert "test.live" in lines[0] and "n=2" in lines[0]
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z  \d+-\d+  test\.live", lines[0])

    entry_id = lines[0].split()[1]
    since = orch("--json", "events", team_id, "--since", "0", "--timeout", "0").output
    ids = [json.loads(line)["id"] for line in since.strip().splitlines()]
    assert entry_id in ids and len(ids) >= 2


def test_following_resumes_when_the_server_ends_the_stream(
    orch: Orch, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each stream lives 1 s here (10 minutes in production); a follower reconnects after the
    last event it saw, missing none and repeating none."""
    monkeypatch.setattr(events_view, "LIFETIME_SECONDS", 1.0)
    team_id = make_team(orch)

    def later() -> None:
        for n, wait in enumerate((0.5, 1.5, 1.0)):
            time.sleep(wait)
            events.publish([events.Event(uuid.UUID(team_id), "test.live", None, {"n": n})])

    publisher = threading.Thread(target=later)
    publisher.start()
    result = orch("events", team_id, "--timeout", "4.5")
    publisher.join()
    lines = result.output.strip().splitlines()
    assert [line.split()[-1] for line in lines] == ["n=0", "n=1", "n=2"], result.output


def test_unknown_team_is_404_with_the_api_message(orch: Orch) -> None:
    unknown = str(uuid.uuid4())
    for args in (
        ("team", "start", unknown),
        ("tasks", unknown),
        ("events", unknown, "--timeout", "0"),
        ("tree", unknown, str(uuid.uuid4())),
    ):
        result = orch(*args, ok=False)
        assert result.exit_code == 1, (args, result.output)
        assert result.output.startswith("Error: 404 Not Found: "), result.output
        assert "Traceback" not in result.output


def test_bad_or_missing_token(orch: Orch) -> None:
    bad = "not-the-token-4242"
    result = orch("teams", token=bad, ok=False)
    assert result.exit_code == 1
    assert "401" in result.output and "ORCH_TOKEN" in result.output
    assert bad not in result.output
    result = orch("teams", token=None, ok=False)
    assert result.exit_code == 1 and "401" in result.output


def test_admin_token_from_orch_admin_token(orch: Orch) -> None:
    make_team(orch, "alpha")
    runner = CliRunner()
    result = runner.invoke(
        cli,
        ["teams"],
        env={"ORCH_TOKEN": None, "ORCH_ADMIN_TOKEN": ADMIN_TOKEN, "ORCH_URL": orch.url},
    )
    assert result.exit_code == 0, result.output
    assert "alpha" in result.output and ADMIN_TOKEN not in result.output


@pytest.mark.parametrize("suffix", ["/api/v1", "/api/v1/", "/"])
def test_a_url_with_the_apis_own_path_means_the_same_server(orch: Orch, suffix: str) -> None:
    orch("team", "create", "alpha")
    for args in (["--url", orch.url + suffix, "teams"], ["teams", "--url", orch.url + suffix]):
        assert "alpha" in orch(*args).output


def test_global_options_after_the_subcommand(orch: Orch) -> None:
    created = json.loads(orch("team", "create", "alpha", "--json").stdout)
    team_id = created["id"]
    assert created["status"] == "inactive"
    orch.http("POST", f"/teams/{team_id}/tasks", json={"title": "one"})
    tasks = json.loads(orch("tasks", team_id, "--json").stdout)
    assert [t["title"] for t in tasks] == ["one"]
    # Nested commands too, and --token after the subcommand wins over ORCH_TOKEN.
    started = json.loads(orch("team", "start", team_id, "--json").stdout)
    assert started["status"] == "active"
    denied = orch("teams", "--token", "not-the-token-4242", ok=False)
    assert denied.exit_code == 1 and "401" in denied.output
    assert "alpha" in orch("teams", "--token", ADMIN_TOKEN, token=None).output
    unreachable = orch("teams", "--url", "http://127.0.0.1:1", ok=False)
    assert unreachable.exit_code == 3 and "http://127.0.0.1:1" in unreachable.output


@pytest.mark.parametrize("where", ["before", "after"])
def test_a_url_without_a_scheme_is_a_usage_error(orch: Orch, where: str) -> None:
    args = (
        ["--url", "127.0.0.1:5901", "teams"]
        if where == "before"
        else ["teams", "--url", "127.0.0.1:5901"]
    )
    result = orch(*args, ok=False)
    assert result.exit_code == 2
    assert "'127.0.0.1:5901' needs a scheme and a host, e.g. http://127.0.0.1:5901" in result.output


def test_unreachable_api(database: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = CliRunner().invoke(
        cli, ["--url", f"http://127.0.0.1:{port}", "--token", "secret-xyz", "teams"]
    )
    assert result.exit_code == 3
    assert "cannot reach the API" in result.output and "secret-xyz" not in result.output
    # A password in the address is not shown either, given before or after the command.
    for args in (
        ["--url", f"http://user:pw-in-url@127.0.0.1:{port}", "teams"],
        ["teams", "--url", f"http://user:pw-in-url@127.0.0.1:{port}/"],
    ):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 3
        assert f"cannot reach the API at http://127.0.0.1:{port} " in result.output
        assert "pw-in-url" not in result.output


def test_team_delete(orch: Orch) -> None:
    team_id = created_id(orch("team", "create", "short-lived"))
    result = orch("team", "delete", team_id, "--yes")
    assert f"Deleted team {team_id}" in result.output
    response = requests.get(
        f"{orch.url}/api/v1/teams/{team_id}",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=30,
    )
    assert response.status_code == 404
