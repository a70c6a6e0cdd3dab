"""The one place that reads the environment (see CONTRACT.md, Environment)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from functools import lru_cache

DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/orchestration"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


class ConfigError(ValueError):
    """An environment variable holds a value the engine cannot use; the message names it."""


def _raw(name: str) -> str | None:
    raw = os.environ.get(name, "").strip()
    return raw or None


def _invalid(name: str, raw: str, expected: str) -> ConfigError:
    return ConfigError(f"{name}={raw!r} is invalid: expected {expected}")


def _float(
    name: str,
    default: float,
    expected: str,
    *,
    minimum: float = 0.0,
    positive: bool = False,
    maximum: float = math.inf,
) -> float:
    raw = _raw(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise _invalid(name, raw, expected) from None
    if not math.isfinite(value) or value < minimum or value > maximum or (positive and value <= 0):
        raise _invalid(name, raw, expected)
    return value


def _int(name: str, default: int, expected: str, *, minimum: int | None = 0) -> int:
    raw = _raw(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _invalid(name, raw, expected) from None
    if minimum is not None and value < minimum:
        raise _invalid(name, raw, expected)
    return value


def _optional_int(name: str, expected: str) -> int | None:
    return None if _raw(name) is None else _int(name, 0, expected, minimum=None)


def _read_ahead() -> int | None:
    raw = _raw("ORCH_READ_AHEAD")
    if raw is None or raw.lower() == "auto":
        return None
    return _int("ORCH_READ_AHEAD", 0, "auto or a whole number >= 0")


_SWITCH = {"on": True, "true": True, "1": True, "yes": True}
_SWITCH.update({"off": False, "false": False, "0": False, "no": False})


def _switch(name: str, default: bool) -> bool:
    raw = _raw(name)
    if raw is None:
        return default
    try:
        return _SWITCH[raw.lower()]
    except KeyError:
        raise _invalid(name, raw, "on or off") from None


def _choice(name: str, default: str, choices: tuple[str, ...], *, upper: bool = False) -> str:
    raw = _raw(name)
    if raw is None:
        return default
    value = raw.upper() if upper else raw.lower()
    if value not in choices:
        raise _invalid(name, raw, "one of " + ", ".join(choices))
    return value


LOG_FORMATS = ("json", "text")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _log_level() -> str:
    raw = _raw("ORCH_LOG_LEVEL")
    if raw is not None and raw.isdigit():  # logging takes numeric levels too
        return raw
    return _choice("ORCH_LOG_LEVEL", "INFO", LOG_LEVELS, upper=True)


def _optional(name: str) -> str | None:
    raw = os.environ.get(name)
    return raw if raw else None


def _database_url() -> str:
    """DATABASE_URL, with the libpq/Heroku schemes (postgres://, postgresql://) made explicit
    for psycopg 3: SQLAlchemy knows no `postgres` dialect, and picks its default driver for
    `postgresql` (psycopg2 before SQLAlchemy 2.1), which is not installed."""
    url = os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    scheme, sep, rest = url.partition("://")
    if sep and scheme.lower() in ("postgres", "postgresql"):
        return f"postgresql+psycopg://{rest}"
    return url


@dataclass(frozen=True)
class Settings:
    database_url: str
    redis_url: str
    admin_token: str | None
    metrics_token: str | None  # None: /metrics answers anyone, as the contract has it
    auth_enabled: bool
    pass_interval: float
    planner: str
    executor: str
    reviewer: str
    llm_base_url: str | None
    llm_api_key: str | None
    llm_model: str | None
    llm_timeout: float
    decompose_timeout: float
    llm_prices: str | None
    sim_duration: float
    sim_failure_rate: float
    sim_seed: int | None
    visibility_timeout: float
    max_deliveries: int
    max_attempts: int
    retry_backoff: float
    run_timeout: float  # 0: no limit
    agent_concurrency: int
    planning_concurrency: int  # decompositions one worker plans at once (0: none)
    read_ahead: int | None  # None: automatic (see consumer.AgentConsumer.read_ahead)
    reconcile_interval: float
    history_days: float  # 0: keep for ever
    events_maxlen: int
    event_streams_max: int  # live event streams one API process serves at once
    task_events: bool
    log_format: str
    log_level: str
    dashboard_graph_limit: int

    @classmethod
    def from_env(cls) -> Settings:
        """The settings; ConfigError naming the variable, its value and what is expected."""
        seconds = "a number of seconds > 0"
        return cls(
            database_url=_database_url(),
            redis_url=os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL,
            admin_token=_optional("ORCH_ADMIN_TOKEN"),
            metrics_token=_optional("ORCH_METRICS_TOKEN"),
            auth_enabled=_switch("ORCH_AUTH", True),
            pass_interval=_float("ORCH_PASS_INTERVAL", 2.0, seconds, positive=True),
            planner=os.environ.get("ORCH_PLANNER") or "heuristic",
            executor=os.environ.get("ORCH_EXECUTOR") or "simulated",
            reviewer=os.environ.get("ORCH_REVIEWER") or "rules",
            llm_base_url=_optional("LLM_BASE_URL"),
            llm_api_key=_optional("LLM_API_KEY"),
            llm_model=_optional("LLM_MODEL"),
            llm_timeout=_float("LLM_TIMEOUT", 60.0, seconds, positive=True),
            decompose_timeout=_float("ORCH_DECOMPOSE_TIMEOUT", 120.0, seconds, positive=True),
            llm_prices=_optional("LLM_PRICES"),
            sim_duration=_float("ORCH_SIM_DURATION", 0.2, "a number of seconds >= 0"),
            sim_failure_rate=_float(
                "ORCH_SIM_FAILURE_RATE", 0.0, "a number from 0 to 1", maximum=1.0
            ),
            sim_seed=_optional_int("ORCH_SIM_SEED", "a whole number"),
            visibility_timeout=_float("ORCH_VISIBILITY_TIMEOUT", 60.0, seconds, positive=True),
            max_deliveries=_int("ORCH_MAX_DELIVERIES", 5, "a whole number >= 1", minimum=1),
            max_attempts=_int("ORCH_MAX_ATTEMPTS", 3, "a whole number >= 1", minimum=1),
            retry_backoff=_float("ORCH_RETRY_BACKOFF", 1.0, "a number of seconds >= 0"),
            run_timeout=_float("ORCH_RUN_TIMEOUT", 0.0, "a number of seconds >= 0 (0: no limit)"),
            agent_concurrency=_int("ORCH_AGENT_CONCURRENCY", 4, "a whole number >= 0"),
            planning_concurrency=_int("ORCH_PLANNING_CONCURRENCY", 1, "a whole number >= 0"),
            read_ahead=_read_ahead(),
            reconcile_interval=_float("ORCH_RECONCILE_INTERVAL", 5.0, seconds, positive=True),
            history_days=_float("ORCH_HISTORY_DAYS", 0.0, "a number of days >= 0 (0: keep all)"),
            events_maxlen=_int("ORCH_EVENTS_MAXLEN", 10_000, "a whole number >= 1", minimum=1),
            # Each stream holds a server thread: 4 leaves half of gunicorn's --threads 8 free.
            event_streams_max=_int("ORCH_EVENT_STREAMS_MAX", 4, "a whole number >= 1", minimum=1),
            task_events=_switch("ORCH_TASK_EVENTS", True),
            log_format=_choice("ORCH_LOG_FORMAT", "json", LOG_FORMATS),
            log_level=_log_level(),
            dashboard_graph_limit=_int(
                "ORCH_DASHBOARD_GRAPH_LIMIT", 1000, "a whole number >= 1", minimum=1
            ),
        )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings.from_env()


def reload_settings() -> Settings:
    """Forget the cached settings (tests change the environment)."""
    get_settings.cache_clear()
    return get_settings()
