"""Decompositions planned in the background, end to end: real `celery worker` processes plan a
queued goal with the LLM planner (against a real local chat-completions server), and the tasks
it makes run to completion. The worker planning it is SIGKILLed, or stopped, mid-plan: another
plans it, and its tasks are created once. Each scenario ends with check_invariants(team_id)."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text

from db.engine import get_engine
from orchestration import planning
from tests.e2e.conftest import all_final, describe, task_rows, wait_until
from tests.e2e.test_e2e_pipeline import events_of, make_team
from tests.fakes.chat_server import FakeChatServer, RecordedRequest, Reply, completion
from tests.support.invariants import check_invariants
from tests.support.processes import Proc, Procs

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]

PLAN = {
    "key": "launch",
    "title": "Launch the product page",
    "subtasks": [
        {"key": "research", "title": "Research competitors"},
        {"key": "write", "title": "Write the page copy", "depends_on": ["research"]},
        {"key": "build", "title": "Build the page", "depends_on": ["write"]},
    ],
}
PLANNED_TASKS = 4


class SlowFirstPlanner:
    """Answers every planning request with PLAN; the first only after `first_delay` seconds
    (the worker planning it is stopped meanwhile)."""

    def __init__(self, first_delay: float) -> None:
        self.first_delay = first_delay
        self.calls = 0
        self.lock = threading.Lock()
        self.first_arrived = threading.Event()

    def __call__(self, request: RecordedRequest) -> Reply:
        with self.lock:
            self.calls += 1
            first = self.calls == 1
        if first:
            self.first_arrived.set()
        body = completion(json.dumps(PLAN), prompt_tokens=100, completion_tokens=50)
        return Reply(
            200,
            json.dumps(body).encode(),
            {"Content-Type": "application/json"},
            delay=self.first_delay if first else 0.0,
        )


@pytest.fixture
def model() -> Iterator[FakeChatServer]:
    server = FakeChatServer().start()
    try:
        yield server
    finally:
        server.stop()


def llm_planner_env(server: FakeChatServer, timeout: float) -> dict[str, str]:
    return {
        "ORCH_PLANNER": "llm",
        "LLM_BASE_URL": server.url,
        "LLM_API_KEY": "sk-test-secret",
        "LLM_MODEL": "fake-model",
        "LLM_TIMEOUT": str(timeout),
        "LLM_PRICES": json.dumps({"fake-model": {"prompt": 1.0, "completion": 2.0}}),
    }


def decomposition_row(decomposition_id: uuid.UUID) -> Any:
    with get_engine().connect() as conn:
        return conn.execute(
            text("SELECT * FROM decompositions WHERE id = :id"), {"id": decomposition_id}
        ).one()


def planner_of(workers: list[Proc], decomposition_id: uuid.UUID) -> Proc:
    """The worker whose consumer holds the decomposition (consumer names carry the pid)."""
    claimed_by = decomposition_row(decomposition_id).claimed_by
    [proc] = [w for w in workers if f":{w.pid}:" in claimed_by]
    return proc


def planned_once(
    team_id: uuid.UUID, decomposition_id: uuid.UUID, workers: Procs, timeout: float
) -> Any:
    """The decomposition once it succeeded, its plan's tasks created once."""
    wait_until(
        "the decomposition planned",
        lambda: decomposition_row(decomposition_id).status in ("succeeded", "failed", "cancelled"),
        team_id,
        workers,
        timeout=timeout,
    )
    row = decomposition_row(decomposition_id)
    assert row.status == "succeeded", (row.status, row.error, describe(team_id))
    rows = task_rows(team_id)
    assert len(rows) == PLANNED_TASKS, describe(team_id)  # one plan's tasks, not two
    assert sorted(row.task_ids) == sorted(r.id for r in rows)
    assert len(events_of(team_id, "decomposition.succeeded")) == 1
    return row


def test_e2e_a_decomposition_whose_planner_is_killed_is_planned_by_another_worker(
    workers: Procs, model: FakeChatServer
) -> None:
    responder = SlowFirstPlanner(first_delay=30.0)
    model.respond(responder)
    workers.env_vars.update(llm_planner_env(model, timeout=60))
    started = workers.start_workers(2)
    workers.start_beat()
    team_id = make_team([2, 2])
    made, _ = planning.submit(team_id, "Launch the product page", 3)
    assert responder.first_arrived.wait(20), "no worker called the planner"
    victim = planner_of(started, made.id)
    workers.kill(victim)
    # Its lease (ORCH_VISIBILITY_TIMEOUT, 3 s) runs out; the other worker plans it again.
    row = planned_once(team_id, made.id, workers, timeout=40)
    assert row.attempts == 2
    survivor = next(w for w in started if w is not victim)
    assert f":{survivor.pid}:" in row.claimed_by
    wait_until("the planned tasks", all_final(team_id), team_id, workers, timeout=60)
    assert check_invariants(team_id) == {"completed": PLANNED_TASKS}


def test_e2e_a_stopping_worker_gives_its_decomposition_back_at_once(
    workers: Procs, model: FakeChatServer
) -> None:
    # The first call outlasts LLM_TIMEOUT: the stopping worker's planner ends when it times out
    # (a planner stops between calls), then hands the decomposition back uncounted.
    responder = SlowFirstPlanner(first_delay=30.0)
    model.respond(responder)
    workers.env_vars.update(llm_planner_env(model, timeout=3))
    workers.env_vars["ORCH_VISIBILITY_TIMEOUT"] = "60"  # a lapsed lease would take a minute
    started = workers.start_workers(2)
    workers.start_beat()
    team_id = make_team([2, 2])
    made, _ = planning.submit(team_id, "Launch the product page", 3)
    assert responder.first_arrived.wait(20), "no worker called the planner"
    stopping = planner_of(started, made.id)
    workers.stop(stopping, timeout=30)
    row = planned_once(team_id, made.id, workers, timeout=30)
    assert row.attempts == 1  # given back, not lost: the attempt was not counted
    assert "given back for another consumer" in stopping.log.read_text(errors="replace")
    wait_until("the planned tasks", all_final(team_id), team_id, workers, timeout=60)
    assert check_invariants(team_id) == {"completed": PLANNED_TASKS}
