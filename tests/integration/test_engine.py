"""The engine: rows_of_generic_plan (one statement under its generic plan, the setting gone
with it) and a forked pool process leaving its parent's connections alone."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import ExitStack

import psycopg
import pytest
from sqlalchemy import Connection, text

from db.engine import get_engine, rows_of_generic_plan
from orchestration.celery import _fresh_connections
from orchestration.redis_client import get_redis

_BACKEND = text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid")
_SEEN = text(
    "SELECT pg_backend_pid() AS pid, current_setting('plan_cache_mode') AS mode, "
    "CAST(:n AS integer) + 1 AS next"
)


def idle_connections(stack: ExitStack) -> Iterator[Connection]:
    """Every connection the pool holds idle, checked out at once."""
    for _ in range(get_engine().pool.checkedin()):  # type: ignore[attr-defined]
        yield stack.enter_context(get_engine().connect())


def settings_by_backend() -> dict[int, str]:
    with ExitStack() as stack:
        return {
            c.execute(text("SELECT pg_backend_pid()")).scalar_one(): c.execute(
                text("SHOW plan_cache_mode")
            ).scalar_one()
            for c in list(idle_connections(stack))
        }


def test_the_statement_runs_under_its_generic_plan_and_the_connection_goes_back_as_it_was(
    database: str,
) -> None:
    for n in range(8):  # past the executions after which PostgreSQL would choose by itself
        (row,) = rows_of_generic_plan(_SEEN, {"n": n})
        assert (row.mode, row.next) == ("force_generic_plan", n + 1)
    settings = settings_by_backend()
    assert settings[row.pid] == "auto"
    assert set(settings.values()) == {"auto"}


def test_a_connection_that_failed_in_it_is_discarded(database: str) -> None:
    get_engine().dispose()  # one connection in the pool from here: the one each call takes
    (before,) = rows_of_generic_plan(_SEEN, {"n": 1})
    with pytest.raises(psycopg.errors.NumericValueOutOfRange):
        rows_of_generic_plan(text("SELECT CAST(:n AS integer) + 2147483647"), {"n": 1})
    (after,) = rows_of_generic_plan(_SEEN, {"n": 2})
    assert after.pid != before.pid and after.mode == "force_generic_plan"
    assert set(settings_by_backend().values()) == {"auto"}
    deadline = time.monotonic() + 5
    with get_engine().connect() as conn:
        while conn.execute(_BACKEND, {"pid": before.pid}).scalar():
            conn.rollback()  # pg_stat_activity is read once a transaction: look again afresh
            assert time.monotonic() < deadline, "the failed connection is still open"
            time.sleep(0.01)


def test_a_forked_pool_process_leaves_its_parents_connections_open(database: str) -> None:
    """A Celery pool process starts by dropping the engine and Redis client it inherited; the
    parent (the worker's stream consumer) goes on using them."""
    get_engine().dispose()
    with get_engine().connect() as conn:
        before = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
    get_redis().ping()
    child = os.fork()
    if child == 0:  # pragma: no cover (the child's own coverage is not collected)
        try:
            _fresh_connections()
        finally:
            os._exit(0)
    os.waitpid(child, 0)
    with get_engine().connect() as conn:  # the same pooled connection, still alive
        assert conn.execute(text("SELECT pg_backend_pid()")).scalar_one() == before
    assert get_redis().ping()
