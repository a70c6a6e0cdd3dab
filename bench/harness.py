"""Shared machinery of the benchmarks and the fault campaign.

Each benchmark gets a throw-away database (``orch_bench_<name>``, migrated with db.migrate and
dropped afterwards) and a private redis-server on a free port; this process and every
subprocess (celery worker, celery beat, procrastinate worker) point at them through
DATABASE_URL / REDIS_URL. Nothing touches the developer's data.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert, text
from sqlalchemy.engine import make_url

from tests.support.services import RedisServer, free_port, point_celery_at

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = REPO_ROOT / "bench" / "results"
BASE_DATABASE_URL = os.environ.get(
    "DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/orchestration"
)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def freeze_fixtures() -> None:
    """Put every object alive now (the bench's fixtures, such as the ids of a 100,000-task
    team and the pairs to insert) out of reach of Python's cyclic collector until the stack
    closes. A server process does not hold them; left in, each full collection during a timed
    section walks them all and bills the engine for it (30-40 ms of client CPU in a batch of
    1,000 random edges taking about 400 ms)."""
    gc.collect()
    gc.freeze()


# -- a throw-away database ---------------------------------------------------------------------


def database_url(name: str, base: str | None = None) -> str:
    url = make_url(base or BASE_DATABASE_URL)
    return url.set(database=f"orch_bench_{name}").render_as_string(hide_password=False)


def create_database(url: str) -> None:
    from db.migrate import drop_database, upgrade

    drop_database(url)
    upgrade(url)


def drop_database(url: str) -> None:
    from db.engine import reset_engine
    from db.migrate import drop_database as drop

    reset_engine()
    with contextlib.suppress(Exception):
        drop(url)


def libpq_url(url: str) -> str:
    """A SQLAlchemy URL as psycopg.connect takes it."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


@contextlib.contextmanager
def database_copy(url: str, name: str = "copy") -> Iterator[str]:
    """An identical copy of a benchmark's database as it is now (CREATE DATABASE ...
    TEMPLATE), named after it and `name`, dropped on exit. The process's pool is closed
    first: PostgreSQL copies a database only while no one else is connected to it."""
    from db.engine import reset_engine
    from db.migrate import copy_database

    source = make_url(url)
    copy_url = source.set(database=f"{source.database}_{name}").render_as_string(
        hide_password=False
    )
    drop_database(copy_url)  # reset_engine() too
    copy_database(url, copy_url)
    try:
        yield copy_url
    finally:
        drop_database(copy_url)
        reset_engine()


def use_env(database: str, redis_url: str, extra: dict[str, str] | None = None) -> None:
    """Point this process at the benchmark's database and Redis."""
    from db.engine import reset_engine
    from orchestration.config import reload_settings
    from orchestration.redis_client import reset_redis

    os.environ["DATABASE_URL"] = database
    os.environ["REDIS_URL"] = redis_url
    for key, value in (extra or {}).items():
        os.environ[key] = value
    reload_settings()
    reset_engine()
    reset_redis()
    point_celery_at(redis_url)


@dataclass
class Stack:
    """A benchmark's private database and redis-server, and its scratch folder."""

    name: str
    directory: Path
    database: str
    redis: RedisServer

    @property
    def redis_url(self) -> str:
        return self.redis.url


@contextlib.contextmanager
def stack(name: str, extra_env: dict[str, str] | None = None) -> Iterator[Stack]:
    directory = Path(tempfile.mkdtemp(prefix=f"orch-bench-{name}-"))
    database = database_url(name)
    create_database(database)
    server = RedisServer(free_port(), directory)
    server.start()
    use_env(database, server.url, extra_env)
    try:
        yield Stack(name, directory, database, server)
    finally:
        gc.unfreeze()
        server.stop()
        drop_database(database)
        shutil.rmtree(directory, ignore_errors=True)


def worker_env(st: Stack, **overrides: str) -> dict[str, str]:
    env = {
        "DATABASE_URL": st.database,
        "REDIS_URL": st.redis_url,
        "ORCH_SIM_DURATION": "0",
        "ORCH_AGENT_CONCURRENCY": "4",
        "ORCH_PASS_INTERVAL": "2.0",
        "ORCH_RECONCILE_INTERVAL": "5",
    }
    env.update(overrides)
    return env


# -- memory ------------------------------------------------------------------------------------


def rss_kib(pid: int) -> int:
    """VmRSS of one process in KiB (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return 0
    return 0


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def tree_rss_kib(pid: int) -> int:
    return rss_kib(pid) + sum(tree_rss_kib(c) for c in children(pid))


# -- teams and bulk tasks ----------------------------------------------------------------------


def make_team(workers: int, capacity: int, *, start: bool = False) -> uuid.UUID:
    from orchestration import lifecycle
    from orchestration.teams import add_member, create_team

    team = create_team(f"bench-{uuid.uuid4().hex[:6]}")
    team_id = uuid.UUID(str(team.id))
    add_member(team_id, "manager", agent_id="manager")
    for i in range(workers):
        add_member(team_id, "worker", max_concurrent_tasks=capacity, agent_id=f"worker-{i}")
    if start:
        lifecycle.start_team(team_id)
    return team_id


@dataclass
class BulkTask:
    id: uuid.UUID
    depends_on: list[uuid.UUID] = field(default_factory=list)
    status: str | None = None  # None: derived (blocked when it has dependencies)
    not_before: datetime | None = None


def bulk_insert(team_id: uuid.UUID, tasks: list[BulkTask], batch: int = 5000) -> None:
    """Insert tasks and their dependency rows directly (dependencies must be unfinished tasks
    of the same team, with no loop: each counts as unmet). No parents, no summaries. The
    tasks are ranked after the team's existing ones, in an order of their dependencies, as
    create_plan ranks a plan (see orchestration/graph.py)."""
    from db.engine import get_engine
    from db.models import Task, TaskDependency
    from db.queries import Q
    from orchestration import graph

    base = datetime.now(UTC)
    engine = get_engine()
    with engine.connect() as conn:
        highest = conn.execute(Q["highest_rank"], {"team_id": team_id}).scalar()
    ranks = graph.layout_ranks(
        [t.id for t in tasks], {}, {t.id: t.depends_on for t in tasks}, highest
    )
    for start in range(0, len(tasks), batch):
        chunk = tasks[start : start + batch]
        rows = [
            {
                "id": t.id,
                "team_id": team_id,
                "title": f"bench task {start + i}",
                "status": t.status or ("blocked" if t.depends_on else "pending"),
                "priority": 5,
                "is_summary": False,
                "unmet_dependencies": len(t.depends_on),
                "not_before": t.not_before,
                "input_data": {"simulate": {"duration": 0}},
                "created_at": base + timedelta(microseconds=start + i),
                "updated_at": base,
                "start_rank": ranks[t.id][0],
                "end_rank": ranks[t.id][1],
            }
            for i, t in enumerate(chunk)
        ]
        edges = [{"task_id": t.id, "depends_on_task_id": d} for t in chunk for d in t.depends_on]
        with engine.begin() as conn:
            conn.execute(insert(Task), rows)
            if edges:
                conn.execute(insert(TaskDependency), edges)
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(
            text("ANALYZE tasks; ANALYZE task_dependencies")
        )


def status_counts(team_id: uuid.UUID | None = None) -> dict[str, int]:
    from db.engine import get_engine

    where = "WHERE team_id = :t" if team_id else ""
    with get_engine().connect() as conn:
        rows = conn.execute(
            text(f"SELECT status::text, count(*) FROM tasks {where} GROUP BY status"),
            {"t": team_id},
        ).all()
    return {str(s): int(n) for s, n in rows}


def wait_for(
    what: str,
    condition: Callable[[], bool],
    timeout: float,
    interval: float = 0.25,
    progress: Callable[[], str] | None = None,
) -> float:
    started = time.monotonic()
    last_report = started
    while True:
        if condition():
            return time.monotonic() - started
        now = time.monotonic()
        if now - started > timeout:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        if progress is not None and now - last_report > 10:
            last_report = now
            log(f"  waiting for {what}: {progress()}")
        time.sleep(interval)


# -- results -----------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    def ver(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    def server_version(argv: list[str]) -> str | None:
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.strip()
        except OSError:
            return None

    pg = None
    with contextlib.suppress(Exception):
        from sqlalchemy import create_engine

        engine = create_engine(make_url(BASE_DATABASE_URL).set(database="postgres"))
        with engine.connect() as conn:
            pg = conn.execute(text("SHOW server_version")).scalar()
        engine.dispose()
    cpu = None
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_total = None
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        mem_total = f.readline().split()[1] + " kB"
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory": mem_total,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "postgresql": pg,
        "redis": server_version(["redis-server", "--version"]),
        "packages": {
            name: ver(name)
            for name in ("celery", "kombu", "redis", "SQLAlchemy", "psycopg", "procrastinate")
        },
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def git_commit() -> str | None:
    with contextlib.suppress(OSError):
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True
        )
        return out.stdout.strip() or None
    return None


def write_json(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path
