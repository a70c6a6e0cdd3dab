"""Integration tests run against this worker's real PostgreSQL database and Redis db, emptied
before each test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from orchestration import metrics
from tests.support.processes import Procs, processes
from tests.support.services import truncate_all


@pytest.fixture(autouse=True)
def _clean_state(database: str, redis_client: redis.Redis) -> None:
    truncate_all()
    metrics.flush()  # counts an earlier test left in this process's buffer go with the flush
    redis_client.flushdb()


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    """Processes a test starts (a worker, Flower), stopped after it; logs under tmp_path."""
    with processes(tmp_path, {}) as running:
        yield running
