"""ORCH_RUN_TIMEOUT: an execution (or a review) that outlives it is a failed attempt, retried
or failing the task like any other; its agent is asked to stop, and what it returns later is
stale. Without it, a hung agent held its task, its worker's capacity and its stream entry for
ever, its heartbeat keeping them all alive."""
# ruff: noqa: F811

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest
from sqlalchemy import select

from db.engine import session_scope
from db.models import Task, TaskEvent, TaskStatus
from orchestration.agents.base import ExecutionResult, ReviewVerdict, TaskContext
from orchestration.config import reload_settings
from orchestration.consumer import AgentConsumer
from tests.integration.test_pipeline import (  # noqa: F401 (fixtures)
    active_team,
    fast_settings,
    new_task,
    run_until,
)
from tests.support.invariants import check_invariants


@pytest.fixture
def limited(fast_settings: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_RUN_TIMEOUT", "1")
    reload_settings()


class HangingExecutor:
    """Its first attempt at a task sleeps input_data["hang"] seconds, deaf to cancellation (as
    code blocked in a call that takes no timeout); later attempts return at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.runs: list[tuple[int, bool]] = []  # (attempt, cancelled when it returned)

    def execute(self, ctx: TaskContext) -> ExecutionResult:
        if ctx.attempt == 1:
            time.sleep(float(ctx.input_data.get("hang", 0)))
        with self.lock:
            self.runs.append((ctx.attempt, ctx.cancelled.is_set()))
        return ExecutionResult({"attempt": ctx.attempt}, tokens=1)


def task_row(task_id: uuid.UUID) -> Task:
    with session_scope() as s:
        task = s.execute(select(Task).where(Task.id == task_id)).scalar_one()
        s.expunge(task)
        return task


def errors_of(task_id: uuid.UUID, kind: str) -> list[Any]:
    with session_scope() as s:
        return [
            d.get("error")
            for d in s.execute(
                select(TaskEvent.data).where(TaskEvent.task_id == task_id, TaskEvent.kind == kind)
            ).scalars()
        ]


def test_a_run_past_the_time_limit_is_retried_while_its_agent_still_hangs(
    limited: None,
) -> None:
    team_id = active_team(workers=1, capacity=1)
    task = new_task(team_id, "hangs once", input_data={"hang": 6.0})
    executor = HangingExecutor()
    consumer = AgentConsumer(concurrency=2, executor=executor)
    consumer.start()
    try:
        # The second attempt runs on the other agent thread while the first still sleeps.
        run_until(team_id, lambda: task_row(task).status is TaskStatus.COMPLETED)
        row = task_row(task)
        assert (row.attempts, row.output_data) == (2, {"attempt": 2})
        assert errors_of(task, "task.retrying") == ["timed out after 1 s (ORCH_RUN_TIMEOUT)"]
        check_invariants(team_id)
        run_until(team_id, lambda: len(executor.runs) == 2)  # the hung one returns at last
    finally:
        consumer.stop()
    assert sorted(executor.runs) == [(1, True), (2, False)]
    row = task_row(task)  # its late result changed nothing
    assert (row.status, row.attempts, row.output_data) == (TaskStatus.COMPLETED, 2, {"attempt": 2})
    check_invariants(team_id)


class SlowReviewer:
    """Takes its time, but hears a request to stop."""

    def __init__(self) -> None:
        self.stopped: list[bool] = []

    def review(self, ctx: TaskContext, output: dict[str, Any]) -> ReviewVerdict:
        self.stopped.append(ctx.cancelled.wait(30))
        return ReviewVerdict(True, "fine")


def test_a_review_past_the_time_limit_fails_the_task_once_attempts_are_spent(
    limited: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORCH_MAX_ATTEMPTS", "1")
    reload_settings()
    team_id = active_team(workers=1, capacity=1)
    task = new_task(team_id, "judged", acceptance_criteria="is done")
    reviewer = SlowReviewer()
    consumer = AgentConsumer(concurrency=1, executor=HangingExecutor(), reviewer=reviewer)
    consumer.start()
    try:
        run_until(team_id, lambda: task_row(task).status is TaskStatus.FAILED)
        run_until(team_id, lambda: reviewer.stopped == [True])  # told to stop, it did
    finally:
        consumer.stop()
    row = task_row(task)
    assert row.error_message == "failed after 1 attempt(s): timed out after 1 s (ORCH_RUN_TIMEOUT)"
    check_invariants(team_id)


def test_a_hung_agent_does_not_take_its_process_capacity(limited: None) -> None:
    # One agent thread: the hung agent's spare thread runs everything else meanwhile.
    team_id = active_team(workers=1, capacity=3)
    hung = new_task(team_id, "hangs once", input_data={"hang": 12.0})
    others = [new_task(team_id, f"quick {n}") for n in range(2)]
    executor = HangingExecutor()
    consumer = AgentConsumer(concurrency=1, executor=executor)
    consumer.start()
    try:
        run_until(
            team_id,
            lambda: all(task_row(t).status is TaskStatus.COMPLETED for t in [hung, *others]),
        )
        # All done on the spare thread while the first agent still sleeps.
        assert (1, True) not in executor.runs
        assert consumer.agent_threads == 2
        check_invariants(team_id)
        run_until(team_id, lambda: (1, True) in executor.runs)  # it returns at last
        run_until(team_id, lambda: consumer.agent_threads == 1)  # and its thread ends
    finally:
        consumer.stop()
    row = task_row(hung)
    assert (row.status, row.attempts, row.output_data) == (TaskStatus.COMPLETED, 2, {"attempt": 2})
    check_invariants(team_id)


def test_a_stopping_consumer_does_not_wait_for_a_hung_agent(limited: None) -> None:
    team_id = active_team(workers=1, capacity=1)
    task = new_task(team_id, "hangs once", input_data={"hang": 30.0})
    executor = HangingExecutor()
    consumer = AgentConsumer(concurrency=1, executor=executor)
    consumer.start()
    try:
        run_until(team_id, lambda: task_row(task).status is TaskStatus.COMPLETED)
    finally:
        began = time.monotonic()
        consumer.stop()
        stopped_in = time.monotonic() - began
    # Its attempt is over: the stop waited for the rest, not for the agent's 30 s.
    assert stopped_in < 15, stopped_in
    assert executor.runs == [(2, False)]
    check_invariants(team_id)


def test_with_every_spare_taken_a_returning_agent_hands_its_spare_on(
    limited: None, caplog: pytest.LogCaptureFixture
) -> None:
    # One agent thread, so one spare: the second hung agent finds none, and waits for the
    # first to come back and hand its spare on.
    team_id = active_team(workers=1, capacity=3)
    first = new_task(team_id, "hangs first", priority=9, input_data={"hang": 6.0})
    second = new_task(team_id, "hangs second", priority=8, input_data={"hang": 10.0})
    quick = new_task(team_id, "quick", priority=1)
    executor = HangingExecutor()
    consumer = AgentConsumer(concurrency=1, executor=executor)
    consumer.start()
    try:
        run_until(team_id, lambda: "every spare agent thread is taken" in caplog.text)
        assert consumer.agent_threads == 2  # the first's spare runs the second: no third
        assert task_row(quick).status is not TaskStatus.COMPLETED  # no thread is free for it
        run_until(
            team_id,
            lambda: all(task_row(t).status is TaskStatus.COMPLETED for t in (first, second, quick)),
        )
        # The first came back and its thread took the second's place: the quick task and both
        # retries ran on it while the second still slept.
        assert sorted(executor.runs) == [(1, False), (1, True), (2, False), (2, False)]
        run_until(team_id, lambda: len(executor.runs) == 5)  # the second returns at last
        run_until(team_id, lambda: consumer.agent_threads == 1)
    finally:
        consumer.stop()
    assert consumer._short == 0
    check_invariants(team_id)


def test_an_agent_back_while_its_time_limit_is_recorded_finishes_once(
    limited: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The watcher records the timeout; the agent returns before the watcher gives it up: the
    # run records its own (stale) end, and the watcher adds none.
    team_id = active_team(workers=1, capacity=1)
    task = new_task(team_id, "back just in time")
    release = threading.Event()

    class Blocking:
        def execute(self, ctx: TaskContext) -> ExecutionResult:
            if ctx.attempt == 1:
                release.wait(30)
            return ExecutionResult({"attempt": ctx.attempt}, tokens=7)

    ends: list[tuple[str, str]] = []
    finished, failed = AgentConsumer._finished, AgentConsumer._execution_failed

    def record(self: AgentConsumer, entry: Any, run: Any, result: str, *rest: Any) -> None:
        ends.append((entry.entry_id, result))
        finished(self, entry, run, result, *rest)

    def back_meanwhile(self: AgentConsumer, entry: Any, *args: Any) -> str:
        result = failed(self, entry, *args)
        if threading.current_thread().name == "cancellations":
            release.set()
            deadline = time.monotonic() + 10
            while entry.entry_id in self._running and time.monotonic() < deadline:
                time.sleep(0.01)
        return result

    monkeypatch.setattr(AgentConsumer, "_finished", record)
    monkeypatch.setattr(AgentConsumer, "_execution_failed", back_meanwhile)
    consumer = AgentConsumer(concurrency=1, executor=Blocking())
    consumer.start()
    try:
        run_until(team_id, lambda: task_row(task).status is TaskStatus.COMPLETED)
    finally:
        release.set()
        consumer.stop()
    first = ends[0][0]
    assert [result for entry_id, result in ends if entry_id == first] == ["stale"]
    check_invariants(team_id)
