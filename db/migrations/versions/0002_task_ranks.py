"""task ranks: a maintained topological order of the waits-for graph

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03

Each task gets start_rank < end_rank such that every point of the team's waits-for graph
(orchestration/graph.py) ranks above every point it waits for. Adding a dependency whose end
already ranks below the dependent's start cannot close a cycle, so most cycle checks need no
walk. Existing tasks are ranked here, team by team, in a topological order that follows
creation order where it can.
"""

import heapq
import uuid
from collections import defaultdict

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

Point = tuple[uuid.UUID, int]  # (task, 0 for its start, 1 for its end)


def _team_order(
    tasks: list[tuple[uuid.UUID, uuid.UUID | None]], edges: list[tuple[uuid.UUID, uuid.UUID]]
) -> list[Point]:
    """Kahn's algorithm over one team's points, ties in creation order, start before end.

    A frozen copy of orchestration.graph.point_order: a migration must not change when the
    application does. A team whose rows already loop (written by hand, bypassing the checks)
    gets its looping points last, in creation order; no order can satisfy a loop."""
    position: dict[Point, int] = {}
    for i, (task, _) in enumerate(tasks):
        position[(task, 0)] = 2 * i
        position[(task, 1)] = 2 * i + 1
    after: dict[Point, list[Point]] = defaultdict(list)
    waiting: dict[Point, int] = dict.fromkeys(position, 0)

    def wait(point: Point, before: Point) -> None:
        if before in position:
            after[before].append(point)
            waiting[point] += 1

    for task, parent in tasks:
        wait((task, 1), (task, 0))
        if parent is not None:
            wait((task, 0), (parent, 0))
            wait((parent, 1), (task, 1))
    for task, dep in edges:
        wait((task, 0), (dep, 1))
    heap = [(position[p], p) for p, n in waiting.items() if n == 0]
    heapq.heapify(heap)
    order: list[Point] = []
    while heap:
        _, point = heapq.heappop(heap)
        order.append(point)
        for nxt in after[point]:
            waiting[nxt] -= 1
            if waiting[nxt] == 0:
                heapq.heappush(heap, (position[nxt], nxt))
    placed = set(order)
    order += sorted((p for p in position if p not in placed), key=position.__getitem__)
    return order


def upgrade() -> None:
    op.add_column("tasks", sa.Column("start_rank", sa.Numeric(), nullable=True))
    op.add_column("tasks", sa.Column("end_rank", sa.Numeric(), nullable=True))
    conn = op.get_bind()
    teams = conn.execute(sa.text("SELECT DISTINCT team_id FROM tasks")).scalars().all()
    for team_id in teams:
        tasks = [
            (r.id, r.parent_task_id)
            for r in conn.execute(
                sa.text(
                    "SELECT id, parent_task_id FROM tasks WHERE team_id = :team "
                    "ORDER BY created_at, id"
                ),
                {"team": team_id},
            )
        ]
        edges = [
            (r.task_id, r.depends_on_task_id)
            for r in conn.execute(
                sa.text(
                    "SELECT d.task_id, d.depends_on_task_id FROM task_dependencies d "
                    "JOIN tasks t ON t.id = d.task_id WHERE t.team_id = :team"
                ),
                {"team": team_id},
            )
        ]
        ranks: dict[uuid.UUID, list[int]] = {}
        for rank, (task, point) in enumerate(_team_order(tasks, edges), start=1):
            ranks.setdefault(task, [0, 0])[point] = rank
        ids = list(ranks)
        conn.execute(
            sa.text(
                "UPDATE tasks t SET start_rank = n.s, end_rank = n.e "
                "FROM unnest(CAST(:ids AS uuid[]), CAST(:s AS numeric[]), CAST(:e AS numeric[])) "
                "AS n(id, s, e) WHERE t.id = n.id"
            ),
            {"ids": ids, "s": [ranks[i][0] for i in ids], "e": [ranks[i][1] for i in ids]},
        )
    op.alter_column("tasks", "start_rank", nullable=False)
    op.alter_column("tasks", "end_rank", nullable=False)
    op.create_check_constraint("ranks_ordered", "tasks", "start_rank < end_rank")
    op.create_index("ix_tasks_team_start_rank", "tasks", ["team_id", "start_rank"])
    op.create_index("ix_tasks_team_end_rank", "tasks", ["team_id", "end_rank"])


def downgrade() -> None:
    op.drop_index("ix_tasks_team_end_rank", table_name="tasks")
    op.drop_index("ix_tasks_team_start_rank", table_name="tasks")
    op.drop_constraint("ranks_ordered", "tasks", type_="check")
    op.drop_column("tasks", "end_rank")
    op.drop_column("tasks", "start_rank")
