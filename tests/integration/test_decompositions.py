"""Decompositions planned in the background: the API, the planning service's claims and leases,
and a consumer's planning thread, against real PostgreSQL and Redis (and the fake chat server
where the planner is the LLM one)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session

from db.models import Decomposition, Task, TaskEvent, TeamMember
from orchestration import consumer, metrics, planning
from orchestration.config import reload_settings
from orchestration.consumer import AgentConsumer
from tests.fakes.chat_server import (  # noqa: F401
    FakeChatServer,
    Reply,
    agents_on,
    chat_server_fixture,
    completion,
)
from webapp.testing import V1, ApiClient, assert_error, unknown_id

GOAL = "Write a blog post about the launch"
PLAN = {
    "key": "root",
    "title": "Write the post",
    "subtasks": [
        {"key": "draft", "title": "Draft it", "required_skills": ["writing"]},
        {"key": "edit", "title": "Edit it", "depends_on": ["draft"]},
    ],
}


def decompositions(team_id: str) -> str:
    return f"{V1}/teams/{team_id}/decompositions"


def submitted(api: ApiClient, team_id: str, goal: str = GOAL, **body: Any) -> dict[str, Any]:
    response = api.post(decompositions(team_id), {"goal": goal, **body})
    assert response.status_code == 202, response.get_json()
    return dict(response.get_json())


def stored(session: Session, decomposition_id: str) -> Decomposition:
    session.expire_all()
    return session.get_one(Decomposition, uuid.UUID(decomposition_id))


def task_count(session: Session, team_id: str) -> int:
    return (
        session.scalar(
            select(func.count()).select_from(Task).where(Task.team_id == uuid.UUID(team_id))
        )
        or 0
    )


def event_kinds(session: Session, team_id: str) -> list[str]:
    return list(
        session.scalars(
            select(TaskEvent.kind)
            .where(TaskEvent.team_id == uuid.UUID(team_id), TaskEvent.kind.like("decomposition.%"))
            .order_by(TaskEvent.id)
        )
    )


@pytest.fixture
def managed(api: ApiClient, team: dict[str, Any]) -> dict[str, Any]:
    api.add_member(team["id"], "manager")
    api.add_member(team["id"], "worker", skills={"writing": 0.9})
    return team


# --- the API ---------------------------------------------------------------------------------


def test_submit_answers_at_once_and_the_planning_makes_the_tasks(
    api: ApiClient, managed: dict[str, Any], session: Session
) -> None:
    response = api.post(decompositions(managed["id"]), {"goal": GOAL, "max_depth": 2})
    assert response.status_code == 202
    made = response.get_json()
    assert made["status"] == "queued" and made["attempts"] == 0 and made["task_ids"] is None
    assert made["goal"] == GOAL and made["max_depth"] == 2
    location = response.headers["Location"]
    assert location == f"{decompositions(managed['id'])}/{made['id']}"
    assert "Idempotent-Replayed" not in response.headers
    assert task_count(session, managed["id"]) == 0

    assert planning.run_next("test-consumer", threading.Event())
    assert not planning.run_next("test-consumer", threading.Event())  # nothing else queued

    done = api.get(location).get_json()
    assert done["status"] == "succeeded", done
    assert done["attempts"] == 1 and done["error"] is None
    assert done["started_at"] is not None and done["finished_at"] is not None
    # The ids of exactly the tasks the plan created, parents before children.
    listed = api.get(f"{V1}/teams/{managed['id']}/tasks").get_json()
    assert sorted(done["task_ids"]) == sorted(t["id"] for t in listed)
    by_id = {t["id"]: t for t in listed}
    seen: set[str] = set()
    for task_id in done["task_ids"]:
        parent = by_id[task_id]["parent_task_id"]
        assert parent is None or parent in seen
        seen.add(task_id)
    assert event_kinds(session, managed["id"]) == [
        "decomposition.queued",
        "decomposition.succeeded",
    ]


def test_the_list_pages_newest_first_and_filters_by_status(
    api: ApiClient, managed: dict[str, Any]
) -> None:
    made = [submitted(api, managed["id"], f"goal {i}")["id"] for i in range(5)]
    api.post(f"{decompositions(managed['id'])}/{made[1]}/cancel")
    first = api.get(decompositions(managed["id"]), query_string={"limit": 2})
    assert [d["id"] for d in first.get_json()] == [made[4], made[3]]
    rest = api.get(
        decompositions(managed["id"]),
        query_string={"limit": 10, "after": first.headers["X-Next-Cursor"]},
    )
    assert [d["id"] for d in rest.get_json()] == [made[2], made[1], made[0]]
    assert "X-Next-Cursor" not in rest.headers
    cancelled = api.get(decompositions(managed["id"]), query_string={"status": "cancelled"})
    assert [d["id"] for d in cancelled.get_json()] == [made[1]]
    bad = api.get(decompositions(managed["id"]), query_string={"after": "nonsense"})
    assert_error(bad, 422)


def test_needs_a_manager_and_an_existing_team(api: ApiClient, team: dict[str, Any]) -> None:
    api.add_member(team["id"], "worker")
    assert_error(api.post(decompositions(team["id"]), {"goal": GOAL}), 409)
    assert_error(api.post(decompositions(str(unknown_id())), {"goal": GOAL}), 404)
    assert_error(api.get(f"{decompositions(team['id'])}/{unknown_id()}"), 404)
    assert_error(api.post(f"{decompositions(team['id'])}/{unknown_id()}/cancel"), 404)
    assert_error(api.post(decompositions(team["id"]), {"goal": "  "}), 422)
    assert_error(api.post(decompositions(team["id"]), {"goal": GOAL, "max_depth": 11}), 422)
    assert_error(api.post(decompositions(team["id"]), {"plan": PLAN}), 422)


def test_another_teams_decomposition_is_not_found(
    api: ApiClient, managed: dict[str, Any], other_team: dict[str, Any]
) -> None:
    made = submitted(api, managed["id"])
    assert_error(api.get(f"{decompositions(other_team['id'])}/{made['id']}"), 404)
    assert_error(api.post(f"{decompositions(other_team['id'])}/{made['id']}/cancel"), 404)
    token = api.create_token(other_team["id"])
    outsider = ApiClient(api.client, token=token)
    assert outsider.get(f"{decompositions(managed['id'])}/{made['id']}").status_code in (403, 404)


def test_an_idempotency_key_gives_back_the_first_decomposition(
    api: ApiClient, managed: dict[str, Any], session: Session
) -> None:
    key = {"Idempotency-Key": "launch-post-1"}
    first = api.post(decompositions(managed["id"]), {"goal": GOAL}, headers=key)
    again = api.post(decompositions(managed["id"]), {"goal": GOAL}, headers=key)
    assert first.status_code == again.status_code == 202
    assert again.get_json()["id"] == first.get_json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["Location"] == first.headers["Location"]
    assert_error(
        api.post(decompositions(managed["id"]), {"goal": "another goal"}, headers=key), 409
    )
    # Another key, or none, is another decomposition.
    other = api.post(
        decompositions(managed["id"]), {"goal": GOAL}, headers={"Idempotency-Key": "2"}
    )
    assert other.get_json()["id"] != first.get_json()["id"]
    assert submitted(api, managed["id"])["id"] != first.get_json()["id"]
    assert session.scalar(select(func.count()).select_from(Decomposition)) == 3
    assert event_kinds(session, managed["id"]).count("decomposition.queued") == 3


def test_cancel_before_the_plan_comes_creates_nothing(
    api: ApiClient, managed: dict[str, Any], session: Session
) -> None:
    made = submitted(api, managed["id"])
    claimed = planning.claim_next("test-consumer")
    assert claimed is not None and claimed.id == uuid.UUID(made["id"])
    cancelled = api.post(f"{decompositions(managed['id'])}/{made['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.get_json()["status"] == "cancelled"
    # The attempt that was planning finishes its plan: it is discarded.
    planning.plan(claimed, threading.Event())
    assert stored(session, made["id"]).status == "cancelled"
    assert task_count(session, managed["id"]) == 0
    assert_error(api.post(f"{decompositions(managed['id'])}/{made['id']}/cancel"), 409)
    assert event_kinds(session, managed["id"]) == [
        "decomposition.queued",
        "decomposition.cancelled",
    ]


# --- claims and leases -----------------------------------------------------------------------


def expire_lease(session: Session, decomposition_id: str) -> None:
    session.execute(
        update(Decomposition)
        .where(Decomposition.id == uuid.UUID(decomposition_id))
        .values(lease_until=text("now() - interval '1 second'"))
    )
    session.commit()


def test_a_lost_consumers_decomposition_is_planned_once_by_another(
    api: ApiClient, managed: dict[str, Any], session: Session
) -> None:
    made = submitted(api, managed["id"])
    lost = planning.claim_next("consumer-a")
    assert lost is not None
    # While its lease holds, nobody else takes it.
    assert planning.claim_next("consumer-b") is None
    expire_lease(session, made["id"])
    taken = planning.claim_next("consumer-b")
    assert taken is not None and taken.attempt == 2
    assert (stored(session, made["id"]).claimed_by or "").startswith("consumer-b/")
    planning.plan(taken, threading.Event())
    # The first consumer was only slow, not dead: its late plan changes nothing.
    planning.plan(lost, threading.Event())
    row = stored(session, made["id"])
    assert row.status == "succeeded" and row.attempts == 2
    assert task_count(session, managed["id"]) == len(row.task_ids or []) > 0
    assert event_kinds(session, managed["id"]).count("decomposition.succeeded") == 1


def test_a_decomposition_lost_every_attempt_fails(
    api: ApiClient, managed: dict[str, Any], session: Session
) -> None:
    made = submitted(api, managed["id"])
    for attempt in range(1, planning.MAX_ATTEMPTS + 1):
        claimed = planning.claim_next(f"consumer-{attempt}")
        assert claimed is not None and claimed.attempt == attempt
        expire_lease(session, made["id"])
    assert not planning.run_next("consumer-last", threading.Event())
    row = stored(session, made["id"])
    assert row.status == "failed" and row.finished_at is not None
    assert row.error == f"the process planning it was lost {planning.MAX_ATTEMPTS} times"
    assert task_count(session, managed["id"]) == 0
    assert event_kinds(session, managed["id"])[-1] == "decomposition.failed"


def test_consumers_claiming_at_once_take_each_decomposition_once(
    api: ApiClient, managed: dict[str, Any]
) -> None:
    made = {submitted(api, managed["id"], f"goal {i}")["id"] for i in range(20)}
    claims: list[str] = []
    lock = threading.Lock()

    def claim_all(name: str) -> None:
        while (claimed := planning.claim_next(name)) is not None:
            with lock:
                claims.append(str(claimed.id))

    threads = [threading.Thread(target=claim_all, args=(f"c{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claims) == sorted(made)


# --- the planner fails, or the process stops -------------------------------------------------


@pytest.fixture
def llm_planner(
    monkeypatch: pytest.MonkeyPatch, chat_server: FakeChatServer
) -> Iterator[FakeChatServer]:
    with agents_on(chat_server, monkeypatch, prices=(Decimal("1"), Decimal("2"))) as server:
        yield server


def test_a_failing_planner_fails_the_decomposition_and_its_usage_counts(
    api: ApiClient, managed: dict[str, Any], session: Session, llm_planner: FakeChatServer
) -> None:
    for _ in range(3):  # every re-ask gets a plan with a cycle
        llm_planner.answer(
            {
                "title": "root",
                "subtasks": [
                    {"key": "a", "title": "a", "depends_on": ["b"]},
                    {"key": "b", "title": "b", "depends_on": ["a"]},
                ],
            },
            prompt_tokens=100,
            completion_tokens=50,
        )
    made = submitted(api, managed["id"])
    assert planning.run_next("test-consumer", threading.Event())
    row = stored(session, made["id"])
    assert row.status == "failed" and row.attempts == 1
    assert row.error and "cycle" in row.error
    assert row.tokens_used == 450 and row.cost > 0
    manager = session.scalars(select(TeamMember).where(TeamMember.role == "manager")).one()
    assert manager.total_tokens_used == 450 and manager.total_cost == row.cost
    assert task_count(session, managed["id"]) == 0
    body = api.get(f"{decompositions(managed['id'])}/{made['id']}").get_json()
    assert body["tokens_used"] == 450 and body["error"] == row.error


def planner_waiting(model: FakeChatServer, stopping: threading.Event) -> threading.Thread:
    """run_next in a thread, its planner waiting between attempts (the model answers 503 with
    a Retry-After of 30 s) once it has called the model."""
    for _ in range(4):
        model.error(503, retry_after="30")
    runner = threading.Thread(target=planning.run_next, args=("test-consumer", stopping))
    runner.start()
    deadline = time.monotonic() + 10
    while not model.requests and time.monotonic() < deadline:
        time.sleep(0.05)
    assert model.requests, "the planner never called the model"
    return runner


def test_a_stopping_process_gives_its_decomposition_back(
    api: ApiClient, managed: dict[str, Any], session: Session, llm_planner: FakeChatServer
) -> None:
    made = submitted(api, managed["id"])
    stopping = threading.Event()
    runner = planner_waiting(llm_planner, stopping)
    stopping.set()
    runner.join(10)
    assert not runner.is_alive(), "the planner did not stop with its process"
    row = stored(session, made["id"])
    assert row.status == "queued" and row.attempts == 0 and row.claimed_by is None
    assert task_count(session, managed["id"]) == 0


def test_a_consumers_planning_thread_takes_a_submission_when_the_doorbell_rings(
    api: ApiClient, managed: dict[str, Any], session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With looks a minute apart, only the doorbell can bring the planning within the wait.
    monkeypatch.setattr(consumer, "PLANNING_POLL", 60.0)
    agents = AgentConsumer(concurrency=1, name="planning-test")
    agents.start()
    try:
        time.sleep(0.5)  # the thread is waiting on the doorbell
        made = submitted(api, managed["id"])
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if stored(session, made["id"]).status == "succeeded":
                break
            time.sleep(0.1)
        row = stored(session, made["id"])
        assert row.status == "succeeded", row.error
        assert (row.claimed_by or "").startswith("planning-test/")
    finally:
        agents.stop(timeout=10)
    metrics.flush()
    exposed = api.get("/metrics").get_data(as_text=True)
    counted = f'orch_plannings_total{{result="succeeded",team_id="{managed["id"]}"}} 1.0'
    assert counted in exposed
    assert "orch_planning_seconds_count 1.0" in exposed


def test_metrics_show_the_open_decompositions_and_the_oldest_wait(
    api: ApiClient, managed: dict[str, Any], session: Session
) -> None:
    made = [submitted(api, managed["id"], f"goal {i}")["id"] for i in range(3)]
    session.execute(
        update(Decomposition)
        .where(Decomposition.id == uuid.UUID(made[0]))
        .values(created_at=text("now() - interval '90 seconds'"))
    )
    session.commit()
    assert planning.claim_next("metrics-test") is not None  # the oldest: now planning
    exposed = api.get("/metrics").get_data(as_text=True)
    assert 'orch_decompositions{status="queued"} 2.0' in exposed
    assert 'orch_decompositions{status="planning"} 1.0' in exposed
    [waited] = [
        float(line.split()[-1])
        for line in exposed.splitlines()
        if line.startswith("orch_decomposition_queued_seconds ")
    ]
    assert 0 <= waited < 60  # the oldest still queued, not the one planning


def test_a_cancel_stops_the_planner_at_work(
    api: ApiClient, managed: dict[str, Any], session: Session, llm_planner: FakeChatServer
) -> None:
    # The planner hears the cancel at the lease's next renewal instead of waiting on.
    made = submitted(api, managed["id"])
    runner = planner_waiting(llm_planner, threading.Event())
    api.post(f"{decompositions(managed['id'])}/{made['id']}/cancel")
    runner.join(planning.RENEW_EVERY + 5)
    assert not runner.is_alive(), "the planner went on after the cancel"
    assert len(llm_planner.requests) == 1
    row = stored(session, made["id"])
    assert row.status == "cancelled" and row.error is None
    assert task_count(session, managed["id"]) == 0


@pytest.mark.parametrize("threads", [0, 2])
def test_planning_threads_plan_side_by_side_or_not_at_all(
    api: ApiClient,
    managed: dict[str, Any],
    session: Session,
    monkeypatch: pytest.MonkeyPatch,
    llm_planner: FakeChatServer,
    threads: int,
) -> None:
    monkeypatch.setenv("ORCH_PLANNING_CONCURRENCY", str(threads))
    reload_settings()
    # Each plan takes the model 2 s to answer.
    answer = json.dumps(completion(json.dumps(PLAN))).encode()
    llm_planner.respond(lambda request: Reply(200, answer, {}, delay=2.0))
    made = [submitted(api, managed["id"], f"goal {n}")["id"] for n in range(2)]
    agents = AgentConsumer(concurrency=1, name="planning-threads")
    agents.start()
    try:
        # With none, a few seconds show that nothing is planned (the doorbell rang at once).
        deadline = time.monotonic() + (15 if threads else 3)
        while time.monotonic() < deadline:
            statuses = {stored(session, d).status for d in made}
            if threads and statuses == {"succeeded"}:
                break
            time.sleep(0.1)
        if threads == 0:
            assert statuses == {"queued"} and not llm_planner.requests
            return
        assert statuses == {"succeeded"}
        # Side by side: the second request reached the model before the first was answered.
        first, second = sorted(r.received_at for r in llm_planner.requests)
        assert second - first < 1.5
    finally:
        agents.stop(timeout=10)
        monkeypatch.undo()
        reload_settings()


def test_a_failed_or_cancelled_decomposition_can_be_retried(
    api: ApiClient, managed: dict[str, Any], session: Session, llm_planner: FakeChatServer
) -> None:
    llm_planner.error(400, "context too long")  # refused: the planner fails at once
    made = submitted(api, managed["id"])
    assert planning.run_next("test-consumer", threading.Event())
    failed = api.get(f"{decompositions(managed['id'])}/{made['id']}").get_json()
    assert failed["status"] == "failed" and failed["attempts"] == 1
    assert_error(api.post(f"{decompositions(managed['id'])}/{made['id']}/cancel"), 409)

    llm_planner.answer(PLAN)  # the model is back
    retried = api.post(f"{decompositions(managed['id'])}/{made['id']}/retry")
    assert retried.status_code == 200
    body = retried.get_json()
    assert (body["status"], body["attempts"], body["error"]) == ("queued", 0, None)
    assert body["finished_at"] is None
    assert_error(api.post(f"{decompositions(managed['id'])}/{made['id']}/retry"), 409)
    assert planning.run_next("test-consumer", threading.Event())
    row = stored(session, made["id"])
    assert row.status == "succeeded" and row.attempts == 1
    assert task_count(session, managed["id"]) == len(row.task_ids or []) > 0
    assert event_kinds(session, managed["id"]) == [
        "decomposition.queued",
        "decomposition.failed",
        "decomposition.queued",
        "decomposition.succeeded",
    ]
    assert_error(api.post(f"{decompositions(managed['id'])}/{unknown_id()}/retry"), 404)


def test_a_retried_decomposition_discards_the_plan_of_its_cancelled_attempt(
    api: ApiClient, managed: dict[str, Any], session: Session
) -> None:
    made = submitted(api, managed["id"])
    cancelled = planning.claim_next("consumer-a")
    assert cancelled is not None
    api.post(f"{decompositions(managed['id'])}/{made['id']}/cancel")
    api.post(f"{decompositions(managed['id'])}/{made['id']}/retry")
    retried = planning.claim_next("consumer-b")
    assert retried is not None and retried.attempt == cancelled.attempt == 1
    # The cancelled attempt's planner comes back with a plan: not this attempt's to commit.
    assert planning.plan(cancelled, threading.Event()) == "discarded"
    assert task_count(session, managed["id"]) == 0
    assert planning.plan(retried, threading.Event()) == "succeeded"
    row = stored(session, made["id"])
    assert (row.claimed_by or "").startswith("consumer-b/")
    assert task_count(session, managed["id"]) == len(row.task_ids or []) > 0


def test_a_retry_queues_anew_its_wait_counting_from_the_retry(
    api: ApiClient, managed: dict[str, Any], session: Session
) -> None:
    old = submitted(api, managed["id"], "submitted yesterday")
    session.execute(
        update(Decomposition)
        .where(Decomposition.id == uuid.UUID(old["id"]))
        .values(
            created_at=text("now() - interval '1 day'"), queued_at=text("now() - interval '1 day'")
        )
    )
    session.commit()
    newer = submitted(api, managed["id"], "submitted just now")
    api.post(f"{decompositions(managed['id'])}/{old['id']}/cancel")
    retried = api.post(f"{decompositions(managed['id'])}/{old['id']}/retry").get_json()
    assert retried["queued_at"] > retried["created_at"]
    exposed = api.get("/metrics").get_data(as_text=True)
    [waited] = [
        float(line.split()[-1])
        for line in exposed.splitlines()
        if line.startswith("orch_decomposition_queued_seconds ")
    ]
    assert waited < 60  # not the day since it was first submitted
    # In the queue after what was queued before its retry.
    first = planning.claim_next("test-consumer")
    assert first is not None and str(first.id) == newer["id"]


def test_a_stopping_attempt_of_a_cancelled_decomposition_gives_nothing_back(
    api: ApiClient, managed: dict[str, Any], session: Session, llm_planner: FakeChatServer
) -> None:
    made = submitted(api, managed["id"])
    claimed = planning.claim_next("test-consumer")
    assert claimed is not None
    api.post(f"{decompositions(managed['id'])}/{made['id']}/cancel")
    stopping = threading.Event()
    stopping.set()  # the process is stopping when the planning begins
    assert planning.plan(claimed, stopping) == "discarded"
    assert stored(session, made["id"]).status == "cancelled"
    assert not llm_planner.requests  # no model call starts in a stopping process
