"""The one place that reads the environment (see CONTRACT.md, Environment)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache

DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/orchestration"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return default if raw in (None, "") else float(raw)


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return default if raw in (None, "") else int(raw)


def _read_ahead() -> int | None:
    raw = (os.environ.get("ORCH_READ_AHEAD") or "auto").strip().lower()
    if raw == "auto":
        return None
    value = int(raw)
    if value < 0:
        raise ValueError("ORCH_READ_AHEAD must be auto or a number >= 0")
    return value


def _optional(name: str) -> str | None:
    raw = os.environ.get(name)
    return raw if raw else None


@dataclass(frozen=True)
class Settings:
    database_url: str
    redis_url: str
    admin_token: str | None
    auth_enabled: bool
    pass_interval: float
    planner: str
    executor: str
    reviewer: str
    llm_base_url: str | None
    llm_api_key: str | None
    llm_model: str | None
    llm_timeout: float
    llm_prices: str | None
    sim_duration: float
    sim_failure_rate: float
    sim_seed: int | None
    visibility_timeout: float
    max_deliveries: int
    max_attempts: int
    retry_backoff: float
    agent_concurrency: int
    read_ahead: int | None  # None: automatic (see consumer.AgentConsumer.read_ahead)
    reconcile_interval: float
    events_maxlen: int
    task_events: bool
    log_format: str
    log_level: str
    dashboard_graph_limit: int

    @classmethod
    def from_env(cls) -> Settings:
        seed = _optional("ORCH_SIM_SEED")
        return cls(
            database_url=os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL,
            redis_url=os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL,
            admin_token=_optional("ORCH_ADMIN_TOKEN"),
            auth_enabled=os.environ.get("ORCH_AUTH", "on").lower() not in ("off", "0", "false"),
            pass_interval=_float("ORCH_PASS_INTERVAL", 2.0),
            planner=os.environ.get("ORCH_PLANNER") or "heuristic",
            executor=os.environ.get("ORCH_EXECUTOR") or "simulated",
            reviewer=os.environ.get("ORCH_REVIEWER") or "rules",
            llm_base_url=_optional("LLM_BASE_URL"),
            llm_api_key=_optional("LLM_API_KEY"),
            llm_model=_optional("LLM_MODEL"),
            llm_timeout=_float("LLM_TIMEOUT", 60.0),
            llm_prices=_optional("LLM_PRICES"),
            sim_duration=_float("ORCH_SIM_DURATION", 0.2),
            sim_failure_rate=_float("ORCH_SIM_FAILURE_RATE", 0.0),
            sim_seed=int(seed) if seed is not None else None,
            visibility_timeout=_float("ORCH_VISIBILITY_TIMEOUT", 60.0),
            max_deliveries=_int("ORCH_MAX_DELIVERIES", 5),
            max_attempts=_int("ORCH_MAX_ATTEMPTS", 3),
            retry_backoff=_float("ORCH_RETRY_BACKOFF", 1.0),
            agent_concurrency=_int("ORCH_AGENT_CONCURRENCY", 4),
            read_ahead=_read_ahead(),
            reconcile_interval=_float("ORCH_RECONCILE_INTERVAL", 5.0),
            events_maxlen=_int("ORCH_EVENTS_MAXLEN", 10_000),
            task_events=os.environ.get("ORCH_TASK_EVENTS", "on").lower()
            not in ("off", "0", "false"),
            log_format=(os.environ.get("ORCH_LOG_FORMAT") or "json").strip().lower(),
            log_level=(os.environ.get("ORCH_LOG_LEVEL") or "INFO").strip().upper(),
            dashboard_graph_limit=_int("ORCH_DASHBOARD_GRAPH_LIMIT", 1000),
        )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings.from_env()


def reload_settings() -> Settings:
    """Forget the cached settings (tests change the environment)."""
    get_settings.cache_clear()
    return get_settings()
