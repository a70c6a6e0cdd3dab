"""Pure DAG helpers for dependencies and the task hierarchy. No I/O, no framework imports.

Hierarchy and dependencies are checked together as one waits-for graph over two points per
task: its start ``(id, "S")`` and its end ``(id, "E")``.

- a task ends after it starts:              ``(t, E) -> (t, S)``
- a subtask starts after its parent may:    ``(c, S) -> (p, S)``
- a parent ends after each subtask ends:    ``(p, E) -> (c, E)``
- ``t`` depends on ``d``: t starts after d: ``(t, S) -> (d, E)``

A cycle in that graph is a deadlock, so depending on one's own ancestor or descendant is a
cycle, as is any loop of explicit dependencies.

Ranks keep that graph in a topological order (Pearce & Kelly's dynamic topological sort): each
task has ``start_rank < end_rank`` and every waits-for edge points from a higher rank to a lower
one (a point comes after every point it waits for). A new dependency whose end ranks below the
dependent's start cannot close a cycle; only the others need a search, bounded by the two ranks.
The helpers here are the pure half of that: placing points, laying out new tasks, reordering.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Hashable, Iterable, Mapping, Sequence
from decimal import ROUND_FLOOR, Decimal, localcontext
from typing import TypeVar

N = TypeVar("N", bound=Hashable)

START = "S"
END = "E"


class CycleError(ValueError):
    def __init__(self, cycle: list[object]) -> None:
        super().__init__(f"dependency cycle: {' -> '.join(map(str, cycle))}")
        self.cycle = cycle


def find_path(adjacency: Mapping[N, Iterable[N]], start: N, goal: N) -> list[N] | None:
    """The shortest path start -> ... -> goal following edges, or None."""
    if start == goal:
        return [start]
    came_from: dict[N, N] = {}
    seen = {start}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for nxt in adjacency.get(node, ()):
            if nxt in seen:
                continue
            came_from[nxt] = node
            if nxt == goal:
                path = [nxt]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                return path[::-1]
            seen.add(nxt)
            queue.append(nxt)
    return None


def would_close_cycle(adjacency: Mapping[N, Iterable[N]], task: N, depends_on: N) -> list[N] | None:
    """Adding the edge task -> depends_on closes this cycle (first node repeated last), or None."""
    path = find_path(adjacency, depends_on, task)
    if path is None:
        return None
    return [task, *path]


def find_cycle(adjacency: Mapping[N, Iterable[N]]) -> list[N] | None:
    """Any cycle of the graph (first node repeated last), or None."""
    white, grey, black = 0, 1, 2
    colour: dict[N, int] = {}
    nodes = set(adjacency)
    for targets in adjacency.values():
        nodes.update(targets)
    for root in nodes:
        if colour.get(root, white) != white:
            continue
        stack: list[tuple[N, list[N]]] = [(root, list(adjacency.get(root, ())))]
        path = [root]
        colour[root] = grey
        while stack:
            node, pending = stack[-1]
            if not pending:
                colour[node] = black
                stack.pop()
                path.pop()
                continue
            nxt = pending.pop()
            state = colour.get(nxt, white)
            if state == grey:
                return [*path[path.index(nxt) :], nxt]
            if state == white:
                colour[nxt] = grey
                path.append(nxt)
                stack.append((nxt, list(adjacency.get(nxt, ()))))
    return None


def topological_order(nodes: Iterable[N], depends_on: Mapping[N, Iterable[N]]) -> list[N]:
    """Nodes with every dependency before its dependents; ties keep the input order.

    Raises CycleError when the dependencies loop.
    """
    order = list(dict.fromkeys(nodes))
    position = {node: i for i, node in enumerate(order)}
    remaining = {node: 0 for node in order}
    dependents: dict[N, list[N]] = {node: [] for node in order}
    for node in order:
        for dep in dict.fromkeys(depends_on.get(node, ())):
            if dep not in position:
                continue
            remaining[node] += 1
            dependents[dep].append(node)
    heap = [(position[n], n) for n in order if remaining[n] == 0]
    heapq.heapify(heap)
    result: list[N] = []
    while heap:
        _, node = heapq.heappop(heap)
        result.append(node)
        for nxt in dependents[node]:
            remaining[nxt] -= 1
            if remaining[nxt] == 0:
                heapq.heappush(heap, (position[nxt], nxt))
    if len(result) != len(order):
        stuck = {n: [d for d in depends_on.get(n, ()) if d in position] for n in order}
        cycle: list[N] = find_cycle(stuck) or [n for n in order if remaining[n]]
        raise CycleError(list(cycle))
    return result


def ancestors(parent_of: Mapping[N, N | None], node: N) -> list[N]:
    """Parent, grandparent, ... of node (nearest first)."""
    result: list[N] = []
    seen = {node}
    current = parent_of.get(node)
    while current is not None and current not in seen:
        result.append(current)
        seen.add(current)
        current = parent_of.get(current)
    return result


def descendants(children_of: Mapping[N, Iterable[N]], node: N) -> list[N]:
    """Every task below node, breadth first."""
    result: list[N] = []
    seen = {node}
    queue = deque([node])
    while queue:
        for child in children_of.get(queue.popleft(), ()):
            if child not in seen:
                seen.add(child)
                result.append(child)
                queue.append(child)
    return result


def waits_for_graph(
    parent_of: Mapping[N, N | None], depends_on: Mapping[N, Iterable[N]]
) -> dict[tuple[N, str], list[tuple[N, str]]]:
    """The start/end waits-for graph of the module docstring."""
    tasks: set[N] = set(parent_of)
    for task, deps in depends_on.items():
        tasks.add(task)
        tasks.update(deps)
    graph: dict[tuple[N, str], list[tuple[N, str]]] = {}
    for task in tasks:
        graph.setdefault((task, END), []).append((task, START))
        graph.setdefault((task, START), [])
        parent = parent_of.get(task)
        if parent is not None:
            graph[(task, START)].append((parent, START))
            graph.setdefault((parent, END), []).append((task, END))
    for task, deps in depends_on.items():
        for dep in deps:
            graph[(task, START)].append((dep, END))
    return graph


def cycle_tasks(points: Iterable[tuple[N, str]]) -> list[N]:
    """A waits-for path as task ids, each task once per visit."""
    result: list[N] = []
    for task, _ in points:
        if not result or result[-1] != task:
            result.append(task)
    return result


def dependency_cycle(
    parent_of: Mapping[N, N | None],
    depends_on: Mapping[N, Iterable[N]],
    task: N,
    new_dependency: N,
) -> list[N] | None:
    """The cycle (task ids, first repeated last) that `task depends on new_dependency` closes,
    counting the hierarchy; None when the edge is safe."""
    if task == new_dependency:
        return [task, task]
    graph = waits_for_graph(parent_of, depends_on)
    path = find_path(graph, (new_dependency, END), (task, START))
    if path is None:
        return None
    cycle = cycle_tasks(path)
    if cycle[0] != task:
        cycle.insert(0, task)
    if cycle[-1] != task:
        cycle.append(task)
    return cycle


# -- ranks (a maintained topological order of the points) --------------------------------------

# Ranks are exact decimals (PostgreSQL numeric): there is always a rank between two others, so
# placing a subtask never renumbers the team. Arithmetic runs at a precision no rank reaches.
RANK_PRECISION = 10_000
# A new point goes about 1/100 to 1/1000 of the way from its lower neighbour to its upper one:
# siblings appended one by one each use a sliver of their parent's room, and the new point's own
# interval still has room for its subtasks. Digits grow by about two per hundred siblings.
_SLIVER = Decimal("0.01")


def rank_between(low: Decimal, high: Decimal) -> Decimal:
    """A short decimal strictly between low and high, near low."""
    if not low < high:
        raise ValueError(f"no rank between {low} and {high}")
    with localcontext() as ctx:
        ctx.prec = RANK_PRECISION
        gap = high - low
        # The largest power of ten within the gap, then a step a hundred times finer.
        step = Decimal(1).scaleb(gap.adjusted()) * _SLIVER
        return ((low / step).to_integral_value(rounding=ROUND_FLOOR) + 1) * step


def rank_after(highest: Decimal | None) -> Decimal:
    """The first whole rank after highest (1 for an empty team): top-level tasks go last."""
    if highest is None:
        return Decimal(1)
    return highest.to_integral_value(rounding=ROUND_FLOOR) + 1


def point_order(
    tasks: Iterable[N],
    parent_of: Mapping[N, N | None],
    depends_on: Mapping[N, Iterable[N]],
) -> list[tuple[N, str]]:
    """Every point of tasks in an order the waits-for graph allows (first point first).

    Ties keep the input order, start before end, so a task list given parents first comes out
    as nested intervals in that order and later tasks rank after earlier ones where they can.
    Only edges among the given tasks count. Raises CycleError when they loop."""
    order = list(dict.fromkeys(tasks))
    known = set(order)
    nodes: list[tuple[N, str]] = []
    waits: dict[tuple[N, str], list[tuple[N, str]]] = {}
    for task in order:
        nodes += [(task, START), (task, END)]
        waits.setdefault((task, START), [])
        waits.setdefault((task, END), []).append((task, START))
        parent = parent_of.get(task)
        if parent is not None and parent in known:
            waits[(task, START)].append((parent, START))
            waits.setdefault((parent, END), []).append((task, END))
        for dep in depends_on.get(task, ()):
            if dep in known:
                waits[(task, START)].append((dep, END))
    return topological_order(nodes, waits)


def layout_ranks(
    tasks: Iterable[N],
    parent_of: Mapping[N, N | None],
    depends_on: Mapping[N, Iterable[N]],
    after: Decimal | None,
) -> dict[N, tuple[Decimal, Decimal]]:
    """(start_rank, end_rank) of new top-level task trees, after every existing point."""
    first = rank_after(after)
    ranks: dict[N, list[Decimal]] = {}
    for i, (task, point) in enumerate(point_order(tasks, parent_of, depends_on)):
        ranks.setdefault(task, [Decimal(0), Decimal(0)])[1 if point == END else 0] = first + i
    return {task: (r[0], r[1]) for task, r in ranks.items()}


def ranks_between(low: Decimal, high: Decimal, count: int) -> list[Decimal]:
    """count short decimals strictly between low and high, increasing, a power of ten apart
    (no more than an even share of the gap): room is left on both sides for later moves."""
    if not low < high:
        raise ValueError(f"no rank between {low} and {high}")
    with localcontext() as ctx:
        ctx.prec = RANK_PRECISION
        gap = high - low
        # A power of ten no larger than an even share of the gap: short, and the last one
        # still below high. The share's exponent is read at low precision (at full precision
        # a division by 3 spells out ten thousand digits) and checked exactly: rounding up to
        # the next power of ten makes the step ten times too large.
        ctx.prec = 28
        exponent = (gap / (count + 1)).adjusted()
        ctx.prec = RANK_PRECISION
        step = Decimal(1).scaleb(exponent)
        if step * (count + 1) > gap:
            step = step.scaleb(-1)
        first = (low / step).to_integral_value(rounding=ROUND_FLOOR) * step + step
        return [first + i * step for i in range(count)]


def move_above(forward: Mapping[N, Decimal], low: Decimal, high: Decimal) -> dict[N, Decimal]:
    """New ranks for a dependency `t depends on d` whose end ranks above t's start.

    forward: the points waiting for t's start (itself included) ranked below d's end, with
    their ranks (d's end not among them, else the dependency closes a cycle); low: d's end;
    high: the team's next point above it. The forward points move, in their order, into the
    free gap between the two (Pearce and Kelly hand the ranks of both searched sets out again;
    exact decimals leave room to move one set). Every edge stays ordered: a forward point only
    moves up, past nothing but d's end and points that cannot wait for it, and whatever waits
    for it ranks above high already (it would be forward otherwise)."""
    moved = sorted(forward, key=forward.__getitem__)
    return dict(zip(moved, ranks_between(low, high, len(moved)), strict=True))


# A moved point's place before its rank is known: (rank of the unmoved point it goes just
# above, its position among the points going there). An unmoved point's is (rank, 0).
Place = tuple[Decimal, int]


def lift(
    rank: Mapping[N, Decimal],
    waits: Mapping[N, Sequence[N]],
    new: Iterable[tuple[N, N]],
) -> dict[N, Place]:
    """Where the points that must move go when many dependencies are added at once, or
    CycleError (the cycle as points, each waiting for the next, first repeated last).

    rank: the points a forward search reached from the new edges' waiting points, over every
    point ranked no higher than the highest point they wait for, with the ranks of those
    waited-for points too; waits: for each reached point, the reached points it waits for (all
    of them); new: the new edges (waiting point, point it waits for). Any cycle the new edges
    close runs through reached points only, so it is found here.

    The points are visited in an order of the new graph; a point stays when it still ranks
    above everything it waits for, else it goes just above the highest of those, after the
    points already sent there. A point that stays ranks at most the search's bound, so every
    point outside the search that waits for it ranks above the bound, above any gap used;
    what it waits for outside the search ranks below it and does not move. Only the points
    that must move are returned; `place` gives them ranks."""
    # The caller's lists as they are (a new edge's waiting point gets a new one).
    preds: dict[N, Sequence[N]] = dict.fromkeys(rank, ())
    preds.update(waits)
    for waiting, waited in new:
        preds[waiting] = [*preds[waiting], waited]
    dependents: dict[N, list[N]] = {p: [] for p in preds}
    remaining: dict[N, int] = {}
    for point, before in preds.items():
        remaining[point] = len(before)
        for b in before:
            dependents[b].append(point)
    queue = deque(p for p, n in remaining.items() if n == 0)
    key: dict[N, Place] = {}
    used: dict[Decimal, int] = {}
    moved: dict[N, Place] = {}
    while queue:
        point = queue.popleft()
        own: Place = (rank[point], 0)
        before = preds[point]
        if before:
            highest = max(key[b] for b in before)
            if highest >= own:
                anchor = highest[0]
                used[anchor] = used.get(anchor, 0) + 1
                own = moved[point] = (anchor, used[anchor])
        key[point] = own
        for nxt in dependents[point]:
            remaining[nxt] -= 1
            if remaining[nxt] == 0:
                queue.append(nxt)
    if len(key) != len(remaining):
        stuck = {p: [b for b in preds[p] if b not in key] for p in remaining if p not in key}
        cycle: list[N] = find_cycle(stuck) or list(stuck)
        raise CycleError(list(cycle))
    return moved


def place(moved: Mapping[N, Place], above: Mapping[Decimal, Decimal | None]) -> dict[N, Decimal]:
    """Ranks for lift's moved points: those going above one unmoved point share the free gap
    between it and the team's next point (above[anchor]; None: nothing above, any rank is
    free), in their order there, a power of ten apart (ranks_between)."""
    by_anchor: dict[Decimal, list[tuple[int, N]]] = {}
    for point, (anchor, position) in moved.items():
        by_anchor.setdefault(anchor, []).append((position, point))
    ranks: dict[N, Decimal] = {}
    for anchor, points in by_anchor.items():
        points.sort(key=lambda item: item[0])
        ceiling = above.get(anchor)
        high = anchor + 1 if ceiling is None else ceiling
        ranks.update(
            zip((p for _, p in points), ranks_between(anchor, high, len(points)), strict=True)
        )
    return ranks
