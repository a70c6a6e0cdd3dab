"""Integration tests run against this worker's real PostgreSQL database and Redis db, emptied
before each test."""

from __future__ import annotations

import pytest
import redis
from sqlalchemy import text

from db.engine import get_engine
from db.models import Base
from orchestration import metrics


def truncate_all() -> None:
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with get_engine().begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


@pytest.fixture(autouse=True)
def _clean_state(database: str, redis_client: redis.Redis) -> None:
    truncate_all()
    metrics.flush()  # counts an earlier test left in this process's buffer go with the flush
    redis_client.flushdb()
