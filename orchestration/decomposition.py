"""Creating tasks (seed epic 2): one at a time, as a plan tree, or from a goal through the
planner; reading them back, alone, as a list or as a hierarchy."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from marshmallow import ValidationError
from sqlalchemy import Select, insert, select, text, tuple_, union_all
from sqlalchemy.orm import Session, aliased

from db.engine import chunks_of, retry_deadlocks, session_scope
from db.models import Task, TaskStatus, Team, TeamMember, TeamStatus
from db.queries import Q
from orchestration import events, graph, plans
from orchestration.config import get_settings
from orchestration.dependencies import add_edge, insert_ordered, place_task
from orchestration.errors import (
    AgentError,
    AgentTimeout,
    DependencyCycle,
    InvalidInput,
    InvalidTransition,
    NoManager,
    NotFound,
)
from orchestration.lifecycle import agent_profile, record_manager_usage, team_manager
from orchestration.locks import lock_graph
from orchestration.paging import bad_cursor, decode_cursor, encode_cursor, timestamp_and_id

TASK_FIELDS = (
    "title",
    "description",
    "acceptance_criteria",
    "required_skills",
    "priority",
    "estimated_tokens",
    "max_revisions",
    "input_data",
)
MAX_HIERARCHY_DEPTH = 50
# A parent can take new subtasks until it is final; a leaf only before it is assigned.
OPEN_PARENT = (TaskStatus.PENDING, TaskStatus.BLOCKED, TaskStatus.IN_PROGRESS)


def _team(session: Session, team_id: uuid.UUID) -> Team:
    team = session.get(Team, team_id)
    if team is None:
        raise NotFound(f"team {team_id} not found")
    return team


def _request_pass(team_id: uuid.UUID) -> None:
    from orchestration.orchestrator import request_pass

    request_pass(team_id)


# How many levels a task sits below its root (a root is at 1).
_DEPTH = text(
    """
    WITH RECURSIVE up(id, parent_task_id, depth) AS (
        SELECT id, parent_task_id, 1 FROM tasks WHERE id = :task_id
        UNION ALL
        SELECT t.id, t.parent_task_id, up.depth + 1 FROM tasks t JOIN up ON t.id = up.parent_task_id
    )
    SELECT max(depth) FROM up
    """
)


@retry_deadlocks
def create_task(team_id: uuid.UUID, data: dict[str, Any]) -> Task:
    """Create one task, optionally under a parent and depending on other tasks."""
    depends_on = list(dict.fromkeys(data.get("depends_on") or []))
    parent_id = data.get("parent_task_id")
    with events.transaction() as session:
        team = _team(session, team_id)
        lock_graph(session, team_id)
        parent: Task | None = None
        if parent_id is not None:
            # Another team's task is neither read nor locked: it is not found, as a missing one.
            parent = session.execute(
                select(Task).where(Task.id == parent_id, Task.team_id == team_id).with_for_update()
            ).scalar_one_or_none()
            if parent is None:
                raise NotFound(f"parent task {parent_id} not found")
            if parent.status not in OPEN_PARENT or (
                not parent.is_summary and parent.status is TaskStatus.IN_PROGRESS
            ):
                raise InvalidTransition(
                    f"parent task {parent_id} is {parent.status.value}; it cannot take new subtasks"
                )
            depth = session.execute(_DEPTH, {"task_id": parent_id}).scalar_one()
            if depth >= MAX_HIERARCHY_DEPTH:
                raise InvalidInput(
                    f"parent task {parent_id} is {depth} levels deep; a task tree has at most "
                    f"{MAX_HIERARCHY_DEPTH} levels",
                    {"parent_task_id": [f"at most {MAX_HIERARCHY_DEPTH} levels deep"]},
                )
        deps = []
        for dep_id in depends_on:
            dep = session.execute(
                select(Task)
                .where(Task.id == dep_id, Task.team_id == team_id)
                .with_for_update(read=True)
            ).scalar_one_or_none()
            if dep is None:
                raise InvalidInput(
                    f"depends_on: {dep_id} is not a task of this team",
                    {"depends_on": [f"{dep_id} is not a task of this team"]},
                )
            deps.append(dep)
        # Absent and empty lists are both stored as null, as plans store them.
        values = {k: data[k] for k in TASK_FIELDS if data.get(k) not in (None, [])}
        blocked = parent is not None and parent.status is TaskStatus.BLOCKED
        # Placed without its dependencies; add_edge then reorders where they need it.
        start_rank, end_rank = place_task(session, team_id, parent_id)
        task = Task(
            team_id=team_id,
            parent_task_id=parent_id,
            status=TaskStatus.BLOCKED if blocked else TaskStatus.PENDING,
            start_rank=start_rank,
            end_rank=end_rank,
            **values,
        )
        session.add(task)
        session.flush()
        if parent is not None and not parent.is_summary:
            parent.is_summary = True
        for dep in deps:
            add_edge(session, team_id, task.id, dep.id, dep_status=dep.status)
        session.flush()
        session.refresh(task)
        events.record(
            session, team_id, "task.created", task.id, title=task.title, status=task.status.value
        )
        ready = task.status is TaskStatus.PENDING and team.status is TeamStatus.ACTIVE
    if ready:
        _request_pass(team_id)
    return task


@retry_deadlocks
def create_plan(
    team_id: uuid.UUID,
    plan: dict[str, Any],
    max_depth: int,
    also: Callable[[Session, list[uuid.UUID]], None] | None = None,
) -> list[Task]:
    """Create a TaskNode tree (already loaded by PlanSchema) in one transaction, parents first.
    Nodes deeper than max_depth are not created. `also(session, task_ids)` runs in that
    transaction once the tasks are in: what it raises undoes them."""
    cycle = plans.plan_cycle(plan)
    if cycle is not None:
        raise DependencyCycle(cycle)
    planned = plans.flatten(plan, max_depth)
    merged = graph.find_cycle(
        graph.waits_for_graph(
            {p.index: p.parent_index for p in planned}, {p.index: p.depends_on for p in planned}
        )
    )
    if merged is not None:
        titles = [planned[i].node["title"] for i in graph.cycle_tasks(merged)]
        raise InvalidInput(
            f"with max_depth={max_depth} the work cut below it merges into a cycle: "
            + " -> ".join(titles)
            + "; raise max_depth",
            {"max_depth": ["merges dependent work into a cycle"]},
        )
    ids = [uuid.uuid4() for _ in planned]
    has_children = {p.parent_index for p in planned if p.parent_index is not None}
    # Creation order is the order of the plan: created_at breaks priority ties that way.
    base = datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    waits: list[bool] = []
    for p in planned:
        blocked = bool(p.depends_on) or (p.parent_index is not None and waits[p.parent_index])
        waits.append(blocked)
        node = p.node
        rows.append(
            {
                "id": ids[p.index],
                "team_id": team_id,
                "parent_task_id": ids[p.parent_index] if p.parent_index is not None else None,
                "title": node["title"],
                "description": node.get("description"),
                "acceptance_criteria": node.get("acceptance_criteria") or None,
                "required_skills": node.get("required_skills") or None,
                "estimated_tokens": node.get("estimated_tokens"),
                "priority": node.get("priority", 5),
                "status": TaskStatus.BLOCKED if blocked else TaskStatus.PENDING,
                "is_summary": p.index in has_children,
                "unmet_dependencies": len(p.depends_on),
                "created_at": base + timedelta(microseconds=p.index),
                "updated_at": base,
            }
        )
    edges = [(ids[p.index], ids[d]) for p in planned for d in p.depends_on]
    with events.transaction() as session:
        team = _team(session, team_id)
        if team_manager(session, team_id) is None:
            raise NoManager("decomposition needs a manager: add a member with role 'manager'")
        # The plan goes after every point of the team, in an order of its own graph.
        lock_graph(session, team_id)
        ranks = graph.layout_ranks(
            [p.index for p in planned],
            {p.index: p.parent_index for p in planned},
            {p.index: p.depends_on for p in planned},
            session.execute(Q["highest_rank"], {"team_id": team_id}).scalar(),
        )
        for p, row in zip(planned, rows, strict=True):
            row["start_rank"], row["end_rank"] = ranks[p.index]
        session.execute(insert(Task), rows)
        if edges:
            # All ordered by the layout (no walk) and counted in the rows: one statement.
            insert_ordered(
                session,
                team_id,
                edges,
                {ids[i]: rank for i, rank in ranks.items()},
                waiting=[],
            )
        events.record_many(
            session,
            [events.Event(team_id, "task.created", r["id"], {"title": r["title"]}) for r in rows],
        )
        if also is not None:
            also(session, ids)
        tasks = list(
            session.scalars(select(Task).where(Task.id.in_(ids)).order_by(Task.created_at))
        )
        active = team.status is TeamStatus.ACTIVE
    if active:
        _request_pass(team_id)
    return tasks


def decompose_goal(team_id: uuid.UUID, goal: str, max_depth: int) -> list[Task]:
    """The planner turns the goal into a plan, which is then created as create_plan does."""
    tokens, cost = 0, Decimal(0)
    # What the model was paid for counts on the manager whether or not a plan comes of it.
    try:
        plan, tokens, cost = planned(team_id, goal, max_depth)
        return create_plan(team_id, plan, max_depth)
    except AgentError as exc:
        tokens, cost = exc.tokens, exc.cost
        raise
    finally:
        record_manager_usage(team_id, tokens, Decimal(cost))


def planned(
    team_id: uuid.UUID, goal: str, max_depth: int, stop: threading.Event | None = None
) -> tuple[dict[str, Any], int, Decimal]:
    """The planner's plan for the goal (loaded by PlanSchema), with the tokens and cost it
    was billed. AgentError (carrying what the failed calls were billed) when no valid plan
    comes; AgentTimeout past ORCH_DECOMPOSE_TIMEOUT: from then on no call or retry of the
    model starts (one under way may take up to LLM_TIMEOUT more to end). Setting `stop`
    ends it the same way, early."""
    from orchestration.agents import get_planner

    with events.transaction() as session:
        _team(session, team_id)
        if team_manager(session, team_id) is None:
            raise NoManager("decomposition needs a manager: add a member with role 'manager'")
        roster = [
            agent_profile(m)
            for m in session.scalars(
                select(TeamMember)
                .where(TeamMember.team_id == team_id)
                .order_by(TeamMember.joined_at, TeamMember.id)
            )
        ]
    planner = get_planner()
    with_usage = getattr(planner, "plan_with_usage", None)
    tokens, cost = 0, Decimal(0)
    limit = get_settings().decompose_timeout
    stop = stop if stop is not None else threading.Event()
    timed_out = threading.Event()

    def expire() -> None:
        timed_out.set()
        stop.set()

    timer = threading.Timer(limit, expire)
    timer.daemon = True
    timer.start()
    try:
        if with_usage is not None:
            try:
                raw, usage, cost = with_usage(goal, roster, max_depth, stop)
            except AgentError as exc:
                if timed_out.is_set():
                    raise AgentTimeout(
                        f"the planner gave no plan within {limit:g} s (ORCH_DECOMPOSE_TIMEOUT)",
                        tokens=exc.tokens,
                        cost=exc.cost,
                    ) from exc
                raise
            tokens = int(usage.total_tokens)
        else:
            raw = planner.plan(goal, roster, max_depth)
        try:
            plan = plans.PlanSchema().load(raw)
        except ValidationError as exc:
            raise AgentError(
                f"the planner returned an invalid plan: {exc.messages}", tokens=tokens, cost=cost
            ) from exc
        return plan, tokens, Decimal(cost)
    finally:
        timer.cancel()


def get_task(team_id: uuid.UUID, task_id: uuid.UUID) -> Task:
    with events.transaction() as session:
        task = session.execute(
            select(Task).where(Task.id == task_id, Task.team_id == team_id)
        ).scalar_one_or_none()
        if task is None:
            raise NotFound(f"task {task_id} not found")
        return task


def list_tasks(team_id: uuid.UUID, status: str | None = None) -> list[Task]:
    """The team's tasks, priority first, then oldest first."""
    return [task for chunk in task_chunks(team_id, status) for task in chunk]


def task_chunks(
    team_id: uuid.UUID, status: str | None = None, after: str | None = None
) -> Iterator[list[Task]]:
    """The team's tasks in list order from just after the cursor `after` (see task_page) to
    the end, a chunk at a time (db.engine.chunks_of), all read in one statement (one
    snapshot). The first chunk (empty when there is no task) comes before any other, so
    NotFound and InvalidInput are raised by the first next(); the transaction ends with the
    iteration, or when the iterator is closed."""
    query = _listing(team_id, status, after)
    with session_scope() as session:
        _team(session, team_id)
        yield from chunks_of(session, query, entities=True)


def task_page(
    team_id: uuid.UUID, limit: int, status: str | None = None, after: str | None = None
) -> tuple[list[Task], str | None]:
    """At most limit of the team's tasks in list order, from just after the cursor `after`,
    with the cursor of the next page (None when this one reaches the end). A cursor is a
    position in the order (priority, created_at, id), not a snapshot: no task is repeated or
    skipped across pages, and tasks created or reprioritised meanwhile show where they now
    rank."""
    with session_scope() as session:
        _team(session, team_id)
        tasks = list(session.scalars(_listing(team_id, status, after, limit + 1)))
    if len(tasks) <= limit:
        return tasks, None
    return tasks[:limit], _cursor(tasks[limit - 1])


# The list's order, which ix_tasks_team_order and ix_tasks_team_status_order hold.
_LIST_ORDER = (Task.priority.desc(), Task.created_at, Task.id)


def _listing(
    team_id: uuid.UUID, status: str | None, after: str | None, limit: int | None = None
) -> Select[Task]:
    """The team's tasks with status (all: None), after the cursor (from the first: None), in
    list order: priority first, then oldest first, then by id (ix_tasks_team_order, or
    ix_tasks_team_status_order with a status); at most limit of them (all: None)."""
    where = [Task.team_id == team_id]
    if status is not None:
        try:
            where.append(Task.status == TaskStatus(status))
        except ValueError as exc:
            raise InvalidInput(
                f"unknown status {status!r}", {"status": ["unknown status"]}
            ) from exc
    if after is None:
        return select(Task).where(*where).order_by(*_LIST_ORDER).limit(limit)
    priority, created_at, task_id = _position(after)
    # The rest of the list as two index ranges: the rest of the cursor's priority, then every
    # lower one, a page of each merged (one OR of the two bounds no index range: each deep page
    # read and sorted the whole team).
    rest = union_all(
        *(
            select(Task).where(*where, *bound).order_by(*_LIST_ORDER).limit(limit)
            for bound in (
                (
                    Task.priority == priority,
                    tuple_(Task.created_at, Task.id) > tuple_(created_at, task_id),
                ),
                (Task.priority < priority,),
            )
        )
    ).subquery()
    listed = aliased(Task, rest)
    return (
        select(listed).order_by(listed.priority.desc(), listed.created_at, listed.id).limit(limit)
    )


def _cursor(task: Task) -> str:
    """The position after a page: its last task's place in the list's order."""
    return encode_cursor([task.priority, task.created_at.isoformat(), str(task.id)])


def _position(cursor: str) -> tuple[int, datetime, uuid.UUID]:
    """(priority, created_at, id) of a cursor from _cursor; InvalidInput for anything else."""
    priority, created_at, task_id = decode_cursor(cursor, 3)
    # Only what _cursor writes: a priority the column can hold.
    if type(priority) is not int or not 0 <= priority <= 10:
        raise bad_cursor()
    return (priority, *timestamp_and_id(created_at, task_id))


def hierarchy_chunks(
    team_id: uuid.UUID, task_id: uuid.UUID, max_depth: int | None = None
) -> Iterator[list[Task]]:
    """The task and its subtasks down to max_depth levels below it (all: None), depth first,
    each task's subtasks in list order, a chunk at a time (db.engine.chunks_of) from one
    statement: a tree of any size is written as it is read, never held whole. The first chunk
    starts with the task; NotFound is raised by the first next()."""
    query = select(Task).from_statement(Q["task_hierarchy"])
    params = {"team_id": team_id, "task_id": task_id, "max_depth": max_depth}
    with session_scope() as session:
        chunks = chunks_of(session, query, entities=True, params=params)
        first = next(chunks)
        if not first:
            raise NotFound(f"task {task_id} not found")
        yield first
        yield from chunks
