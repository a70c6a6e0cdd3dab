"""A pass asked for while another holds the team's pass is run, however many times the holder
has gone round already (DESIGN.md: an unblocked task never waits for the next beat tick)."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest
import redis
from sqlalchemy import text
from sqlalchemy.orm import Session

from db.engine import get_engine
from orchestration import keys, orchestrator, tasks
from orchestration.decomposition import create_task, list_tasks
from tests.factories import ManagerFactory, TeamFactory, WorkerFactory
from tests.support.invariants import check_invariants


class Broker:
    """Stands in for Celery: passes queued with orchestrate_team.apply_async wait here until
    the test runs them, as a worker would."""

    def __init__(self) -> None:
        self.queued: list[str] = []
        self.lock = threading.Lock()

    def apply_async(self, args: list[str], **_options: Any) -> None:
        with self.lock:
            self.queued.append(args[0])

    def run_queued(self) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = []
        while True:
            with self.lock:
                if not self.queued:
                    return results
                team = self.queued.pop(0)
            results.append(tasks.orchestrate_team(team))


@pytest.fixture
def broker(monkeypatch: pytest.MonkeyPatch) -> Broker:
    b = Broker()
    monkeypatch.setattr(tasks.orchestrate_team, "apply_async", b.apply_async)
    return b


def test_a_pass_asked_for_during_the_last_loop_still_runs(
    broker: Broker, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    team = TeamFactory(active=True)
    ManagerFactory(team=team)
    WorkerFactory(team=team, max_concurrent_tasks=20)
    team_id = uuid.UUID(str(team.id))
    assign = orchestrator._assign
    late: list[uuid.UUID] = []

    def assign_then_ask(session: Session, row: Any, result: orchestrator.PassResult) -> None:
        assign(session, row, result)
        if len(late) == orchestrator.MAX_LOOPS:
            return

        # Meanwhile another process creates a ready task; the pass it asks for finds the lock
        # held, so it flags this holder to go round again and returns.
        def other() -> None:
            late.append(create_task(team_id, {"title": f"late {len(late)}"}).id)
            assert [r["skipped"] for r in broker.run_queued()] == [True]

        thread = threading.Thread(target=other)
        thread.start()
        thread.join()

    monkeypatch.setattr(orchestrator, "_assign", assign_then_ask)
    holder = orchestrator.run_pass(team_id)
    monkeypatch.setattr(orchestrator, "_assign", assign)
    assert len(late) == orchestrator.MAX_LOOPS
    assert [a.task_id for a in holder.assigned] == late[:-1]
    # The last request came during the holder's last loop: a pass still follows it.
    broker.run_queued()
    assert {t.id: t.status.value for t in list_tasks(team_id)} == dict.fromkeys(late, "assigned")
    assert redis_client.get(keys.pass_running(team_id)) is None
    check_invariants(team_id, all_done=False)


def test_a_pass_broken_by_a_deadlock_passes_again() -> None:
    """A transaction that locks the worker, then the task, meets a pass that locks the task,
    then the worker: PostgreSQL breaks the deadlock by failing the pass (its deadlock_timeout
    is the shorter), and the pass goes round again instead of failing."""
    team = TeamFactory(active=True)
    ManagerFactory(team=team)
    worker = WorkerFactory(team=team, max_concurrent_tasks=1)
    team_id = uuid.UUID(str(team.id))
    task = create_task(team_id, {"title": "contended"}).id
    passed: list[object] = []
    with get_engine().connect() as other:
        other.execute(text("SET LOCAL deadlock_timeout = '10s'"))
        other.execute(
            text("SELECT id FROM team_members WHERE id = :w FOR UPDATE"), {"w": worker.id}
        )
        runner = threading.Thread(target=lambda: passed.append(run_or_error(team_id)))
        runner.start()
        time.sleep(0.3)  # the pass now holds the task and waits for the worker
        other.execute(text("UPDATE tasks SET updated_at = now() WHERE id = :t"), {"t": task})
        other.commit()
        runner.join(30)
    [result] = passed
    assert isinstance(result, orchestrator.PassResult), result
    assert [a.task_id for a in result.assigned] == [task]
    check_invariants(team_id, all_done=False)


def run_or_error(team_id: uuid.UUID) -> object:
    try:
        return orchestrator.run_pass(team_id)
    except Exception as exc:
        return exc
