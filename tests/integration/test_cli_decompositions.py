"""`orch decompose --background`, `orch decompositions` and `orch decomposition` against a real
API (test_cli's served app and runner); the planning is driven from the test, as a worker's
planning thread would do it."""

# ruff: noqa: F811

from __future__ import annotations

import json
import threading
import time
import uuid

from sqlalchemy import delete

from db.engine import session_scope
from db.models import TeamMember
from orchestration import planning
from tests.integration.test_cli import (  # noqa: F401 (fixtures)
    UUID_RE,
    Orch,
    make_team,
    orch,
    row_of,
)

GOAL = "Research the market, then write a report summarizing the findings."


def managed_team(orch: Orch) -> str:
    team_id = make_team(orch)
    orch("member", "add", team_id, "--role", "manager", "--agent-id", "boss")
    orch("member", "add", team_id, "--specialization", "Researcher/Analyzer", "--agent-id", "ana")
    return team_id


def queued(orch: Orch, team_id: str, goal: str = GOAL, *args: str) -> str:
    result = orch("decompose", team_id, goal, "--background", *args)
    made = result.stdout.strip()
    assert UUID_RE.fullmatch(made), result.stdout
    return made


def plan_next() -> None:
    assert planning.run_next("cli-test", threading.Event())


def test_background_prints_only_the_id_of_what_it_queued(orch: Orch) -> None:
    team_id = managed_team(orch)
    result = orch("decompose", team_id, GOAL, "--background", "--max-depth", "2")
    made = result.stdout.strip()  # only the id, for `D=$(orch decompose T GOAL --background)`
    assert UUID_RE.fullmatch(made), result.stdout
    assert "Queued for the planner: queued" in result.stderr

    stored = orch.http("GET", f"/teams/{team_id}/decompositions/{made}")
    assert stored["goal"] == GOAL and stored["max_depth"] == 2
    assert stored["status"] == "queued" and stored["task_ids"] is None
    assert orch.http("GET", f"/teams/{team_id}/tasks") == []  # nothing planned yet

    result = orch("decompose", team_id, "another goal", "--background", "--json")
    as_json = json.loads(result.stdout)
    assert as_json["goal"] == "another goal" and as_json["status"] == "queued"
    assert as_json["id"] != made

    refused = orch("decompose", make_team(orch, "beta"), GOAL, "--background", ok=False)
    assert refused.exit_code == 1 and "manager" in refused.output
    assert refused.stdout == ""  # no id for a script to pick up


def test_the_same_key_gives_back_the_same_decomposition(orch: Orch) -> None:
    team_id = managed_team(orch)
    first = queued(orch, team_id, GOAL, "--key", "report-1")
    result = orch("decompose", team_id, GOAL, "--background", "--key", "report-1")
    assert result.stdout.strip() == first
    assert "Queued already with this key: queued" in result.stderr
    assert [d["id"] for d in orch.http("GET", f"/teams/{team_id}/decompositions")] == [first]

    args = ("decompose", team_id, "another goal", "--background", "--key", "report-1")
    other = orch(*args, ok=False)
    assert other.exit_code == 1 and other.output.startswith("Error: 409 Conflict: ")
    assert queued(orch, team_id, GOAL, "--key", "report-2") != first


def test_a_key_without_background_is_a_usage_error(orch: Orch) -> None:
    team_id = managed_team(orch)
    result = orch("decompose", team_id, GOAL, "--key", "report-1", ok=False)
    assert result.exit_code == 2 and "--key goes with --background" in result.output
    assert orch.http("GET", f"/teams/{team_id}/decompositions") == []
    assert orch.http("GET", f"/teams/{team_id}/tasks") == []  # nor planned at once


def test_decompositions_table_newest_first(orch: Orch) -> None:
    team_id = managed_team(orch)
    assert "No decompositions." in orch("decompositions", team_id).output
    long_goal = "Write a long report " + "with many more words " * 10
    older = queued(orch, team_id, GOAL)
    newer = queued(orch, team_id, long_goal)
    plan_next()  # the oldest first
    planned = orch.http("GET", f"/teams/{team_id}/decompositions/{older}")
    assert planned["status"] == "succeeded"

    output = orch("decompositions", team_id).output
    assert "Decompositions (2)" in output
    assert output.index(newer) < output.index(older)
    done = row_of(output, older)
    assert "succeeded" in done and "Research the market" in done
    assert f" {len(planned['task_ids'])} " in done and "1 attempt " in done  # tasks made
    waiting = row_of(output, newer)
    assert "queued" in waiting and " - " in waiting and "0 attempts" in waiting
    assert all(line.endswith(("│", "┃", "┓", "┩", "┤", "┘")) for line in output.splitlines()[1:])
    assert "…" in waiting and long_goal.strip() not in " ".join(waiting.split())  # shortened

    only = orch("decompositions", team_id, "--status", "queued").output
    assert newer in only and older not in only
    assert "No decompositions with status failed." in (
        orch("decompositions", team_id, "--status", "failed").output
    )
    assert orch("decompositions", team_id, "--status", "done", ok=False).exit_code == 2

    listed = json.loads(orch("decompositions", team_id, "--json").stdout)
    assert [d["id"] for d in listed] == [newer, older]
    page = orch("decompositions", team_id, "--limit", "1").output
    assert newer in page and older not in page and "More follow: add --after" in page


def test_decomposition_shows_one(orch: Orch) -> None:
    team_id = managed_team(orch)
    made = queued(orch, team_id)
    output = orch("decomposition", team_id, made).output
    assert f"Decomposition {made}: queued" in output
    assert "attempts  0" in output and "tasks     -" in output and GOAL in output

    plan_next()
    stored = orch.http("GET", f"/teams/{team_id}/decompositions/{made}")
    output = orch("decomposition", team_id, made).output
    assert f"Decomposition {made}: succeeded" in output and "attempts  1" in output
    assert f"tasks     {len(stored['task_ids'])} (the root: {stored['task_ids'][0]}" in output
    assert "tokens, cost" in output and "error" not in output
    assert json.loads(orch("decomposition", team_id, made, "--json").stdout) == stored

    missing = orch("decomposition", team_id, str(uuid.uuid4()), ok=False)
    assert missing.exit_code == 1 and missing.output.startswith("Error: 404 Not Found: ")


def test_wait_until_it_succeeds(orch: Orch) -> None:
    team_id = managed_team(orch)
    made = queued(orch, team_id)

    def later() -> None:
        time.sleep(1.0)  # the waiting command polls a few times first
        plan_next()

    planner = threading.Thread(target=later)
    planner.start()
    started = time.monotonic()
    result = orch("decomposition", team_id, made, "--wait")
    planner.join()
    assert 1.0 <= time.monotonic() - started < 15
    assert f"Decomposition {made}: succeeded" in result.stdout
    assert f"Decomposition {made}: queued…" in result.stderr  # what it saw while waiting
    tasks = orch.http("GET", f"/teams/{team_id}/tasks")
    assert f"tasks     {len(tasks)} " in result.stdout and tasks

    # Final already: answered at once; with --json, the JSON only.
    as_json = json.loads(orch("decomposition", team_id, made, "--wait", "--json").stdout)
    assert as_json["status"] == "succeeded" and as_json["id"] == made


def test_cancel_then_wait_exits_1(orch: Orch) -> None:
    team_id = managed_team(orch)
    made = queued(orch, team_id)
    result = orch("decomposition", team_id, made, "--cancel")
    assert f"Cancelled decomposition {made}: cancelled" in result.output
    assert orch.http("GET", f"/teams/{team_id}/decompositions/{made}")["status"] == "cancelled"
    assert not planning.run_next("cli-test", threading.Event())  # nothing left to plan

    ended = orch("decomposition", team_id, made, "--wait", ok=False)
    assert ended.exit_code == 1
    assert f"Decomposition {made}: cancelled" in ended.stdout
    assert f"Error: decomposition {made} cancelled" in ended.stderr
    shown = orch("decomposition", team_id, made)  # only --wait judges the outcome
    assert "cancelled" in shown.output

    again = orch("decomposition", team_id, made, "--cancel", ok=False)
    assert again.exit_code == 1 and again.output.startswith("Error: 409 Conflict: ")
    both = orch("decomposition", team_id, made, "--cancel", "--wait", ok=False)
    assert both.exit_code == 2 and "--cancel does not go with --wait" in both.output

    other = queued(orch, team_id, "another goal")
    as_json = json.loads(orch("decomposition", team_id, other, "--cancel", "--json").stdout)
    assert as_json["id"] == other and as_json["status"] == "cancelled"


def test_wait_for_a_failed_one_exits_1_with_its_error(orch: Orch) -> None:
    team_id = managed_team(orch)
    made = queued(orch, team_id)
    with session_scope() as session:  # the manager leaves before the planning begins
        session.execute(delete(TeamMember).where(TeamMember.role == "manager"))
    plan_next()

    ended = orch("decomposition", team_id, made, "--wait", ok=False)
    assert ended.exit_code == 1
    error = orch.http("GET", f"/teams/{team_id}/decompositions/{made}")["error"]
    assert error and "manager" in error
    assert f"Decomposition {made}: failed" in ended.stdout and error in ended.stdout
    assert f"Error: decomposition {made} failed: {error}" in ended.stderr


def test_wait_gives_up_after_the_timeout(orch: Orch) -> None:
    team_id = managed_team(orch)
    made = queued(orch, team_id)  # nothing plans it
    started = time.monotonic()
    result = orch("decomposition", team_id, made, "--timeout", "1", ok=False)
    assert 1.0 <= time.monotonic() - started < 10
    assert result.exit_code == 1
    assert f"Error: decomposition {made} is still queued after 1 s" in result.stderr


def test_retry_queues_a_cancelled_one_again_and_wait_follows_it(orch: Orch) -> None:
    team_id = managed_team(orch)
    made = queued(orch, team_id)
    orch("decomposition", team_id, made, "--cancel")
    result = orch("decomposition", team_id, made, "--retry")
    assert f"Queued again decomposition {made}: queued" in result.output
    again = orch("decomposition", team_id, made, "--retry", ok=False)
    assert again.exit_code == 1 and again.output.startswith("Error: 409 Conflict: ")

    orch("decomposition", team_id, made, "--cancel")
    planner = threading.Timer(1.0, plan_next)  # a worker takes it a second after the retry
    planner.start()
    try:
        followed = orch("decomposition", team_id, made, "--retry", "--wait")
    finally:
        planner.join()
    assert followed.exit_code == 0
    assert f"Decomposition {made}: succeeded" in followed.stdout
