"""`make chaos` (`python -m bench.chaos [--tasks N]`): the fault campaign of issue 7.

A private PostgreSQL (initdb + pg_ctl in a temp folder, run as the postgres user, on a free
port) and a private redis-server. N tasks in small diamonds (a; b and c after a; d after b and
c) run through two `celery -A orchestration worker -c 1` (ORCH_AGENT_CONCURRENCY=4,
ORCH_VISIBILITY_TIMEOUT=5) and TWO `celery -A orchestration beat` processes, while:

- a worker process group is SIGKILLed every few seconds (and a new worker started at once);
- Redis is restarted empty once (SHUTDOWN NOSAVE, then a new server on the same port);
- PostgreSQL is restarted once (`pg_ctl restart -m immediate`: a crash and WAL recovery).

Meanwhile a second team gets goals decomposed in the background (POST .../decompositions, one
every ~1.5 s, each submitted with an Idempotency-Key and resubmitted while the database is away),
planned by the workers' planning threads through the same faults, and its tasks run too.

While the run lasts, the members' load is sampled against their capacity. At the end it counts
tasks lost (not final), completed twice (two completion events, or a completion counted twice),
workers over capacity (ever sampled, and at the end) and counter drift (load vs work in flight,
outcome counters vs outcomes, unmet dependency counts, order), over both teams; and
decompositions that did not succeed or whose plan was created twice (tasks of the team that no
decomposition names). It writes bench/results/chaos.json and exits 1 unless every count is 0
and the run finished.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import text

from bench import harness, report
from bench.harness import BulkTask, log
from tests.support.processes import processes

FINAL = ("completed", "failed", "cancelled")


class PrivatePostgres:
    """A throw-away PostgreSQL cluster owned by the postgres user, on a free port."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.data = directory / "pgdata"
        self.port = harness.free_port()
        self.logfile = directory / "postgres.log"

    def _as_postgres(self, argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        done = subprocess.run(prefix + argv, capture_output=True, text=True)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[:2])} failed:\n{done.stdout}\n{done.stderr}")
        return done

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/orchestration"

    def init(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")
        self._as_postgres(
            ["initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8"]
        )
        self.start()

    def _options(self) -> str:
        return f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.directory}"

    def _pg_ctl(self, action: str, *options: str) -> None:
        """pg_ctl start or restart, with the server's options and log, waiting until it is up."""
        self._as_postgres(
            [
                "pg_ctl",
                "-D",
                str(self.data),
                "-l",
                str(self.logfile),
                "-o",
                self._options(),
                *options,
                "-w",
                "-t",
                "60",
                action,
            ]
        )

    def start(self) -> None:
        self._pg_ctl("start")

    def restart(self) -> None:
        self._pg_ctl("restart", "-m", "immediate")

    def stop(self) -> None:
        self._as_postgres(
            ["pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop"], check=False
        )


def _diamonds(tasks: int) -> list[BulkTask]:
    out: list[BulkTask] = []
    while len(out) < tasks:
        a, b, c, d = (uuid.uuid4() for _ in range(4))
        group = [BulkTask(a), BulkTask(b, [a]), BulkTask(c, [a]), BulkTask(d, [b, c])]
        out.extend(group[: tasks - len(out)])
    return out


def _retrying(fn: Any, attempts: int = 60) -> Any:
    """Run a read against PostgreSQL, riding out its restart."""
    from db.engine import reset_engine

    for i in range(attempts):
        try:
            return fn()
        except Exception as exc:
            if i == attempts - 1:
                raise
            log(f"  (database read failed, retrying: {type(exc).__name__})")
            reset_engine()
            time.sleep(1.0)
    return None


def _over_capacity_now(team: uuid.UUID) -> int:
    from db.engine import get_engine

    with get_engine().connect() as conn:
        return int(
            conn.execute(
                text(
                    """
                    SELECT count(*) FROM team_members m
                    WHERE m.team_id = :t AND (
                        m.current_workload > m.max_concurrent_tasks
                        OR (SELECT count(*) FROM tasks x WHERE x.assigned_to = m.id
                            AND x.status IN ('assigned', 'in_progress', 'review'))
                           > m.max_concurrent_tasks)
                    """
                ),
                {"t": team},
            ).scalar()
            or 0
        )


def _plans_settled(team: uuid.UUID) -> bool:
    """Every decomposition of the planning team ended, and every task it made too."""
    from db.engine import get_engine

    with get_engine().connect() as conn:
        waiting = conn.execute(
            text(
                "SELECT (SELECT count(*) FROM decompositions WHERE team_id = :t "
                "AND status IN ('queued', 'planning')) + (SELECT count(*) FROM tasks "
                "WHERE team_id = :t AND status NOT IN ('completed', 'failed', 'cancelled'))"
            ),
            {"t": team},
        ).scalar()
    return not waiting


def _final_checks(team: uuid.UUID) -> dict[str, Any]:
    from db.engine import get_engine
    from tests.support.invariants import measure_invariants

    found = measure_invariants(team)
    with get_engine().connect() as conn:
        reexecuted = int(
            conn.execute(
                text("SELECT count(*) FROM tasks WHERE team_id = :t AND attempts > 1"),
                {"t": team},
            ).scalar()
            or 0
        )
        errors = [
            str(r[0])
            for r in conn.execute(
                text(
                    "SELECT DISTINCT error_message FROM tasks WHERE team_id = :t "
                    "AND status = 'failed' LIMIT 5"
                ),
                {"t": team},
            )
        ]
    workload_drift = sum(abs(r.current_workload - r.in_flight) for r in found.workload_drift)
    completed_drift = sum(abs(r.tasks_completed - r.completed) for r in found.outcome_drift)
    failed_drift = sum(abs(r.tasks_failed - r.failed) for r in found.outcome_drift)
    counted_twice = sum(r.tasks_completed - r.completed for r in found.counted_twice)
    return {
        "status_counts": found.status_counts,
        "tasks_lost": found.lost,
        "completed_twice": len(found.completed_twice) + counted_twice,
        "completed_twice_detail": {
            "tasks_with_two_completion_events": len(found.completed_twice),
            "completions_counted_twice_on_workers": counted_twice,
        },
        "over_capacity_at_end": len(found.over_capacity),
        "counter_drift": workload_drift + completed_drift + failed_drift + len(found.unmet_drift),
        "counter_drift_detail": {
            "workload_vs_in_flight": workload_drift,
            "tasks_completed_vs_completed": completed_drift,
            "tasks_failed_vs_failed": failed_drift,
            "unmet_dependencies": len(found.unmet_drift),
        },
        "started_before_dependency_completed": len(found.early_starts),
        "tasks_executed_more_than_once": reexecuted,
        "failed_task_errors": errors,
    }


def _plan_checks(team: uuid.UUID) -> dict[str, int]:
    """Decompositions not succeeded, and plans created twice: tasks of the planning team that no
    decomposition's task_ids names (or names that do not exist)."""
    from db.engine import get_engine

    with get_engine().connect() as conn:
        row = conn.execute(
            text(
                """
                WITH named AS (
                    SELECT unnest(task_ids) AS id FROM decompositions WHERE team_id = :t
                )
                SELECT
                    (SELECT count(*) FROM decompositions
                     WHERE team_id = :t AND status <> 'succeeded') AS not_succeeded,
                    (SELECT count(*) FROM decompositions
                     WHERE team_id = :t AND attempts > 1) AS planned_again,
                    (SELECT count(*) FROM tasks
                     WHERE team_id = :t AND id NOT IN (SELECT id FROM named)) AS unnamed,
                    (SELECT count(*) FROM named
                     WHERE id NOT IN (SELECT id FROM tasks WHERE team_id = :t)) AS missing
                """
            ),
            {"t": team},
        ).one()
    return {
        "decompositions_not_succeeded": int(row.not_succeeded),
        "decompositions_planned_again": int(row.planned_again),
        "plan_tasks_created_twice": int(row.unnamed),
        "plan_tasks_missing": int(row.missing),
    }


def campaign(args: argparse.Namespace) -> dict[str, Any]:
    from orchestration import lifecycle, planning

    directory = Path(tempfile.mkdtemp(prefix="orch-chaos-"))
    directory.chmod(0o755)  # the postgres user reaches its cluster below
    pg = PrivatePostgres(directory / "pg")
    log(f"chaos: private PostgreSQL on port {pg.port} in {pg.data}")
    pg.init()
    redis_dir = directory / "redis"
    redis_dir.mkdir()
    server = harness.RedisServer(harness.free_port(), redis_dir)
    server.start()
    rng = random.Random(args.seed)
    events: list[dict[str, Any]] = []
    samples_over = 0
    max_over = 0
    finished = False
    started = time.monotonic()

    def note(kind: str, **data: Any) -> None:
        events.append({"t": round(time.monotonic() - started, 2), "event": kind, **data})
        log(f"  {kind} {data if data else ''}")

    try:
        from db.migrate import upgrade

        upgrade(pg.url)
        env = {
            "DATABASE_URL": pg.url,
            "REDIS_URL": server.url,
            "ORCH_SIM_DURATION": str(args.duration),
            "ORCH_AGENT_CONCURRENCY": "4",
            "ORCH_VISIBILITY_TIMEOUT": "5",
            "ORCH_RECONCILE_INTERVAL": "3",
            "ORCH_PASS_INTERVAL": "2",
            "ORCH_RETRY_BACKOFF": "0.5",
        }
        harness.use_env(pg.url, server.url, env)
        team = harness.make_team(workers=6, capacity=3)
        tasks = _diamonds(args.tasks)
        harness.bulk_insert(team, tasks)
        plans_team = harness.make_team(workers=2, capacity=3)
        submitted = 0
        log(
            f"chaos: {len(tasks)} tasks in diamonds, {args.decompositions} decompositions; "
            "2 workers, 2 beats"
        )
        with processes(directory, env) as procs:
            workers, _ = procs.engine(workers=2, beats=2)
            lifecycle.start_team(team)
            lifecycle.start_team(plans_team)
            started = time.monotonic()
            next_submit = started
            redis_done = pg_done = False
            next_kill = time.monotonic() + rng.uniform(args.kill_every / 2, args.kill_every)
            deadline = started + args.timeout
            kills = 0
            while time.monotonic() < deadline:
                if submitted < args.decompositions and time.monotonic() >= next_submit:
                    # The same key again while the database is away: one decomposition.
                    _retrying(
                        lambda i=submitted: planning.submit(
                            plans_team, f"Write report {i} on the market", 2, f"chaos-{i}"
                        )
                    )
                    submitted += 1
                    next_submit = time.monotonic() + 1.5
                counts = _retrying(lambda: harness.status_counts(team))
                done = sum(n for s, n in counts.items() if s in FINAL)
                over = _retrying(lambda: _over_capacity_now(team) + _over_capacity_now(plans_team))
                if over:
                    samples_over += 1
                    max_over = max(max_over, over)
                    note("over_capacity_sample", members=over)
                if done >= len(tasks) and submitted == args.decompositions:
                    plans_done = _retrying(lambda: _plans_settled(plans_team))
                    if plans_done:
                        finished = True
                        break
                progress = done / len(tasks)
                now = time.monotonic()
                if now >= next_kill:
                    victim = rng.choice([w for w in workers if w.alive()])
                    procs.kill(victim)
                    kills += 1
                    workers.remove(victim)
                    note("sigkill_worker", pid=victim.pid, done=done)
                    fresh = procs.worker()
                    workers.append(fresh)
                    next_kill = now + rng.uniform(args.kill_every / 2, args.kill_every)
                if not redis_done and progress >= 0.3:
                    redis_done = True
                    server.restart_empty()
                    note("redis_restarted_empty", done=done)
                if not pg_done and progress >= 0.6:
                    pg_done = True
                    pg.restart()
                    note("postgres_restarted", done=done)
                if int(now - started) % 10 == 0:
                    log(f"  {done}/{len(tasks)} final: {counts}")
                time.sleep(0.5)
            elapsed = time.monotonic() - started
            if not finished:
                note("timeout", after_s=round(elapsed, 1))
            alive = [w for w in workers if w.alive()]
            note("workers_alive_at_end", count=len(alive))
        checks = _retrying(lambda: _final_checks(team))
        plan_team_checks = _retrying(lambda: _final_checks(plans_team))
        plan_checks = _retrying(lambda: _plan_checks(plans_team))
        result: dict[str, Any] = {
            "command": "python -m bench.chaos " + " ".join(sys.argv[1:]),
            "commit": harness.git_commit(),
            "machine": harness.machine(),
            "tasks": len(tasks),
            "finished": finished,
            "seconds": round(elapsed, 1),
            "sigkills": kills,
            "redis_restarted_empty": redis_done,
            "postgres_restarted": pg_done,
            "beats": 2,
            "decompositions": submitted,
            "tasks_lost": checks["tasks_lost"] + plan_team_checks["tasks_lost"],
            "completed_twice": checks["completed_twice"] + plan_team_checks["completed_twice"],
            "workers_over_capacity": max(
                max_over, checks["over_capacity_at_end"] + plan_team_checks["over_capacity_at_end"]
            ),
            "over_capacity_samples": samples_over,
            "counter_drift": checks["counter_drift"] + plan_team_checks["counter_drift"],
            "decompositions_not_succeeded": plan_checks["decompositions_not_succeeded"],
            "plans_created_twice": plan_checks["plan_tasks_created_twice"]
            + plan_checks["plan_tasks_missing"],
            "details": checks,
            "planning_team": {**plan_team_checks, **plan_checks},
            "events": events,
        }
        return result
    finally:
        server.stop()
        pg.stop()
        with contextlib.suppress(Exception):
            from db.engine import reset_engine

            reset_engine()
        if args.keep:
            log(f"logs kept in {directory}")
        else:
            shutil.rmtree(directory, ignore_errors=True)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__)
    p.add_argument("--tasks", type=int, default=10_000)
    p.add_argument("--duration", type=float, default=0.01, help="simulated seconds per task")
    p.add_argument("--kill-every", type=float, default=6.0, help="SIGKILL a worker every ~s")
    p.add_argument("--timeout", type=float, default=1800.0)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--decompositions", type=int, default=12, help="goals planned meanwhile")
    p.add_argument("--keep", action="store_true", help="keep the logs and data folder")
    args = p.parse_args(argv)
    result = campaign(args)
    name = "chaos" if args.tasks >= 10_000 else f"chaos-{args.tasks}"
    path = harness.write_json(name, result)
    if name == "chaos":
        report.write_chaos_summary(result)
    counts = (
        "tasks_lost",
        "completed_twice",
        "workers_over_capacity",
        "counter_drift",
        "decompositions_not_succeeded",
        "plans_created_twice",
    )
    verdict = {k: result[k] for k in ("finished", *counts)}
    log(f"chaos: {verdict} -> {path}")
    ok = result["finished"] and not any(result[k] for k in counts)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
