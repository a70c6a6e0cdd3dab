"""End-to-end harness: a private redis-server per test, real `celery worker` and `celery beat`
processes against it and the test database, and helpers to poll PostgreSQL for outcomes.

Nothing here runs Celery in eager mode: the workers are subprocesses started from the repo root
exactly as in production (`celery -A orchestration worker|beat`), so the stream consumer runs in
the bootstep of each worker process.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from db.engine import get_engine
from orchestration import metrics
from tests.support.processes import Procs
from tests.support.services import (
    RedisServer,
    free_port,
    point_celery_at,
    truncate_all,
)

WORKER_ENV = {
    "ORCH_SIM_DURATION": "0.1",
    "ORCH_VISIBILITY_TIMEOUT": "3",
    "ORCH_RETRY_BACKOFF": "0.1",
    "ORCH_RECONCILE_INTERVAL": "1",
    "ORCH_PASS_INTERVAL": "0.5",
    "ORCH_AGENT_CONCURRENCY": "2",
}


# -- a private redis-server --------------------------------------------------------------------


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    directory = tmp_path / "redis"
    directory.mkdir()
    server = RedisServer(free_port(), directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# -- the test process points at the same database and Redis ------------------------------------


@pytest.fixture
def e2e_env(database: str, redis_server: RedisServer) -> Iterator[RedisServer]:
    from orchestration.config import reload_settings
    from orchestration.redis_client import reset_redis

    truncate_all()
    # Counts this process buffered in earlier tests go to their Redis, not this test's server.
    metrics.flush()
    saved = {k: os.environ.get(k) for k in ("REDIS_URL", *WORKER_ENV)}
    os.environ["REDIS_URL"] = redis_server.url
    for key, value in WORKER_ENV.items():
        os.environ[key] = value
    reload_settings()
    reset_redis()
    from orchestration.celery import app

    old_broker, old_backend = app.conf.broker_url, app.conf.result_backend
    point_celery_at(redis_server.url)
    try:
        yield redis_server
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old
        reload_settings()
        reset_redis()
        point_celery_at(old_broker)
        app.conf.result_backend = old_backend


# -- celery processes --------------------------------------------------------------------------


@pytest.fixture
def workers(
    e2e_env: RedisServer, database: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Procs]:
    """Celery workers and beats against this test's Redis and database (tests start them)."""
    helper = Procs(tmp_path, {**WORKER_ENV, "DATABASE_URL": database, "REDIS_URL": e2e_env.url})
    try:
        yield helper
    finally:
        helper.stop_all()
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            sys.stderr.write(f"\n===== celery logs =====\n{helper.tails(60)}\n")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


# -- polling PostgreSQL ------------------------------------------------------------------------


def task_rows(team_id: uuid.UUID) -> list[Any]:
    with get_engine().connect() as conn:
        return list(
            conn.execute(
                text(
                    "SELECT id, title, status::text AS status, parent_task_id, is_summary, "
                    "assigned_to, attempts, claim, start_time, completion_time, error_message "
                    "FROM tasks "
                    "WHERE team_id = :t ORDER BY created_at"
                ),
                {"t": team_id},
            ).all()
        )


def describe(team_id: uuid.UUID) -> str:
    return "\n".join(
        f"  {r.title}: {r.status} attempts={r.attempts} claim={r.claim} error={r.error_message}"
        for r in task_rows(team_id)
    )


def wait_until(
    what: str,
    condition: Callable[[], bool],
    team_id: uuid.UUID,
    workers: Procs,
    timeout: float = 30.0,
    interval: float = 0.1,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout}s waiting for {what}\ntasks:\n{describe(team_id)}\n"
        f"logs:\n{workers.tails()}"
    )


FINAL = ("completed", "failed", "cancelled")


def all_final(team_id: uuid.UUID) -> Callable[[], bool]:
    def check() -> bool:
        rows = task_rows(team_id)
        return bool(rows) and all(r.status in FINAL for r in rows)

    return check
