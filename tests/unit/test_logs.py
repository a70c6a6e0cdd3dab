"""Structured logs: JSON lines, context fields, and secrets that never get through."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from orchestration import logs
from orchestration.logs import REDACTED, configure_logging, log_context, redact

ADMIN = "adm1n-s3cret-token-value"
LLM_KEY = "sk-llm-key-0123456789"
SECRETS = (ADMIN, LLM_KEY)


class Capture:
    def __init__(self) -> None:
        self.stream = io.StringIO()

    def lines(self) -> list[str]:
        return self.stream.getvalue().splitlines()

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines()]

    def text(self) -> str:
        return self.stream.getvalue()


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
                handler.close()
        root.setLevel(level)


@pytest.fixture
def capture(restore_root: None) -> Capture:
    cap = Capture()
    configure_logging("json", "DEBUG", stream=cap.stream, secrets=lambda: SECRETS)
    return cap


@pytest.fixture
def text_capture(restore_root: None) -> Capture:
    cap = Capture()
    configure_logging("text", "DEBUG", stream=cap.stream, secrets=lambda: SECRETS)
    return cap


log = logging.getLogger("orchestration.test_logs")


def test_one_json_object_per_line(capture: Capture) -> None:
    log.info("hello %s", "world")
    log.warning("multi\nline message")
    log.debug("number %d", 7)
    records = capture.records()
    assert len(capture.lines()) == 3
    first = records[0]
    assert set(first) >= {"ts", "level", "logger", "message", "process", "thread"}
    assert first["message"] == "hello world"
    assert first["level"] == "INFO"
    assert first["logger"] == "orchestration.test_logs"
    assert isinstance(first["process"], int)
    assert first["thread"] == threading.current_thread().name
    assert first["ts"].endswith("+00:00") and "T" in first["ts"]
    assert records[1]["message"] == "multi\nline message"
    assert records[2]["message"] == "number 7" and records[2]["level"] == "DEBUG"


def test_level_filters(restore_root: None) -> None:
    cap = Capture()
    configure_logging("json", "WARNING", stream=cap.stream, secrets=lambda: ())
    log.info("hidden")
    log.warning("shown")
    assert [r["message"] for r in cap.records()] == ["shown"]


def test_configure_twice_replaces_its_own_handler(capture: Capture) -> None:
    other = Capture()
    configure_logging("json", "INFO", stream=other.stream, secrets=lambda: ())
    log.info("once")
    assert capture.lines() == []
    assert len(other.records()) == 1


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="log format"):
        configure_logging("xml")
    with pytest.raises(ValueError, match="log level"):
        configure_logging("json", "LOUD")


def test_context_fields_from_log_context(capture: Capture) -> None:
    with log_context(team_id="team-1", task_id="task-1"):
        log.info("inside")
        with log_context(worker_id="w-1", task_id="task-2"):
            log.info("nested")
        log.info("after nested")
    log.info("outside")
    inside, nested, after, outside = capture.records()
    assert inside["team_id"] == "team-1" and inside["task_id"] == "task-1"
    assert "worker_id" not in inside
    assert nested["team_id"] == "team-1" and nested["task_id"] == "task-2"
    assert nested["worker_id"] == "w-1"
    assert after["task_id"] == "task-1" and "worker_id" not in after
    assert not {"team_id", "task_id", "worker_id", "entry_id"} & set(outside)


def test_context_fields_from_extra_win(capture: Capture) -> None:
    import uuid

    team = uuid.uuid4()
    with log_context(team_id=team, task_id="from-context"):
        log.info("x", extra={"task_id": "from-extra", "entry_id": "1-0", "attempt": 2})
    [record] = capture.records()
    assert record["team_id"] == str(team)
    assert record["task_id"] == "from-extra"
    assert record["entry_id"] == "1-0"
    assert record["attempt"] == 2


def test_context_is_per_thread(capture: Capture) -> None:
    seen: list[str] = []

    def other() -> None:
        log.info("other thread")
        seen.append("done")

    with log_context(team_id="main-only"):
        thread = threading.Thread(target=other, name="other")
        thread.start()
        thread.join()
    [record] = capture.records()
    assert record["thread"] == "other" and "team_id" not in record
    assert seen == ["done"]


def test_log_context_refuses_unknown_fields() -> None:
    with pytest.raises(TypeError), log_context(tenant="x"):
        pass


SECRET_MESSAGES = [
    f"calling with Authorization: Bearer {ADMIN}",
    "header Authorization: Bearer abc.def-ghi_jkl",
    "sent {'Authorization': 'Basic dXNlcjpwYXNz'}",
    "GET /api/v1/teams?api_key=hunter2key&x=1",
    "GET /api/v1/teams?x=1&token=hunter2tok",
    "retrying with bearer eyJhbGciOi.eyJzdWIi.sig",
    f"the key is {LLM_KEY}, the admin token {ADMIN}",
    "connecting to postgresql+psycopg://orch:pa55word@db:5432/orchestration",
    "redis at redis://:r3dispass@cache:6379/0",
    'body {"access_token": "tok-999", "password": "pw-999"}',
    "a team token orch_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-_abcdEF in a message",
]
LEAKS = (
    ADMIN,
    LLM_KEY,
    "abc.def-ghi_jkl",
    "dXNlcjpwYXNz",
    "hunter2key",
    "hunter2tok",
    "eyJhbGciOi",
    "pa55word",
    "r3dispass",
    "tok-999",
    "pw-999",
    "IjKlMnOpQrStUvWxYz",
)


@pytest.mark.parametrize("message", SECRET_MESSAGES)
def test_secrets_in_the_message_are_redacted(capture: Capture, message: str) -> None:
    log.info(message)
    [record] = capture.records()
    assert REDACTED in record["message"]
    for leak in LEAKS:
        assert leak not in capture.text()


@pytest.mark.parametrize("message", SECRET_MESSAGES)
def test_secrets_in_the_arguments_are_redacted(capture: Capture, message: str) -> None:
    log.warning("request failed: %s (%r)", message, {"detail": message})
    for leak in LEAKS:
        assert leak not in capture.text()
    assert REDACTED in capture.records()[0]["message"]


def test_secrets_in_exceptions_are_redacted(capture: Capture) -> None:
    try:
        raise RuntimeError(f"401 for Bearer {ADMIN} at https://x/?api_key=hunter2key")
    except RuntimeError:
        log.exception("the call failed")
    [record] = capture.records()
    assert record["message"] == "the call failed"
    assert record["level"] == "ERROR"
    exception = record["exception"]
    assert isinstance(exception, str)
    assert "Traceback" in exception and "RuntimeError" in exception
    assert REDACTED in exception
    for leak in (ADMIN, "hunter2key"):
        assert leak not in capture.text()


def test_secrets_in_extra_fields_are_redacted(capture: Capture) -> None:
    log.info(
        "request",
        extra={
            "headers": {"Authorization": "Bearer abc.def-ghi_jkl", "Accept": "json"},
            "url": "https://api/x?token=hunter2tok",
            "team_id": "t",
        },
    )
    [record] = capture.records()
    assert record["headers"] == {"Authorization": REDACTED, "Accept": "json"}
    assert record["url"] == f"https://api/x?token={REDACTED}"
    assert "abc.def" not in capture.text() and "hunter2tok" not in capture.text()


def test_text_format_is_redacted_and_carries_context(text_capture: Capture) -> None:
    with log_context(team_id="team-1"):
        log.info("using Bearer %s", ADMIN)
    line = text_capture.text()
    assert ADMIN not in line
    assert "INFO" in line and "orchestration.test_logs" in line
    assert f"using Bearer {REDACTED}" in line and "[team_id=team-1]" in line


def test_secrets_from_settings(restore_root: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestration.config import reload_settings

    monkeypatch.setenv("ORCH_ADMIN_TOKEN", "from-settings-admin-77")
    monkeypatch.setenv("LLM_API_KEY", "from-settings-llm-88")
    reload_settings()
    try:
        cap = Capture()
        configure_logging("json", "INFO", stream=cap.stream)
        log.info("admin from-settings-admin-77 and key from-settings-llm-88")
        assert "from-settings" not in cap.text()
        assert cap.records()[0]["message"] == f"admin {REDACTED} and key {REDACTED}"
    finally:
        monkeypatch.undo()
        reload_settings()


def test_other_handlers_see_the_redacted_record(capture: Capture) -> None:
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    keep = Keep()
    root = logging.getLogger()
    root.addHandler(keep)  # added after ours: it sees the record after our filter ran
    try:
        log.info("token=%s", "hunter2tok")
    finally:
        root.removeHandler(keep)
    assert seen == [f"token={REDACTED}"]


def test_redact_leaves_ordinary_text_alone() -> None:
    text = "task 3 done: max_tokens=500 estimated_tokens: 20 token_budget=9 by coder"
    assert redact(text) == text
    assert redact(redact(f"Bearer {ADMIN}", SECRETS), SECRETS) == f"Bearer {REDACTED}"


def test_celery_setup_logging_hook(restore_root: None, monkeypatch: pytest.MonkeyPatch) -> None:
    installed: list[tuple[str, int]] = []
    monkeypatch.setattr(
        logs, "configure_logging", lambda fmt, level: installed.append((fmt, level))
    )
    logs.celery_setup_logging(loglevel=logging.DEBUG, logfile=None, format="", colorize=False)
    logs.celery_setup_logging(loglevel=logging.WARNING)
    logs.celery_setup_logging()
    assert [level for _, level in installed] == [logging.DEBUG, logging.INFO, logging.INFO]
    assert all(fmt in ("json", "text") for fmt, _ in installed)
