"""The process's Redis client, created lazily (nothing connects at import time)."""

from __future__ import annotations

import os

import redis

from orchestration.config import get_settings

_client: redis.Redis | None = None
_client_pid: int | None = None


def get_redis() -> redis.Redis:
    global _client, _client_pid
    if _client is None or _client_pid != os.getpid():
        _client = redis.Redis.from_url(
            get_settings().redis_url,
            decode_responses=True,
            socket_connect_timeout=5,
            socket_timeout=30,
            health_check_interval=30,
            retry_on_timeout=True,
        )
        _client_pid = os.getpid()
    return _client


def reset_redis() -> None:
    global _client
    if _client is not None:
        _client.close()
    _client = None
