"""Dependency edges (seed epic 5): added and removed under the team's graph lock, cycles
(hierarchy included) refused in the transaction that would close them.

Cycle checks ride on the tasks' ranks, a topological order of the waits-for graph kept in
`start_rank`/`end_rank` (see orchestration/graph.py): a new edge the order already allows is
safe without a walk; any other searches and moves only points ranked between its two ends, or
finds the cycle there (a batch's such edges share one search). Removing an edge never
invalidates the order."""

from __future__ import annotations

import json
import logging
import typing
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import psycopg
from sqlalchemy import any_, cast, delete, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import UUID as PG_UUID
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from db.engine import chunks_of, retry_deadlocks, rows_of_generic_plan, session_scope
from db.models import STOPPING, Task, TaskDependency, TaskStatus, Team
from db.queries import Q
from orchestration import events, graph
from orchestration.coalesce import Coalescer
from orchestration.errors import (
    DependencyCycle,
    InvalidInput,
    InvalidTransition,
    NotFound,
    SelfDependency,
)
from orchestration.locks import lock_graph, lock_team_graph, try_lock_graph

# A task takes new dependencies only before it starts: its own status says so, but a summary
# task shows pending until a task below it is claimed, so it is also checked below
# (_refuse_started_summaries).
NOT_STARTED = (TaskStatus.PENDING, TaskStatus.BLOCKED)

log = logging.getLogger(__name__)


def _locked_task(session: Session, team_id: uuid.UUID, task_id: uuid.UUID) -> Task | None:
    """The team's task, row-locked; another team's is never read, nor locked."""
    query = select(Task).where(Task.id == task_id, Task.team_id == team_id).with_for_update()
    return session.execute(query).scalar_one_or_none()


Ranks = dict[uuid.UUID, tuple[Decimal, Decimal]]


def cycle_path(session: Session, task_id: uuid.UUID, depends_on: uuid.UUID) -> list[Any]:
    """The cycle the edge would close, read from the part of the graph it runs through."""
    team_id = session.execute(select(Task.team_id).where(Task.id == task_id)).scalar_one()
    parent_of: dict[uuid.UUID, uuid.UUID | None] = dict(
        session.execute(select(Task.id, Task.parent_task_id).where(Task.team_id == team_id)).all()
    )
    edges: dict[uuid.UUID, list[uuid.UUID]] = defaultdict(list)
    for task, dep in session.execute(
        select(TaskDependency.task_id, TaskDependency.depends_on_task_id)
        .join(Task, Task.id == TaskDependency.task_id)
        .where(Task.team_id == team_id)
    ).all():
        edges[task].append(dep)
    cycle = graph.dependency_cycle(parent_of, edges, task_id, depends_on)
    return list(cycle or [task_id, depends_on, task_id])


def place_task(
    session: Session, team_id: uuid.UUID, parent_id: uuid.UUID | None
) -> tuple[Decimal, Decimal]:
    """(start_rank, end_rank) for a new task without dependencies (caller holds the graph
    lock): a top-level task after every point of the team, so that later tasks rank after
    earlier ones and the usual "depends on an earlier task" is ordered already; a subtask
    inside its parent's interval, after everything already there."""
    if parent_id is None:
        start = graph.rank_after(session.execute(Q["highest_rank"], {"team_id": team_id}).scalar())
        return start, start + 1
    parent_end = session.execute(select(Task.end_rank).where(Task.id == parent_id)).scalar_one()
    # Never None: the parent's own start ranks below its end.
    low = session.execute(Q["rank_below"], {"team_id": team_id, "rank": parent_end}).scalar_one()
    start = graph.rank_between(low, parent_end)
    return start, graph.rank_between(start, parent_end)


def _ranks(session: Session, ids: list[uuid.UUID]) -> Ranks:
    return {
        r.id: (r.start_rank, r.end_rank)
        for r in session.execute(
            select(Task.id, Task.start_rank, Task.end_rank).where(
                Task.id == any_(cast(ids, ARRAY(PG_UUID)))
            )
        )
    }


def _add_out_of_order(
    session: Session, team_id: uuid.UUID, task_id: uuid.UUID, dep_id: uuid.UUID, ranks: Ranks
) -> None:
    """Insert `task depends on dep` where dep's end ranks above the task's start, or raise
    DependencyCycle. One search, forward from the task's start over the points ranked below
    dep's end: reaching that end is a cycle; otherwise the points found move, in their order,
    into the free gap just above it (graph.move_above), with the insert in the same statement.
    Nothing ranked outside the two ranks is read or moved. `ranks` is kept current."""
    high = ranks[dep_id][1]
    rows = session.execute(
        Q["reach_after"], {"task_id": task_id, "bound": high, "team_id": team_id}
    ).all()
    forward = {(r.task_id, r.point): r.rank for r in rows}
    if (dep_id, graph.END) in forward:
        raise DependencyCycle(cycle_path(session, task_id, dep_id))
    # Nothing above dep's end: any rank above it is free.
    ceiling = rows[0].next_rank if rows[0].next_rank is not None else high + 1
    moved: dict[uuid.UUID, list[Decimal | None]] = {}
    for (task, point), rank in graph.move_above(forward, high, ceiling).items():
        moved.setdefault(task, [None, None])[0 if point == graph.START else 1] = rank
    _write(session, [(task_id, dep_id)], {str(t): r for t, r in moved.items()})
    for task, (start, end) in moved.items():
        if task in ranks:
            old_start, old_end = ranks[task]
            ranks[task] = (old_start if start is None else start, old_end if end is None else end)


# Points given new ranks, by task id as text: [start rank, end rank], None for one not moved.
Moves = dict[str, list[Decimal | None]]


def _write(
    session: Session,
    edges: list[tuple[uuid.UUID, uuid.UUID]],
    moved: Moves,
    added: Counter[str] | None = None,
) -> None:
    """Insert edges, move points and count new unmet dependencies (added: task id as text ->
    how many more), in one statement: a task both moved and waiting is written once."""
    added = added or Counter()
    ids = sorted(moved.keys() | added.keys())  # row locks in id order, as the batch takes them
    kept: list[Decimal | None] = [None, None]
    session.execute(
        Q["move_and_insert"],
        {
            "task_ids": [t for t, _ in edges],
            "depends_on": [d for _, d in edges],
            "ids": ids,
            "start_ranks": [moved.get(i, kept)[0] for i in ids],
            "end_ranks": [moved.get(i, kept)[1] for i in ids],
            "added": [added[i] for i in ids],
        },
    )


# A batch's joint search reads at most this many rows (one per waits-for edge it crosses); a
# batch that reaches further goes edge by edge instead, each search bounded by its own edge,
# so no batch holds an unbounded part of the graph in memory at once.
JOINT_SEARCH_CAP = 200_000

MAX_BATCH_EDGES = 10_000


def _add_jointly(
    session: Session,
    team_id: uuid.UUID,
    later: list[tuple[uuid.UUID, uuid.UUID]],
    ranks: Ranks,
    cap: int,
) -> Moves | None:
    """The moves that make room for edges none of which the ranks order yet, or
    DependencyCycle: one search forward from all their tasks' starts over the points ranked
    below the highest of their dependencies' ends (any cycle they close runs there), then
    graph.lift and graph.place over what it found. None when the search would read more than
    cap rows. Nothing is written."""
    bound = max(ranks[d][1] for _, d in later)
    found = session.execute(
        Q["reach_after_many"],
        {"task_ids": list({t for t, _ in later}), "bound": bound, "cap": cap + 1},
    ).all()
    if len(found) > cap:
        return None
    # Points as (task id as text, "S" or "E"), as the search returns them.
    rank: dict[tuple[str, str], Decimal] = {}
    waits: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
    for task_id, which, point_rank, via_id, via_point in found:
        point = (task_id, which)
        rank[point] = point_rank
        if via_id is not None:
            waits[point].append((via_id, via_point))
    new = [((str(t), graph.START), (str(d), graph.END)) for t, d in later]
    for (_, waited), (_, dep_id) in zip(new, later, strict=True):
        rank.setdefault(waited, ranks[dep_id][1])
    try:
        lifted = graph.lift(rank, waits, new)
    except graph.CycleError as error:
        cycle = typing.cast(list[tuple[str, str]], error.cycle)
        raise DependencyCycle(graph.cycle_tasks(cycle)) from None
    anchors = sorted({anchor for anchor, _ in lifted.values()})
    above = dict(
        zip(
            anchors,
            session.execute(Q["next_ranks"], {"team_id": team_id, "ranks": anchors}).scalars(),
            strict=True,
        )
    )
    moved: Moves = {}
    for (task, which), new_rank in graph.place(lifted, above).items():
        moved.setdefault(task, [None, None])[0 if which == graph.START else 1] = new_rank
    return moved


def insert_ordered(
    session: Session,
    team_id: uuid.UUID,
    new: list[tuple[uuid.UUID, uuid.UUID]],
    ranks: Ranks,
    waiting: list[uuid.UUID],
    *,
    cap: int | None = None,
) -> None:
    """Insert new edges (task, depends on), none already there, refusing with DependencyCycle
    any that would close a cycle (caller holds the graph lock; ranks has every task named),
    and count the unmet dependencies they add: one per occurrence of a task in `waiting`
    (blocking is the caller's).

    An edge whose dependency ends below its task's start is ordered already and cannot close
    a cycle: those go in at once, with no walk (and before the search, which then follows
    them). The others go in together (_add_jointly); one alone, or a batch whose search would
    read more than cap rows (default JOINT_SEARCH_CAP), goes edge by edge, each moving the
    points between its two ranks that must follow it (or finding the cycle there), so later
    ones see it. The counts go with the last statement."""
    added = Counter(str(t) for t in waiting)
    ordered: list[tuple[uuid.UUID, uuid.UUID]] = []
    later: list[tuple[uuid.UUID, uuid.UUID]] = []
    for t, d in new:
        (ordered if ranks[d][1] < ranks[t][0] else later).append((t, d))
    if not later:
        _write(session, ordered, {}, added)
        return
    if ordered:
        _write(session, ordered, {})
    session.execute(Q["batch_plans"])  # no JIT or hash joins for what follows
    if len(later) > 1:
        moved = _add_jointly(
            session, team_id, later, ranks, JOINT_SEARCH_CAP if cap is None else cap
        )
        if moved is not None:
            _write(session, later, moved, added)
            return
    for task_id, dep_id in later:
        # An earlier move of this batch may have ordered it already.
        if ranks[dep_id][1] < ranks[task_id][0]:
            _write(session, [(task_id, dep_id)], {})
        else:
            _add_out_of_order(session, team_id, task_id, dep_id, ranks)
    _write(session, [], {}, added)


def add_edge(
    session: Session,
    team_id: uuid.UUID,
    task_id: uuid.UUID,
    dep_id: uuid.UUID,
    *,
    dep_status: TaskStatus,
) -> None:
    """Insert `task depends on dep`, not there yet (caller holds the graph lock alone, both
    rows locked), and keep readiness: an unmet dependency blocks the task and the pending
    tasks below it."""
    if task_id == dep_id:
        raise SelfDependency(task_id)
    waiting = [] if dep_status is TaskStatus.COMPLETED else [task_id]
    insert_ordered(
        session, team_id, [(task_id, dep_id)], _ranks(session, [task_id, dep_id]), waiting
    )
    if waiting:
        _block(session, team_id, waiting, {"by": str(dep_id)})
    _stop_waiting_on_ended(session, team_id, {dep_id: dep_status})


def _stop_waiting_on_ended(
    session: Session, team_id: uuid.UUID, deps: dict[uuid.UUID, TaskStatus]
) -> None:
    """New edges on dependencies that failed or were cancelled: the tasks on them can never
    run and end the same way at once, as those there before did (lifecycle.settle); a retry of
    the dependency resumes them alike. Needs the graph lock alone."""
    from orchestration.lifecycle import settle

    ended = [(d, None, status) for d, status in deps.items() if status in STOPPING]
    if ended:
        settle(session, team_id, sorted(ended))


def _block(
    session: Session, team_id: uuid.UUID, task_ids: list[uuid.UUID], data: dict[str, Any]
) -> None:
    """The tasks gained unmet dependencies: they and the pending tasks below them wait, each
    with a task.blocked event carrying data (logged by the statement itself)."""
    held = session.execute(
        Q["block_tasks"], {"task_ids": task_ids, "data": json.dumps(data)}
    ).scalars()
    events.written(session, [events.Event(team_id, "task.blocked", t, data) for t in held])


def _refuse_started_summaries(session: Session, summaries: list[uuid.UUID]) -> None:
    """InvalidTransition when a task below one of these summary tasks is in flight or
    finished: the summary has started, and a dependency added now would hold back none of
    that work, yet the summary would complete with it (DESIGN.md, Hierarchy). Every task below
    stays share-locked, so none is assigned before the caller commits."""
    if not summaries:
        return
    started = session.execute(Q["started_below"], {"task_ids": summaries}).first()
    if started is not None:
        raise InvalidTransition(
            f"task {started.root} has started: task {started.id} below it is {started.status}; "
            "dependencies can only be added before it starts"
        )


def _edge(session: Session, task_id: uuid.UUID, dep_id: uuid.UUID) -> TaskDependency | None:
    return session.execute(
        select(TaskDependency).where(
            TaskDependency.task_id == task_id, TaskDependency.depends_on_task_id == dep_id
        )
    ).scalar_one_or_none()


def _existing(session: Session, task_id: uuid.UUID, dep_id: uuid.UUID) -> TaskDependency:
    edge = _edge(session, task_id, dep_id)
    assert edge is not None
    return edge


class _AgainstRanks(Exception):
    """Raised under the shared graph lock by an edge the ranks do not order when another
    transaction holds the lock too: adding it moves ranks, which needs the lock alone."""


def _hold_alone(session: Session, team_id: uuid.UUID, *, alone: bool) -> None:
    """Before moving ranks, hold the team's graph lock alone. A holder of the shared lock
    takes it without waiting when no other transaction holds it (the ranks it read stay
    current: nothing moved them while it held the lock); otherwise _AgainstRanks, and the edit
    runs again from the start, holding the lock alone."""
    if not alone and not try_lock_graph(session, team_id):
        raise _AgainstRanks


@retry_deadlocks
def add_dependency(
    team_id: uuid.UUID, task_id: uuid.UUID, depends_on_task_id: uuid.UUID
) -> tuple[TaskDependency, bool]:
    """Make task_id wait for depends_on_task_id; (edge, True) when created, (edge, False)
    when it already existed.

    A task takes a dependency only before it starts; a summary task has started once a task
    below it is in flight or finished (InvalidTransition).

    The usual edge, new, one the ranks already order, on a task not started that is not a
    summary, is one statement that is its own transaction, shared with the usual edges of
    other threads of the process that arrive meanwhile (_ordered_edges). Any other
    takes the general path: such edges too move no rank and cannot close a cycle while no rank
    moves, so they hold the team's graph lock shared and go in beside each other; an edge
    against the ranks needs it alone (_hold_alone)."""
    edge = _ordered_edges.submit(team_id, (task_id, depends_on_task_id))
    if edge is not None:
        return edge, True
    try:
        return _add_dependency(team_id, task_id, depends_on_task_id, alone=False)
    except _AgainstRanks:
        return _add_dependency(team_id, task_id, depends_on_task_id, alone=True)


def _added(team_id: uuid.UUID, task_id: uuid.UUID, depends_on_task_id: uuid.UUID) -> events.Event:
    return events.Event(
        team_id, "dependency.added", task_id, {"depends_on": str(depends_on_task_id)}
    )


def _add_ordered_edges(
    team_id: uuid.UUID, pairs: list[tuple[uuid.UUID, uuid.UUID]]
) -> list[TaskDependency | None]:
    """The usual edges among pairs (task, depends on) in one round trip (add_ordered_edges),
    each on its own, their events published once they have committed: per pair its new edge,
    or None when it was not the usual one and nothing of it was written. None for all when the
    statement failed, so that each caller's general path meets the failure on its own."""
    ids = sorted({x for pair in pairs for x in pair})
    try:
        rows = rows_of_generic_plan(
            Q["add_ordered_edges"],
            {
                "team_id": team_id,
                "ids": ids,
                "task_ids": [t for t, _ in pairs],
                "depends_on": [d for _, d in pairs],
            },
        )
    except (psycopg.Error, DBAPIError):
        log.debug("ordered edges of %s failed together; each goes alone", team_id, exc_info=True)
        return [None] * len(pairs)
    made: list[TaskDependency | None] = [None] * len(pairs)
    published: list[events.Event] = []
    for row in sorted(rows, key=lambda r: r.i):
        made[row.i - 1] = TaskDependency(
            id=row.id,
            task_id=row.task_id,
            depends_on_task_id=row.depends_on_task_id,
            dependency_type=row.dependency_type,
            created_at=row.created_at,
        )
        if row.blocks:
            published.append(
                events.Event(
                    team_id, "task.blocked", row.task_id, {"by": str(row.depends_on_task_id)}
                )
            )
        published.append(_added(team_id, row.task_id, row.depends_on_task_id))
    events.publish(published)
    return made


# Concurrent add_dependency calls of a process (a gunicorn worker's threads) share the usual
# edge's statement and its commit: one at a time per team, as many edges each as were waiting;
# after a shared one, the next waits up to 2 ms for as many callers. 8 threads at 100,000
# tasks, alternating rounds in one process (bench/README.md): one at a time with the wait
# median 1,480 edges/s, two at a time with it 1,356, one at a time without it 1,108.
_ordered_edges: Coalescer[uuid.UUID, tuple[uuid.UUID, uuid.UUID], TaskDependency | None] = (
    Coalescer(_add_ordered_edges, slots=1, most=MAX_BATCH_EDGES, gather=0.002)
)


def _add_dependency(
    team_id: uuid.UUID, task_id: uuid.UUID, depends_on_task_id: uuid.UUID, *, alone: bool
) -> tuple[TaskDependency, bool]:
    with events.transaction() as session:
        if not lock_team_graph(session, team_id, shared=not alone):
            raise NotFound(f"team {team_id} not found")
        ends = {
            r.id: r
            for r in session.execute(
                Q["edge_ends"], {"team_id": team_id, "ids": sorted({task_id, depends_on_task_id})}
            )
        }
        task = ends.get(task_id)
        if task is None or task.team_id != team_id:
            raise NotFound(f"task {task_id} not found")
        if task_id == depends_on_task_id:
            raise SelfDependency(task_id)
        dep = ends.get(depends_on_task_id)
        if dep is None or dep.team_id != team_id:
            raise InvalidInput(
                f"depends_on_task_id {depends_on_task_id} is not a task of this team",
                {"depends_on_task_id": ["not a task of this team"]},
            )
        existing = _edge(session, task_id, depends_on_task_id)
        if existing is not None:
            return existing, False
        status = TaskStatus(task.status)
        if status not in NOT_STARTED:
            raise InvalidTransition(
                f"task {task_id} is {status.value}; dependencies can only be added before it starts"
            )
        if task.is_summary:
            _refuse_started_summaries(session, [task_id])
        dep_status = TaskStatus(dep.status)
        if not dep.end_rank < task.start_rank or dep_status in STOPPING:
            _hold_alone(session, team_id, alone=alone)
        add_edge(session, team_id, task_id, depends_on_task_id, dep_status=dep_status)
        events.record_many(session, [_added(team_id, task_id, depends_on_task_id)])
        return _existing(session, task_id, depends_on_task_id), True


@retry_deadlocks
def add_dependencies(
    team_id: uuid.UUID, edges: list[tuple[uuid.UUID, uuid.UUID]]
) -> tuple[int, int]:
    """Add many edges (task, depends on) in one transaction, all or none: the same checks as
    add_dependency; edges the ranks already order need no cycle walk, and a batch of only
    those holds the graph lock shared, as add_dependency does. Returns (created, existing)."""
    pairs = list(dict.fromkeys(edges))
    if len(pairs) > MAX_BATCH_EDGES:
        raise InvalidInput(
            f"at most {MAX_BATCH_EDGES} edges at once", {"edges": ["too many edges"]}
        )
    for task_id, dep_id in pairs:
        if task_id == dep_id:
            raise SelfDependency(task_id)
    try:
        return _add_dependencies(team_id, pairs, alone=False)
    except _AgainstRanks:
        return _add_dependencies(team_id, pairs, alone=True)


def _add_dependencies(
    team_id: uuid.UUID, pairs: list[tuple[uuid.UUID, uuid.UUID]], *, alone: bool
) -> tuple[int, int]:
    with events.transaction() as session:
        if not lock_team_graph(session, team_id, shared=not alone):
            raise NotFound(f"team {team_id} not found")
        # Joins of the batch's ids to tasks and task_dependencies by index, not by hash, from
        # the row locks on (insert_ordered sets it again for its own callers: harmless).
        session.execute(Q["batch_plans"])
        rows = {
            r.id: r
            for r in session.execute(
                Q["edge_ends"],
                {"team_id": team_id, "ids": list({x for pair in pairs for x in pair})},
            )
        }
        for task_id, dep_id in pairs:
            if task_id not in rows or rows[task_id].team_id != team_id:
                raise NotFound(f"task {task_id} not found")
            if dep_id not in rows or rows[dep_id].team_id != team_id:
                raise InvalidInput(
                    f"depends_on_task_id {dep_id} is not a task of this team",
                    {"edges": [f"{dep_id} is not a task of this team"]},
                )
        existing = {
            (r.task_id, r.depends_on_task_id)
            for r in session.execute(
                Q["existing_edges"],
                {"task_ids": [t for t, _ in pairs], "depends_on": [d for _, d in pairs]},
            )
        }
        new = [p for p in pairs if p not in existing]
        if not new:
            return 0, len(pairs)
        for task_id, _ in new:
            if TaskStatus(rows[task_id].status) not in NOT_STARTED:
                raise InvalidTransition(
                    f"task {task_id} is {rows[task_id].status}; dependencies can only be "
                    "added before it starts"
                )
        _refuse_started_summaries(session, sorted({t for t, _ in new if rows[t].is_summary}))
        ranks = {i: (r.start_rank, r.end_rank) for i, r in rows.items()}
        ended = {d: TaskStatus(rows[d].status) for _, d in new}
        ended = {d: status for d, status in ended.items() if status in STOPPING}
        if ended or any(not ranks[d][1] < ranks[t][0] for t, d in new):
            _hold_alone(session, team_id, alone=alone)
        completed = TaskStatus.COMPLETED.value
        waiting = [t for t, d in new if rows[d].status != completed]
        insert_ordered(session, team_id, new, ranks, waiting)
        if waiting:
            _block(session, team_id, list(set(waiting)), {})
        _stop_waiting_on_ended(session, team_id, ended)
        events.record(session, team_id, "dependency.added", None, edges=len(new))
        return len(new), len(pairs) - len(new)


@retry_deadlocks
def remove_dependency(
    team_id: uuid.UUID, task_id: uuid.UUID, depends_on_task_id: uuid.UUID
) -> None:
    """Drop the edge; a task left with nothing to wait for becomes ready."""
    with events.transaction() as session:
        lock_graph(session, team_id)
        task = _locked_task(session, team_id, task_id)
        if task is None:
            raise NotFound(f"task {task_id} not found")
        removed = session.execute(
            delete(TaskDependency)
            .where(
                TaskDependency.task_id == task_id,
                TaskDependency.depends_on_task_id == depends_on_task_id,
            )
            .returning(TaskDependency.id)
        ).first()
        if removed is None:
            raise NotFound(f"task {task_id} does not depend on {depends_on_task_id}")
        dep_status = session.execute(
            select(Task.status).where(Task.id == depends_on_task_id)
        ).scalar()
        # A finished task keeps its count exact too: a retry resumes it from that count.
        if dep_status is not TaskStatus.COMPLETED:
            session.execute(
                text(
                    "UPDATE tasks SET unmet_dependencies = unmet_dependencies - 1, "
                    "updated_at = now() WHERE id = :id AND unmet_dependencies > 0"
                ),
                {"id": task_id},
            )
            freed = session.execute(Q["free_tasks"], {"task_ids": [task_id]}).all()
            events.record_many(
                session,
                [events.Event(team_id, "task.unblocked", r.id, {}) for r in freed],
            )
        events.record(
            session, team_id, "dependency.removed", task_id, depends_on=str(depends_on_task_id)
        )
    from orchestration.orchestrator import request_pass

    request_pass(team_id)


def graph_chunks(team_id: uuid.UUID) -> Iterator[tuple[str, list[Any]]]:
    """The team's dependency graph from one snapshot, a chunk at a time (db.engine.chunks_of):
    ("nodes", rows of id, title, status, parent_task_id), every task in creation order, then
    ("edges", rows of task_id, depends_on_task_id) in creation order; at least one chunk of
    each. NotFound is raised by the first next()."""
    with session_scope() as session:
        # Nodes and edges read in two statements, from one snapshot: no edge without its task.
        session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        if session.get(Team, team_id) is None:
            raise NotFound(f"team {team_id} not found")
        nodes = (
            select(Task.id, Task.title, Task.status, Task.parent_task_id)
            .where(Task.team_id == team_id)
            .order_by(Task.created_at, Task.id)
        )
        for chunk in chunks_of(session, nodes):
            yield "nodes", chunk
        edges = (
            select(TaskDependency.task_id, TaskDependency.depends_on_task_id)
            .join(Task, Task.id == TaskDependency.task_id)
            .where(Task.team_id == team_id)
            .order_by(TaskDependency.created_at, TaskDependency.id)
        )
        for chunk in chunks_of(session, edges):
            yield "edges", chunk
