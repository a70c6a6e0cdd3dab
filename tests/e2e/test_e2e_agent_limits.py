"""Stopping agents, end to end with real `celery worker` processes: a cancelled task's agent
hears it while it runs, and a run past ORCH_RUN_TIMEOUT is a failed attempt retried while its
agent still hangs. Each scenario ends with check_invariants(team_id)."""

from __future__ import annotations

import uuid

import pytest

from orchestration import lifecycle
from tests.e2e.conftest import all_final, describe, task_rows, wait_until
from tests.e2e.test_e2e_pipeline import events_of, make_team, new_task
from tests.support.invariants import check_invariants
from tests.support.processes import Procs

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]


def status_of(team_id: uuid.UUID, task_id: uuid.UUID) -> str:
    return str(next(r.status for r in task_rows(team_id) if r.id == task_id))


def test_e2e_a_cancelled_running_task_frees_its_agent_at_once(workers: Procs) -> None:
    [worker] = workers.start_workers(1)
    workers.start_beat()
    team_id = make_team([1])
    long = new_task(team_id, "long", duration=60.0)
    wait_until(
        "the long task to run",
        lambda: status_of(team_id, long) == "in_progress",
        team_id,
        workers,
        timeout=30,
    )
    lifecycle.cancel_task(team_id, long)
    workers.wait_for_log(worker, "asking its agent to stop", timeout=10)
    workers.wait_for_log(worker, "run stopped: the task was cancelled", timeout=10)
    after = new_task(team_id, "after", duration=0.1)  # the freed capacity goes to it
    wait_until("the next task", all_final(team_id), team_id, workers, timeout=30)
    assert status_of(team_id, after) == "completed", describe(team_id)
    assert check_invariants(team_id) == {"cancelled": 1, "completed": 1}


def test_e2e_a_run_past_the_time_limit_is_retried_while_its_agent_hangs(
    workers: Procs,
) -> None:
    workers.env_vars.update(
        ORCH_RUN_TIMEOUT="1", ORCH_EXECUTOR="tests.fakes.callables:hangs_first_attempt"
    )
    [worker] = workers.start_workers(1)
    workers.start_beat()
    team_id = make_team([1])
    task = new_task(team_id, "hangs once", input_data={"hang": 8.0})
    wait_until("the second attempt", all_final(team_id), team_id, workers, timeout=30)
    [row] = task_rows(team_id)
    assert (row.status, row.attempts) == ("completed", 2), describe(team_id)
    [retried] = events_of(team_id, "task.retrying")
    assert retried.task_id == task
    workers.wait_for_log(worker, "timed out after 1 s (ORCH_RUN_TIMEOUT)", timeout=5)
    check_invariants(team_id)
    # The hung first attempt returns at last: stale, it changes nothing.
    workers.wait_for_log(worker, "run stopped: the task was cancelled", timeout=20)
    assert check_invariants(team_id) == {"completed": 1}


def test_e2e_a_hung_agent_neither_takes_capacity_nor_holds_up_its_workers_stop(
    workers: Procs,
) -> None:
    # One agent thread, whose first agent hangs a minute deaf to any request to stop.
    workers.env_vars.update(
        ORCH_RUN_TIMEOUT="1",
        ORCH_EXECUTOR="tests.fakes.callables:hangs_first_attempt",
        ORCH_AGENT_CONCURRENCY="1",
    )
    [worker] = workers.start_workers(1)
    workers.start_beat()
    team_id = make_team([3])
    hung = new_task(team_id, "hangs once", priority=9, input_data={"hang": 60.0})
    quick = [new_task(team_id, f"quick {n}") for n in range(3)]
    wait_until("the work around the hung agent", all_final(team_id), team_id, workers, timeout=30)
    workers.wait_for_log(worker, "a spare agent thread takes the place", timeout=5)
    assert {status_of(team_id, t) for t in [hung, *quick]} == {"completed"}, describe(team_id)
    assert check_invariants(team_id) == {"completed": 4}
    # A warm shutdown waits for the work in flight, not for the agent whose attempt is over.
    workers.stop(worker, timeout=20)
    assert worker.popen.returncode == 0, workers.tails()
    assert "Warm shutdown" in worker.log.read_text(errors="replace")
