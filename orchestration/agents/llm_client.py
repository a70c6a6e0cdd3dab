"""A small client for any OpenAI-compatible chat-completions server (stdlib HTTP, no SDK).

POST {LLM_BASE_URL}/chat/completions with the model, the messages, a temperature and, when asked,
``response_format: {"type": "json_object"}``; ``Authorization: Bearer LLM_API_KEY`` when a key
is set. A server that refuses the temperature or response_format (a 400/422 naming it, as
reasoning models do for a temperature other than 1) is asked again without it, and that client
leaves it out from then on. Timeouts, connection errors, 408, 429 and 5xx answers are retried
with exponential backoff (a Retry-After header, in seconds or as an HTTP date, is honoured) up
to a bounded number of attempts; then, or at once for any other error,
orchestration.errors.AgentError is raised with a message that says what went wrong and never
contains the API key.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import logging
import math
import random
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from orchestration.agents.base import AgentConfigError
from orchestration.agents.pricing import PriceTable
from orchestration.config import Settings, get_settings
from orchestration.errors import AgentError

log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({408, 425, 429})
DEFAULT_MAX_ATTEMPTS = 4
DEFAULT_BACKOFF = 0.5
DEFAULT_MAX_BACKOFF = 8.0
DEFAULT_MAX_RETRY_AFTER = 60.0
MAX_ERROR_BODY = 300
USER_AGENT = "agent-orchestration/0.1"


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.total_tokens + other.total_tokens,
        )


@dataclass(frozen=True)
class ChatResponse:
    content: str
    usage: Usage
    model: str
    cost: Decimal
    # "stop", "length" (cut off at the token limit), ...; None when the server does not say.
    finish_reason: str | None = None


class _Retryable(Exception):
    def __init__(self, problem: str, retry_after: float | None = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.retry_after = retry_after


class RequestRefused(AgentError):
    """The server refused the request (a 4xx that retrying cannot fix)."""

    def __init__(self, message: str, status: int, body: str) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: a number of seconds or an HTTP date."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _redact_url(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.username or parts.password:
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        parts = parts._replace(netloc=host)
    return urllib.parse.urlunsplit(parts._replace(query="", fragment=""))


def _content_of(message: Mapping[str, Any]) -> str:
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return "".join(
            str(part.get("text", "")) if isinstance(part, dict) else str(part) for part in content
        )
    return str(content)


def _int(value: Any) -> int:
    try:
        return max(0, int(value or 0))
    except (TypeError, ValueError):
        return 0


class ChatClient:
    """Chat completions against one server and model. Thread-safe; opens a connection per call."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        prices: PriceTable | None = None,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        backoff: float = DEFAULT_BACKOFF,
        max_backoff: float = DEFAULT_MAX_BACKOFF,
        max_retry_after: float = DEFAULT_MAX_RETRY_AFTER,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not base_url:
            raise AgentConfigError("LLM_BASE_URL is not set")
        if not model:
            raise AgentConfigError("LLM_MODEL is not set")
        parts = urllib.parse.urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise AgentConfigError(
                f"LLM_BASE_URL must be an http(s) URL such as http://127.0.0.1:8000/v1, "
                f"not {_redact_url(base_url)!r}"
            )
        base = base_url.rstrip("/")
        self.url = base if base.endswith("/chat/completions") else base + "/chat/completions"
        self.model = model
        self._api_key = api_key
        self.timeout = float(timeout)
        self.prices = prices or PriceTable()
        self.max_attempts = max(1, int(max_attempts))
        self.backoff = max(0.0, float(backoff))
        self.max_backoff = max(0.0, float(max_backoff))
        self.max_retry_after = max(0.0, float(max_retry_after))
        self._sleep = sleep
        # Options the server refused (400/422 naming them): left out of every later request.
        self._refused: set[str] = set()

    @classmethod
    def from_settings(cls, settings: Settings | None = None, **overrides: Any) -> ChatClient:
        s = settings or get_settings()
        if not s.llm_base_url or not s.llm_model:
            missing = [
                name
                for name, value in (("LLM_BASE_URL", s.llm_base_url), ("LLM_MODEL", s.llm_model))
                if not value
            ]
            raise AgentConfigError(
                f"an llm agent needs {' and '.join(missing)} (any OpenAI-compatible "
                "chat-completions server)"
            )
        options: dict[str, Any] = {
            "api_key": s.llm_api_key,
            "timeout": s.llm_timeout,
            "prices": PriceTable.parse(s.llm_prices),
        }
        options.update(overrides)
        return cls(s.llm_base_url, s.llm_model, **options)

    def __repr__(self) -> str:  # never shows the key
        return f"ChatClient(url={_redact_url(self.url)!r}, model={self.model!r})"

    def cost(self, usage: Usage) -> Decimal:
        return self.prices.cost(self.model, usage.prompt_tokens, usage.completion_tokens)

    # ------------------------------------------------------------------------------------------

    def chat(
        self,
        messages: Sequence[Mapping[str, str]],
        *,
        temperature: float | None = None,
        json_object: bool = False,
        max_tokens: int | None = None,
        cancelled: threading.Event | None = None,
    ) -> ChatResponse:
        """One completion; AgentError when the server cannot give one, or when `cancelled` is
        set (the task was cancelled): no attempt starts after that, and a retry's wait ends.

        json_object asks for ``response_format: {"type": "json_object"}``. A server that refuses
        that field or the temperature (400/422 naming it) is asked again without it, and not
        asked with it again."""
        options: dict[str, Any] = {}
        if temperature is not None:
            options["temperature"] = temperature
        if json_object:
            options["response_format"] = {"type": "json_object"}
        while True:
            body: dict[str, Any] = {"model": self.model, "messages": [dict(m) for m in messages]}
            body.update((k, v) for k, v in options.items() if k not in self._refused)
            if max_tokens is not None:
                body["max_tokens"] = int(max_tokens)
            try:
                return self._with_retries(body, cancelled)
            except RequestRefused as exc:
                # Each option is dropped at most once, so this ends.
                refused = [k for k in options if k in body and k in exc.body]
                if exc.status not in (400, 422) or not refused:
                    raise
                log.warning(
                    "chat completions at %s does not support %s; asking without it",
                    _redact_url(self.url),
                    " and ".join(refused),
                )
                self._refused.update(refused)

    def _with_retries(
        self, body: dict[str, Any], cancelled: threading.Event | None = None
    ) -> ChatResponse:
        payload = json.dumps(body).encode("utf-8")
        last_problem = "no attempt made"
        for attempt in range(1, self.max_attempts + 1):
            if cancelled is not None and cancelled.is_set():
                raise AgentError("stopped: the task was cancelled")
            try:
                return self._once(payload)
            except _Retryable as exc:
                last_problem = exc.problem
                if attempt >= self.max_attempts:
                    break
                delay = self._delay(attempt, exc.retry_after)
                log.warning(
                    "chat completions at %s: %s; retrying in %.2fs (attempt %d of %d)",
                    _redact_url(self.url),
                    exc.problem,
                    delay,
                    attempt,
                    self.max_attempts,
                )
                if cancelled is not None and self._sleep is time.sleep:
                    cancelled.wait(delay)
                else:
                    self._sleep(delay)
        attempts = f"{self.max_attempts} attempt{'s' if self.max_attempts != 1 else ''}"
        raise AgentError(
            self._redact(
                f"chat completions at {_redact_url(self.url)} failed after {attempts}: "
                f"{last_problem}"
            )
        )

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_retry_after)
        base = min(self.max_backoff, self.backoff * (2 ** (attempt - 1)))
        return base * (1.0 + 0.2 * random.random())

    def _headers(self) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        }
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return headers

    def _redact(self, text: str) -> str:
        if self._api_key:
            text = text.replace(self._api_key, "***")
        return text

    def _once(self, payload: bytes) -> ChatResponse:
        request = urllib.request.Request(
            self.url, data=payload, headers=self._headers(), method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            self._http_error(exc)
            raise  # pragma: no cover - _http_error always raises
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, TimeoutError):
                raise _Retryable(f"no answer within {self.timeout:g}s (LLM_TIMEOUT)") from exc
            raise _Retryable(f"cannot connect: {reason}") from exc
        except TimeoutError as exc:
            raise _Retryable(f"no answer within {self.timeout:g}s (LLM_TIMEOUT)") from exc
        except (http.client.HTTPException, ConnectionError, OSError) as exc:
            raise _Retryable(f"connection failed: {type(exc).__name__}: {exc}") from exc
        return self._parse(raw)

    def _http_error(self, exc: urllib.error.HTTPError) -> None:
        status = exc.code
        try:
            body = exc.read(4096).decode("utf-8", "replace")
        except Exception:  # the body is only a hint
            body = ""
        finally:
            exc.close()
        snippet = " ".join(body.split())[:MAX_ERROR_BODY]
        problem = f"HTTP {status} {exc.reason}" + (f": {snippet}" if snippet else "")
        problem = self._redact(problem)
        if status in RETRYABLE_STATUS or status >= 500:
            retry_after = parse_retry_after(exc.headers.get("Retry-After") if exc.headers else None)
            raise _Retryable(problem, retry_after) from exc
        hint = ""
        if status in (401, 403):
            hint = " (check LLM_API_KEY)"
        elif status == 404:
            hint = " (check LLM_BASE_URL, usually ending in /v1, and LLM_MODEL)"
        raise RequestRefused(
            f"chat completions at {_redact_url(self.url)} refused the request: {problem}{hint}",
            status,
            self._redact(body),
        ) from exc

    def _parse(self, raw: bytes) -> ChatResponse:
        try:
            data = json.loads(raw.decode("utf-8"))
            choice = data["choices"][0]
            message = choice["message"] if "message" in choice else {"content": choice["text"]}
            content = _content_of(message)
            finish_reason = choice.get("finish_reason")
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            raise AgentError(
                f"chat completions at {_redact_url(self.url)} did not answer in the "
                "chat-completions format (is LLM_BASE_URL right? it usually ends in /v1)"
            ) from exc
        raw_usage = data.get("usage") if isinstance(data, dict) else None
        raw_usage = raw_usage if isinstance(raw_usage, dict) else {}
        prompt = _int(raw_usage.get("prompt_tokens"))
        completion = _int(raw_usage.get("completion_tokens"))
        total = _int(raw_usage.get("total_tokens")) or prompt + completion
        usage = Usage(prompt, completion, total)
        return ChatResponse(
            content=content,
            usage=usage,
            model=str(data.get("model") or self.model),
            cost=self.cost(usage),
            finish_reason=str(finish_reason) if finish_reason is not None else None,
        )
