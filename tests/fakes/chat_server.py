"""A real local HTTP server speaking the OpenAI chat-completions wire format, scriptable per test.

    server.answer("text")                       # a valid completion with usage
    server.answer({"title": "..."})             # content = that JSON
    server.error(429, retry_after="1")          # an error status (with Retry-After)
    server.answer("late", delay=2.0)            # an answer slower than the client's timeout
    server.raw(200, b"<html>")                  # any body

Replies are served in order; with none left, a responder set with ``server.respond(fn)``
(RecordedRequest -> Reply, or None) answers, else the server answers 500 "no scripted reply".
Every request is recorded (method, path, headers, JSON body, arrival time) in ``server.requests``.

Use the ``chat_server`` fixture: ``from tests.fakes.chat_server import chat_server_fixture``
(imported under its own name, the fixture is called ``chat_server``).
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

CHAT_PATH = "/v1/chat/completions"


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    received_at: float  # time.monotonic()

    @property
    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.json.get("messages", []))

    @property
    def prompt(self) -> str:
        """Every message's content, joined: what the model was shown."""
        return "\n".join(str(m.get("content", "")) for m in self.messages)


def completion(
    content: str,
    *,
    prompt_tokens: int = 10,
    completion_tokens: int = 20,
    model: str = "fake-model",
    finish_reason: str = "stop",
) -> dict[str, Any]:
    """A chat-completions response body ("length" as finish_reason: cut off at the limit)."""
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": finish_reason,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


class FakeChatServer:
    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self._replies: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None
        self._responder: Callable[[RecordedRequest], Reply | None] | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> FakeChatServer:
        handler = _handler_for(self)
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        httpd.daemon_threads = True
        self._httpd = httpd
        self._port = int(httpd.server_address[1])
        self._thread = threading.Thread(
            target=httpd.serve_forever, args=(0.02,), name="fake-chat", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes slow replies
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def port(self) -> int:
        assert self._port is not None, "server not started"
        return self._port

    @property
    def url(self) -> str:
        """The base URL to configure as LLM_BASE_URL."""
        return f"http://127.0.0.1:{self.port}/v1"

    # -- scripting -------------------------------------------------------------------------------

    def push(self, reply: Reply) -> None:
        with self._lock:
            self._replies.append(reply)

    def answer(
        self,
        content: str | dict[str, Any] | list[Any],
        *,
        prompt_tokens: int = 10,
        completion_tokens: int = 20,
        model: str = "fake-model",
        delay: float = 0.0,
        finish_reason: str = "stop",
    ) -> None:
        """A valid completion whose message content is content (JSON-encoded unless a str)."""
        text = content if isinstance(content, str) else json.dumps(content)
        body = completion(
            text,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            model=model,
            finish_reason=finish_reason,
        )
        self.push(
            Reply(
                200,
                json.dumps(body).encode(),
                {"Content-Type": "application/json"},
                delay,
            )
        )

    def error(
        self,
        status: int,
        message: str = "scripted error",
        *,
        retry_after: str | None = None,
        delay: float = 0.0,
    ) -> None:
        headers = {"Content-Type": "application/json"}
        if retry_after is not None:
            headers["Retry-After"] = retry_after
        body = json.dumps({"error": {"message": message, "code": status}}).encode()
        self.push(Reply(status, body, headers, delay))

    def raw(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.push(Reply(status, body, dict(headers or {})))

    def respond(self, responder: Callable[[RecordedRequest], Reply | None] | None) -> None:
        """Answer requests left unscripted by calling responder(request) (None: a 500)."""
        with self._lock:
            self._responder = responder

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._replies)

    # -- serving ---------------------------------------------------------------------------------

    def _next(self, request: RecordedRequest) -> Reply:
        with self._lock:
            if self._replies:
                return self._replies.popleft()
            responder = self._responder
        if responder is not None:
            reply = responder(request)
            if reply is not None:
                return reply
        body = json.dumps({"error": {"message": "no scripted reply"}}).encode()
        return Reply(500, body, {"Content-Type": "application/json"})

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)


def _handler_for(server: FakeChatServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            request = RecordedRequest(
                method="POST",
                path=self.path,
                headers={k.lower(): v for k, v in self.headers.items()},
                body=body,
                received_at=time.monotonic(),
            )
            server._record(request)
            if self.path != CHAT_PATH:
                self._send(Reply(404, b'{"error": {"message": "not found"}}'))
                return
            try:
                reply = server._next(request)
            except Exception as exc:  # a broken responder shows as a 500, not a hung client
                message = json.dumps({"error": {"message": f"responder failed: {exc!r}"}})
                reply = Reply(500, message.encode(), {"Content-Type": "application/json"})
            if reply.delay > 0 and server._stopping.wait(reply.delay):
                return
            self._send(reply)

        def _send(self, reply: Reply) -> None:
            try:
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout): nothing to do

    return Handler


@pytest.fixture(name="chat_server")
def chat_server_fixture() -> Iterator[FakeChatServer]:
    """A running FakeChatServer, stopped after the test."""
    server = FakeChatServer().start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def agents_on(
    server: FakeChatServer,
    monkeypatch: pytest.MonkeyPatch,
    *,
    prices: tuple[Decimal, Decimal],
    roles: tuple[str, ...] = ("planner",),
    api_key: str | None = None,
) -> Iterator[FakeChatServer]:
    """The LLM agents of `roles` (planner, executor, reviewer) on this server, model
    "fake-model" at (prompt, completion) prices per million tokens; set back afterwards."""
    from orchestration.agents import reset_agents
    from orchestration.config import reload_settings

    monkeypatch.setenv("LLM_BASE_URL", server.url)
    if api_key is not None:
        monkeypatch.setenv("LLM_API_KEY", api_key)
    monkeypatch.setenv("LLM_MODEL", "fake-model")
    monkeypatch.setenv("LLM_TIMEOUT", "5")
    prompt, completion = prices
    fake_prices = {"fake-model": {"prompt": str(prompt), "completion": str(completion)}}
    monkeypatch.setenv("LLM_PRICES", json.dumps(fake_prices))
    for role in roles:
        monkeypatch.setenv(f"ORCH_{role.upper()}", "llm")
    reload_settings()
    reset_agents()
    try:
        yield server
    finally:
        monkeypatch.undo()
        reload_settings()
        reset_agents()
