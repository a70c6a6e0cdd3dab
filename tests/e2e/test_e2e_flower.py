"""Executions show in Flower: every run of a task by an agent is sent as Celery task events
(`orchestration.execute_task`, args naming the team and the task) by the real worker."""

from __future__ import annotations

import ast
import contextlib
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from orchestration import lifecycle, planning
from orchestration.celery import app
from orchestration.decomposition import create_task
from orchestration.teams import add_member, create_team
from tests.e2e.conftest import all_final, wait_until
from tests.support.invariants import check_invariants
from tests.support.processes import CELERY, Procs
from tests.support.services import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]


class EventLog:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        # One subscription for the whole test: Redis drops what is published between two.
        with app.connection_for_read() as conn:
            receiver = app.events.Receiver(conn, handlers={"*": self.record})
            self.ready.set()
            with contextlib.suppress(Exception):  # the test's redis-server goes away at the end
                receiver.capture(limit=None, timeout=None, wakeup=False)

    def record(self, event: dict[str, Any]) -> None:
        if not self.stop.is_set():
            self.events.append(event)


@pytest.fixture
def flower_url(workers: Procs) -> Iterator[str]:
    """Flower on a free port with basic auth admin:s3cret, stopped after the test."""
    port = free_port()
    workers.env_vars["FLOWER_BASIC_AUTH"] = "admin:s3cret"
    argv = [CELERY, "-A", "orchestration", "flower", f"--port={port}", "--address=127.0.0.1"]
    flower = workers.spawn("flower", argv)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                requests.get(url, timeout=1)
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline or not flower.alive():
                    raise RuntimeError(f"flower did not start:\n{workers.tails()}") from None
                time.sleep(0.2)
        yield url
    finally:
        workers.stop(flower, timeout=10)


def test_e2e_agent_executions_are_sent_as_celery_task_events(
    workers: Procs, flower_url: str
) -> None:
    log = EventLog()
    log.thread.start()
    assert log.ready.wait(10)
    workers.start_workers(1)
    team = create_team(f"flower-{uuid.uuid4().hex[:6]}")
    team_id = uuid.UUID(str(team.id))
    add_member(team_id, "worker", agent_id="w")
    lifecycle.start_team(team_id)
    task_ids = {str(create_task(team_id, {"title": f"t{i}"}).id) for i in range(3)}
    wait_until("the tasks to finish", all_final(team_id), team_id, workers, timeout=30)
    deadline = time.monotonic() + 10
    mine: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        mine = [e for e in log.events if e.get("name") == "orchestration.execute_task"]
        ours = {e["uuid"] for e in mine}
        done = {e["uuid"] for e in log.events if e["type"] == "task-succeeded"} & ours
        if len(ours) >= 3 and done == ours:
            break
        time.sleep(0.1)
    log.stop.set()
    received = {e["uuid"]: e for e in mine if e["type"] == "task-received"}
    assert {ast.literal_eval(e["args"])[1] for e in received.values()} == task_ids
    assert all(ast.literal_eval(e["args"])[0] == str(team_id) for e in received.values())
    succeeded = {e["uuid"] for e in log.events if e["type"] == "task-succeeded"}
    started = {e["uuid"] for e in log.events if e["type"] == "task-started"}
    assert set(received) <= succeeded and set(received) <= started
    check_invariants(team_id)
    # Flower shows them too, behind its basic auth.
    assert requests.get(f"{flower_url}/api/tasks", timeout=5).status_code == 401
    shown: dict[str, Any] = {}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not set(received) <= set(shown):
        reply = requests.get(f"{flower_url}/api/tasks", auth=("admin", "s3cret"), timeout=5)
        reply.raise_for_status()
        shown = reply.json()
        time.sleep(0.3)
    assert set(received) <= set(shown)
    assert all(shown[u]["name"] == "orchestration.execute_task" for u in received)
    assert all(shown[u]["state"] == "SUCCESS" for u in received)


def test_e2e_task_events_off_sends_none_and_the_work_still_runs(workers: Procs) -> None:
    log = EventLog()
    log.thread.start()
    assert log.ready.wait(10)
    workers.env_vars["ORCH_TASK_EVENTS"] = "off"
    workers.start_workers(1)
    team = create_team(f"quiet-{uuid.uuid4().hex[:6]}")
    team_id = uuid.UUID(str(team.id))
    add_member(team_id, "worker", agent_id="w")
    lifecycle.start_team(team_id)
    for i in range(3):
        create_task(team_id, {"title": f"t{i}"})
    wait_until("the tasks to finish", all_final(team_id), team_id, workers, timeout=30)
    time.sleep(1.0)  # longer than the events' flush interval
    log.stop.set()
    # (task-sent events come from this process, which publishes the passes.)
    worker_kinds = ("task-received", "task-started", "task-succeeded", "task-failed")
    assert [e for e in log.events if e["type"] in worker_kinds] == []
    check_invariants(team_id)


def test_e2e_a_decomposition_planned_in_the_background_shows_in_flower(
    workers: Procs, flower_url: str
) -> None:
    workers.start_workers(1)
    team = create_team(f"plans-{uuid.uuid4().hex[:6]}")
    team_id = uuid.UUID(str(team.id))
    add_member(team_id, "manager", agent_id="m")
    add_member(team_id, "worker", agent_id="w")
    made, _ = planning.submit(team_id, "Write a report on the market", 2)
    lifecycle.start_team(team_id)
    wait_until(
        "the decomposition planned",
        lambda: planning.get(team_id, made.id).status.value == "succeeded",
        team_id,
        workers,
        timeout=30,
    )
    wait_until("the tasks to finish", all_final(team_id), team_id, workers, timeout=30)
    shown: dict[str, Any] = {}
    deadline = time.monotonic() + 10
    plans: list[str] = []
    while time.monotonic() < deadline:
        reply = requests.get(f"{flower_url}/api/tasks", auth=("admin", "s3cret"), timeout=5)
        reply.raise_for_status()
        shown = reply.json()
        plans = [u for u, t in shown.items() if t["name"] == "orchestration.plan_goal"]
        if plans and all(shown[u]["state"] == "SUCCESS" for u in plans):
            break
        time.sleep(0.3)
    [uid] = plans
    assert ast.literal_eval(shown[uid]["args"]) == [str(team_id), str(made.id)]
    assert ast.literal_eval(shown[uid]["kwargs"]) == {"attempt": 1}
    assert shown[uid]["state"] == "SUCCESS"
    assert ast.literal_eval(shown[uid]["result"]) == "succeeded"
    check_invariants(team_id)
