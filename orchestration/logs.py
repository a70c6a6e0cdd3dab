"""Structured logs: one JSON object per line, with the team, task, worker and stream entry a
line is about, and never a secret.

    configure_logging(fmt="json", level="INFO")        # every process calls this once
    with log_context(team_id=team.id, task_id=task.id):
        log.info("executing")                          # ... carries team_id and task_id
    log.info("claimed", extra={"entry_id": entry_id})  # or pass them per call

A JSON line has `ts` (UTC, ISO 8601), `level`, `logger`, `message`, `process`, `thread`, then
`team_id`, `task_id`, `worker_id`, `entry_id` when known, any other `extra=` field, and
`exception` (the formatted traceback) when there is one.

Redaction happens in a filter on the handler, before any formatting, and again on the formatted
line: bearer tokens, `Authorization` headers, `api_key=` / `token=` style parameters, passwords
in URLs, and the literal values of the admin token and the LLM API key (from
orchestration.config) never reach the output, whether they sit in the message, its arguments,
an `extra=` field or an exception's text.

The format and level come from the caller (the processes pass Settings.log_format and
Settings.log_level); this module reads no environment itself.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import IO, Any

__all__ = [
    "CONTEXT_FIELDS",
    "REDACTED",
    "JsonFormatter",
    "RedactionFilter",
    "TextFormatter",
    "celery_setup_logging",
    "configure_logging",
    "current_context",
    "log_context",
    "redact",
]

CONTEXT_FIELDS = ("team_id", "task_id", "worker_id", "entry_id")
REDACTED = "[REDACTED]"
FORMATS = ("json", "text")

# The attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD_ATTRIBUTES = frozenset(
    vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None))
) | {"message", "asctime", "taskName"}

_context: ContextVar[dict[str, str]] = ContextVar("orchestration_log_context", default={})  # noqa: B039


# --- context -----------------------------------------------------------------------------------


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Every record logged inside carries these fields (None values are ignored). Nests: inner
    values add to and override outer ones. Thread- and asyncio-safe (a contextvar)."""
    unknown = set(fields) - set(CONTEXT_FIELDS)
    if unknown:
        raise TypeError(f"log_context() takes only {', '.join(CONTEXT_FIELDS)}; got {unknown}")
    merged = dict(_context.get())
    merged.update({name: str(value) for name, value in fields.items() if value is not None})
    token = _context.set(merged)
    try:
        yield
    finally:
        _context.reset(token)


def current_context() -> dict[str, str]:
    return dict(_context.get())


class ContextFilter(logging.Filter):
    """Copies the current log_context() into a record; a field passed with `extra=` wins."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in _context.get().items():
            if getattr(record, name, None) is None:
                setattr(record, name, value)
        return True


# --- redaction ---------------------------------------------------------------------------------

# (pattern, replacement); applied in order.
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Authorization / Proxy-Authorization headers in any common rendering:
    # "Authorization: Basic abc", {'Authorization': 'Bearer abc'}, authorization=abc
    (
        re.compile(
            r"""(?ix)
            ((?:proxy-)?authorization['"]?\s*[:=]\s*['"]?)
            (?:(?:bearer|basic|token|digest)\s+)?
            (?!\[REDACTED\])[^\s'",;}\]]+""",
        ),
        rf"\g<1>{REDACTED}",
    ),
    # Bearer tokens anywhere else.
    (
        re.compile(r"(?i)\b(bearer)(\s+)(?!\[REDACTED\])[A-Za-z0-9\-._~+/=]+"),
        rf"\g<1>\g<2>{REDACTED}",
    ),
    # Secret-bearing parameters: ?api_key=..., &token=..., access_token: ..., "password": "..."
    (
        re.compile(
            r"""(?ix)
            \b([a-z0-9_\-]*(?:api[_-]?key|apikey|token|secret|password|passwd)
            ['"]?\s*[=:]\s*['"]?)
            (?!\[REDACTED\])[^\s&'",;}\]]+""",
        ),
        rf"\g<1>{REDACTED}",
    ),
    # Team tokens (teams.TOKEN_PREFIX) however they appear: the 12-character prefix the API
    # lists stays, to tell which one it was.
    (
        re.compile(r"\b(orch_[A-Za-z0-9_-]{7})[A-Za-z0-9_-]{13,}"),
        rf"\g<1>{REDACTED}",
    ),
    # Passwords in URLs: scheme://user:password@host
    (
        re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://[^\s:/@]*:)(?!\[REDACTED\]@)[^\s@/]+@"),
        rf"\g<1>{REDACTED}@",
    ),
)


# Keys whose values are secret wherever they appear in a structured `extra=` field.
_SECRET_KEY = re.compile(
    r"(?i)^(?:proxy-)?authorization$|cookie|api[_-]?key|apikey|(?:^|[_-])token$|secret|passw"
)


def _configured_secrets() -> list[str]:
    """The admin token and the LLM API key, as configured (orchestration.config)."""
    try:
        from orchestration.config import get_settings

        settings = get_settings()
    except Exception:  # a broken environment must not break logging
        return []
    return [s for s in (settings.admin_token, settings.llm_api_key) if s]


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """The text with every known secret and secret-looking value replaced by [REDACTED]."""
    if not text:
        return text
    # Longest first, so a secret containing another is removed whole.
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _redact_value(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, bool | int | float) or value is None:
        return value
    if isinstance(value, dict):
        return {
            str(k): REDACTED if _SECRET_KEY.search(str(k)) else _redact_value(v, secrets)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact_value(v, secrets) for v in value]
    return redact(str(value), secrets)


class RedactionFilter(logging.Filter):
    """Renders a record's message with its arguments, then redacts it, its exception text,
    its stack and every `extra=` field, in place (so every later handler sees it clean too)."""

    def __init__(self, secrets: Callable[[], Iterable[str]] | None = None) -> None:
        super().__init__()
        self._secrets = secrets or _configured_secrets

    def secrets(self) -> list[str]:
        return [s for s in self._secrets() if s]

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_orch_redacted", False):
            return True
        secrets = self.secrets()
        try:
            message = record.getMessage()
        except Exception as exc:  # a bad format string: keep what there is, redacted
            message = f"{record.msg!r} % {record.args!r} ({exc})"
        record.msg = redact(message, secrets)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, secrets)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, secrets)
        for name, value in list(vars(record).items()):
            if name not in _STANDARD_ATTRIBUTES and not name.startswith("_"):
                setattr(record, name, _redact_value(value, secrets))
        setattr(record, "_orch_redacted", True)  # noqa: B010
        return True


# --- formatters --------------------------------------------------------------------------------


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {
        name: value
        for name, value in vars(record).items()
        if name not in _STANDARD_ATTRIBUTES and not name.startswith("_")
    }


def _exception_text(formatter: logging.Formatter, record: logging.LogRecord) -> str | None:
    if record.exc_info and not record.exc_text:
        record.exc_text = formatter.formatException(record.exc_info)
    return record.exc_text or None


class JsonFormatter(logging.Formatter):
    """One JSON object per line (see the module docstring for the fields)."""

    def __init__(self, secrets: Callable[[], Iterable[str]] | None = None) -> None:
        super().__init__()
        self._redactor = RedactionFilter(secrets)

    def format(self, record: logging.LogRecord) -> str:
        self._redactor.filter(record)  # no-op when the handler's filter already ran
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
            "thread": record.threadName,
        }
        extras = _extras(record)
        for name in CONTEXT_FIELDS:
            if extras.get(name) is not None:
                entry[name] = str(extras.pop(name))
            else:
                extras.pop(name, None)
        for name, value in extras.items():
            entry.setdefault(name, value)
        exception = _exception_text(self, record)
        if exception:
            entry["exception"] = exception
        if record.stack_info:
            entry["stack"] = record.stack_info
        # Last line of defence, value by value (redacting the serialized line could cut an
        # escape sequence in half and break the JSON).
        entry = _redact_value(entry, self._redactor.secrets())
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """Human-readable lines with the context fields appended: `... [team_id=... task_id=...]`."""

    def __init__(self, secrets: Callable[[], Iterable[str]] | None = None) -> None:
        super().__init__(
            "%(asctime)s %(levelname)-7s %(name)s [%(process)d:%(threadName)s] %(message)s"
        )
        self._redactor = RedactionFilter(secrets)

    def format(self, record: logging.LogRecord) -> str:
        self._redactor.filter(record)
        line = super().format(record)
        context = " ".join(
            f"{name}={getattr(record, name)}"
            for name in CONTEXT_FIELDS
            if getattr(record, name, None) is not None
        )
        if context:
            first, newline, rest = line.partition("\n")
            line = f"{first} [{context}]{newline}{rest}"
        return redact(line, self._redactor.secrets())


# --- set-up ------------------------------------------------------------------------------------


class _OrchestrationHandler(logging.StreamHandler):
    """Marks the handler configure_logging installed, so calling it again replaces it."""


def configure_logging(
    fmt: str | None = None,
    level: str | int = "INFO",
    *,
    stream: IO[str] | None = None,
    secrets: Callable[[], Iterable[str]] | None = None,
) -> logging.Handler:
    """Install the JSON (default) or text formatter on the root logger, with the context and
    redaction filters; set the root level. Idempotent: a second call replaces the handler the
    first one installed and leaves every other handler alone. Returns the handler.

    `stream` defaults to stderr; `secrets` (a callable returning the literal secret values)
    defaults to the admin token and LLM API key of orchestration.config."""
    fmt = (fmt or "json").strip().lower()
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    numeric = _level(level)

    handler = _OrchestrationHandler(stream if stream is not None else sys.stderr)
    handler.addFilter(ContextFilter())
    handler.addFilter(RedactionFilter(secrets))
    handler.setFormatter(JsonFormatter(secrets) if fmt == "json" else TextFormatter(secrets))

    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _OrchestrationHandler)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(numeric)
    return handler


def _level(level: str | int) -> int:
    if isinstance(level, int):
        return level
    name = level.strip().upper()
    if name.isdigit():
        return int(name)
    value = logging.getLevelName(name)
    if not isinstance(value, int):
        raise ValueError(f"unknown log level {level!r} (DEBUG, INFO, WARNING, ERROR, CRITICAL)")
    return value


def celery_setup_logging(loglevel: int | str | None = None, **_: Any) -> None:
    """Receiver of celery.signals.setup_logging: Celery then leaves logging to us. The level is
    the more verbose of `--loglevel` and Settings.log_level; the format is Settings.log_format."""
    from orchestration.config import get_settings

    settings = get_settings()
    fmt = getattr(settings, "log_format", None) or "json"
    level = _level(getattr(settings, "log_level", None) or "INFO")
    if loglevel:
        level = min(level, _level(loglevel))
    configure_logging(fmt, level)
