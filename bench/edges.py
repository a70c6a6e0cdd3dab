"""Benchmark 4: dependency inserts with cycle checks, against the size of the team's graph.

A team holding T tasks (pending, in chains of 10), loaded with their ranks (a topological
order of the waits-for graph, see orchestration/graph.py). Edges go from a random later task to
a random earlier one, the usual shape (never a cycle): the ranks already order them, so the
cycle check is a comparison of two ranks; an edge against the order would search and move the
points ranked between its ends, which tests/integration/test_dependency_ranks.py covers.
Three insert paths are timed:

- api: dependencies.add_dependency, one edge per request as `POST .../dependencies` does
  (graph lock, row locks, the rank check, unmet count and blocking, in one statement that is
  its own durable transaction). Beside it, in the same run and through the same engine, its
  floor: transactions that insert one row and commit durably, nothing else
  (`commit_floor_per_s`); one edge per durable transaction cannot go faster.
- clients: the same, from CLIENTS threads at once (as concurrent requests do): their usual
  edges share statements and commits (orchestration/coalesce.py). Beside it, for comparison:
  CLIENTS threads each committing one-row transactions at once
  (`clients_commit_floor_per_s`), whose commits share WAL flushes only.
- servers: the same from SERVERS processes of SERVER_THREADS threads each, as `gunicorn -w 3
  --threads 16` would serve that many concurrent requests: each process shares statements
  among its own threads, and the processes' statements and commits overlap. The median of
  SERVER_ROUNDS rounds.
- batch: dependencies.add_dependencies, `POST .../dependencies` with many edges, in batches of
  BATCH edges per transaction (the ranks read with the row locks, one INSERT for the batch).
  Beside it, its floor: as many rows inserted straight into task_dependencies, BATCH a durable
  transaction, with nothing of the engine around them (`batch_floor_per_s`); the batch and
  random figures are also given as fractions of it.
- plan: decomposition.create_plan with a plan of P nodes, each depending on the previous one or
  two (cycle check and rank layout in Python over the plan, then bulk inserts): edges per
  second of the call, the median of PLANS calls.
- random: add_dependencies in batches of BATCH edges in random directions, on a second team of
  T tasks: each edge follows a hidden order of whole chains in a random permutation, so none
  closes a cycle, yet about half run against the ranks (earlier task on later) and need the
  search and the reorder. Beside it, its floor: the statements the engine sent for each batch
  replayed with nothing around them on a copy of the database (with_statements_alone); no
  client code takes these batches past it.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import random
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from bench import harness
from bench.harness import BulkTask, log

CHAIN = 10
BATCH = 1000
PLANS = 3
COMMITS = 1000
CLIENTS = 8
SERVERS = 3
SERVER_THREADS = 16
SERVER_ROUNDS = 3


def _together(threads: int, work: Callable[[int], None]) -> float:
    """Seconds for work(0) .. work(threads - 1), each in a thread of its own, started together."""
    gate = threading.Barrier(threads + 1)

    def run(i: int) -> None:
        gate.wait()
        work(i)

    running = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for t in running:
        t.start()
    gate.wait()
    started = time.perf_counter()
    for t in running:
        t.join()
    return time.perf_counter() - started


def commit_floor(commits: int = COMMITS, clients: int = 1) -> float:
    """Transactions per second that insert one row into a logged table and commit (the server's
    synchronous_commit as configured: durable by default), through the engine's pool, from
    `clients` threads at once (their commits share WAL flushes, as concurrent requests' do)."""
    from sqlalchemy import text

    from db.engine import get_engine

    engine = get_engine()
    with engine.connect() as conn:
        conn.execute(text("CREATE TABLE IF NOT EXISTS bench_commit_floor (n integer NOT NULL)"))
        conn.commit()
    each = commits // clients

    def client(_: int) -> None:
        with engine.connect() as conn:
            for n in range(each):
                conn.execute(text("INSERT INTO bench_commit_floor VALUES (:n)"), {"n": n})
                conn.commit()

    elapsed = _together(clients, client)
    with engine.connect() as conn:
        conn.execute(text("DROP TABLE bench_commit_floor"))
        conn.commit()
    return round(each * clients / elapsed, 1)


def batch_floor(pairs: list[tuple[uuid.UUID, uuid.UUID]]) -> float:
    """Edges per second stored with nothing of the engine around them: BATCH rows a
    transaction, inserted straight into task_dependencies (its indexes, foreign keys and
    same-team trigger) in the one statement the engine uses, and committed durably, through
    the engine's pool. A batch of edges cannot go faster. The rows are deleted afterwards,
    outside the timing (no task's unmet count ever saw them)."""
    from sqlalchemy import text

    from db.engine import get_engine

    arrays = {"task_ids": [t for t, _ in pairs], "depends_on": [d for _, d in pairs]}
    with get_engine().connect() as conn:
        started = time.perf_counter()
        for i in range(0, len(pairs), BATCH):
            conn.execute(
                text(
                    "INSERT INTO task_dependencies (task_id, depends_on_task_id) "
                    "SELECT * FROM unnest(CAST(:task_ids AS uuid[]), CAST(:depends_on AS uuid[]))"
                ),
                {k: v[i : i + BATCH] for k, v in arrays.items()},
            )
            conn.commit()
        elapsed = time.perf_counter() - started
        conn.execute(
            text(
                "DELETE FROM task_dependencies WHERE (task_id, depends_on_task_id) IN "
                "(SELECT * FROM unnest(CAST(:task_ids AS uuid[]), CAST(:depends_on AS uuid[])))"
            ),
            arrays,
        )
        conn.commit()
    return round(len(pairs) / elapsed, 1)


def _changes(conn: Any) -> tuple[Any, ...]:
    """What adding edges changes, summed over the database: the edges, the ranks, the unmet
    counts, the blocked tasks and the events."""
    return tuple(
        conn.execute(
            "SELECT (SELECT count(*) FROM task_dependencies), sum(start_rank), sum(end_rank), "
            "sum(unmet_dependencies), count(*) FILTER (WHERE status = 'blocked'), "
            "(SELECT count(*) FROM task_events) FROM tasks"
        ).fetchone()
        or ()
    )


def with_statements_alone(
    team: uuid.UUID, pairs: list[tuple[uuid.UUID, uuid.UUID]], database: str
) -> tuple[float, float]:
    """Seconds for add_dependencies over pairs in batches of BATCH, and seconds for the very
    statements it sent replayed on an identical copy of the database (statements_replayed)."""
    engine_s, (replay_s,) = statements_replayed(team, pairs, database)
    return engine_s, sum(replay_s)


def statements_replayed(
    team: uuid.UUID,
    pairs: list[tuple[uuid.UUID, uuid.UUID]],
    database: str,
    alterations: tuple[str, ...] = ("",),
) -> tuple[float, list[list[float]]]:
    """Seconds for add_dependencies over pairs in batches of BATCH, and, for each of
    alterations, the seconds of each batch's statements replayed on a copy of the database
    taken before the first batch (harness.database_copy) and altered by it: SQL statements
    separated by ';', run in autocommit before the first batch ("" leaves the copy as it is).

    The replay sends the very statements the engine sent, by raw psycopg, with the same
    parameters sent as the engine's pool sends them and one durable commit a batch, but no
    client work between them: no Python deciding what to send next, no SQLAlchemy, no Redis.
    Each batch is replayed right after the engine ran it, on every copy in turn (the order
    turning a step each batch), so all see the machine in the same state. Every copy must end
    identical to the database, or its replay did other work (AssertionError)."""
    import psycopg
    from psycopg.types.array import ListBinaryDumper
    from sqlalchemy import event

    from db.engine import get_engine
    from orchestration.dependencies import add_dependencies

    sent: list[tuple[str, Any, bool]] = []

    def capture(*args: Any) -> None:
        # (connection, cursor, statement, parameters, context, executemany)
        sent.append((args[2], args[3], args[5]))

    engine_s = 0.0
    replay_s: list[list[float]] = [[] for _ in alterations]
    with contextlib.ExitStack() as stack:
        copies = [
            stack.enter_context(harness.database_copy(database, f"copy{i}"))
            for i in range(len(alterations))
        ]
        replays = [stack.enter_context(psycopg.connect(harness.libpq_url(c))) for c in copies]
        for replay, alteration in zip(replays, alterations, strict=True):
            # As the engine's pool sends lists (db/engine.py).
            replay.adapters.register_dumper(list, ListBinaryDumper)
            replay.autocommit = True
            for statement in filter(str.strip, alteration.split(";")):
                replay.execute(statement)
            replay.autocommit = False
        engine = get_engine()
        event.listen(engine, "before_cursor_execute", capture)
        stack.callback(event.remove, engine, "before_cursor_execute", capture)
        for n, i in enumerate(range(0, len(pairs), BATCH)):
            sent.clear()
            started = time.perf_counter()
            add_dependencies(team, pairs[i : i + BATCH])
            engine_s += time.perf_counter() - started
            for k in range(len(replays)):
                turn = (n + k) % len(replays)
                replay_s[turn].append(_replay(replays[turn], sent))
        with psycopg.connect(harness.libpq_url(database)) as original:
            expected = _changes(original)
        for replay in replays:
            if _changes(replay) != expected:
                raise AssertionError("the replayed statements left another database")
    return engine_s, replay_s


def _replay(conn: Any, sent: list[tuple[str, Any, bool]]) -> float:
    """Seconds to run the statements captured from the engine, and commit."""
    started = time.perf_counter()
    with conn.cursor() as cur:
        for statement, params, many in sent:
            if many:
                cur.executemany(statement, params)
            else:
                cur.execute(statement, params)
                if cur.description is not None:
                    cur.fetchall()
    conn.commit()
    return time.perf_counter() - started


def _from_clients(team: uuid.UUID, pairs: list[tuple[uuid.UUID, uuid.UUID]]) -> float:
    """Seconds for CLIENTS threads, started together, to add the pairs one per call."""
    from orchestration.dependencies import add_dependency

    def client(i: int) -> None:
        for task_id, dep_id in pairs[i::CLIENTS]:
            add_dependency(team, task_id, dep_id)

    return _together(CLIENTS, client)


def _server(
    team: uuid.UUID, pairs: list[tuple[uuid.UUID, uuid.UUID]], gate: Any, made: Any
) -> None:
    """One server process: SERVER_THREADS threads adding the pairs one per call once the gate
    opens (its first pair before, to open its connections); puts how many it created."""
    from orchestration.dependencies import add_dependency

    first = int(add_dependency(team, *pairs[0])[1])
    created = [0] * SERVER_THREADS

    def client(i: int) -> None:
        created[i] = sum(add_dependency(team, t, d)[1] for t, d in pairs[1:][i::SERVER_THREADS])

    gate.wait()
    _together(SERVER_THREADS, client)
    made.put(first + sum(created))


def in_processes(target: Callable[..., None], args: list[tuple[Any, ...]], edges: int) -> float:
    """Seconds from the moment forked processes, target(*args[i], gate, made) each, all wait
    at the gate to the moment each has put how many edges it inserted into made; they must
    add up to edges."""
    context = multiprocessing.get_context("fork")  # a child gets its own pools (db.engine)
    gate = context.Barrier(len(args) + 1)
    made = context.Queue()
    workers = [context.Process(target=target, args=(*a, gate, made)) for a in args]
    for w in workers:
        w.start()
    gate.wait()
    started = time.perf_counter()
    inserted = sum(made.get() for _ in workers)
    elapsed = time.perf_counter() - started
    for w in workers:
        w.join()
    if inserted != edges:
        raise AssertionError(f"{inserted} of {edges} edges went in")
    return elapsed


def _from_servers(team: uuid.UUID, pairs: list[tuple[uuid.UUID, uuid.UUID]]) -> float:
    """Seconds for SERVERS processes of SERVER_THREADS threads, started together, to add the
    pairs one per call (but for each process's first); every pair must go in."""
    return in_processes(_server, [(team, pairs[i::SERVERS]) for i in range(SERVERS)], len(pairs))


def _background(total: int) -> list[BulkTask]:
    ids = [uuid.uuid4() for _ in range(total)]
    return [BulkTask(ids[i], [ids[i - 1]] if i % CHAIN else []) for i in range(total)]


def later_on_earlier(
    ids: list[uuid.UUID],
    count: int,
    rng: random.Random,
    taken: set[tuple[uuid.UUID, uuid.UUID]],
) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """count edges (task, depends on) from a random later task to a random earlier one of
    another chain, none of them in taken, which gains them."""
    pairs: list[tuple[uuid.UUID, uuid.UUID]] = []
    while len(pairs) < count:
        a, b = rng.randrange(len(ids)), rng.randrange(len(ids))
        pair = (ids[max(a, b)], ids[min(a, b)])
        if a // CHAIN != b // CHAIN and pair not in taken:
            taken.add(pair)
            pairs.append(pair)
    return pairs


def random_pairs(
    ids: list[uuid.UUID], count: int, rng: random.Random
) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """count distinct edges (task, depends on) between chains, oriented by a hidden order of
    the chains in a random permutation (a chain's tasks stay in their order): no cycle, and
    about half against the creation order the ranks start from."""
    chains = len(ids) // CHAIN
    position = list(range(chains))
    rng.shuffle(position)

    def hidden(i: int) -> int:
        return position[i // CHAIN] * CHAIN + i % CHAIN

    taken: set[tuple[uuid.UUID, uuid.UUID]] = set()
    pairs: list[tuple[uuid.UUID, uuid.UUID]] = []
    while len(pairs) < count:
        a, b = rng.randrange(len(ids)), rng.randrange(len(ids))
        if a // CHAIN == b // CHAIN:
            continue
        later, earlier = (a, b) if hidden(a) > hidden(b) else (b, a)
        pair = (ids[later], ids[earlier])
        if pair not in taken:
            taken.add(pair)
            pairs.append(pair)
    return pairs


def measure(
    tasks: int, api_edges: int, plan_nodes: int, batch_edges: int = 5 * BATCH, seed: int = 7
) -> dict[str, Any]:
    from orchestration.decomposition import create_plan
    from orchestration.dependencies import add_dependencies, add_dependency

    rng = random.Random(seed)
    with harness.stack("edges") as st:
        team = harness.make_team(workers=1, capacity=1)
        background = _background(tasks)
        harness.bulk_insert(team, background)
        ids = [t.id for t in background]
        taken: set[tuple[uuid.UUID, uuid.UUID]] = set()
        pairs = later_on_earlier(ids, api_edges, rng, taken)
        harness.freeze_fixtures()
        floor = commit_floor()
        started = time.perf_counter()
        for task_id, dep_id in pairs:
            add_dependency(team, task_id, dep_id)
        api_s = time.perf_counter() - started
        clients_s = _from_clients(team, later_on_earlier(ids, api_edges, rng, taken))
        clients_floor = commit_floor(clients=CLIENTS)
        servers_edges = 8 * api_edges
        # A round of under a second: the median of SERVER_ROUNDS, as a single one moved by a
        # quarter between runs (4,752-6,206 edges/s over 5 rounds at 100,000 tasks).
        servers_rates = [
            round(
                (servers_edges - SERVERS)
                / _from_servers(team, later_on_earlier(ids, servers_edges, rng, taken)),
                1,
            )
            for _ in range(SERVER_ROUNDS)
        ]
        batch_pairs = later_on_earlier(ids, batch_edges, rng, taken)
        started = time.perf_counter()
        for i in range(0, len(batch_pairs), BATCH):
            add_dependencies(team, batch_pairs[i : i + BATCH])
        batch_s = time.perf_counter() - started
        stored = batch_floor(later_on_earlier(ids, batch_edges, rng, taken))
        nodes = [
            {
                "key": f"n{i}",
                "title": f"plan node {i}",
                "depends_on": [f"n{j}" for j in (i - 1, i - 2) if j >= 0],
            }
            for i in range(plan_nodes)
        ]
        plan = {"key": "root", "title": "plan root", "subtasks": nodes}
        plan_edges = sum(len(n["depends_on"]) for n in nodes)
        # One call of a second or two: the median of PLANS calls, as the machine's noise
        # moves a single one by a third.
        plan_rates = []
        for _ in range(PLANS):
            started = time.perf_counter()
            create_plan(team, plan, max_depth=3)
            plan_rates.append(round(plan_edges / (time.perf_counter() - started), 1))
        # A team of its own: the edges above follow creation order, these a hidden one.
        other = harness.make_team(workers=1, capacity=1)
        background = _background(tasks)
        harness.bulk_insert(other, background)
        random_batch = random_pairs([t.id for t in background], batch_edges, rng)
        harness.freeze_fixtures()
        random_s, statements_s = with_statements_alone(other, random_batch, st.database)
    return {
        "tasks": tasks,
        "api_edges": api_edges,
        "api_edges_per_s": round(api_edges / api_s, 1),
        "api_ms_per_edge": round(api_s * 1000 / api_edges, 2),
        "commit_floor_per_s": floor,
        "api_vs_commit_floor": round(api_edges / api_s / floor, 3),
        "clients": CLIENTS,
        "clients_edges_per_s": round(api_edges / clients_s, 1),
        "clients_vs_api": round(api_s / clients_s, 2),
        "clients_commit_floor_per_s": clients_floor,
        "clients_vs_commit_floor": round(api_edges / clients_s / clients_floor, 3),
        "servers": SERVERS,
        "server_threads": SERVER_THREADS,
        "servers_edges": servers_edges,
        "servers_edges_per_s": harness.median(servers_rates),
        "servers_rounds": servers_rates,
        "batch_edges": batch_edges,
        "batch_size": BATCH,
        "batch_edges_per_s": round(batch_edges / batch_s, 1),
        "batch_floor_per_s": stored,
        "batch_vs_floor": round(batch_edges / batch_s / stored, 3),
        "random_edges_per_s": round(batch_edges / random_s, 1),
        "random_vs_floor": round(batch_edges / random_s / stored, 3),
        "random_statements_alone_per_s": round(batch_edges / statements_s, 1),
        "random_vs_statements_alone": round(statements_s / random_s, 3),
        "plan_edges": plan_edges,
        "plan_edges_per_s": harness.median(plan_rates),
        "plan_rounds_edges_per_s": plan_rates,
    }


def run(sizes: list[int], api_edges: int, plan_nodes: int) -> dict[str, Any]:
    rows = []
    for size in sizes:
        log(f"edges: {size} tasks, {api_edges} single inserts, a plan of {plan_nodes} nodes")
        row = measure(size, api_edges, plan_nodes)
        log(
            f"  api {row['api_edges_per_s']} edges/s (one-row durable commits: "
            f"{row['commit_floor_per_s']}/s), {CLIENTS} clients "
            f"{row['clients_edges_per_s']} edges/s (their commits alone: "
            f"{row['clients_commit_floor_per_s']}/s), {SERVERS}x{SERVER_THREADS} clients "
            f"{row['servers_edges_per_s']} edges/s, batch {row['batch_edges_per_s']} edges/s "
            f"(1,000-row durable inserts: {row['batch_floor_per_s']} edges/s), "
            f"random {row['random_edges_per_s']} edges/s (its statements alone: "
            f"{row['random_statements_alone_per_s']} edges/s), plan {row['plan_edges_per_s']} "
            "edges/s"
        )
        rows.append(row)
    last = rows[-1] if rows else {}
    return {
        "rows": rows,
        "targets": {
            "api_5000_per_s_at_largest": bool(last) and last["api_edges_per_s"] >= 5000,
            "clients_5000_per_s_at_largest": bool(last) and last["clients_edges_per_s"] >= 5000,
            "servers_5000_per_s_at_largest": bool(last) and last["servers_edges_per_s"] >= 5000,
            "batch_5000_per_s_at_largest": bool(last) and last["batch_edges_per_s"] >= 5000,
            "random_5000_per_s_at_largest": bool(last) and last["random_edges_per_s"] >= 5000,
            "plan_5000_per_s_at_largest": bool(last) and last["plan_edges_per_s"] >= 5000,
        },
    }
