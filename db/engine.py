"""Engine and sessions. Created lazily per process; nothing connects at import time."""

from __future__ import annotations

import functools
import os
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

from psycopg.errors import (
    DeadlockDetected,
    UndefinedColumn,
    UndefinedFunction,
    UndefinedObject,
    UndefinedTable,
)
from psycopg.rows import namedtuple_row
from sqlalchemy import Connection, Engine, Executable, TextClause, create_engine, event, text
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from orchestration.config import get_settings

_engine: Engine | None = None
_engine_pid: int | None = None
_sessions: sessionmaker[Session] | None = None


def get_engine() -> Engine:
    """The process's engine; a forked child gets its own pool, never the parent's sockets."""
    global _engine, _engine_pid, _sessions
    if _engine is not None and _engine_pid != os.getpid():
        _engine.dispose(close=False)
        _engine = None
    if _engine is None:
        _engine = create_engine(
            get_settings().database_url,
            pool_size=10,
            max_overflow=20,
            pool_recycle=1800,
        )
        event.listen(_engine, "connect", _binary_arrays)
        event.listen(_engine, "checkin", _checked_in)
        event.listen(_engine, "checkout", _ping_if_idle)
        _engine_pid = os.getpid()
        _sessions = sessionmaker(_engine, expire_on_commit=False)
    return _engine


def _binary_arrays(dbapi_connection: Any, record: Any) -> None:
    """Send list parameters (the batches of ids and ranks of the hot path) as binary arrays:
    the text form quotes each element through a regular expression, about 2.5x slower for
    thousands of uuids and numerics."""
    from psycopg.types.array import ListBinaryDumper

    dbapi_connection.adapters.register_dumper(list, ListBinaryDumper)


IDLE_BEFORE_PING = 1.0


def _checked_in(dbapi_connection: Any, record: Any) -> None:
    record.info["checked_in_at"] = time.monotonic()


def _ping_if_idle(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    """Ping a connection that sat idle (the server may have restarted meanwhile); a busy one,
    checked out again at once, is not worth a round trip per transaction."""
    idle_since = record.info.get("checked_in_at")
    if idle_since is None or time.monotonic() - idle_since < IDLE_BEFORE_PING:
        return
    try:
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        dbapi_connection.rollback()
    except Exception as exc:
        # The pool discards this connection and checks out another.
        raise DisconnectionError(str(exc)) from exc


# A statement naming a table, column, type or function the database lacks: its schema is behind
# this code's (never migrated, or not to the latest revision), which the operator fixes.
_SCHEMA_BEHIND = (UndefinedTable, UndefinedColumn, UndefinedObject, UndefinedFunction)
SCHEMA_BEHIND_MESSAGE = (
    "the database schema is missing or behind this version of the code (run make migrate)"
)


DATABASE_MISSING_MESSAGE = (
    "the database DATABASE_URL names does not exist (run make migrate, which creates it)"
)


def migration_needed(exc: BaseException) -> str | None:
    """What to tell the operator when exc says the database is missing, or its schema is
    behind this code's; None for any other error."""
    if not isinstance(exc, DBAPIError):
        return None
    if isinstance(exc.orig, _SCHEMA_BEHIND):
        return SCHEMA_BEHIND_MESSAGE
    text_ = str(exc.orig)
    if isinstance(exc, OperationalError) and 'database "' in text_ and "does not exist" in text_:
        return DATABASE_MISSING_MESSAGE  # the connection was refused: no SQLSTATE class here
    return None


def reset_engine(*, close: bool = True) -> None:
    """Drop the engine (tests point at another database). A forked process passes
    close=False: the connections it inherited are its parent's, still in use there, and
    closing them would end the parent's sessions on the server."""
    global _engine, _sessions
    if _engine is not None:
        _engine.dispose(close=close)
    _engine = None
    _sessions = None


@contextmanager
def session_scope() -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any error."""
    get_engine()
    assert _sessions is not None
    session = _sessions()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


# Rows a streamed read holds at once: a response written from it needs the memory of a chunk,
# whatever the size of the team.
CHUNK_ROWS = 1000

# A streamed read keeps its transaction open while the client reads the response, and with it a
# snapshot (which holds back vacuum on the busiest tables) and a pooled connection. Between two
# chunks the server waits for the app, which waits for the client: a client that stops reading
# would hold them for ever. Past this much idle time PostgreSQL ends the session; the response
# is cut off (no end of body, so the client cannot mistake it for the whole list) and the pool
# replaces the connection. A slow but live client needs far less: a 1,000-row chunk is about
# 0.75 MB, a second at 1 MB/s.
STREAM_IDLE_TIMEOUT = 60.0


def chunks_of(
    session: Session,
    statement: Executable,
    *,
    entities: bool = False,
    params: dict[str, Any] | None = None,
) -> Iterator[list[Any]]:
    """The statement's rows (with entities, the entity of each: select(Task)), CHUNK_ROWS at a
    time through a server-side cursor, in the session's transaction; one empty chunk when
    there is none. The session holds entities weakly: a chunk is freed once its reader drops
    it. The transaction ends (the session with it) should the reader leave it idle for
    STREAM_IDLE_TIMEOUT seconds."""
    session.execute(_IDLE_TIMEOUT, {"timeout": f"{round(STREAM_IDLE_TIMEOUT * 1000)}ms"})
    result = session.execute(statement.execution_options(yield_per=CHUNK_ROWS), params)
    empty = True
    for chunk in (result.scalars() if entities else result).partitions():
        empty = False
        yield list(chunk)
    if empty:
        yield []


# For the rest of the transaction only (is_local).
_IDLE_TIMEOUT = text("SELECT set_config('idle_in_transaction_session_timeout', :timeout, true)")


@contextmanager
def statement_scope() -> Iterator[Connection]:
    """A connection on which each statement is a transaction of its own (autocommit): a unit
    of work that is one statement takes one round trip, where BEGIN and COMMIT add two."""
    with get_engine().connect() as conn:
        yield conn.execution_options(isolation_level="AUTOCOMMIT")


@functools.cache
def driver_sql(statement: TextClause) -> str:
    """The statement's text as psycopg takes it (%(name)s parameters)."""
    return str(statement.compile(dialect=get_engine().dialect))


def rows_of_generic_plan(statement: TextClause, params: dict[str, Any]) -> list[Any]:
    """The rows of one statement run as its own transaction under its generic plan, in one
    round trip. PostgreSQL re-plans a prepared statement with array parameters for each
    execution, which for a many-CTE statement costs about as much as running it; this one is
    planned once per connection. The setting ends with the transaction; a connection that
    failed on the way is discarded."""
    with statement_scope() as conn:
        raw = conn.connection.driver_connection
        assert raw is not None
        cursor = raw.cursor(row_factory=namedtuple_row)
        try:
            with raw.pipeline():
                raw.execute("BEGIN")
                raw.execute("SET LOCAL plan_cache_mode = force_generic_plan")
                cursor.execute(driver_sql(statement), params, prepare=True)
                raw.execute("COMMIT")
            return cursor.fetchall()
        except BaseException:
            conn.invalidate()
            raise
        finally:
            cursor.close()


P = ParamSpec("P")
R = TypeVar("R")

DEADLOCK_ATTEMPTS = 3


def retry_deadlocks(unit: Callable[P, R]) -> Callable[P, R]:
    """Run a whole unit of work (its own transaction) again when PostgreSQL broke a deadlock
    by failing it: nothing of it committed. Graph edits lock a team's graph, then tasks; a
    completion locks its tasks, then the graph to unblock their dependents: the two can meet."""

    @functools.wraps(unit)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        for attempt in range(1, DEADLOCK_ATTEMPTS + 1):
            try:
                return unit(*args, **kwargs)
            except OperationalError as exc:
                if attempt == DEADLOCK_ATTEMPTS or not isinstance(exc.orig, DeadlockDetected):
                    raise
                # The survivor commits meanwhile; jitter keeps two victims from meeting again.
                time.sleep(random.uniform(0.005, 0.02) * attempt)
        raise AssertionError("unreachable")

    return run
