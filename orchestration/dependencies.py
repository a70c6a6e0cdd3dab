"""Dependency edges (seed epic 5): added and removed under the team's graph lock, cycles
(hierarchy included) refused in the transaction that would close them."""

from __future__ import annotations

import uuid
from collections import defaultdict
from typing import Any

from sqlalchemy import any_, cast, delete, insert, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import UUID as PG_UUID
from sqlalchemy.orm import Session

from db.models import FINAL, Task, TaskDependency, TaskStatus, Team
from db.queries import Q
from orchestration import events, graph
from orchestration.errors import (
    DependencyCycle,
    InvalidInput,
    InvalidTransition,
    NotFound,
    SelfDependency,
)
from orchestration.locks import lock_graph

NOT_STARTED = (TaskStatus.PENDING, TaskStatus.BLOCKED)


def _locked_task(session: Session, task_id: uuid.UUID, *, share: bool = False) -> Task | None:
    query = select(Task).where(Task.id == task_id)
    query = query.with_for_update(read=share)
    return session.execute(query).scalar_one_or_none()


def check_cycle(session: Session, task_id: uuid.UUID, depends_on: uuid.UUID) -> None:
    """Raise DependencyCycle when `task_id depends on depends_on` would close a cycle."""
    reaches = session.execute(Q["reaches"], {"task_id": task_id, "depends_on": depends_on}).scalar()
    if reaches:
        raise DependencyCycle(cycle_path(session, task_id, depends_on))


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


def add_edge(session: Session, team_id: uuid.UUID, task: Task, dep: Task) -> None:
    """Insert `task depends on dep` (caller holds the graph lock, both rows locked) and keep
    readiness: an unmet dependency blocks the task and the pending tasks below it."""
    if task.id == dep.id:
        raise SelfDependency(task.id)
    check_cycle(session, task.id, dep.id)
    session.add(TaskDependency(task_id=task.id, depends_on_task_id=dep.id))
    session.flush()
    if dep.status is not TaskStatus.COMPLETED:
        session.execute(
            text(
                "UPDATE tasks SET unmet_dependencies = unmet_dependencies + 1, updated_at = now() "
                "WHERE id = :id"
            ),
            {"id": task.id},
        )
        held = session.execute(Q["block_tasks"], {"task_id": task.id}).all()
        events.record_many(
            session,
            [events.Event(team_id, "task.blocked", r.id, {"by": str(dep.id)}) for r in held],
        )


def add_dependency(
    team_id: uuid.UUID, task_id: uuid.UUID, depends_on_task_id: uuid.UUID
) -> tuple[TaskDependency, bool]:
    """Make task_id wait for depends_on_task_id; (edge, True) when created, (edge, False)
    when it already existed."""
    with events.transaction() as session:
        if session.get(Team, team_id) is None:
            raise NotFound(f"team {team_id} not found")
        lock_graph(session, team_id)
        task = _locked_task(session, task_id)
        if task is None or task.team_id != team_id:
            raise NotFound(f"task {task_id} not found")
        if task_id == depends_on_task_id:
            raise SelfDependency(task_id)
        # Share-locked: a completion of it in flight commits before we read its status.
        dep = _locked_task(session, depends_on_task_id, share=True)
        if dep is None or dep.team_id != team_id:
            raise InvalidInput(
                f"depends_on_task_id {depends_on_task_id} is not a task of this team",
                {"depends_on_task_id": ["not a task of this team"]},
            )
        existing = session.execute(
            select(TaskDependency).where(
                TaskDependency.task_id == task_id,
                TaskDependency.depends_on_task_id == depends_on_task_id,
            )
        ).scalar_one_or_none()
        if existing is not None:
            return existing, False
        if task.status not in NOT_STARTED:
            raise InvalidTransition(
                f"task {task_id} is {task.status.value}; dependencies can only be added "
                "before it starts"
            )
        add_edge(session, team_id, task, dep)
        edge = session.execute(
            select(TaskDependency).where(
                TaskDependency.task_id == task_id,
                TaskDependency.depends_on_task_id == depends_on_task_id,
            )
        ).scalar_one()
        events.record(
            session, team_id, "dependency.added", task_id, depends_on=str(depends_on_task_id)
        )
        return edge, True


MAX_BATCH_EDGES = 10_000


def check_batch(session: Session, new: list[tuple[uuid.UUID, uuid.UUID]]) -> None:
    """Raise DependencyCycle when adding these edges would close a cycle.

    Any such cycle runs new edge, existing path, new edge, ...: from a new dependency's end,
    through edges that exist, to the start of some new edge's task. One walk finds, for each new
    dependency, the new tasks whose start it reaches; a cycle among the new edges linked that way
    is a cycle of the graph. Only then is the graph around them read to name it."""
    tasks = sorted({t for t, _ in new})
    reached: dict[uuid.UUID, set[uuid.UUID]] = defaultdict(set)
    for source, task in session.execute(
        Q["walk_from"], {"depends_on": sorted({d for _, d in new}), "task_ids": tasks}
    ):
        reached[source].add(task)
    if not reached:
        return
    edges_of: dict[uuid.UUID, list[int]] = defaultdict(list)
    for i, (task, _) in enumerate(new):
        edges_of[task].append(i)
    linked = {
        i: [j for task in reached.get(dep, ()) for j in edges_of[task]]
        for i, (_, dep) in enumerate(new)
    }
    if graph.find_cycle(linked) is None:
        return
    # Name the cycle: add the edges one by one, each checked against the ones before it.
    for task, dep in new:
        check_cycle(session, task, dep)
        session.add(TaskDependency(task_id=task, depends_on_task_id=dep))
        session.flush()
    raise AssertionError("a cycle among the new edges was found, then not")  # pragma: no cover


def add_dependencies(
    team_id: uuid.UUID, edges: list[tuple[uuid.UUID, uuid.UUID]]
) -> tuple[int, int]:
    """Add many edges (task, depends on) in one transaction, all or none: the same checks as
    add_dependency, with one cycle walk for the whole batch. Returns (created, existing)."""
    pairs = list(dict.fromkeys(edges))
    if len(pairs) > MAX_BATCH_EDGES:
        raise InvalidInput(
            f"at most {MAX_BATCH_EDGES} edges at once", {"edges": ["too many edges"]}
        )
    for task_id, dep_id in pairs:
        if task_id == dep_id:
            raise SelfDependency(task_id)
    with events.transaction() as session:
        if session.get(Team, team_id) is None:
            raise NotFound(f"team {team_id} not found")
        lock_graph(session, team_id)
        ids = sorted({x for pair in pairs for x in pair})
        rows = {
            r.id: r
            for r in session.execute(
                select(Task.id, Task.team_id, Task.status)
                .where(Task.id == any_(cast(ids, ARRAY(PG_UUID))))
                .order_by(Task.id)
                .with_for_update()
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
        tasks = sorted({task_id for task_id, _ in pairs})
        existing = {
            (r.task_id, r.depends_on_task_id)
            for r in session.execute(
                select(TaskDependency.task_id, TaskDependency.depends_on_task_id).where(
                    TaskDependency.task_id == any_(cast(tasks, ARRAY(PG_UUID)))
                )
            )
        }
        new = [p for p in pairs if p not in existing]
        if not new:
            return 0, len(pairs)
        for task_id, _ in new:
            if rows[task_id].status not in NOT_STARTED:
                raise InvalidTransition(
                    f"task {task_id} is {rows[task_id].status.value}; dependencies can only be "
                    "added before it starts"
                )
        check_batch(session, new)
        session.execute(
            insert(TaskDependency.metadata.tables["task_dependencies"]),
            [{"task_id": t, "depends_on_task_id": d} for t, d in new],
        )
        waiting = [t for t, d in new if rows[d].status is not TaskStatus.COMPLETED]
        if waiting:
            session.execute(Q["add_unmet"], {"task_ids": waiting})
            held = session.execute(Q["block_many"], {"task_ids": sorted(set(waiting))}).all()
            events.record_many(
                session, [events.Event(team_id, "task.blocked", r.id, {}) for r in held]
            )
        events.record(session, team_id, "dependency.added", None, edges=len(new))
        return len(new), len(pairs) - len(new)


def remove_dependency(
    team_id: uuid.UUID, task_id: uuid.UUID, depends_on_task_id: uuid.UUID
) -> None:
    """Drop the edge; a task left with nothing to wait for becomes ready."""
    with events.transaction() as session:
        lock_graph(session, team_id)
        task = _locked_task(session, task_id)
        if task is None or task.team_id != team_id:
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
        if dep_status is not TaskStatus.COMPLETED and task.status not in FINAL:
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


def dependency_graph(team_id: uuid.UUID) -> dict[str, list[dict[str, Any]]]:
    """Every task of the team as a node and every dependency as an edge."""
    with events.transaction() as session:
        if session.get(Team, team_id) is None:
            raise NotFound(f"team {team_id} not found")
        nodes = session.execute(
            select(Task.id, Task.title, Task.status, Task.parent_task_id)
            .where(Task.team_id == team_id)
            .order_by(Task.created_at, Task.id)
        ).all()
        edges = session.execute(
            select(TaskDependency.task_id, TaskDependency.depends_on_task_id)
            .join(Task, Task.id == TaskDependency.task_id)
            .where(Task.team_id == team_id)
            .order_by(TaskDependency.created_at, TaskDependency.id)
        ).all()
    return {
        "nodes": [
            {
                "id": n.id,
                "title": n.title,
                "status": n.status.value,
                "parent_task_id": n.parent_task_id,
            }
            for n in nodes
        ],
        "edges": [
            {"task_id": e.task_id, "depends_on_task_id": e.depends_on_task_id} for e in edges
        ],
    }
