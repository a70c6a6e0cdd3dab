"""The pipeline's services against real PostgreSQL and Redis, with the stream consumer running
in this process (tests/e2e runs it in real `celery worker` processes)."""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from functools import partial
from typing import Any

import pytest
import redis
from sqlalchemy import event, select, text

from db.engine import get_engine, session_scope
from db.models import Message, Task, TaskEvent, TaskStatus, Team, TeamMember, TeamStatus
from db.queries import Q
from orchestration import dependencies, keys, lifecycle, orchestrator, streams, teams
from orchestration.agents.base import ExecutionFailed, ExecutionResult, ReviewVerdict, TaskContext
from orchestration.config import reload_settings
from orchestration.consumer import AgentConsumer
from orchestration.decomposition import create_plan, create_task, list_tasks
from orchestration.dependencies import add_dependencies, add_dependency, remove_dependency
from orchestration.errors import (
    DependencyCycle,
    InvalidInput,
    InvalidTransition,
    SelfDependency,
)
from orchestration.locks import lock_graph
from tests.factories import ManagerFactory, TeamFactory, WorkerFactory
from tests.support.invariants import check_invariants
from tests.support.plans import DIAMOND_AND_HIERARCHY
from tests.support.services import wait_for_a_lock_wait


class RecordingExecutor:
    """Runs tasks by their input_data: {"sleep": s, "fail": n first attempts}."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.runs: list[tuple[uuid.UUID, str, float, float]] = []
        self.running: dict[str, int] = {}
        self.peak: dict[str, int] = {}

    def execute(self, ctx: TaskContext) -> ExecutionResult:
        agent = ctx.agent.agent_id
        with self.lock:
            self.running[agent] = self.running.get(agent, 0) + 1
            self.peak[agent] = max(self.peak.get(agent, 0), self.running[agent])
        start = time.time()
        try:
            time.sleep(float(ctx.input_data.get("sleep", 0.0)))
            if ctx.attempt <= int(ctx.input_data.get("fail", 0)):
                raise ExecutionFailed(f"planned failure {ctx.attempt}", tokens=5)
            return ExecutionResult(
                {"result": f"{ctx.title} by {agent}", "revision": ctx.revision},
                tokens=10,
                cost=Decimal("0.001"),
            )
        finally:
            with self.lock:
                self.running[agent] -= 1
                self.runs.append((ctx.task_id, agent, start, time.time()))


class PickyReviewer:
    """Rejects until the output's revision reaches input_data["reject"]."""

    def review(self, ctx: TaskContext, output: dict[str, Any]) -> ReviewVerdict:
        wanted = int(ctx.input_data.get("reject", 0))
        if int(output.get("revision", 0)) >= wanted:
            return ReviewVerdict(True, "meets every criterion", tokens=3)
        return ReviewVerdict(False, f"revision {output.get('revision')} is not enough", tokens=3)


@pytest.fixture
def fast_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("ORCH_VISIBILITY_TIMEOUT", "2")
    monkeypatch.setenv("ORCH_RETRY_BACKOFF", "0.05")
    monkeypatch.setenv("ORCH_RECONCILE_INTERVAL", "0.5")
    reload_settings()
    yield
    monkeypatch.undo()
    reload_settings()


@pytest.fixture
def executor() -> RecordingExecutor:
    return RecordingExecutor()


@pytest.fixture
def consumer(fast_settings: None, executor: RecordingExecutor) -> Iterator[AgentConsumer]:
    c = AgentConsumer(concurrency=4, executor=executor, reviewer=PickyReviewer())
    c.start()
    yield c
    c.stop()


def active_team(workers: int = 2, capacity: int = 2) -> uuid.UUID:
    team = TeamFactory(active=True)
    ManagerFactory(team=team)
    for _ in range(workers):
        WorkerFactory(team=team, max_concurrent_tasks=capacity)
    return uuid.UUID(str(team.id))


def statuses(team_id: uuid.UUID) -> dict[str, int]:
    with get_engine().connect() as conn:
        return dict(
            conn.execute(
                text("SELECT status, count(*) FROM tasks WHERE team_id = :t GROUP BY status"),
                {"t": team_id},
            ).all()
        )


def run_until(
    team_id: uuid.UUID, done: Callable[[], bool], timeout: float = 20.0, beat: float = 0.5
) -> None:
    """Drive the team like beat does (a pass every `beat` seconds) until done()."""
    deadline = time.monotonic() + timeout
    next_beat = 0.0
    while time.monotonic() < deadline:
        if done():
            return
        if time.monotonic() >= next_beat:
            orchestrator.run_pass(team_id)
            orchestrator.reconcile(team_id)
            next_beat = time.monotonic() + beat
        time.sleep(0.02)
    with get_engine().connect() as conn:
        errors = conn.execute(
            text("SELECT title, error_message FROM tasks WHERE team_id = :t AND status = 'failed'"),
            {"t": team_id},
        ).all()
    raise AssertionError(f"not done in {timeout}s: {statuses(team_id)}; failures: {errors}")


def all_final(team_id: uuid.UUID) -> Callable[[], bool]:
    def check() -> bool:
        return set(statuses(team_id)) <= {"completed", "failed", "cancelled"}

    return check


def new_task(team_id: uuid.UUID, title: str, **data: Any) -> uuid.UUID:
    return create_task(team_id, {"title": title, **data}).id


# -- the pass ----------------------------------------------------------------------------------


def test_pass_assigns_best_first_within_capacity_and_logs_why(redis_client: redis.Redis) -> None:
    team = TeamFactory(active=True)
    ManagerFactory(team=team)
    coder = WorkerFactory(team=team, specialization="Technical Executor", max_concurrent_tasks=1)
    writer = WorkerFactory(team=team, specialization="Content Creator", max_concurrent_tasks=1)
    low = new_task(team.id, "low", priority=1, required_skills=["writing"])
    code = new_task(team.id, "code", priority=9, required_skills=["coding"])
    docs = new_task(team.id, "docs", priority=8, required_skills=["writing"])

    result = orchestrator.run_pass(team.id)

    assert {a.task_id for a in result.assigned} == {code, docs}
    with session_scope() as s:
        tasks = {t.id: t for t in s.scalars(select(Task).where(Task.team_id == team.id))}
        assert tasks[code].assigned_to == coder.id and tasks[code].status is TaskStatus.ASSIGNED
        assert tasks[docs].assigned_to == writer.id
        assert tasks[low].status is TaskStatus.PENDING
        loads = {m.id: m.current_workload for m in s.scalars(select(TeamMember))}
        assert loads[coder.id] == 1 and loads[writer.id] == 1
        log = {m.task_id: m for m in s.scalars(select(Message))}
        assert log[code].message_type == "task_assignment"
        assert log[code].content.startswith(f"Assigned to {coder.agent_id} (Technical Executor)")
        meta = log[code].meta or {}
        assert set(meta["breakdown"]) == {"skill", "workload", "success_rate"}
        assert meta["breakdown"]["skill"] == pytest.approx(0.9)
    entries = redis_client.xrange(keys.task_stream(team.id))
    assert [e[1]["task_id"] for e in entries] == [str(code), str(docs)]
    seed_fields = {"task_id", "team_id", "worker_id", "priority", "timestamp"}
    assert set(entries[0][1]) == seed_fields | {"assignment"}
    assert entries[0][1]["assignment"] == str(tasks[code].assignment)
    check_invariants(team.id, all_done=False)


def test_each_assignment_counts_before_the_next_task_is_scored() -> None:
    team_id = active_team(workers=2, capacity=2)
    for i in range(10):
        new_task(team_id, f"t{i}")
    result = orchestrator.run_pass(team_id)
    assert len(result.assigned) == 4
    with session_scope() as s:
        loads = sorted(
            m.current_workload for m in s.scalars(select(TeamMember)) if m.role == "worker"
        )
    assert loads == [2, 2]
    check_invariants(team_id, all_done=False)


def test_inactive_or_paused_team_gets_no_assignments() -> None:
    team = TeamFactory()
    WorkerFactory(team=team)
    new_task(team.id, "waiting")
    assert orchestrator.run_pass(team.id).assigned == []
    lifecycle.start_team(team.id)
    lifecycle.pause_team(team.id)
    assert orchestrator.run_pass(team.id).assigned == []
    lifecycle.resume_team(team.id)
    assert len(orchestrator.run_pass(team.id).assigned) == 1
    with pytest.raises(InvalidTransition):
        lifecycle.start_team(team.id)


def test_concurrent_passes_never_double_assign_or_overfill() -> None:
    team_id = active_team(workers=3, capacity=2)
    for i in range(40):
        new_task(team_id, f"t{i}")
    barrier = threading.Barrier(6)
    results: list[orchestrator.PassResult] = []

    def go() -> None:
        barrier.wait()
        results.append(orchestrator.run_pass(team_id))

    threads = [threading.Thread(target=go) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assigned = [a.task_id for r in results for a in r.assigned]
    assert len(assigned) == len(set(assigned)) == 6
    check_invariants(team_id, all_done=False)


@pytest.fixture
def pass_attempts() -> Iterator[Callable[[], int]]:
    """How many times a pass has tried the pass lock, from any session of this process."""
    attempts = [0]

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "'pass:'" in statement:
            attempts[0] += 1

    engine = get_engine()
    event.listen(engine, "before_cursor_execute", seen)
    yield lambda: attempts[0]
    event.remove(engine, "before_cursor_execute", seen)


def test_a_pass_asked_for_while_another_runs_is_never_lost(
    redis_client: redis.Redis, pass_attempts: Callable[[], int]
) -> None:
    team_id = active_team(workers=1, capacity=2)
    with session_scope() as holder:
        # Another process's pass, which has read no ready task yet and not taken the flag.
        assert holder.execute(Q["pass_start"], {"team_id": team_id}).one().locked
        orchestrator._mark_running(team_id)
        task = new_task(team_id, "ready while the pass runs")
        skipped = orchestrator.run_pass(team_id)
        assert skipped.skipped and not skipped.assigned
        # The holder is sure to see the flag: no second attempt.
        assert pass_attempts() == 2
        assert redis_client.get(keys.pass_again(team_id)) is not None
    assert orchestrator._deliver(team_id, [], []) is True
    assert redis_client.get(keys.pass_running(team_id)) is None
    assert [a.task_id for a in orchestrator.run_pass(team_id).assigned] == [task]
    check_invariants(team_id, all_done=False)


def test_a_pass_retries_when_the_holder_may_have_taken_the_flag_already(
    pass_attempts: Callable[[], int],
) -> None:
    team_id = active_team(workers=1, capacity=2)
    with session_scope() as holder:
        # A holder past its flag: no running mark, so the flag may never be seen.
        assert holder.execute(Q["pass_start"], {"team_id": team_id}).one().locked
        assert orchestrator.run_pass(team_id).skipped
        assert pass_attempts() == 3  # the holder's, then ours twice
    # A holder that marks and then delivers sees the flag we left, and clears its mark, so
    # the next flagger retries rather than trust a pass that is over.
    with session_scope() as holder:
        assert holder.execute(Q["pass_start"], {"team_id": team_id}).one().locked
        orchestrator._mark_running(team_id)
    assert orchestrator._deliver(team_id, [], []) is True
    assert orchestrator._flag_again(team_id) is False


# -- dependencies and cycles -------------------------------------------------------------------


def test_cycles_are_refused_including_through_the_hierarchy() -> None:
    team_id = active_team()
    a, b, c = (new_task(team_id, x) for x in "abc")
    add_dependency(team_id, b, a)
    add_dependency(team_id, c, b)
    with pytest.raises(DependencyCycle) as cycle:
        add_dependency(team_id, a, c)
    assert cycle.value.cycle == [str(a), str(c), str(b), str(a)]
    with pytest.raises(SelfDependency):
        add_dependency(team_id, a, a)
    parent = new_task(team_id, "parent")
    child = new_task(team_id, "child", parent_task_id=parent)
    with pytest.raises(DependencyCycle):
        add_dependency(team_id, child, parent)
    with pytest.raises(DependencyCycle):
        add_dependency(team_id, parent, child)
    edge, created = add_dependency(team_id, b, a)
    assert not created and edge.task_id == b


def test_each_way_of_adding_an_edge_records_and_publishes_its_events(
    redis_client: redis.Redis,
) -> None:
    """An ordered edge (one statement), an edge against the ranks (the search), an edge on a
    summary task (its subtasks wait too), and an edge that exists: the same events in
    task_events and on the team's stream, none for the existing edge."""
    team_id = active_team()
    a, b = new_task(team_id, "a"), new_task(team_id, "b")
    parent = new_task(team_id, "parent")
    child = new_task(team_id, "child", parent_task_id=parent)
    later = new_task(team_id, "later")
    add_dependency(team_id, b, a)  # ordered: b was created after a
    add_dependency(team_id, a, later)  # against the ranks: a moves above later
    add_dependency(team_id, parent, later)
    add_dependency(team_id, b, a)  # exists: nothing recorded
    with session_scope() as session:
        rows = session.execute(
            select(TaskEvent.kind, TaskEvent.task_id, TaskEvent.data)
            .where(
                TaskEvent.team_id == team_id,
                TaskEvent.kind.in_(["task.blocked", "dependency.added"]),
            )
            .order_by(TaskEvent.id)
        ).all()
    recorded = [(r.kind, r.task_id, r.data) for r in rows]
    assert recorded[:4] == [
        ("task.blocked", b, {"by": str(a)}),
        ("dependency.added", b, {"depends_on": str(a)}),
        ("task.blocked", a, {"by": str(later)}),
        ("dependency.added", a, {"depends_on": str(later)}),
    ]
    assert sorted(recorded[4:], key=str) == sorted(
        [
            ("dependency.added", parent, {"depends_on": str(later)}),
            ("task.blocked", parent, {"by": str(later)}),
            ("task.blocked", child, {"by": str(later)}),
        ],
        key=str,
    )
    published = [
        (fields["event"], json.loads(fields["data"]).get("task_id"))
        for _, fields in redis_client.xrange(keys.events(team_id))
        if fields["event"] in ("task.blocked", "dependency.added")
    ]
    assert published == [(kind, str(task)) for kind, task, _ in recorded]
    statuses = dict(
        (t.id, t.status) for t in list_tasks(team_id) if t.id in (a, b, parent, child, later)
    )
    assert statuses == {
        a: TaskStatus.BLOCKED,
        b: TaskStatus.BLOCKED,
        parent: TaskStatus.BLOCKED,
        child: TaskStatus.BLOCKED,
        later: TaskStatus.PENDING,
    }
    check_invariants(team_id, all_done=False)


def started(call: Callable[[], object]) -> tuple[threading.Thread, dict[str, Any]]:
    """call() running in a thread of its own; what it returned or raised lands in the dict."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = call()
        except Exception as exc:  # the test reads it
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def test_concurrent_cycle_attempts_leave_the_graph_acyclic() -> None:
    team_id = active_team()
    ids = [new_task(team_id, f"n{i}") for i in range(8)]
    pairs = [(ids[i], ids[(i + 1) % 8]) for i in range(8)] + [
        (ids[i + 1], ids[i]) for i in range(7)
    ]
    barrier = threading.Barrier(len(pairs))
    outcomes: list[str] = []

    def attempt(task: uuid.UUID, dep: uuid.UUID) -> None:
        barrier.wait()
        try:
            add_dependency(team_id, task, dep)
            outcomes.append("added")
        except DependencyCycle:
            outcomes.append("cycle")

    threads = [threading.Thread(target=attempt, args=p) for p in pairs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert "cycle" in outcomes
    with get_engine().connect() as conn:
        edges = conn.execute(
            text("SELECT task_id, depends_on_task_id FROM task_dependencies")
        ).all()
    adjacency: dict[uuid.UUID, list[uuid.UUID]] = {}
    for task, dep in edges:
        adjacency.setdefault(task, []).append(dep)
    from orchestration.graph import find_cycle

    assert find_cycle(adjacency) is None
    check_invariants(team_id, all_done=False)


def test_concurrent_single_edges_share_statements_each_with_its_own_outcome(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """add_dependency calls of one process that arrive while their team's usual-edge
    statements are busy go in together, one statement and one commit for many; each caller
    still gets its own edge or its own error, and counts and events are as if one by one."""
    team_id = active_team()
    ids = [new_task(team_id, f"t{i}") for i in range(10)]
    stranger = new_task(active_team(), "of another team")
    calls = [
        (ids[9], ids[0]),
        (ids[9], ids[1]),
        (ids[9], ids[2]),  # one task waits for three
        (ids[8], ids[0]),
        (ids[8], ids[0]),  # the same edge twice
        (ids[7], ids[3]),
        (ids[6], ids[3]),
        (ids[1], ids[5]),  # against the ranks: the general path
        (ids[5], stranger),  # not a task of this team: its caller alone is refused
    ]
    batches: list[int] = []
    statement = dependencies.rows_of_generic_plan

    def recorded(query: Any, params: dict[str, Any]) -> list[Any]:
        batches.append(len(params["task_ids"]))
        return statement(query, params)

    def queued() -> int:
        return len(dependencies._ordered_edges._waiting.get(team_id, ()))

    monkeypatch.setattr(dependencies, "rows_of_generic_plan", recorded)
    with session_scope() as holder:
        lock_graph(holder, team_id)  # alone: each statement of the team waits for it
        callers = [started(partial(add_dependency, team_id, *p)) for p in calls]
        deadline = time.monotonic() + 10
        while sum(batches) + queued() < len(calls):
            assert time.monotonic() < deadline, (batches, queued())
            time.sleep(0.01)
    for thread, _ in callers:
        thread.join(10)
    outcomes: list[Any] = [outcome.get("result", outcome.get("error")) for _, outcome in callers]
    assert len(batches) <= 5 and max(batches) > 1, batches  # 1 waited, then the rest
    for n in (0, 1, 2, 5, 6, 7):
        edge, created = outcomes[n]
        assert created and (edge.task_id, edge.depends_on_task_id) == calls[n]
    twice = outcomes[3:5]
    assert sorted(created for _, created in twice) == [False, True]
    assert twice[0][0].id == twice[1][0].id
    assert isinstance(outcomes[8], InvalidInput)
    with get_engine().connect() as conn:
        unmet: dict[uuid.UUID, int] = dict(
            conn.execute(
                text("SELECT id, unmet_dependencies FROM tasks WHERE team_id = :t"), {"t": team_id}
            ).all()
        )
        logged = conn.execute(
            text(
                "SELECT kind, task_id, count(*) FROM task_events "
                "WHERE team_id = :t AND kind IN ('dependency.added', 'task.blocked') "
                "GROUP BY kind, task_id"
            ),
            {"t": team_id},
        ).all()
    assert [unmet[ids[n]] for n in (9, 8, 7, 6, 1)] == [3, 1, 1, 1, 1]
    per_task = {(kind, task): count for kind, task, count in logged}
    assert per_task == {
        **{("dependency.added", ids[n]): c for n, c in ((9, 3), (8, 1), (7, 1), (6, 1), (1, 1))},
        **{("task.blocked", ids[n]): 1 for n in (9, 8, 7, 6, 1)},
    }
    published = [
        fields["event"]
        for _, fields in redis_client.xrange(keys.events(team_id))
        if fields["event"] in ("dependency.added", "task.blocked")
    ]
    assert sorted(published) == ["dependency.added"] * 7 + ["task.blocked"] * 5
    check_invariants(team_id, all_done=False)


def one_edge(team_id: uuid.UUID, task: uuid.UUID, dep: uuid.UUID) -> bool:
    """POST .../tasks/{task}/dependencies: True when the edge was created."""
    return add_dependency(team_id, task, dep)[1]


def batch_of_one(team_id: uuid.UUID, task: uuid.UUID, dep: uuid.UUID) -> bool:
    """POST .../dependencies with this one edge: True when it was created."""
    return add_dependencies(team_id, [(task, dep)])[0] == 1


EDGE_ROUTES = pytest.mark.parametrize("add", [one_edge, batch_of_one], ids=["one", "batch"])


@EDGE_ROUTES
def test_an_edge_added_while_its_dependency_completes_goes_in(
    add: Callable[[uuid.UUID, uuid.UUID, uuid.UUID], bool],
) -> None:
    """A completion locks its task, then the team's graph (to unblock its dependents); an
    edge on that task, added meanwhile, holds the graph and waits for the task's row. That is
    a deadlock, which PostgreSQL breaks by failing one of the two: the edge's transaction is
    run again rather than failing the request."""
    team_id = active_team()
    dep = new_task(team_id, "dep")
    new_task(team_id, "waits for dep", depends_on=[dep])
    task = new_task(team_id, "task")
    outcome: dict[str, Any] = {}

    def adding() -> None:
        try:
            outcome["added"] = add(team_id, task, dep)
        except Exception as exc:  # reported below
            outcome["error"] = exc

    adder = threading.Thread(target=adding)
    with session_scope() as completion:
        # The completion's row lock on its task.
        completion.execute(text("UPDATE tasks SET updated_at = now() WHERE id = :id"), {"id": dep})
        adder.start()
        wait_for_a_lock_wait("the edge never waited for the row")
        lock_graph(completion, team_id)  # ... then the graph's: a deadlock with the edge
    adder.join(timeout=20)
    assert outcome == {"added": True}
    check_invariants(team_id, all_done=False)


@EDGE_ROUTES
def test_edges_the_ranks_order_share_the_graph_lock_and_others_wait(
    add: Callable[[uuid.UUID, uuid.UUID, uuid.UUID], bool],
) -> None:
    """An edge the ranks order moves no rank: it goes in while the team's graph lock is held
    shared (another such edge in flight). An edge against the ranks waits for that holder,
    and every edge waits for a holder alone (a completion unblocking, a new task)."""
    team_id = active_team()
    a, b, c, d = (new_task(team_id, name) for name in "abcd")
    shared = text("SELECT pg_advisory_xact_lock_shared(hashtextextended('graph:' || :t, 0))")
    with session_scope() as holder:
        holder.execute(shared, {"t": str(team_id)})
        ordered, went_in = started(lambda: add(team_id, b, a))
        ordered.join(timeout=20)
        assert went_in == {"result": True}
        against, waited = started(lambda: add(team_id, a, c))
        wait_for_a_lock_wait("the edge against the ranks never waited")
        assert against.is_alive()
    against.join(timeout=20)
    assert waited == {"result": True}
    with session_scope() as holder:
        lock_graph(holder, team_id)
        ordered, waited = started(lambda: add(team_id, d, b))
        wait_for_a_lock_wait("the ordered edge never waited for the lock's sole holder")
        assert ordered.is_alive()
    ordered.join(timeout=20)
    assert waited == {"result": True}
    check_invariants(team_id, all_done=False)


@EDGE_ROUTES
def test_an_edge_held_up_by_the_graph_lock_is_checked_against_the_ranks_committed_meanwhile(
    add: Callable[[uuid.UUID, uuid.UUID, uuid.UUID], bool],
) -> None:
    """An edge the ranks order when it is sent waits for a transaction holding the team's
    graph lock alone, which moves the dependency above the task and commits: the edge is
    checked against the ranks as moved (read after the lock, not from before it), so it goes
    in with a reorder and leaves no edge out of rank order."""
    team_id = active_team()
    dep, task = new_task(team_id, "dep"), new_task(team_id, "task")
    with session_scope() as holder:
        lock_graph(holder, team_id)
        edge, outcome = started(lambda: add(team_id, task, dep))
        wait_for_a_lock_wait("the edge never waited for the lock's sole holder")
        # What a move does: both of dep's points go above task's end (neither has edges).
        holder.execute(
            text(
                "UPDATE tasks d SET start_rank = t.end_rank + 1, end_rank = t.end_rank + 2 "
                "FROM tasks t WHERE d.id = :dep AND t.id = :task"
            ),
            {"dep": dep, "task": task},
        )
    edge.join(timeout=20)
    assert outcome == {"result": True}
    assert check_invariants(team_id, all_done=False) == {"pending": 1, "blocked": 1}


@EDGE_ROUTES
def test_an_edge_against_the_ranks_takes_the_free_lock_in_its_first_run(
    add: Callable[[uuid.UUID, uuid.UUID, uuid.UUID], bool], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no other holder, the shared lock becomes the lock alone where it is: the edit is
    not run a second time."""
    team_id = active_team()
    first, second = new_task(team_id, "first"), new_task(team_id, "second")
    runs: list[dict[str, Any]] = []
    lock = dependencies.lock_team_graph

    def counted(session: Any, team: uuid.UUID, **options: Any) -> bool:
        runs.append(options)
        return lock(session, team, **options)

    monkeypatch.setattr(dependencies, "lock_team_graph", counted)
    assert add(team_id, first, second)
    assert runs == [{"shared": True}]
    check_invariants(team_id, all_done=False)


@pytest.mark.parametrize(
    "routes", [[one_edge], [batch_of_one], [one_edge, batch_of_one]], ids=["one", "batch", "both"]
)
def test_concurrent_edges_both_ways_keep_the_graph_acyclic_and_ranked(
    routes: list[Callable[[uuid.UUID, uuid.UUID, uuid.UUID], bool]],
) -> None:
    """Eight clients add random edges among 24 tasks at once (each call through one of the
    routes in turn), ordered ones and ones against the ranks, many closing cycles: every edge
    reported added is there and no other, every refusal names a path the graph has, no cycle,
    ranks and unmet counts right."""
    from orchestration.graph import find_cycle, find_path

    team_id = active_team()
    ids = [new_task(team_id, f"n{i}") for i in range(24)]
    rng = random.Random(5)
    pairs = [(task, dep) for task, dep in (rng.sample(ids, 2) for _ in range(160))]
    clients = 8
    barrier = threading.Barrier(clients)
    added: list[tuple[uuid.UUID, uuid.UUID]] = []
    refused: list[tuple[uuid.UUID, uuid.UUID]] = []
    existed: list[tuple[uuid.UUID, uuid.UUID]] = []

    def client(part: list[tuple[uuid.UUID, uuid.UUID]]) -> None:
        barrier.wait()
        for n, (task, dep) in enumerate(part):
            add = routes[n % len(routes)]
            try:
                (added if add(team_id, task, dep) else existed).append((task, dep))
            except DependencyCycle:
                refused.append((task, dep))

    threads = [threading.Thread(target=client, args=(pairs[i::clients],)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(added) + len(refused) + len(existed) == len(pairs)
    assert set(existed) <= set(added)
    with get_engine().connect() as conn:
        edges = {
            (r.task_id, r.depends_on_task_id)
            for r in conn.execute(text("SELECT task_id, depends_on_task_id FROM task_dependencies"))
        }
    assert sorted(edges) == sorted(added)
    adjacency: dict[uuid.UUID, list[uuid.UUID]] = {}
    for task, dep in edges:
        adjacency.setdefault(task, []).append(dep)
    assert find_cycle(adjacency) is None
    assert refused
    for task, dep in refused:
        assert find_path(adjacency, dep, task) is not None
    check_invariants(team_id, all_done=False)


def test_readiness_is_kept_incrementally() -> None:
    team_id = active_team()
    a = new_task(team_id, "a")
    b = new_task(team_id, "b", depends_on=[a])
    parent = new_task(team_id, "parent", depends_on=[b])
    child = new_task(team_id, "child", parent_task_id=parent)
    by_id = {t.id: t for t in list_tasks(team_id)}
    assert by_id[b].status is TaskStatus.BLOCKED
    assert by_id[parent].status is TaskStatus.BLOCKED
    assert by_id[child].status is TaskStatus.BLOCKED
    remove_dependency(team_id, b, a)
    remove_dependency(team_id, parent, b)
    by_id = {t.id: t for t in list_tasks(team_id)}
    assert by_id[b].status is TaskStatus.PENDING
    assert by_id[child].status is TaskStatus.PENDING
    check_invariants(team_id, all_done=False)


# -- execution through the stream consumer -----------------------------------------------------


def test_diamond_and_three_level_hierarchy_complete_in_dependency_order(
    consumer: AgentConsumer, executor: RecordingExecutor
) -> None:
    team_id = active_team(workers=3, capacity=2)
    tasks = create_plan(team_id, DIAMOND_AND_HIERARCHY, max_depth=3)
    ids = {t.title: t.id for t in tasks}
    run_until(team_id, all_final(team_id))
    counts = check_invariants(team_id)
    assert counts == {"completed": len(tasks)}
    ends = {task: end for task, _, _, end in executor.runs}
    starts = {task: start for task, _, start, _ in executor.runs}
    assert starts[ids["B"]] >= ends[ids["A1"]] and starts[ids["C"]] >= ends[ids["A1"]]
    assert starts[ids["D11"]] >= max(ends[ids["B"]], ends[ids["C"]])
    assert starts[ids["D2"]] >= ends[ids["D11"]]
    assert len(executor.runs) == 5  # the leaves A1, B, C, D11, D2, each once
    assert all(peak <= 2 for peak in executor.peak.values())


def test_failures_retry_with_backoff_then_fail_and_fail_the_summary(
    consumer: AgentConsumer, executor: RecordingExecutor
) -> None:
    team_id = active_team(workers=1, capacity=2)
    parent = new_task(team_id, "parent")
    flaky = new_task(team_id, "flaky", parent_task_id=parent, input_data={"fail": 2})
    doomed = new_task(team_id, "doomed", parent_task_id=parent, input_data={"fail": 9})
    run_until(team_id, all_final(team_id))
    check_invariants(team_id)
    by_id = {t.id: t for t in list_tasks(team_id)}
    assert by_id[flaky].status is TaskStatus.COMPLETED and by_id[flaky].attempts == 3
    assert by_id[doomed].status is TaskStatus.FAILED
    assert "failed after 3 attempt(s): planned failure 3" in (by_id[doomed].error_message or "")
    assert by_id[parent].status is TaskStatus.FAILED
    assert str(doomed) in (by_id[parent].error_message or "")
    # Retrying the summary task reopens it and runs the failed subtask again.
    lifecycle.retry_task(team_id, parent)
    assert {t.id: t.status for t in list_tasks(team_id)}[doomed] is TaskStatus.PENDING


def test_review_loop_counts_revisions_then_accepts_or_fails(consumer: AgentConsumer) -> None:
    team_id = active_team(workers=1, capacity=2)
    criteria = ["is done"]
    ok = new_task(team_id, "ok", acceptance_criteria=criteria, input_data={"reject": 2})
    bad = new_task(
        team_id, "bad", acceptance_criteria=criteria, max_revisions=1, input_data={"reject": 5}
    )
    run_until(team_id, all_final(team_id))
    check_invariants(team_id)
    by_id = {t.id: t for t in list_tasks(team_id)}
    assert by_id[ok].status is TaskStatus.COMPLETED and by_id[ok].revision_count == 2
    assert by_id[ok].actual_tokens == 30
    assert by_id[bad].status is TaskStatus.FAILED and by_id[bad].revision_count == 1
    assert "rejected by the reviewer" in (by_id[bad].error_message or "")
    with session_scope() as s:
        manager = s.scalars(select(TeamMember).where(TeamMember.role == "manager")).one()
        assert manager.total_tokens_used == 3 * (3 + 2)  # five reviews


def test_pause_holds_new_assignments_while_work_in_flight_finishes(
    consumer: AgentConsumer,
) -> None:
    team_id = active_team(workers=1, capacity=1)
    first = new_task(team_id, "first", input_data={"sleep": 0.5}, priority=9)
    second = new_task(team_id, "second")
    orchestrator.run_pass(team_id)
    lifecycle.pause_team(team_id)
    deadline = time.monotonic() + 10
    while {t.id: t.status for t in list_tasks(team_id)}[first] is not TaskStatus.COMPLETED:
        assert time.monotonic() < deadline
        orchestrator.run_pass(team_id)
        time.sleep(0.05)
    time.sleep(0.3)
    orchestrator.run_pass(team_id)
    assert {t.id: t.status for t in list_tasks(team_id)}[second] is TaskStatus.PENDING
    lifecycle.resume_team(team_id)
    run_until(team_id, all_final(team_id))
    check_invariants(team_id)


def test_cancel_releases_the_worker_and_the_running_result_is_discarded(
    consumer: AgentConsumer,
) -> None:
    team_id = active_team(workers=1, capacity=1)
    slow = new_task(team_id, "slow", input_data={"sleep": 1.0})
    orchestrator.run_pass(team_id)
    time.sleep(0.3)
    lifecycle.cancel_task(team_id, slow)
    time.sleep(1.2)
    check_invariants(team_id)
    assert statuses(team_id) == {"cancelled": 1}


def test_assignments_lost_by_redis_are_re_emitted_and_run_once(
    consumer: AgentConsumer, executor: RecordingExecutor, redis_client: redis.Redis
) -> None:
    team_id = active_team(workers=2, capacity=2)
    for i in range(4):
        new_task(team_id, f"t{i}")
    consumer.stop()
    orchestrator.run_pass(team_id)
    redis_client.flushdb()
    restarted = AgentConsumer(concurrency=4, executor=executor, reviewer=PickyReviewer())
    restarted.start()
    try:
        run_until(team_id, all_final(team_id))
    finally:
        restarted.stop()
    check_invariants(team_id)
    assert len(executor.runs) == 4


def test_entries_delivered_too_often_go_to_dead_letter(
    fast_settings: None, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORCH_MAX_DELIVERIES", "2")
    monkeypatch.setenv("ORCH_VISIBILITY_TIMEOUT", "0.2")
    reload_settings()
    team_id = active_team(workers=1, capacity=1)
    task = new_task(team_id, "poison")
    orchestrator.run_pass(team_id)
    stream, group = keys.task_stream(team_id), keys.consumer_group(team_id)
    # A consumer that takes the entry and dies, twice.
    redis_client.xreadgroup(group, "ghost", {stream: ">"})
    time.sleep(0.25)
    redis_client.xautoclaim(stream, group, "ghost-2", 200, "0-0")
    time.sleep(0.25)
    c = AgentConsumer(concurrency=1, executor=RecordingExecutor(), reviewer=PickyReviewer())
    c.start()
    try:
        deadline = time.monotonic() + 10
        while redis_client.xlen(keys.dead_letter(team_id)) == 0:
            assert time.monotonic() < deadline, "entry never dead-lettered"
            time.sleep(0.05)
    finally:
        c.stop()
    letter = redis_client.xrange(keys.dead_letter(team_id))[0][1]
    assert letter["task_id"] == str(task) and int(letter["deliveries"]) == 3
    by_id = {t.id: t for t in list_tasks(team_id)}
    assert by_id[task].status is TaskStatus.FAILED
    assert "dead letter" in (by_id[task].error_message or "")
    assert redis_client.xpending(stream, group)["pending"] == 0
    check_invariants(team_id)


def test_trimming_keeps_every_unacknowledged_entry(redis_client: redis.Redis) -> None:
    team_id = active_team(workers=2, capacity=3)
    for i in range(6):
        new_task(team_id, f"t{i}")
    orchestrator.run_pass(team_id)
    stream, group = keys.task_stream(team_id), keys.consumer_group(team_id)
    delivered = redis_client.xreadgroup(group, "c1", {stream: ">"}, count=4)[0][1]
    # Ack the 1st and 3rd: the 2nd and 4th stay pending, the 5th and 6th undelivered.
    redis_client.xack(stream, group, delivered[0][0], delivered[2][0])
    live = streams.live_entries(team_id)
    assert len(live) == 4
    assert streams.trim(team_id, live) == 1
    remaining = [e[0] for e in redis_client.xrange(stream)]
    assert set(live.values()) <= set(remaining)
    assert remaining[0] == delivered[1][0]


def test_live_entries_are_found_across_pages_of_a_long_stream(redis_client: redis.Redis) -> None:
    team_id = uuid.uuid4()
    worker = uuid.uuid4()
    tasks = [uuid.uuid4() for _ in range(2500)]
    streams.emit(team_id, [streams.Assignment(t, worker, 5) for t in tasks])
    stream, group = keys.task_stream(team_id), keys.consumer_group(team_id)
    delivered = [
        e for _s, es in redis_client.xreadgroup(group, "c1", {stream: ">"}, count=2400) for e in es
    ]
    kept = {5, 1500, 2399}
    redis_client.xack(stream, group, *[e[0] for i, e in enumerate(delivered) if i not in kept])
    live = streams.live_entries(team_id)
    assert live == {
        **{tasks[i]: delivered[i][0] for i in kept},
        **{
            t: e
            for t, e in zip(
                tasks[2400:], [x[0] for x in redis_client.xrange(stream)][2400:], strict=True
            )
        },
    }
    assert streams.trim(team_id, live) == 5
    assert redis_client.xrange(stream, count=1)[0][0] == delivered[5][0]


def test_a_spent_token_budget_pauses_the_team_and_says_why(consumer: AgentConsumer) -> None:
    team_id = active_team(workers=1, capacity=1)
    teams.update_team(team_id, {"token_budget": 25})
    for i in range(5):
        new_task(team_id, f"t{i}")

    def paused() -> bool:
        with session_scope() as s:
            team = s.get(Team, team_id)
            return team is not None and team.status is TeamStatus.PAUSED

    run_until(team_id, paused)
    time.sleep(0.3)
    assert statuses(team_id) == {"completed": 3, "pending": 2}  # 10 tokens each: 30 >= 25
    with session_scope() as s:
        team = s.get(Team, team_id)
        assert team is not None
        assert team.status_reason == "token budget exhausted: 30 of 25 tokens used"
        kinds = s.scalars(select(TaskEvent.kind).where(TaskEvent.team_id == team_id)).all()
        assert kinds.count("team.budget_exhausted") == 1
    with pytest.raises(InvalidTransition, match="token budget is spent"):
        lifecycle.resume_team(team_id)
    teams.update_team(team_id, {"token_budget": 1000})
    lifecycle.resume_team(team_id)
    run_until(team_id, all_final(team_id))
    assert statuses(team_id) == {"completed": 5}
    check_invariants(team_id)


def test_token_and_cost_totals_stay_exact_under_concurrency(consumer: AgentConsumer) -> None:
    team_id = active_team(workers=4, capacity=3)
    for i in range(40):
        new_task(team_id, f"t{i}", input_data={"sleep": 0.01})
    run_until(team_id, all_final(team_id))
    check_invariants(team_id)
    with get_engine().connect() as conn:
        tokens, cost, completed = conn.execute(
            text(
                "SELECT sum(total_tokens_used), sum(total_cost), sum(tasks_completed) "
                "FROM team_members WHERE team_id = :t"
            ),
            {"t": team_id},
        ).one()
        task_tokens = conn.execute(
            text("SELECT sum(actual_tokens) FROM tasks WHERE team_id = :t"), {"t": team_id}
        ).scalar_one()
    assert (tokens, cost, completed, task_tokens) == (400, Decimal("0.04"), 40, 400)


def test_dependencies_in_a_batch_are_all_added_or_none() -> None:
    team_id = active_team()
    a, b, c, d = (new_task(team_id, x) for x in "abcd")
    parent = new_task(team_id, "parent")
    child = new_task(team_id, "child", parent_task_id=parent)
    assert add_dependencies(team_id, [(b, a), (c, b), (d, c), (b, a)]) == (3, 0)
    assert add_dependencies(team_id, [(b, a), (d, a)]) == (1, 1)
    by_id = {t.id: t for t in list_tasks(team_id)}
    assert [by_id[x].status for x in (a, b, c, d)] == [TaskStatus.PENDING] + [
        TaskStatus.BLOCKED
    ] * 3
    assert by_id[d].unmet_dependencies == 2
    # A cycle through the batch's own edges, or through existing ones, or the hierarchy:
    # refused, and nothing of the batch is added.
    for batch in ([(parent, b), (a, parent)], [(a, d)], [(child, parent)], [(a, b), (c, a)]):
        with pytest.raises(DependencyCycle):
            add_dependencies(team_id, batch)
    with pytest.raises(SelfDependency):
        add_dependencies(team_id, [(a, a)])
    with get_engine().connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM task_dependencies")).scalar() == 4
    check_invariants(team_id, all_done=False)


def test_a_batch_blocks_each_task_it_makes_wait_and_records_it_once() -> None:
    """An ordered edge, an edge against the ranks, an edge on a summary task and one on a task
    already blocked, in one batch: each pending task that gains an unmet dependency is blocked
    with one task.blocked event, and so are a summary's pending subtasks; the task that was
    blocked already records nothing."""
    team_id = active_team()
    a, b, c = (new_task(team_id, x) for x in "abc")
    parent = new_task(team_id, "parent")
    child = new_task(team_id, "child", parent_task_id=parent)
    later = new_task(team_id, "later")
    add_dependencies(team_id, [(c, b)])

    def blocked_events() -> list[uuid.UUID]:
        with session_scope() as session:
            return list(
                session.scalars(
                    select(TaskEvent.task_id).where(
                        TaskEvent.team_id == team_id, TaskEvent.kind == "task.blocked"
                    )
                )
            )

    assert blocked_events() == [c]
    batch = [(b, a), (a, later), (parent, later), (c, a)]
    assert add_dependencies(team_id, batch) == (4, 0)
    assert sorted(blocked_events()[1:]) == sorted([a, b, parent, child])
    by_id = {t.id: t for t in list_tasks(team_id)}
    assert {x: by_id[x].status for x in (a, b, c, parent, child, later)} == {
        a: TaskStatus.BLOCKED,
        b: TaskStatus.BLOCKED,
        c: TaskStatus.BLOCKED,
        parent: TaskStatus.BLOCKED,
        child: TaskStatus.BLOCKED,
        later: TaskStatus.PENDING,
    }
    assert [by_id[x].unmet_dependencies for x in (a, b, c, parent, child)] == [1, 1, 2, 1, 0]
    check_invariants(team_id, all_done=False)


def test_two_consumers_claim_and_complete_in_groups_each_task_once(
    fast_settings: None, executor: RecordingExecutor
) -> None:
    """Short tasks through two consumers: entries are claimed and committed several at a time
    (claims ahead of the agent threads once runs are short), and each task completes once."""
    team_id = active_team(workers=4, capacity=4)
    first, second = (
        AgentConsumer(concurrency=2, executor=executor, reviewer=PickyReviewer()) for _ in "ab"
    )
    head = new_task(team_id, "head")
    tails = [new_task(team_id, f"t{i}") for i in range(60)]
    add_dependencies(team_id, [(t, head) for t in tails[:20]])
    first.start()
    second.start()
    try:
        run_until(team_id, all_final(team_id))
    finally:
        first.stop()
        second.stop()
    assert statuses(team_id) == {"completed": 61}
    check_invariants(team_id)
    assert sorted(str(task_id) for task_id, *_ in executor.runs) == sorted(
        str(t) for t in [head, *tails]
    )
    with get_engine().connect() as conn:
        claims, completions = conn.execute(
            text(
                "SELECT count(DISTINCT start_time), count(DISTINCT completion_time) "
                "FROM tasks WHERE team_id = :t"
            ),
            {"t": team_id},
        ).one()
    # now() is the transaction's start: fewer distinct times than tasks means shared commits.
    assert claims < 61 and completions < 61
    assert first.read_ahead() == 2 and second.read_ahead() == 2


def test_read_ahead_is_automatic_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    consumer = AgentConsumer(concurrency=3)
    assert consumer.read_ahead() == 0  # nothing measured yet: no claims ahead
    consumer._ran(0.001)
    assert consumer.read_ahead() == 3
    for _ in range(20):
        consumer._ran(2.0)  # long runs: a claimed entry would wait for a thread
    assert consumer.read_ahead() == 0
    monkeypatch.setenv("ORCH_READ_AHEAD", "5")
    assert AgentConsumer(concurrency=3, settings=reload_settings()).read_ahead() == 5
    monkeypatch.setenv("ORCH_READ_AHEAD", "-1")
    with pytest.raises(ValueError, match="ORCH_READ_AHEAD"):
        reload_settings()
    monkeypatch.undo()
    reload_settings()


@pytest.mark.parametrize("change", ["status = 'offline'", "max_concurrent_tasks = 1"])
def test_a_worker_changed_between_the_pass_read_and_its_assignment_is_not_overfilled(
    change: str,
) -> None:
    """The pass reads workers without locking them; a worker set offline or given less
    capacity before the assign statement runs makes the pass roll back and go round again."""
    team_id = active_team(workers=1, capacity=2)
    for title in ("a", "b"):
        new_task(team_id, title)
    engine = get_engine()
    changed: list[bool] = []

    def meanwhile(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().startswith("WITH chosen AS") and not changed:
            changed.append(True)
            with engine.begin() as other:
                other.execute(
                    text(
                        f"UPDATE team_members SET {change} WHERE team_id = :t AND role = 'worker'"
                    ),
                    {"t": team_id},
                )

    event.listen(engine, "before_cursor_execute", meanwhile)
    try:
        result = orchestrator.run_pass(team_id)
    finally:
        event.remove(engine, "before_cursor_execute", meanwhile)
    assert changed
    expected = 0 if "offline" in change else 1
    assert len(result.assigned) == expected
    assert statuses(team_id) == {"pending": 2 - expected, **({"assigned": 1} if expected else {})}
    check_invariants(team_id, all_done=False)
