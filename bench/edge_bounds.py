"""What no engine code could beat for dependency inserts on this machine
(`python -m bench.edge_bounds`): the bounds behind bench 4's missed rows (bench/README.md,
Findings).

- Single edges: the engine's own statement for the usual edge (add_ordered_edges: the
  team's graph lock shared, both tasks locked, the rank check, the insert with its unmet
  count, blocking and two events), sent by raw psycopg as the engine sends it (under its
  generic plan, BEGIN to COMMIT in one pipelined round trip): one round trip and one commit
  an edge, no SQLAlchemy, no Python between statements, no Redis publication. From 1 process
  and from CLIENTS processes (no GIL shared), with durable commits and with
  `synchronous_commit = off`; and statements of several edges each, as the engine's
  coalescer makes of concurrent calls (CLIENTS edges from 1 process, CLIENTS / 2 from 2).
  Beside them, in the same run, the engine's add_dependency from 1 client and from CLIENTS
  threads. One client cannot go faster than the durable one-process figure.
- Rank storage: RANK_WRITES random rank rewrites (start and end, in one UPDATE from arrays,
  committed) of a TASKS-row table holding an id, a team and the two ranks with their two
  indexes, ranks as PostgreSQL numeric (as the engine keeps them: exact decimals) against
  bigint, alternating rounds; and the time to send 2 * RANK_WRITES ranks as a binary array
  parameter of either type.
- Random batches: bench 4's batches of BATCH edges in random directions through the engine's
  add_dependencies, each followed by the statements the engine sent for it, replayed on an
  identical copy of the database by raw psycopg with no client work between them (one durable
  commit a batch, as the engine's; bench.edges.with_statements_alone, which `make bench` runs
  for its random row too): a team of its own, without the rest of bench 4 before it. The
  replay is what the engine's rank search and moves cost the database alone; no client code,
  however fast, takes the batches past it.
- Schema A/B (`--only schema --alter SQL`): the same batches' statements replayed on two
  copies of the database, one as the engine leaves it and one altered by SQL (say, an index
  dropped or a table's fillfactor changed), the order of the two turning each batch
  (bench.edges.statements_replayed): what a schema change would give the database's part of
  these batches, before any engine code is written for it. Beside it, in the same run, the
  same with an empty alteration (the two copies alike): the noise to read the ratio against.

Every figure comes from a throw-away database and redis-server (bench/harness.py).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from bench import harness
from bench.edges import (
    BATCH,
    CLIENTS,
    _background,
    _from_clients,
    commit_floor,
    in_processes,
    later_on_earlier,
    random_pairs,
    statements_replayed,
    with_statements_alone,
)
from bench.harness import log

TASKS = 100_000
EDGES = 2_000
RANK_WRITES = 3_000
RANK_ROUNDS = 6
BATCHES = 5


def _edge_client(
    url: str,
    team: uuid.UUID,
    batches: list[list[tuple[uuid.UUID, uuid.UUID]]],
    durable: bool,
    gate: Any,
    made: Any,
) -> None:
    import psycopg
    from psycopg.types.array import ListBinaryDumper

    from db.engine import driver_sql
    from db.queries import Q

    statement = driver_sql(Q["add_ordered_edges"])
    with psycopg.connect(url, autocommit=True) as conn:
        conn.adapters.register_dumper(list, ListBinaryDumper)
        if not durable:
            conn.execute("SET synchronous_commit = off")
        gate.wait()
        count = 0
        for batch in batches:
            # As db.engine.rows_of_generic_plan runs it for the engine.
            with conn.pipeline():
                conn.execute("BEGIN")
                conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
                cursor = conn.execute(
                    statement,
                    {
                        "team_id": team,
                        "ids": sorted({x for pair in batch for x in pair}),
                        "task_ids": [t for t, _ in batch],
                        "depends_on": [d for _, d in batch],
                    },
                    prepare=True,
                )
                conn.execute("COMMIT")
            count += len(cursor.fetchall())
        made.put(count)


def one_statement_edges(
    url: str,
    team: uuid.UUID,
    pairs: list[tuple[uuid.UUID, uuid.UUID]],
    processes: int,
    *,
    durable: bool,
    per_statement: int = 1,
) -> float:
    """Edges per second of the engine's add_ordered_edges, per_statement edges a statement,
    from `processes` processes started together; every edge must go in (the pairs are ordered
    and new)."""
    batches = [pairs[i : i + per_statement] for i in range(0, len(pairs), per_statement)]
    args = [(url, team, batches[i::processes], durable) for i in range(processes)]
    return round(len(pairs) / in_processes(_edge_client, args, len(pairs)), 1)


def engine_edges(team: uuid.UUID, pairs: list[tuple[uuid.UUID, uuid.UUID]]) -> float:
    """Edges per second of the engine's add_dependency from one client."""
    from orchestration.dependencies import add_dependency

    started = time.perf_counter()
    for task_id, dep_id in pairs:
        add_dependency(team, task_id, dep_id)
    return round(len(pairs) / (time.perf_counter() - started), 1)


def single_edges(tasks: int, edges: int, seed: int = 11) -> dict[str, Any]:
    rng = random.Random(seed)
    with harness.stack("edge_bounds") as st:
        url = harness.libpq_url(st.database)
        team = harness.make_team(workers=1, capacity=1)
        background = _background(tasks)
        harness.bulk_insert(team, background)
        ids = [t.id for t in background]
        taken: set[tuple[uuid.UUID, uuid.UUID]] = set()
        harness.freeze_fixtures()

        def fresh() -> list[tuple[uuid.UUID, uuid.UUID]]:
            return later_on_earlier(ids, edges, rng, taken)

        row: dict[str, Any] = {"tasks": tasks, "edges": edges, "clients": CLIENTS}
        row["commit_floor_per_s"] = commit_floor()
        row["clients_commit_floor_per_s"] = commit_floor(clients=CLIENTS)
        row["engine_per_s"] = engine_edges(team, fresh())
        row["engine_clients_per_s"] = round(edges / _from_clients(team, fresh()), 1)
        for processes in (1, CLIENTS):
            for durable in (True, False):
                key = f"one_statement_{processes}_{'durable' if durable else 'async'}_per_s"
                row[key] = one_statement_edges(url, team, fresh(), processes, durable=durable)
        # What CLIENTS threads' calls could reach if every statement carried as many edges as
        # there are callers (one slot of the engine's coalescer) or half as many (both slots).
        for processes, size in ((1, CLIENTS), (2, CLIENTS // 2)):
            row[f"shared_{processes}x{size}_durable_per_s"] = one_statement_edges(
                url, team, fresh(), processes, durable=True, per_statement=size
            )
        return row


def _send_ranks(conn: Any, kind: str, values: list[Any]) -> float:
    started = time.perf_counter()
    conn.execute(f"SELECT cardinality(CAST(%s AS {kind}[]))", (values,)).fetchone()
    return (time.perf_counter() - started) * 1000


def rank_storage(rows: int, writes: int, rounds: int, seed: int = 3) -> dict[str, Any]:
    """Milliseconds for `writes` random rank rewrites and for sending 2 * writes ranks, numeric
    against bigint, median of `rounds` alternating rounds."""
    import psycopg
    from psycopg.types.array import ListBinaryDumper

    rng = random.Random(seed)
    ids = [uuid.uuid4() for _ in range(rows)]
    team = uuid.uuid4()
    kinds: dict[str, Callable[[int], Any]] = {
        "numeric": lambda k: Decimal(k) + Decimal("0.25"),
        "bigint": lambda k: k << 20,
    }
    writes_ms: dict[str, list[float]] = {kind: [] for kind in kinds}
    send_ms: dict[str, list[float]] = {kind: [] for kind in kinds}
    with (
        harness.stack("rank_storage") as st,
        psycopg.connect(harness.libpq_url(st.database), autocommit=True) as conn,
    ):
        # As the engine's pool sends lists (db/engine.py).
        conn.adapters.register_dumper(list, ListBinaryDumper)
        for kind, rank in kinds.items():
            conn.execute(
                f"CREATE TABLE ranks_{kind} (id uuid PRIMARY KEY, team_id uuid NOT NULL, "
                f"start_rank {kind} NOT NULL, end_rank {kind} NOT NULL)"
            )
            with conn.cursor().copy(f"COPY ranks_{kind} FROM STDIN") as copy:
                for k, task_id in enumerate(ids):
                    copy.write_row((task_id, team, rank(2 * k + 1), rank(2 * k + 2)))
            conn.execute(f"CREATE INDEX ON ranks_{kind} (team_id, start_rank)")
            conn.execute(f"CREATE INDEX ON ranks_{kind} (team_id, end_rank)")
            conn.execute(f"VACUUM ANALYZE ranks_{kind}")
        for _ in range(rounds):
            for kind, rank in kinds.items():
                picked = rng.sample(ids, writes)
                starts = [rank(rng.randrange(10**9)) for _ in picked]
                ends = [rank(rng.randrange(10**9)) for _ in picked]
                started = time.perf_counter()
                with conn.transaction():
                    conn.execute(
                        f"UPDATE ranks_{kind} r SET start_rank = u.s, end_rank = u.e "
                        f"FROM unnest(CAST(%s AS uuid[]), CAST(%s AS {kind}[]), "
                        f"CAST(%s AS {kind}[])) AS u(id, s, e) WHERE r.id = u.id",
                        (picked, starts, ends),
                    )
                writes_ms[kind].append((time.perf_counter() - started) * 1000)
                send_ms[kind].append(_send_ranks(conn, kind, starts + ends))
    return {
        "rows": rows,
        "writes": writes,
        "rounds": rounds,
        **{f"{kind}_writes_ms": round(statistics.median(v), 1) for kind, v in writes_ms.items()},
        **{f"{kind}_send_ms": round(statistics.median(v), 2) for kind, v in send_ms.items()},
        "rounds_writes_ms": {k: [round(x, 1) for x in v] for k, v in writes_ms.items()},
    }


def random_batches(tasks: int, batches: int, seed: int = 7) -> dict[str, Any]:
    """Bench 4's random-direction batches through the engine against the statements it sent,
    replayed with no client work (bench.edges.with_statements_alone)."""
    rng = random.Random(seed)
    with harness.stack("edge_batches") as st:
        team = harness.make_team(workers=1, capacity=1)
        background = _background(tasks)
        harness.bulk_insert(team, background)
        pairs = random_pairs([t.id for t in background], batches * BATCH, rng)
        harness.freeze_fixtures()
        engine_s, statements_s = with_statements_alone(team, pairs, st.database)
    return {
        "tasks": tasks,
        "edges": len(pairs),
        "batch_size": BATCH,
        "engine_per_s": round(len(pairs) / engine_s, 1),
        "statements_alone_per_s": round(len(pairs) / statements_s, 1),
    }


def schema_ab(tasks: int, batches: int, alter: str, seed: int = 7) -> dict[str, Any]:
    """Replay time of the random batches' statements on a copy altered by `alter` against an
    unaltered one, beside the same for two unaltered copies (every copy vacuumed and analyzed
    after its alteration). Ratios above 1: the altered copy ran faster."""
    rng = random.Random(seed)
    with harness.stack("edge_schema") as st:
        team = harness.make_team(workers=1, capacity=1)
        background = _background(tasks)
        harness.bulk_insert(team, background)
        pairs = random_pairs([t.id for t in background], 2 * batches * BATCH, rng)
        harness.freeze_fixtures()
        vacuum = "; VACUUM ANALYZE tasks; VACUUM ANALYZE task_dependencies"
        result: dict[str, Any] = {"tasks": tasks, "batch_size": BATCH, "alter": alter}
        # Two unaltered copies first, then an unaltered and an altered one, on the next
        # batches of the same pairs: each pair of copies starts from the same database.
        for name, alterations, chunk in (
            ("alike", (vacuum, vacuum), pairs[: batches * BATCH]),
            ("altered", (vacuum, alter + vacuum), pairs[batches * BATCH :]),
        ):
            _, (unaltered, other) = statements_replayed(team, chunk, st.database, alterations)
            result[name] = {
                "unaltered_per_s": round(len(chunk) / sum(unaltered), 1),
                "other_per_s": round(len(chunk) / sum(other), 1),
                "total_ratio": round(sum(unaltered) / sum(other), 3),
                "median_batch_ratio": round(
                    statistics.median(u / o for u, o in zip(unaltered, other, strict=True)), 3
                ),
            }
    return result


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.edge_bounds", description=__doc__)
    p.add_argument("--tasks", type=int, default=TASKS)
    p.add_argument("--edges", type=int, default=EDGES)
    p.add_argument("--rank-writes", type=int, default=RANK_WRITES)
    p.add_argument("--rank-rounds", type=int, default=RANK_ROUNDS)
    p.add_argument("--batches", type=int, default=BATCHES)
    p.add_argument("--only", choices=("single", "ranks", "batches", "schema"))
    p.add_argument(
        "--alter",
        default="DROP INDEX ix_tasks_team_status",
        help="SQL (';' between statements) for the altered copy of --only schema",
    )
    args = p.parse_args(argv)
    result: dict[str, Any] = {"machine": harness.machine()}
    if args.only in (None, "single"):
        log(f"single edges at {args.tasks} tasks, {args.edges} edges a configuration")
        result["single_edges"] = single_edges(args.tasks, args.edges)
        log(json.dumps(result["single_edges"]))
    if args.only in (None, "ranks"):
        log(f"rank storage: {args.rank_writes} rewrites of {args.tasks} rows")
        result["rank_storage"] = rank_storage(args.tasks, args.rank_writes, args.rank_rounds)
        log(json.dumps(result["rank_storage"]))
    if args.only in (None, "batches"):
        log(f"random batches at {args.tasks} tasks: the engine against its statements alone")
        result["random_batches"] = random_batches(args.tasks, args.batches)
        log(json.dumps(result["random_batches"]))
    if args.only == "schema":
        log(f"schema A/B at {args.tasks} tasks: {args.alter}")
        result["schema"] = schema_ab(args.tasks, args.batches * 2, args.alter)
        log(json.dumps(result["schema"]))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
