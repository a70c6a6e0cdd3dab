"""The pure DAG helpers against brute-force oracles on small random graphs."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestration import graph
from orchestration.graph import CycleError

Adjacency = dict[int, list[int]]


# --- oracles ---------------------------------------------------------------------------------


def closure(nodes: Iterable[object], edges: Iterable[tuple[object, object]]) -> set[tuple]:
    """Transitive closure (paths of length >= 1) by repeated relaxation."""
    reach = set(edges)
    nodes = list(nodes)
    changed = True
    while changed:
        changed = False
        for a, b in list(reach):
            for c, d in list(reach):
                if b == c and (a, d) not in reach:
                    reach.add((a, d))
                    changed = True
    return reach


def edges_of(adjacency: Mapping[Any, Iterable[Any]]) -> set[tuple]:
    return {(a, b) for a, targets in adjacency.items() for b in targets}


def nodes_of(adjacency: Mapping[Any, Iterable[Any]]) -> set:
    return set(adjacency) | {b for targets in adjacency.values() for b in targets}


def has_cycle(adjacency: Mapping[Any, Iterable[Any]]) -> bool:
    reach = closure(nodes_of(adjacency), edges_of(adjacency))
    return any((n, n) in reach for n in nodes_of(adjacency))


def assert_is_cycle(cycle: list, edges: set[tuple]) -> None:
    assert len(cycle) >= 2
    assert cycle[0] == cycle[-1]
    for a, b in itertools.pairwise(cycle):
        assert (a, b) in edges, f"{a} -> {b} is not an edge of {sorted(edges)}"


def points_graph(
    parent_of: Mapping[int, int | None], depends_on: Mapping[int, Iterable[int]]
) -> set[tuple]:
    """The waits-for relation over (task, start|end), written from the module's definition."""
    tasks = set(parent_of) | nodes_of(depends_on)
    edges = {((t, "E"), (t, "S")) for t in tasks}
    for child, parent in parent_of.items():
        if parent is not None:
            edges.add(((child, "S"), (parent, "S")))
            edges.add(((parent, "E"), (child, "E")))
    for t, deps in depends_on.items():
        edges.update(((t, "S"), (d, "E")) for d in deps)
    return edges


def deadlocked(
    parent_of: Mapping[int, int | None], depends_on: Mapping[int, Iterable[int]]
) -> bool:
    if any(t in deps for t, deps in depends_on.items()):
        return True
    edges = points_graph(parent_of, depends_on)
    reach = closure({p for e in edges for p in e}, edges)
    return any((p, p) in reach for e in edges for p in e)


# --- strategies ------------------------------------------------------------------------------

MAX_NODES = 7


@st.composite
def adjacencies(draw: st.DrawFn, max_nodes: int = MAX_NODES) -> Adjacency:
    n = draw(st.integers(min_value=1, max_value=max_nodes))
    pairs = st.tuples(st.integers(0, n - 1), st.integers(0, n - 1))
    edges = draw(st.lists(pairs, max_size=n * 2))
    adjacency: Adjacency = {i: [] for i in range(n)}
    for a, b in edges:
        adjacency[a].append(b)
    return adjacency


@st.composite
def forests(draw: st.DrawFn, max_nodes: int = MAX_NODES) -> dict[int, int | None]:
    """parent_of for nodes 0..n-1; a parent always has a smaller number (so no loops)."""
    n = draw(st.integers(min_value=1, max_value=max_nodes))
    parent_of: dict[int, int | None] = {0: None}
    for i in range(1, n):
        parent_of[i] = draw(st.none() | st.integers(0, i - 1))
    return parent_of


def children_of(parent_of: Mapping[int, int | None]) -> dict[int, list[int]]:
    children: dict[int, list[int]] = {n: [] for n in parent_of}
    for child, parent in parent_of.items():
        if parent is not None:
            children[parent].append(child)
    return children


def oracle_ancestors(parent_of: Mapping[int, int | None], node: int) -> set[int]:
    edges = {(c, p) for c, p in parent_of.items() if p is not None}
    return {b for a, b in closure(parent_of, edges) if a == node}


# --- find_path / would_close_cycle / find_cycle ----------------------------------------------


def test_find_path_basics() -> None:
    adjacency = {1: [2], 2: [3], 3: [], 4: [1]}
    assert graph.find_path(adjacency, 1, 3) == [1, 2, 3]
    assert graph.find_path(adjacency, 3, 1) is None
    assert graph.find_path(adjacency, 2, 2) == [2]
    assert graph.find_path(adjacency, 9, 1) is None


def test_would_close_cycle_examples() -> None:
    adjacency = {"a": ["b"], "b": ["c"], "c": []}
    assert graph.would_close_cycle(adjacency, "c", "a") == ["c", "a", "b", "c"]
    assert graph.would_close_cycle(adjacency, "a", "c") is None
    assert graph.would_close_cycle(adjacency, "a", "a") == ["a", "a"]


@given(adjacencies(), st.integers(0, MAX_NODES - 1), st.integers(0, MAX_NODES - 1))
def test_would_close_cycle_agrees_with_closure(adjacency: Adjacency, task: int, dep: int) -> None:
    n = len(adjacency)
    task, dep = task % n, dep % n
    edges = edges_of(adjacency)
    expected = task == dep or (dep, task) in closure(adjacency, edges)
    cycle = graph.would_close_cycle(adjacency, task, dep)
    assert (cycle is not None) == expected
    if cycle is not None:
        assert cycle[0] == cycle[-1] == task
        assert cycle[1] == dep
        assert_is_cycle(cycle, edges | {(task, dep)})
        # ... and it is a real cycle once the edge is added.
        assert has_cycle({**adjacency, task: [*adjacency[task], dep]})


@given(adjacencies())
def test_find_cycle_agrees_with_closure(adjacency: Adjacency) -> None:
    cycle = graph.find_cycle(adjacency)
    assert (cycle is not None) == has_cycle(adjacency)
    if cycle is not None:
        assert_is_cycle(cycle, edges_of(adjacency))


def test_find_cycle_sees_nodes_only_named_as_targets() -> None:
    assert graph.find_cycle({1: [2]}) is None
    assert graph.find_cycle({1: [1]}) == [1, 1]


# --- topological_order -----------------------------------------------------------------------


def oracle_topological(nodes: list[int], depends_on: Mapping[int, Iterable[int]]) -> list[int]:
    """The order that keeps input order among ready nodes, by brute force (or CycleError)."""
    order = list(dict.fromkeys(nodes))
    result: list[int] = []
    while len(result) < len(order):
        ready = [
            n
            for n in order
            if n not in result and all(d in result or d not in order for d in depends_on.get(n, ()))
        ]
        if not ready:
            raise CycleError([])
        result.append(ready[0])
    return result


@given(adjacencies(), st.permutations(range(MAX_NODES)), st.integers(0, MAX_NODES))
def test_topological_order_against_oracle(
    depends_on: Adjacency, permutation: list[int], drop: int
) -> None:
    # Some dependencies name nodes outside the list; they are ignored.
    nodes = [p for p in permutation if p in depends_on][: max(1, len(depends_on) - drop % 3)]
    induced = {n: [d for d in depends_on[n] if d in nodes] for n in nodes}
    try:
        expected: list[int] | None = oracle_topological(nodes, depends_on)
    except CycleError:
        expected = None
    assert (expected is None) == has_cycle(induced)
    if expected is None:
        with pytest.raises(CycleError) as info:
            graph.topological_order(nodes, depends_on)
        assert_is_cycle(info.value.cycle, edges_of(induced))
        return
    result = graph.topological_order(nodes, depends_on)
    assert result == expected
    position = {n: i for i, n in enumerate(result)}
    assert sorted(result) == sorted(nodes)
    for n in nodes:
        for d in induced[n]:
            assert position[d] < position[n]


def test_topological_order_keeps_input_order_and_dedupes() -> None:
    assert graph.topological_order([3, 1, 2, 1], {}) == [3, 1, 2]
    assert graph.topological_order(["b", "a", "c"], {"b": ["c"]}) == ["a", "c", "b"]
    with pytest.raises(CycleError) as info:
        graph.topological_order([1, 2, 3], {1: [2], 2: [1], 3: [1]})
    assert info.value.cycle[0] == info.value.cycle[-1]
    assert set(info.value.cycle) == {1, 2}


# --- ancestors / descendants -----------------------------------------------------------------


@given(forests(), st.integers(0, MAX_NODES - 1))
def test_ancestors_against_oracle(parent_of: dict[int, int | None], node: int) -> None:
    node %= len(parent_of)
    result = graph.ancestors(parent_of, node)
    assert set(result) == oracle_ancestors(parent_of, node)
    assert len(result) == len(set(result))
    # nearest first: each is the parent of the one before
    chain = [node, *result]
    for child, parent in itertools.pairwise(chain):
        assert parent_of[child] == parent


@given(forests(), st.integers(0, MAX_NODES - 1))
def test_descendants_against_oracle(parent_of: dict[int, int | None], node: int) -> None:
    node %= len(parent_of)
    result = graph.descendants(children_of(parent_of), node)
    expected = {n for n in parent_of if node in oracle_ancestors(parent_of, n)}
    assert set(result) == expected
    assert len(result) == len(set(result))
    depth = {n: len(oracle_ancestors(parent_of, n)) for n in result}
    assert [depth[n] for n in result] == sorted(depth[n] for n in result)  # breadth first


def test_ancestors_survive_a_corrupt_parent_loop() -> None:
    assert graph.ancestors({1: 2, 2: 1}, 1) == [2]
    assert graph.descendants({1: [2], 2: [1]}, 1) == [2]


# --- dependency_cycle: dependencies and hierarchy together ----------------------------------


@st.composite
def task_states(
    draw: st.DrawFn,
) -> tuple[dict[int, int | None], dict[int, list[int]], int, int]:
    """A deadlock-free forest with dependencies (edges kept only while the oracle says so), and
    one more edge to try."""
    parent_of = draw(forests())
    n = len(parent_of)
    pairs = st.tuples(st.integers(0, n - 1), st.integers(0, n - 1))
    depends_on: dict[int, list[int]] = {}
    for a, b in draw(st.lists(pairs, max_size=2 * n)):
        candidate = {**depends_on, a: [*depends_on.get(a, []), b]}
        if not deadlocked(parent_of, candidate):
            depends_on = candidate
    task, dep = draw(pairs)
    return parent_of, depends_on, task, dep


@given(task_states())
def test_dependency_cycle_agrees_with_the_oracle(
    state: tuple[dict[int, int | None], dict[int, list[int]], int, int],
) -> None:
    parent_of, depends_on, task, dep = state
    after = {**depends_on, task: [*depends_on.get(task, []), dep]}
    cycle = graph.dependency_cycle(parent_of, depends_on, task, dep)
    assert (cycle is not None) == deadlocked(parent_of, after)
    if cycle is None:
        return
    assert cycle[0] == cycle[-1] == task
    assert cycle[1] == dep
    # every step is the new edge, an existing dependency, or a parent/child link
    for a, b in itertools.pairwise(cycle):
        assert (
            (a, b) == (task, dep)
            or b in depends_on.get(a, [])
            or parent_of.get(a) == b
            or parent_of.get(b) == a
        ), f"{a} -> {b} in {cycle}"


@given(forests(), st.integers(0, MAX_NODES - 1), st.integers(0, MAX_NODES - 1))
def test_depending_on_own_ancestor_or_descendant_is_a_cycle(
    parent_of: dict[int, int | None], a: int, b: int
) -> None:
    a, b = a % len(parent_of), b % len(parent_of)
    related = a == b or a in oracle_ancestors(parent_of, b) or b in oracle_ancestors(parent_of, a)
    cycle = graph.dependency_cycle(parent_of, {}, a, b)
    assert (cycle is not None) == related


def test_hierarchy_examples() -> None:
    #        root
    #       /    \
    #      p      q
    #     / \      \
    #    c1  c2     r
    parent_of: dict[str, str | None] = {
        "root": None,
        "p": "root",
        "q": "root",
        "c1": "p",
        "c2": "p",
        "r": "q",
    }
    assert graph.dependency_cycle(parent_of, {}, "c1", "p") == ["c1", "p", "c1"]
    assert graph.dependency_cycle(parent_of, {}, "c1", "root") is not None
    assert graph.dependency_cycle(parent_of, {}, "p", "c2") is not None
    assert graph.dependency_cycle(parent_of, {}, "root", "r") is not None
    assert graph.dependency_cycle(parent_of, {}, "c1", "c1") == ["c1", "c1"]
    assert graph.dependency_cycle(parent_of, {}, "c1", "c2") is None  # siblings
    assert graph.dependency_cycle(parent_of, {}, "p", "q") is None  # siblings
    assert graph.dependency_cycle(parent_of, {}, "c1", "r") is None  # cousins
    # q waits for p's subtree; c1 waiting for q (or its child r) would deadlock
    assert graph.dependency_cycle(parent_of, {"q": ["p"]}, "c1", "q") is not None
    assert graph.dependency_cycle(parent_of, {"q": ["p"]}, "c1", "r") is not None
    assert graph.dependency_cycle(parent_of, {"q": ["p"]}, "r", "c1") is None
    # a plain loop of dependencies
    assert graph.dependency_cycle(parent_of, {"c1": ["c2"]}, "c2", "c1") == ["c2", "c1", "c2"]


# --- ranks: a maintained topological order of the points --------------------------------------

decimals = st.decimals(min_value=-(10**6), max_value=10**6, allow_nan=False, places=6)


@given(decimals, decimals)
def test_rank_between_is_strictly_between(a: Decimal, b: Decimal) -> None:
    if a == b:
        with pytest.raises(ValueError):
            graph.rank_between(a, b)
        return
    low, high = min(a, b), max(a, b)
    rank = graph.rank_between(low, high)
    assert low < rank < high


def test_rank_between_stays_short_when_appending() -> None:
    # A thousand subtasks appended one by one to one parent, each with a grandchild.
    low, high = Decimal(5), Decimal(6)
    for _ in range(1000):
        start = graph.rank_between(low, high)
        end = graph.rank_between(start, high)
        assert low < start < graph.rank_between(start, end) < end < high
        low = end
    assert len(str(low)) < 40


def test_rank_after() -> None:
    assert graph.rank_after(None) == 1
    assert graph.rank_after(Decimal("7.25")) == 8
    assert graph.rank_after(Decimal(7)) == 8


def ordered(
    parent_of: Mapping[int, int | None],
    depends_on: Mapping[int, Iterable[int]],
    rank: Mapping[tuple[int, str], Decimal],
) -> bool:
    """Every waits-for edge goes from a higher rank to a lower one, all ranks distinct."""
    points = points_graph(parent_of, depends_on)
    distinct = len(set(rank.values())) == len(rank)
    return distinct and all(rank[a] > rank[b] for a, b in points)


@given(task_states())
def test_layout_ranks_orders_an_acyclic_graph(
    state: tuple[dict[int, int | None], dict[int, list[int]], int, int],
) -> None:
    parent_of, depends_on, _, _ = state
    ranks = graph.layout_ranks(list(parent_of), parent_of, depends_on, Decimal("41.5"))
    rank = {(t, p): ranks[t][i] for t in parent_of for i, p in enumerate("SE")}
    assert ordered(parent_of, depends_on, rank)
    assert min(rank.values()) == 42


def test_layout_ranks_refuses_a_loop_and_nests_a_tree() -> None:
    with pytest.raises(CycleError):
        graph.layout_ranks([1, 2], {2: 1}, {1: [2]}, None)
    ranks = graph.layout_ranks(["r", "a", "b"], {"a": "r", "b": "r"}, {}, None)
    assert ranks == {"r": (1, 6), "a": (2, 3), "b": (4, 5)}


def add_ranked(
    parent_of: Mapping[int, int | None],
    depends_on: dict[int, list[int]],
    rank: dict[tuple[int, str], Decimal],
    task: int,
    dep: int,
) -> bool:
    """Add `task depends on dep` as the service does (bounded forward search, move_above), on
    plain dicts; False when it closes a cycle."""
    if rank[(dep, "E")] < rank[(task, "S")]:
        depends_on.setdefault(task, []).append(dep)
        return True
    waits = points_graph(parent_of, depends_on)
    high = rank[(dep, "E")]
    forward = {(task, "S")}
    frontier = [(task, "S")]
    while frontier:
        point = frontier.pop()
        for a, b in waits:
            if b == point and a not in forward and rank[a] <= high:
                forward.add(a)
                frontier.append(a)
    if (dep, "E") in forward:
        return False
    ceiling = min((r for r in rank.values() if r > high), default=high + 1)
    rank.update(graph.move_above({p: rank[p] for p in forward}, high, ceiling))
    depends_on.setdefault(task, []).append(dep)
    return True


@given(forests(), st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6)), max_size=20))
def test_move_above_keeps_the_order_and_agrees_with_the_oracle(
    parent_of: dict[int, int | None], edges: list[tuple[int, int]]
) -> None:
    ranks = graph.layout_ranks(list(parent_of), parent_of, {}, None)
    rank = {(t, p): ranks[t][i] for t in parent_of for i, p in enumerate("SE")}
    depends_on: dict[int, list[int]] = {}
    n = len(parent_of)
    for task, dep in edges:
        task, dep = task % n, dep % n
        if task == dep or dep in depends_on.get(task, []):
            continue
        expected = graph.dependency_cycle(parent_of, depends_on, task, dep) is None
        assert add_ranked(parent_of, depends_on, rank, task, dep) == expected
        assert ordered(parent_of, depends_on, rank)


def test_move_above_keeps_the_moved_points_in_order() -> None:
    moved = graph.move_above({"t_end": Decimal(8), "t_start": Decimal(3)}, Decimal(9), Decimal(10))
    assert moved == {"t_start": Decimal("9.1"), "t_end": Decimal("9.2")}


@given(decimals, decimals, st.integers(1, 500))
def test_ranks_between_are_strictly_between_and_increasing(a: Decimal, b: Decimal, n: int) -> None:
    if a == b:
        return
    low, high = min(a, b), max(a, b)
    ranks = graph.ranks_between(low, high, n)
    assert len(ranks) == n
    assert all(x < y for x, y in itertools.pairwise([low, *ranks, high]))


def add_batch_ranked(
    parent_of: Mapping[int, int | None],
    depends_on: dict[int, list[int]],
    rank: dict[tuple[int, str], Decimal],
    batch: list[tuple[int, int]],
) -> list[object] | None:
    """Add a batch as the service does (edges the ranks order at once, then one bounded forward
    search for all the others, lift and place), on plain dicts; the cycle found (points), or
    None when the batch went in. A refused batch leaves nothing changed."""
    later = [(t, d) for t, d in batch if rank[(d, "E")] > rank[(t, "S")]]
    after = {t: list(ds) for t, ds in depends_on.items()}
    for t, d in batch:
        if (t, d) not in later:
            after.setdefault(t, []).append(d)
    moved: dict[tuple[int, str], Decimal] = {}
    if later:
        waits = points_graph(parent_of, after)
        bound = max(rank[(d, "E")] for _, d in later)
        forward = {(t, "S") for t, _ in later}
        frontier = list(forward)
        while frontier:
            point = frontier.pop()
            for a, b in waits:
                if b == point and a not in forward and rank[a] <= bound:
                    forward.add(a)
                    frontier.append(a)
        reached = {p: rank[p] for p in forward} | {(d, "E"): rank[(d, "E")] for _, d in later}
        within = {p: [b for a, b in waits if a == p and b in forward] for p in forward}
        try:
            lifted = graph.lift(reached, within, [((t, "S"), (d, "E")) for t, d in later])
        except CycleError as error:
            return list(error.cycle)
        every = sorted(rank.values())
        above = {a: next((r for r in every if r > a), None) for a, _ in lifted.values()}
        moved = graph.place(lifted, above)
        # Only points of the search move.
        assert set(moved) <= forward
    for t, d in later:
        after.setdefault(t, []).append(d)
    depends_on.clear()
    depends_on.update(after)
    rank.update(moved)
    return None


@given(
    forests(),
    st.lists(
        st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6)), min_size=1, max_size=6),
        max_size=6,
    ),
)
def test_lift_and_place_agree_with_the_oracle(
    parent_of: dict[int, int | None], batches: list[list[tuple[int, int]]]
) -> None:
    ranks = graph.layout_ranks(list(parent_of), parent_of, {}, None)
    rank = {(t, p): ranks[t][i] for t in parent_of for i, p in enumerate("SE")}
    depends_on: dict[int, list[int]] = {}
    n = len(parent_of)
    for raw in batches:
        batch = list(dict.fromkeys((t % n, d % n) for t, d in raw))
        batch = [(t, d) for t, d in batch if t != d and d not in depends_on.get(t, [])]
        after = {t: list(ds) for t, ds in depends_on.items()}
        for t, d in batch:
            after.setdefault(t, []).append(d)
        before = dict(rank)
        cycle = add_batch_ranked(parent_of, depends_on, rank, batch)
        assert (cycle is not None) == deadlocked(parent_of, after)
        if cycle is not None:
            new_points = {((t, "S"), (d, "E")) for t, d in batch}
            assert_is_cycle(cycle, points_graph(parent_of, after) | new_points)
            assert rank == before
        assert ordered(parent_of, depends_on, rank)


def test_lift_moves_only_what_must_move() -> None:
    """a (ranked 1 to 5) depends on b (ending at 4): a's start goes just above b's end; a's
    end, above it already, stays."""
    rank = {("a", "S"): Decimal(1), ("b", "E"): Decimal(4), ("a", "E"): Decimal(5)}
    waits = {("a", "S"): [], ("a", "E"): [("a", "S")]}
    lifted = graph.lift(rank, waits, [(("a", "S"), ("b", "E"))])
    assert lifted == {("a", "S"): (Decimal(4), 1)}
    assert graph.place(lifted, {Decimal(4): Decimal(5)}) == {("a", "S"): Decimal("4.1")}
    with pytest.raises(CycleError) as error:
        graph.lift(rank, waits, [(("a", "S"), ("a", "E"))])
    assert error.value.cycle in (
        [("a", "S"), ("a", "E"), ("a", "S")],
        [("a", "E"), ("a", "S"), ("a", "E")],
    )
