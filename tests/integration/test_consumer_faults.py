"""The stream consumer under faults, against real PostgreSQL and Redis: a warm shutdown while
agents run, the database gone while an outcome commits, a dead consumer's entry behind many
live ones in the pending list, an entry of an earlier assignment, a task cancelled while it
runs, failed executions in the log, a database not migrated yet."""
# ruff: noqa: F811

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import pytest
import redis
from sqlalchemy import create_engine, select, text

from db import migrate
from db.engine import SCHEMA_BEHIND_MESSAGE, reset_engine, session_scope
from db.models import Task, TaskStatus
from orchestration import consumer as consumer_module
from orchestration import keys, lifecycle, orchestrator, streams
from orchestration.agents.base import ExecutionResult, TaskContext
from orchestration.config import reload_settings
from orchestration.consumer import CANCEL_POLL, AgentConsumer
from orchestration.logs import ContextFilter
from tests.integration.test_pipeline import (  # noqa: F401 (fixtures)
    PickyReviewer,
    RecordingExecutor,
    active_team,
    executor,
    fast_settings,
    new_task,
    run_until,
)
from tests.support.invariants import check_invariants


def task_row(task_id: uuid.UUID) -> Task:
    with session_scope() as s:
        task = s.execute(select(Task).where(Task.id == task_id)).scalar_one()
        s.expunge(task)
        return task


def wait_for(done: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def ran_once(executor: RecordingExecutor, team_id: uuid.UUID, task_id: uuid.UUID) -> None:
    assert len(executor.runs) == 1
    row = task_row(task_id)
    assert (row.status, row.attempts) == (TaskStatus.COMPLETED, 1)
    check_invariants(team_id)


def settled(task_id: uuid.UUID) -> bool:
    try:
        return task_row(task_id).status in (TaskStatus.COMPLETED, TaskStatus.FAILED)
    except Exception:  # the database is away for a moment in one of these tests
        return False


@contextmanager
def database_away(database: str) -> Iterator[None]:
    """No connection to the test database while inside: new ones refused, open ones ended."""
    name = urlsplit(database).path.lstrip("/")
    admin = create_engine(
        "postgresql+psycopg://postgres@127.0.0.1:5432/postgres", isolation_level="AUTOCOMMIT"
    )
    try:
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false'))
            conn.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
                {"n": name},
            )
        yield
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true'))
        admin.dispose()


def test_a_warm_shutdown_keeps_running_entries_claimed_until_their_outcomes_commit(
    fast_settings: None, executor: RecordingExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORCH_VISIBILITY_TIMEOUT", "0.6")
    reload_settings()
    team_id = active_team(workers=1, capacity=1)
    task = new_task(team_id, "long", input_data={"sleep": 2.0})
    leaving = AgentConsumer(concurrency=1, executor=executor, reviewer=PickyReviewer())
    staying = AgentConsumer(concurrency=1, executor=executor, reviewer=PickyReviewer())
    leaving.start()
    orchestrator.run_pass(team_id)
    wait_for(lambda: any(executor.running.values()))
    staying.start()  # reclaims whatever goes idle past the visibility timeout
    try:
        leaving.stop()  # while the run has ~2 s, several visibility timeouts, to go
        wait_for(lambda: settled(task))
        time.sleep(1.0)  # room for a wrongful reclaim to show
    finally:
        staying.stop()
    ran_once(executor, team_id, task)


def test_an_outcome_that_meets_the_database_away_is_held_and_committed_once_it_is_back(
    database: str, fast_settings: None, executor: RecordingExecutor
) -> None:
    team_id = active_team(workers=1, capacity=1)
    task = new_task(team_id, "finishes during an outage", input_data={"sleep": 0.5})
    consumer = AgentConsumer(concurrency=1, executor=executor, reviewer=PickyReviewer())
    consumer.start()
    try:
        orchestrator.run_pass(team_id)
        wait_for(lambda: any(executor.running.values()))
        with database_away(database):
            time.sleep(3.0)  # the run ends meanwhile; past the visibility timeout (2 s)
        wait_for(lambda: settled(task))
        time.sleep(2.5)  # a wrongful reclaim would run it again after the visibility timeout
    finally:
        consumer.stop()
    ran_once(executor, team_id, task)


def test_a_dead_consumers_entry_behind_many_live_ones_is_reclaimed(
    fast_settings: None, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORCH_VISIBILITY_TIMEOUT", "1")
    reload_settings()
    team_id = active_team(workers=6, capacity=4)
    for i in range(21):
        new_task(team_id, f"t{i}")
    orchestrator.run_pass(team_id)
    stream, group = keys.task_stream(team_id), keys.consumer_group(team_id)
    live = redis_client.xreadgroup(group, "live", {stream: ">"}, count=20)[0][1]
    dead = redis_client.xreadgroup(group, "dead", {stream: ">"}, count=1)[0][1]
    time.sleep(1.2)
    for entry_id, _ in live:  # the live consumer's heartbeat: idle again
        redis_client.xclaim(stream, group, "live", 0, [entry_id], justid=True)
    reclaimer = AgentConsumer(concurrency=1, executor=RecordingExecutor())
    taken: list[str] = []
    reclaimer._dispatch = lambda entries: taken.extend(e.entry_id for e in entries)  # type: ignore[method-assign]
    reclaimer._reclaim([team_id], 1)  # one reclaim round, room for one entry
    assert taken == [dead[0][0]]
    owners = {
        p["message_id"]: p["consumer"]
        for p in redis_client.xpending_range(stream, group, "-", "+", 100)
    }
    assert owners[dead[0][0]] == reclaimer.name
    assert {owners[e] for e, _ in live} == {"live"}


def test_each_failed_execution_is_logged_with_its_task(
    fast_settings: None, executor: RecordingExecutor, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.handler.addFilter(ContextFilter())
    team_id = active_team(workers=1, capacity=1)
    task = new_task(team_id, "doomed", input_data={"fail": 9})
    consumer = AgentConsumer(concurrency=1, executor=executor, reviewer=PickyReviewer())
    consumer.start()
    try:
        with caplog.at_level(logging.WARNING, logger="orchestration.consumer"):
            run_until(team_id, lambda: settled(task))
    finally:
        consumer.stop()
    lines = [
        (r.levelname, r.getMessage())
        for r in caplog.records
        if getattr(r, "task_id", None) == str(task) and "execution failed" in r.getMessage()
    ]
    assert lines == [
        ("WARNING", "execution failed (attempt 1 of 3): planned failure 1; retrying in 0.05 s"),
        ("WARNING", "execution failed (attempt 2 of 3): planned failure 2; retrying in 0.1 s"),
        ("ERROR", "execution failed (attempt 3 of 3): planned failure 3; the task fails"),
    ]


def test_an_entry_of_an_earlier_assignment_cannot_take_the_task_from_its_live_run(
    fast_settings: None,
    executor: RecordingExecutor,
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ORCH_VISIBILITY_TIMEOUT", "1")
    reload_settings()
    team_id = active_team(workers=1, capacity=1)
    task = new_task(team_id, "assigned twice", input_data={"sleep": 3.0})
    orchestrator.run_pass(team_id)
    stream, group = keys.task_stream(team_id), keys.consumer_group(team_id)
    # A process reads and claims the first assignment's entry, then dies holding it.
    [(entry_id, fields)] = redis_client.xreadgroup(group, "dead", {stream: ">"})[0][1]
    first = streams.Entry.parse(team_id, entry_id, fields)
    [claimed] = lifecycle.claim_many(
        [lifecycle.ClaimRequest(task, first.worker_id, "dead/1", first.assignment)]
    )
    assert claimed is not None
    lifecycle.cancel_task(team_id, task)
    lifecycle.retry_task(team_id, task)
    consumer = AgentConsumer(concurrency=2, executor=executor, reviewer=PickyReviewer())
    consumer.start()
    try:
        orchestrator.run_pass(team_id)  # the same worker again: a second entry
        wait_for(lambda: settled(task))  # the first entry went idle past the timeout meanwhile
    finally:
        consumer.stop()
    assert redis_client.xpending(stream, group)["pending"] == 0  # the old entry acknowledged
    ran_once(executor, team_id, task)


class PatientExecutor:
    """Runs a task for input_data["sleep"] seconds unless told to stop: (task, ran, stopped)."""

    def __init__(self) -> None:
        self.runs: list[tuple[uuid.UUID, float, bool]] = []

    def execute(self, ctx: TaskContext) -> ExecutionResult:
        began = time.monotonic()
        stopped = ctx.cancelled.wait(float(ctx.input_data.get("sleep", 0)))
        self.runs.append((ctx.task_id, time.monotonic() - began, stopped))
        return ExecutionResult({"done": True})


@pytest.mark.parametrize("check_every", [None, 120.0], ids=["checks", "doorbell"])
def test_a_task_cancelled_while_it_runs_has_its_agent_told_to_stop(
    fast_settings: None, monkeypatch: pytest.MonkeyPatch, check_every: float | None
) -> None:
    if check_every is not None:
        # The periodic check made rare: only the cancellation doorbell can stop the agent.
        monkeypatch.setattr(consumer_module, "CANCEL_POLL", check_every)
    team_id = active_team(workers=1, capacity=1)
    long = new_task(team_id, "long", input_data={"sleep": 30.0})
    executor = PatientExecutor()
    consumer = AgentConsumer(concurrency=1, executor=executor, reviewer=PickyReviewer())
    consumer.start()
    try:
        orchestrator.run_pass(team_id)
        wait_for(lambda: task_row(long).status is TaskStatus.IN_PROGRESS)
        lifecycle.cancel_task(team_id, long)
        after = new_task(team_id, "after")  # the freed capacity goes to it
        run_until(team_id, lambda: settled(after))
    finally:
        consumer.stop()
    (task, ran, stopped), (next_task, _, _) = executor.runs
    assert (task, stopped, next_task) == (long, True, after)
    assert ran < CANCEL_POLL + 2  # not the 30 s it would have run, nor the next check's wait
    assert task_row(long).status is TaskStatus.CANCELLED
    check_invariants(team_id)


def test_a_worker_started_before_the_migrations_says_so_once_not_every_second(
    database: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    empty = f"{database}_empty"
    migrate.drop_database(empty)
    migrate.ensure_database(empty)
    monkeypatch.setenv("DATABASE_URL", empty)
    reload_settings()
    reset_engine()
    consumer = AgentConsumer(concurrency=1, executor=RecordingExecutor())
    try:
        with caplog.at_level(logging.WARNING, logger="orchestration.consumer"):
            consumer.start()
            time.sleep(3.0)
            consumer.stop()
    finally:
        monkeypatch.undo()
        reload_settings()
        reset_engine()
        migrate.drop_database(empty)
    logged = [(r.levelname, r.getMessage(), r.exc_info is not None) for r in caplog.records]
    assert logged == [("ERROR", f"stream reader: {SCHEMA_BEHIND_MESSAGE}; retrying", False)]


def test_stop_returns_when_the_reader_outlives_its_wait(
    fast_settings: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The reader is still claiming (a slow round trip) when stop() gives up waiting for it and
    # shuts the agent threads: the entries it then cannot start are left for reclaim, and stop
    # does not wait for them for ever.
    team_id = active_team(workers=1, capacity=1)
    claim_many = lifecycle.claim_many
    claiming = threading.Event()

    def slow_claim(requests: list[lifecycle.ClaimRequest]) -> list[lifecycle.Claimed | None]:
        claiming.set()
        time.sleep(2.0)
        return claim_many(requests)

    monkeypatch.setattr(lifecycle, "claim_many", slow_claim)
    consumer = AgentConsumer(concurrency=1, executor=RecordingExecutor())
    consumer.start()
    new_task(team_id, "claimed slowly")
    run_until(team_id, claiming.is_set)
    stopper = threading.Thread(target=consumer.stop, kwargs={"timeout": 0.5}, daemon=True)
    stopper.start()
    stopper.join(10)
    assert not stopper.is_alive(), "stop() still waiting 10 s later"
