"""Cycle checks through the tasks' ranks agree with the pure oracle, step by step.

Random tasks (random parents, some created with dependencies), random edges in random
directions added one at a time and in batches, and removals, on the real database. Each accept
or refusal is compared with orchestration.graph.dependency_cycle over the model of the graph
the test keeps itself; after every step the ranks order every waits-for edge and the database
holds exactly the model's edges."""

from __future__ import annotations

import itertools
import random
import uuid
from collections import defaultdict
from decimal import Decimal

import pytest
from sqlalchemy import select, text

from db.engine import get_engine
from db.models import Task, TaskDependency
from db.queries import Q
from orchestration import graph
from orchestration.decomposition import create_plan, create_task
from orchestration.dependencies import add_dependencies, add_dependency, remove_dependency
from orchestration.errors import DependencyCycle
from tests.factories import ManagerFactory, TeamFactory

Edge = tuple[uuid.UUID, uuid.UUID]


class Model:
    """The graph as the test expects it, and how often each check path ran."""

    def __init__(self, team_id: uuid.UUID) -> None:
        self.team_id = team_id
        self.parent_of: dict[uuid.UUID, uuid.UUID | None] = {}
        self.edges: set[Edge] = set()
        self.ordered_already = 0  # accepted edges that moved no rank (the no-walk path)
        self.reordered = 0  # accepted edges that moved ranks (the Pearce-Kelly path)
        self.refused = 0

    def depends_on(self) -> dict[uuid.UUID, list[uuid.UUID]]:
        result: dict[uuid.UUID, list[uuid.UUID]] = defaultdict(list)
        for task, dep in self.edges:
            result[task].append(dep)
        return result

    def closes_cycle(self, edges: list[Edge]) -> bool:
        """Whether adding these edges, one after the other, closes a cycle at some point."""
        depends_on = self.depends_on()
        for task, dep in edges:
            if graph.dependency_cycle(self.parent_of, depends_on, task, dep) is not None:
                return True
            depends_on[task].append(dep)
        return False

    def ranks(self) -> dict[uuid.UUID, tuple[Decimal, Decimal]]:
        with get_engine().connect() as conn:
            rows = conn.execute(
                select(Task.id, Task.start_rank, Task.end_rank).where(Task.team_id == self.team_id)
            )
            return {r.id: (r.start_rank, r.end_rank) for r in rows}

    def check(self) -> None:
        with get_engine().connect() as conn:
            violations = conn.execute(Q["rank_violations"], {"team_id": self.team_id}).scalar()
            stored = {
                (r.task_id, r.depends_on_task_id)
                for r in conn.execute(
                    select(TaskDependency.task_id, TaskDependency.depends_on_task_id)
                    .join(Task, Task.id == TaskDependency.task_id)
                    .where(Task.team_id == self.team_id)
                )
            }
        assert violations == 0
        assert stored == self.edges

    def count(self, before: dict[uuid.UUID, tuple[Decimal, Decimal]]) -> None:
        if self.ranks() == before:
            self.ordered_already += 1
        else:
            self.reordered += 1


def assert_names_a_cycle(model: Model, error: DependencyCycle, added: list[Edge]) -> None:
    """The error's path is a cycle of the graph with the refused edges: every step is an
    edge, or a parent/child link."""
    cycle = [uuid.UUID(x) for x in error.cycle]
    assert cycle[0] == cycle[-1]
    edges = model.edges | set(added)
    for a, b in itertools.pairwise(cycle):
        assert (a, b) in edges or model.parent_of.get(a) == b or model.parent_of.get(b) == a, (
            f"{a} -> {b} is not a step of the graph"
        )


def new_task(model: Model, rng: random.Random) -> None:
    tasks = list(model.parent_of)
    parent = rng.choice(tasks) if tasks and rng.random() < 0.5 else None
    deps = rng.sample(tasks, k=min(len(tasks), rng.choice([0, 0, 1, 2])))
    data: dict[str, object] = {"title": f"t{len(tasks)}", "depends_on": deps}
    if parent is not None:
        data["parent_task_id"] = parent
    before_ids = set(model.parent_of)
    # Depending on one's own ancestor closes a cycle: the oracle sees the new task first.
    probe = uuid.uuid4()
    model.parent_of[probe] = parent
    refused = model.closes_cycle([(probe, d) for d in deps])
    del model.parent_of[probe]
    try:
        task = create_task(model.team_id, data)
    except DependencyCycle:
        assert refused, "create_task refused a task the oracle accepts"
        model.refused += 1
        with get_engine().connect() as conn:
            count = conn.execute(
                text("SELECT count(*) FROM tasks WHERE team_id = :t"), {"t": model.team_id}
            ).scalar()
        assert count == len(before_ids)
        return
    assert not refused, "create_task accepted a cycle"
    model.parent_of[task.id] = parent
    model.edges.update((task.id, d) for d in deps)


def add_one(model: Model, rng: random.Random) -> None:
    task, dep = rng.sample(list(model.parent_of), 2)
    refused = (task, dep) not in model.edges and model.closes_cycle([(task, dep)])
    before = model.ranks()
    try:
        add_dependency(model.team_id, task, dep)
    except DependencyCycle as error:
        assert refused, f"{task} on {dep} refused, the oracle accepts it"
        assert_names_a_cycle(model, error, [(task, dep)])
        model.refused += 1
        return
    assert not refused, f"{task} on {dep} accepted, it closes a cycle"
    if (task, dep) not in model.edges:
        model.count(before)
    model.edges.add((task, dep))


def add_batch(model: Model, rng: random.Random) -> None:
    tasks = list(model.parent_of)
    batch = [tuple(rng.sample(tasks, 2)) for _ in range(rng.randint(1, 8))]
    pairs: list[Edge] = [(a, b) for a, b in dict.fromkeys(batch)]
    new = [p for p in pairs if p not in model.edges]
    refused = model.closes_cycle(new)
    before = model.ranks()
    try:
        created, existing = add_dependencies(model.team_id, pairs)
    except DependencyCycle as error:
        assert refused, f"batch {new} refused, the oracle accepts it"
        assert_names_a_cycle(model, error, new)
        model.refused += 1
        return
    assert not refused, f"batch {new} accepted, it closes a cycle"
    assert (created, existing) == (len(new), len(pairs) - len(new))
    if new:
        model.count(before)
    model.edges.update(new)


def remove_one(model: Model, rng: random.Random) -> None:
    if model.edges:
        task, dep = rng.choice(sorted(model.edges))
        remove_dependency(model.team_id, task, dep)
        model.edges.discard((task, dep))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_ranked_cycle_checks_agree_with_the_oracle(seed: int) -> None:
    rng = random.Random(seed)
    model = Model(TeamFactory().id)
    for _ in range(12):
        new_task(model, rng)
        model.check()
    steps = [new_task, add_one, add_one, add_batch, add_batch, remove_one]
    for _ in range(160):
        rng.choice(steps)(model, rng)
        model.check()
    # Both paths ran, and some edges were refused: the comparison covered all three outcomes.
    assert model.ordered_already > 5
    assert model.reordered > 5
    assert model.refused > 5


def test_reordering_lets_an_earlier_task_wait_for_a_later_one() -> None:
    """b was created after a, so a's end ranks below b's start; `a depends on b` moves a (and
    what waits for it) above b, and then b depending on a's subtree is a cycle."""
    model = Model(TeamFactory().id)
    a = create_task(model.team_id, {"title": "a"}).id
    child = create_task(model.team_id, {"title": "a1", "parent_task_id": a}).id
    b = create_task(model.team_id, {"title": "b"}).id
    c = create_task(model.team_id, {"title": "c", "depends_on": [a]}).id
    model.parent_of = {a: None, child: a, b: None, c: None}
    model.edges = {(c, a)}
    before = model.ranks()
    assert before[a][1] < before[b][0]
    add_dependency(model.team_id, a, b)
    model.edges.add((a, b))
    after = model.ranks()
    assert after[b][1] < after[a][0] < after[child][0] < after[child][1] < after[a][1]
    assert after[a][1] < after[c][0]
    model.check()
    with pytest.raises(DependencyCycle) as error:
        add_dependency(model.team_id, b, child)
    assert error.value.cycle == [str(b), str(child), str(a), str(b)]
    with pytest.raises(DependencyCycle):
        add_dependencies(model.team_id, [(b, c)])
    model.check()


def test_plans_and_subtasks_are_ranked_inside_their_parents() -> None:
    team = TeamFactory()
    ManagerFactory(team=team)
    model = Model(team.id)
    first = create_task(team.id, {"title": "first"}).id
    plan = {
        "key": "root",
        "title": "root",
        "subtasks": [
            {"key": "x", "title": "x", "depends_on": ["y"]},
            {"key": "y", "title": "y", "subtasks": [{"key": "y1", "title": "y1"}]},
        ],
    }
    created = create_plan(team.id, plan, max_depth=3)
    by_title = {t.title: t.id for t in created}
    # Subtasks added one by one to one parent each find room, however many there are.
    for i in range(60):
        create_task(team.id, {"title": f"y1.{i}", "parent_task_id": by_title["y1"]})
    ranks = model.ranks()
    assert ranks[first][1] < ranks[by_title["root"]][0]  # the plan goes after the team's tasks
    assert ranks[by_title["y"]][1] < ranks[by_title["x"]][0]  # x waits for y
    with get_engine().connect() as conn:
        assert conn.execute(Q["rank_violations"], {"team_id": team.id}).scalar() == 0
