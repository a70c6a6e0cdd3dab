"""End-to-end harness: a private redis-server per test, real `celery worker` and `celery beat`
processes against it and the test database, and helpers to poll PostgreSQL for outcomes.

Nothing here runs Celery in eager mode: the workers are subprocesses started from the repo root
exactly as in production (`celery -A orchestration worker|beat`), so the stream consumer runs in
the bootstep of each worker process.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from db.engine import get_engine
from tests.support.services import (
    RedisServer,
    free_port,
    point_celery_at,
    tail,
    truncate_all,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
CELERY = str(Path(sys.executable).parent / "celery")
READY_TIMEOUT = 40.0

WORKER_ENV = {
    "ORCH_SIM_DURATION": "0.1",
    "ORCH_VISIBILITY_TIMEOUT": "3",
    "ORCH_RETRY_BACKOFF": "0.1",
    "ORCH_RECONCILE_INTERVAL": "1",
    "ORCH_PASS_INTERVAL": "0.5",
    "ORCH_AGENT_CONCURRENCY": "2",
    "PYTHONUNBUFFERED": "1",
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


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    killed: bool = False

    @property
    def pid(self) -> int:
        return self.popen.pid


@dataclass
class Workers:
    """Starts, kills and stops `celery worker` and `celery beat` subprocesses."""

    tmp_path: Path
    redis_url: str
    database_url: str
    procs: list[Proc] = field(default_factory=list)
    extra_env: dict[str, str] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(WORKER_ENV)
        env.update(self.extra_env)
        env["DATABASE_URL"] = self.database_url
        env["REDIS_URL"] = self.redis_url
        return env

    def _spawn(self, name: str, args: list[str]) -> Proc:
        log_path = self.tmp_path / f"{name}.log"
        log = open(log_path, "wb")  # noqa: SIM115 - owned by the process
        popen = subprocess.Popen(
            [CELERY, "-A", "orchestration", *args],
            cwd=REPO_ROOT,
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        proc = Proc(name, popen, log_path)
        self.procs.append(proc)
        return proc

    def start_worker(self) -> Proc:
        n = sum(1 for p in self.procs if p.name.startswith("w")) + 1
        return self._spawn(
            f"w{n}",
            [
                "worker",
                "--loglevel=INFO",
                "-c",
                "1",
                "-n",
                f"w{n}-{uuid.uuid4().hex[:6]}@%h",
                "--without-mingle",
                "--without-gossip",
            ],
        )

    def start_workers(self, count: int) -> list[Proc]:
        procs = [self.start_worker() for _ in range(count)]
        for proc in procs:
            self.wait_ready(proc)
        return procs

    def start_beat(self) -> Proc:
        n = sum(1 for p in self.procs if p.name.startswith("beat")) + 1
        proc = self._spawn(
            f"beat{n}",
            [
                "beat",
                "--loglevel=INFO",
                "--schedule",
                str(self.tmp_path / f"beat-schedule-{n}"),
                "--pidfile=",
            ],
        )
        self.wait_for_log(proc, "beat: Starting", READY_TIMEOUT)
        return proc

    def wait_for_log(self, proc: Proc, needle: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.popen.poll() is not None:
                raise AssertionError(f"{proc.name} exited early:\n{tail(proc.log)}")
            with contextlib.suppress(OSError):
                if needle in proc.log.read_text(errors="replace"):
                    return
            time.sleep(0.1)
        raise AssertionError(f"{proc.name} not ready in {timeout}s:\n{tail(proc.log)}")

    def wait_ready(self, proc: Proc) -> None:
        self.wait_for_log(proc, "ready.", READY_TIMEOUT)
        self.wait_for_log(proc, "agent consumer", READY_TIMEOUT)

    def kill(self, proc: Proc) -> None:
        """SIGKILL the process and its children (pool processes): no cleanup at all."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.popen.wait(10)
        proc.killed = True

    def stop_all(self) -> None:
        live = [p for p in self.procs if p.popen.poll() is None]
        for proc in live:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in live:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(max(0.1, deadline - time.monotonic()))
        for proc in self.procs:
            if proc.killed:
                continue
            # Children of a worker may outlive it; the group goes in any case.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(5)

    def all_logs(self) -> str:
        return "\n".join(p.log.read_text(errors="replace") for p in self.procs if p.log.exists())

    def tails(self, lines: int = 30) -> str:
        return "\n".join(
            f"----- {p.name} (pid {p.pid}{', killed' if p.killed else ''}) -----\n"
            f"{tail(p.log, lines)}"
            for p in self.procs
        )


@pytest.fixture
def workers(
    e2e_env: RedisServer, database: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Workers]:
    helper = Workers(tmp_path, e2e_env.url, database)
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
    workers: Workers,
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
