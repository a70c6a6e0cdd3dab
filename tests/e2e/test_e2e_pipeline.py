"""The pipeline end to end: real `celery worker` and `celery beat` processes, a private
redis-server, the test database. Each scenario ends with check_invariants(team_id)."""

from __future__ import annotations

import threading
import time
import uuid
from collections import defaultdict
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import text

from db.engine import get_engine
from orchestration import lifecycle, orchestrator
from orchestration.decomposition import create_plan, create_task
from orchestration.teams import add_member, create_team
from tests.e2e.conftest import all_final, describe, task_rows, wait_until
from tests.support.invariants import check_invariants
from tests.support.plans import DIAMOND_AND_HIERARCHY
from tests.support.processes import Procs
from tests.support.services import RedisServer

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]


def make_team(capacities: list[int], *, start: bool = True) -> uuid.UUID:
    team = create_team(f"e2e-{uuid.uuid4().hex[:6]}")
    team_id = uuid.UUID(str(team.id))
    add_member(team_id, "manager", agent_id="manager")
    for i, capacity in enumerate(capacities):
        add_member(team_id, "worker", max_concurrent_tasks=capacity, agent_id=f"worker-{i}")
    if start:
        lifecycle.start_team(team_id)
    return team_id


def new_task(
    team_id: uuid.UUID, title: str, duration: float | None = None, **data: Any
) -> uuid.UUID:
    if duration is not None:
        data["input_data"] = {"simulate": {"duration": duration}}
    return uuid.UUID(str(create_task(team_id, {"title": title, **data}).id))


def status_counts(team_id: uuid.UUID) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for row in task_rows(team_id):
        counts[row.status] += 1
    return dict(counts)


def events_of(team_id: uuid.UUID, kind: str) -> list[Any]:
    with get_engine().connect() as conn:
        return list(
            conn.execute(
                text(
                    "SELECT id, task_id, created_at FROM task_events "
                    "WHERE team_id = :t AND kind = :k ORDER BY id"
                ),
                {"t": team_id, "k": kind},
            ).all()
        )


def assert_each_task_assigned_once(team_id: uuid.UUID) -> None:
    per_task: dict[uuid.UUID, int] = defaultdict(int)
    for event in events_of(team_id, "task.assigned"):
        per_task[event.task_id] += 1
    twice = {task: n for task, n in per_task.items() if n != 1}
    assert not twice, f"tasks assigned more than once: {twice}"


# -- 1. dependency order ---------------------------------------------------------------------


def test_e2e_diamond_and_hierarchy_complete_in_dependency_order(workers: Procs) -> None:
    workers.start_workers(2)
    workers.start_beat()
    team_id = make_team([2, 2, 2])
    tasks = create_plan(team_id, DIAMOND_AND_HIERARCHY, max_depth=3)
    assert len(tasks) == 9
    wait_until("the plan to finish", all_final(team_id), team_id, workers, timeout=60)
    counts = check_invariants(team_id)
    assert counts == {"completed": 9}, describe(team_id)

    rows = {r.id: r for r in task_rows(team_id)}
    by_title = {r.title: r for r in rows.values()}
    children: dict[uuid.UUID, list[uuid.UUID]] = defaultdict(list)
    for r in rows.values():
        if r.parent_task_id is not None:
            children[r.parent_task_id].append(r.id)

    def leaves(task_id: uuid.UUID) -> list[Any]:
        if not children[task_id]:
            return [rows[task_id]]
        return [leaf for child in children[task_id] for leaf in leaves(child)]

    with get_engine().connect() as conn:
        edges = conn.execute(
            text(
                "SELECT d.task_id, d.depends_on_task_id FROM task_dependencies d "
                "JOIN tasks t ON t.id = d.task_id WHERE t.team_id = :t"
            ),
            {"t": team_id},
        ).all()
    assert len(edges) == 5
    # Depending on a task (summary or not) holds back every leaf below the dependent until
    # every leaf below the dependency has completed.
    for task_id, dep_id in edges:
        for leaf in leaves(task_id):
            for dep_leaf in leaves(dep_id):
                assert leaf.start_time is not None and dep_leaf.completion_time is not None
                assert leaf.start_time >= dep_leaf.completion_time, (
                    f"{leaf.title} started {leaf.start_time} before {dep_leaf.title} "
                    f"completed {dep_leaf.completion_time}"
                )
    # Summary tasks complete after (and only after) all their subtasks.
    for parent, kids in children.items():
        for kid in kids:
            assert rows[parent].completion_time >= rows[kid].completion_time
    assert by_title["D11"].start_time >= max(
        by_title["B"].completion_time, by_title["C"].completion_time
    )
    assert by_title["D2"].start_time >= by_title["D11"].completion_time
    # Only leaves run, each once.
    started = events_of(team_id, "task.started")
    assert sorted(rows[e.task_id].title for e in started) == ["A1", "B", "C", "D11", "D2"]
    assert all(r.attempts == 1 for r in rows.values() if not r.is_summary)
    assert_each_task_assigned_once(team_id)


# -- 2. pause and resume ---------------------------------------------------------------------


def test_e2e_pause_holds_new_assignments_and_resume_continues(workers: Procs) -> None:
    workers.start_workers(1)
    workers.start_beat()
    team_id = make_team([2])
    ids = [new_task(team_id, f"t{i}", duration=1.0, priority=9 - i) for i in range(5)]

    def in_flight() -> int:
        counts = status_counts(team_id)
        return counts.get("assigned", 0) + counts.get("in_progress", 0)

    wait_until("two tasks in flight", lambda: in_flight() == 2, team_id, workers, timeout=30)
    lifecycle.pause_team(team_id)
    # Work in flight finishes while the team is paused.
    wait_until("in-flight work to finish", lambda: in_flight() == 0, team_id, workers, timeout=30)
    finished = status_counts(team_id).get("completed", 0)
    assert finished >= 2, describe(team_id)
    assigned_before = len(events_of(team_id, "task.assigned"))
    # Several beat ticks (every 0.5 s) and manual passes: nothing new is assigned.
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:
        orchestrator.run_pass(team_id)
        time.sleep(0.25)
    assert len(events_of(team_id, "task.assigned")) == assigned_before, describe(team_id)
    counts = status_counts(team_id)
    assert counts.get("pending", 0) == len(ids) - finished, describe(team_id)
    assert counts.get("completed", 0) == finished
    lifecycle.resume_team(team_id)
    wait_until("the rest after resume", all_final(team_id), team_id, workers, timeout=40)
    assert check_invariants(team_id) == {"completed": len(ids)}, describe(team_id)
    assert_each_task_assigned_once(team_id)


# -- 3. a worker killed mid-task ---------------------------------------------------------------


def test_e2e_sigkill_mid_task_every_task_completes_once(workers: Procs) -> None:
    w1, w2 = workers.start_workers(2)
    workers.start_beat()
    team_id = make_team([2, 2])
    ids = [new_task(team_id, f"slow{i}", duration=2.0) for i in range(6)]

    def held_by_w1() -> bool:
        # A claim token is "<host>:<pid>:<rand>/<entry>/<rand>": the consumer's process id.
        return any(
            r.status == "in_progress" and r.claim and f":{w1.pid}:" in r.claim
            for r in task_rows(team_id)
        )

    wait_until("worker 1 to hold a running task", held_by_w1, team_id, workers, timeout=30)
    victims = {
        r.id
        for r in task_rows(team_id)
        if r.status == "in_progress" and r.claim and f":{w1.pid}:" in r.claim
    }
    assert victims
    workers.kill(w1)
    assert w2.popen.poll() is None
    wait_until("every task to finish", all_final(team_id), team_id, workers, timeout=90)
    assert check_invariants(team_id) == {"completed": len(ids)}, describe(team_id)
    rows = {r.id: r for r in task_rows(team_id)}
    # The killed worker's tasks ran again after their entries were reclaimed.
    for victim in victims:
        assert rows[victim].attempts >= 2, describe(team_id)
        assert f":{w1.pid}:" not in (rows[victim].claim or "")
    assert_each_task_assigned_once(team_id)


# -- 4. Redis loses everything -----------------------------------------------------------------


def test_e2e_flushall_mid_run_every_task_completes_once(
    workers: Procs, redis_server: RedisServer
) -> None:
    workers.start_workers(2)  # 2 agent threads each: 4 tasks run, the rest wait in the stream
    workers.start_beat()
    team_id = make_team([4, 4])
    ids = [new_task(team_id, f"t{i}", duration=1.5) for i in range(12)]

    def waiting_in_stream() -> bool:
        counts = status_counts(team_id)
        return counts.get("in_progress", 0) >= 2 and counts.get("assigned", 0) >= 2

    wait_until("running and queued entries", waiting_in_stream, team_id, workers, timeout=30)
    lost = {r.id for r in task_rows(team_id) if r.status == "assigned"}
    redis_server.flushall()
    wait_until("every task to finish", all_final(team_id), team_id, workers, timeout=90)
    assert check_invariants(team_id) == {"completed": len(ids)}, describe(team_id)
    assert_each_task_assigned_once(team_id)
    # The assignments Redis lost were re-emitted by reconciliation, not re-assigned.
    rows = {r.id: r for r in task_rows(team_id)}
    assert all(rows[t].status == "completed" for t in lost)
    assert "re-emitting" in workers.all_logs(), workers.tails()


# -- 5. concurrent passes never overfill -------------------------------------------------------


def test_e2e_two_beats_and_manual_passes_never_overfill(workers: Procs) -> None:
    capacities = [1, 2, 3]
    workers.env_vars["ORCH_AGENT_CONCURRENCY"] = "4"
    workers.start_workers(2)
    workers.start_beat()
    workers.start_beat()
    team_id = make_team(capacities)
    total = 24
    for i in range(total):
        new_task(team_id, f"t{i}", duration=0.4, priority=1 + i % 9)

    stop = threading.Event()
    errors: list[BaseException] = []
    samples: list[tuple[str, int, int, int]] = []

    def hammer() -> None:
        try:
            while not stop.is_set():
                orchestrator.run_pass(team_id)
                time.sleep(0.01)
        except BaseException as exc:  # reported in the main thread
            errors.append(exc)

    def sample() -> None:
        try:
            with get_engine().connect() as conn:
                while not stop.is_set():
                    rows = conn.execute(
                        text(
                            "SELECT m.agent_id, m.current_workload, m.max_concurrent_tasks, "
                            "count(t.id) FILTER (WHERE t.status IN "
                            "('assigned', 'in_progress', 'review')) AS in_flight "
                            "FROM team_members m LEFT JOIN tasks t ON t.assigned_to = m.id "
                            "WHERE m.team_id = :t AND m.role = 'worker' GROUP BY m.id"
                        ),
                        {"t": team_id},
                    ).all()
                    conn.commit()
                    samples.extend(
                        (r.agent_id, r.current_workload, r.max_concurrent_tasks, r.in_flight)
                        for r in rows
                    )
                    time.sleep(0.02)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    threads.append(threading.Thread(target=sample))
    for thread in threads:
        thread.start()
    try:
        wait_until("every task to finish", all_final(team_id), team_id, workers, timeout=90)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert not errors, errors
    assert samples
    over = [s for s in samples if s[1] > s[2] or s[3] > s[2]]
    assert not over, f"worker over capacity (agent, workload, max, in flight): {over[:10]}"
    # Capacity was actually used: the big worker had more than one task at once.
    peak: dict[str, int] = defaultdict(int)
    for agent, _, _, in_flight in samples:
        peak[agent] = max(peak[agent], in_flight)
    assert max(peak.values()) >= 2, dict(peak)

    assert check_invariants(team_id) == {"completed": total}, describe(team_id)
    assert_each_task_assigned_once(team_id)
    # From start and completion times: never more running at once than the capacity.
    with get_engine().connect() as conn:
        members: dict[uuid.UUID, int] = dict(
            conn.execute(
                text("SELECT id, max_concurrent_tasks FROM team_members WHERE team_id = :t"),
                {"t": team_id},
            ).all()
        )
    runs: dict[uuid.UUID, list[tuple[datetime, int]]] = defaultdict(list)
    for r in task_rows(team_id):
        runs[r.assigned_to].append((r.start_time, 1))
        runs[r.assigned_to].append((r.completion_time, -1))
    for member, points in runs.items():
        running, worst = 0, 0
        for _, delta in sorted(points):  # at equal times an end (-1) sorts before a start
            running += delta
            worst = max(worst, running)
        assert worst <= members[member], f"member {member} ran {worst} > {members[member]}"
