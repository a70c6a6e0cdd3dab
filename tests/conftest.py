"""The test harness: one throw-away PostgreSQL database and one Redis database per xdist worker.

The database is `orch_test_<run tag>_<worker id or "main">`: the run tag (xdist's test-run uid,
else the pid) keeps two test runs on one server from dropping each other's databases. Redis
databases are `ORCH_TEST_REDIS_DB (default 1) + worker index`; two runs side by side on one Redis
server must set different ORCH_TEST_REDIS_DB values, or they flush each other's streams.

The environment (DATABASE_URL, REDIS_URL) is set in `pytest_configure`, before any test runs, so
every subprocess a test starts (celery workers, the API) inherits it. The database itself is
created and migrated only when a test asks for it (the `database` fixture): pure unit tests need
neither PostgreSQL nor Redis.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
from hypothesis import HealthCheck, settings
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from orchestration.config import DEFAULT_DATABASE_URL, DEFAULT_REDIS_URL

# The API fixtures (app, client, api, anonymous, team, other_team), for every test module.
pytest_plugins = ["webapp.testing"]

# Busy 2-core machines running two xdist workers make wall-clock deadlines flaky.
settings.register_profile(
    "orch", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "orch"))


def worker_id() -> str:
    """The xdist worker id (`gw0`, `gw1`, ...) or `main` without xdist."""
    return os.environ.get("PYTEST_XDIST_WORKER") or "main"


def worker_index() -> int:
    wid = worker_id()
    return int(wid[2:]) if wid.startswith("gw") and wid[2:].isdigit() else 0


def scratch_database_url(name: str) -> str:
    """A URL on the configured PostgreSQL server naming another database."""
    base = make_url(os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL)
    return base.set(database=name).render_as_string(hide_password=False)


def run_tag() -> str:
    """Tells concurrent test runs on one server apart (xdist workers of one run share it)."""
    uid = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    return uid[:8] if uid else str(os.getpid())


def worker_database_url() -> str:
    return scratch_database_url(f"orch_test_{run_tag()}_{worker_id()}")


def worker_redis_url() -> str:
    """The same Redis server, database ORCH_TEST_REDIS_DB (1) + the worker index (0 stays the
    developer's)."""
    base = urlsplit(os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL)
    first = int(os.environ.get("ORCH_TEST_REDIS_DB", "1"))  # runs side by side pick apart
    return urlunsplit(base._replace(path=f"/{first + worker_index()}"))


def _reset_process_state() -> None:
    from db.engine import reset_engine
    from orchestration.config import reload_settings
    from orchestration.redis_client import reset_redis

    reload_settings()
    reset_engine()
    reset_redis()


def pytest_configure(config: pytest.Config) -> None:
    # Runs in the xdist controller and again in each worker (which knows its id), so each
    # worker points at its own database and Redis db before collecting a single test.
    os.environ["DATABASE_URL"] = worker_database_url()
    os.environ["REDIS_URL"] = worker_redis_url()
    _reset_process_state()


@pytest.fixture(scope="session")
def database() -> Iterator[str]:
    """A freshly migrated database for this worker; its URL. Dropped at the end of the session."""
    from db import migrate

    url = worker_database_url()
    os.environ["DATABASE_URL"] = url
    os.environ["REDIS_URL"] = worker_redis_url()
    _reset_process_state()
    migrate.drop_database(url)
    migrate.upgrade(url)
    try:
        yield url
    finally:
        _reset_process_state()
        migrate.drop_database(url)


@pytest.fixture
def session(database: str) -> Iterator[Session]:
    """A session on the test database, rolled back and closed after the test."""
    from db.engine import get_engine

    s = Session(get_engine(), expire_on_commit=False)
    try:
        yield s
    finally:
        s.rollback()
        s.close()


@pytest.fixture
def redis_client(database: str) -> redis.Redis:
    from orchestration.redis_client import get_redis

    return get_redis()


@pytest.fixture(autouse=True)
def _reset_factory_session() -> Iterator[None]:
    """A failed test must not leave the factories' session in a broken transaction."""
    yield
    factories = sys.modules.get("tests.factories")
    if factories is not None:
        factories.reset_session()
