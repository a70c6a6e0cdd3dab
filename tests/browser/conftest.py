"""Browser tests of the dashboard: the real app served over HTTP in a thread, driven by Debian's
Chromium (/usr/bin/chromium, installed by scripts/browser.sh) through Playwright's Python
package. Never `playwright install`: no browser downloads.

The database harness is tests/conftest.py's; tables and the Redis db are emptied before each
test, as in tests/integration."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from werkzeug.serving import make_server

from tests.support.services import truncate_all
from webapp import dashboard
from webapp.testing import ADMIN_TOKEN, environment, make_app

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


@pytest.fixture(autouse=True)
def _clean_state(database: str, redis_client: redis.Redis) -> None:
    truncate_all()
    redis_client.flushdb()


def dashboard_app(**config: Any) -> Flask:
    """The API app with the dashboard (registered here until create_app does it)."""
    app = make_app(ORCH_SSE_HEARTBEAT=1.0, **config)
    if "dashboard" not in app.blueprints:
        app.register_blueprint(dashboard.bp)
    return app


@dataclass
class LiveServer:
    url: str
    token: str = ADMIN_TOKEN


@pytest.fixture
def live_server(database: str, request: pytest.FixtureRequest) -> Iterator[LiveServer]:
    """The app on 127.0.0.1:<free port>, a thread per request (the event stream holds one),
    with the app config of the test's `app_config` marker, if any."""
    marker = request.node.get_closest_marker("app_config")
    with environment(ORCH_ADMIN_TOKEN=ADMIN_TOKEN, ORCH_AUTH=None):
        app = dashboard_app(**(marker.kwargs if marker else {}))
        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, name="dashboard-http", daemon=True)
        thread.start()
        try:
            yield LiveServer(f"http://127.0.0.1:{server.server_port}")
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=10)


@pytest.fixture(scope="session")
def chromium_path() -> str:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the dashboard's browser tests drive Debian's chromium. "
            "Run scripts/browser.sh (apt-get install chromium) and try again.",
            pytrace=False,
        )
    return str(CHROMIUM)


@pytest.fixture(scope="module")
def browser(chromium_path: str) -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(
            "the playwright package is missing: pip install playwright into .venv "
            "(its Python package only; never `playwright install`)",
            pytrace=False,
        )
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


@dataclass
class PageProblems:
    """What went wrong in the page: script errors, console errors, requests off this host."""

    errors: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    external: list[str] = field(default_factory=list)


@pytest.fixture
def page_problems() -> PageProblems:
    return PageProblems()


@pytest.fixture
def page(browser: Any, live_server: LiveServer, page_problems: PageProblems) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1440, "height": 1100})
    context.set_default_timeout(10_000)
    page = context.new_page()
    host = live_server.url + "/"

    def on_request(request: Any) -> None:
        if not (request.url.startswith(host) or request.url.startswith("data:")):
            page_problems.external.append(request.url)

    def on_console(message: Any) -> None:
        if message.type == "error":
            page_problems.errors.append(f"console: {message.text}")

    def on_response(response: Any) -> None:
        if response.status >= 400:
            page_problems.failed.append(f"{response.status} {response.url}")

    page.on("request", on_request)
    page.on("console", on_console)
    page.on("response", on_response)
    page.on("pageerror", lambda exc: page_problems.errors.append(f"pageerror: {exc}"))
    try:
        yield page
    finally:
        context.close()
