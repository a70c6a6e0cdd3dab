"""Cycle checks through the tasks' ranks agree with the pure oracle, step by step.

Random tasks (random parents, some created with dependencies), random edges in random
directions added one at a time and in batches, and removals, on the real database. Each accept
or refusal is compared with orchestration.graph.dependency_cycle over the model of the graph
the test keeps itself; after every step the ranks order every waits-for edge, the database
holds exactly the model's edges, and each task's unmet count and readiness follow from them."""

from __future__ import annotations

import itertools
import random
import uuid
from collections import defaultdict
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select, text

from db.engine import get_engine
from db.models import Task, TaskDependency
from db.queries import Q
from orchestration import dependencies, graph
from orchestration.decomposition import create_plan, create_task
from orchestration.dependencies import add_dependencies, add_dependency, remove_dependency
from orchestration.errors import DependencyCycle
from tests.factories import ManagerFactory, TeamFactory
from tests.support.invariants import measure_invariants

# Tasks whose readiness disagrees with their counts: blocked exactly when they wait for a
# dependency or their parent is blocked (nothing here completes).
_MISREADY = text(
    """
    SELECT t.id, t.status, t.unmet_dependencies FROM tasks t
    LEFT JOIN tasks p ON p.id = t.parent_task_id
    WHERE t.team_id = :team_id
      AND (t.status = 'blocked')
          <> (t.unmet_dependencies > 0 OR coalesce(p.status = 'blocked', false))
    """
)

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
            misready = list(conn.execute(_MISREADY, {"team_id": self.team_id}))
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
        assert not misready, f"readiness disagrees with the counts: {misready}"
        assert not measure_invariants(self.team_id).unmet_drift

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


# -- batches: one joint search and reorder for a batch's out-of-order edges -------------------


class JointSpy:
    """Counts how a batch's out-of-order edges went in: together, or edge by edge."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.joint = 0
        self.single = 0
        joint, single = dependencies._add_jointly, dependencies._add_out_of_order

        def counted_joint(*args: Any, **kwargs: Any) -> dependencies.Moves | None:
            moves = joint(*args, **kwargs)
            self.joint += moves is not None
            return moves

        def counted_single(*args: Any, **kwargs: Any) -> None:
            self.single += 1
            single(*args, **kwargs)

        monkeypatch.setattr(dependencies, "_add_jointly", counted_joint)
        monkeypatch.setattr(dependencies, "_add_out_of_order", counted_single)


def random_batches(model: Model, rng: random.Random, rounds: int) -> None:
    """Batches of up to 20 edges in random directions: most run between two task trees in a
    hidden order of the trees (about half against the ranks, none closing a cycle), a few are
    random; each batch goes in whole or is refused whole, as the oracle says."""

    def root(task: uuid.UUID) -> uuid.UUID:
        return ([task, *graph.ancestors(model.parent_of, task)])[-1]

    roots = list(dict.fromkeys(root(t) for t in model.parent_of))  # in creation order
    rng.shuffle(roots)
    position = {r: i for i, r in enumerate(roots)}
    tasks = list(model.parent_of)
    for _ in range(rounds):
        batch: list[Edge] = []
        size = rng.randint(2, 20)
        while len(batch) < size:
            a, b = rng.sample(tasks, 2)
            if rng.random() < 0.95:
                if root(a) == root(b):
                    continue
                if position[root(a)] < position[root(b)]:
                    a, b = b, a
            batch.append((a, b))
        pairs = list(dict.fromkeys(batch))
        new = [p for p in pairs if p not in model.edges]
        refused = model.closes_cycle(new)
        before = model.ranks()
        try:
            created, existing = add_dependencies(model.team_id, pairs)
        except DependencyCycle as error:
            assert refused, f"batch {new} refused, the oracle accepts it"
            assert_names_a_cycle(model, error, new)
            assert model.ranks() == before
            model.refused += 1
            model.check()
            continue
        assert not refused, f"batch {new} accepted, it closes a cycle"
        assert (created, existing) == (len(new), len(pairs) - len(new))
        model.edges.update(new)
        model.reordered += model.ranks() != before
        model.ordered_already += model.ranks() == before
        model.check()


def small_team(rng: random.Random, tasks: int = 40) -> Model:
    model = Model(TeamFactory().id)
    for i in range(tasks):
        tasks_so_far = list(model.parent_of)
        parent = rng.choice(tasks_so_far) if tasks_so_far and rng.random() < 0.3 else None
        data: dict[str, object] = {"title": f"t{i}"}
        if parent is not None:
            data["parent_task_id"] = parent
        model.parent_of[create_task(model.team_id, data).id] = parent
    return model


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_direction_batches_agree_with_the_oracle(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = JointSpy(monkeypatch)
    rng = random.Random(seed)
    model = small_team(rng)
    random_batches(model, rng, 40)
    counts = (model.reordered, model.refused, spy.joint)
    # All three outcomes ran; batches went in through the joint search (one out-of-order
    # edge alone takes the single path).
    assert model.reordered > 3 and model.refused > 1 and spy.joint > 3, counts


def test_a_cycle_through_the_batch_s_own_edges_is_refused_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """a, b, c, d in creation order: a on b and b on c run against the ranks, c on d too, and
    d on a closes the loop; no edge of the graph is part of it. Nothing goes in."""
    spy = JointSpy(monkeypatch)
    model = Model(TeamFactory().id)
    a, b, c, d, e = (create_task(model.team_id, {"title": n}).id for n in "abcde")
    model.parent_of = dict.fromkeys([a, b, c, d, e])
    add_dependencies(model.team_id, [(e, a)])
    model.edges = {(e, a)}
    before = model.ranks()
    batch = [(a, b), (b, c), (c, d), (d, a), (e, b)]
    with pytest.raises(DependencyCycle) as error:
        add_dependencies(model.team_id, batch)
    cycle = [uuid.UUID(x) for x in error.value.cycle]
    assert set(cycle) == {a, b, c, d}
    assert_names_a_cycle(model, error.value, batch)
    assert model.ranks() == before
    model.check()
    assert spy.joint == 0 and spy.single == 0  # refused by the joint search, nothing moved
    # Without the closing edge the same batch goes in, reordered: d, c, b, a, then e.
    add_dependencies(model.team_id, [p for p in batch if p != (d, a)])
    model.edges.update(p for p in batch if p != (d, a))
    ranks = model.ranks()
    assert ranks[d][1] < ranks[c][0] and ranks[c][1] < ranks[b][0]
    assert ranks[b][1] < ranks[a][0] and ranks[a][1] < ranks[e][0]
    model.check()
    assert spy.joint == 1


def test_batches_mixing_ordered_and_out_of_order_edges(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ordered edges go in first and the joint search follows them: an out-of-order edge that
    closes a loop only through an ordered edge of the same batch is refused; a mix that closes
    nothing goes in, with subtasks moving inside their parents."""
    spy = JointSpy(monkeypatch)
    model = Model(TeamFactory().id)
    p = create_task(model.team_id, {"title": "p"}).id
    p1 = create_task(model.team_id, {"title": "p1", "parent_task_id": p}).id
    q = create_task(model.team_id, {"title": "q"}).id
    r = create_task(model.team_id, {"title": "r"}).id
    s = create_task(model.team_id, {"title": "s"}).id
    model.parent_of = {p: None, p1: p, q: None, r: None, s: None}
    # r on p1 is ordered; p on r runs against the ranks and, with it, makes p wait for its own
    # subtask: refused by the joint search (q on s is out of order too), the ordered edge and
    # the harmless one with it.
    refused = [(r, p1), (p, r), (q, s)]
    with pytest.raises(DependencyCycle) as error:
        add_dependencies(model.team_id, refused)
    assert_names_a_cycle(model, error.value, refused)
    model.check()
    assert spy.joint == 0 and spy.single == 0
    # s on q is ordered; p1 on r, q on r and p on s run against the ranks.
    batch = [(s, q), (p1, r), (q, r), (p, s)]
    assert not model.closes_cycle(batch)
    assert add_dependencies(model.team_id, batch) == (4, 0)
    assert spy.joint == 1
    model.edges.update(batch)
    model.check()
    ranks = model.ranks()
    assert ranks[p][0] < ranks[p1][0] < ranks[p1][1] < ranks[p][1]
    assert ranks[s][1] < ranks[p][0] and ranks[r][1] < ranks[q][0]


def test_a_batch_whose_search_would_read_too_much_goes_edge_by_edge(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Above the cap the joint search gives up (nothing written) and each out-of-order edge
    takes the single path: the same answers, the same invariant."""
    monkeypatch.setattr(dependencies, "JOINT_SEARCH_CAP", 3)
    spy = JointSpy(monkeypatch)
    rng = random.Random(5)
    model = small_team(rng, tasks=25)
    random_batches(model, rng, 25)
    assert spy.single > 10
    assert model.refused > 0 and model.reordered > 3
