"""Private servers and clean state for tests and benchmarks: a free port, a redis-server of our
own (so FLUSHALL and restarts touch nobody else), this process's Celery app pointed at it, the
tail of a log, an emptied database, a wait for a lock wait."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis
from sqlalchemy import text

from db.engine import get_engine
from db.models import Base

_LOCK_WAITS = text(
    "SELECT count(*) FROM pg_stat_activity "
    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
)


def wait_for_a_lock_wait(message: str, sessions: int = 1) -> None:
    """Return once `sessions` sessions of this test's database wait for a lock."""
    deadline = time.monotonic() + 10
    with get_engine().connect() as conn:
        while conn.execute(_LOCK_WAITS).scalar_one() < sessions:
            conn.rollback()  # pg_stat_activity is read once a transaction: look again afresh
            assert time.monotonic() < deadline, message
            time.sleep(0.01)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tail(path: Path, lines: int = 40) -> str:
    try:
        content = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        return f"<no log: {exc}>"
    return "\n".join(content[-lines:])


def truncate_all() -> None:
    """Empty every table of the current database in one statement."""
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with get_engine().begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


def point_celery_at(url: str) -> None:
    """This process's Celery app (request_pass publishes through it) uses the private broker:
    its cached connection and producer pools, made for the old URL, are dropped."""
    from kombu import pools

    from orchestration.celery import app

    app.conf.broker_url = url
    app.conf.result_backend = url
    # kombu keeps its pools in a registry of its own, by URL: closing the old URL's pool alone
    # leaves it there, closed, for the next time this process points back at that URL.
    with contextlib.suppress(Exception):
        pools.reset()
    app._pool = None
    amqp = app.amqp
    if getattr(amqp, "_producer_pool", None) is not None:
        amqp._producer_pool = None


@dataclass
class RedisServer:
    """A redis-server on 127.0.0.1:port keeping nothing on disk, its log in `directory`."""

    port: int
    directory: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, decode_responses=True)

    def start(self) -> None:
        with open(self.directory / "redis.log", "ab") as out:
            self.proc = subprocess.Popen(
                [
                    "redis-server",
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(self.directory),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(redis.RedisError):
                if self.client().ping():
                    return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"redis-server did not start:\n{tail(self.directory / 'redis.log')}"
                )
            time.sleep(0.05)

    def flushall(self) -> None:
        self.client().flushall()

    def restart_empty(self) -> None:
        """SHUTDOWN NOSAVE, then a new empty server on the same port."""
        with contextlib.suppress(redis.RedisError):
            self.client().shutdown(nosave=True)
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
        self.start()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
