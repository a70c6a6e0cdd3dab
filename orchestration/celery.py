"""The Celery application (`celery -A orchestration ...` finds it here)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click
from celery import Celery, bootsteps
from celery.signals import setup_logging, worker_process_init
from celery.utils.imports import cwd_in_path

from orchestration.config import get_settings
from orchestration.logs import celery_setup_logging

app = Celery("orchestration")
app.config_from_object("celeryconfig")
# `celery -A orchestration flower` reads its configuration, and so its refusal to run without
# authentication, from this file whatever its working directory (an explicit --conf or
# FLOWER_CONF still wins).
os.environ.setdefault("FLOWER_CONF", str(Path(__file__).with_name("flowerconfig.py")))


class AgentConsumerStep(bootsteps.StartStopStep):
    """Runs the stream consumer (orchestration.consumer) inside every worker process."""

    requires = {"celery.worker.components:Pool"}

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.consumer: Any = None
        if get_settings().agent_concurrency > 0:
            _refuse_unusable_agents()

    def start(self, parent: Any) -> None:
        if get_settings().agent_concurrency <= 0:
            return
        from orchestration.consumer import AgentConsumer
        from orchestration.monitoring import CeleryEvents

        # Flower's task events, as Celery sends them for its own tasks: when the worker does.
        monitor = CeleryEvents(parent.app, parent.hostname) if parent.task_events else None
        self.consumer = AgentConsumer(monitor=monitor)
        self.consumer.start()

    def stop(self, parent: Any) -> None:
        if self.consumer is not None:
            self.consumer.stop()
            self.consumer = None


def _refuse_unusable_agents() -> None:
    """A worker whose executor or reviewer cannot be built would start cleanly and then fail
    every task it takes: refuse to start instead (before the pool and the broker), with
    Celery's one-line `Error: ...` and exit status 1. The agents built here are the ones the
    consumer uses (orchestration.agents caches them)."""
    from orchestration.agents import AgentConfigError, check_agents

    try:
        # A dotted-path executor is imported as Celery imports the app: from the working
        # directory, which Celery puts on sys.path only while it imports.
        with cwd_in_path():
            check_agents("executor", "reviewer")
    except AgentConfigError as exc:
        raise click.ClickException(f"the worker refuses to start: {exc}") from None


def check_flower_auth(basic_auth: list[str], oauth: str | None = None) -> None:
    """Flower (flowerconfig.py) serves the whole cluster, tasks' arguments included, on every
    interface: like the API, it refuses to start without authentication unless ORCH_AUTH=off.
    `basic_auth` is Flower's option (from FLOWER_BASIC_AUTH or --basic_auth), a list of
    user:password; `oauth`, its --auth option, counts as authentication too."""
    for number, entry in enumerate(basic_auth, 1):
        user, sep, password = entry.partition(":")
        if not (sep and user.strip() and password):
            # The entry itself is not shown: it may be a password.
            raise click.ClickException(
                f"FLOWER_BASIC_AUTH entry {number} of {len(basic_auth)} is not user:password "
                "(several are comma-separated, e.g. admin:s3cret,ops:an0ther)"
            )
    if basic_auth or oauth or not get_settings().auth_enabled:
        return
    raise click.ClickException(
        "FLOWER_BASIC_AUTH is not set: Flower refuses to start without authentication. "
        "Set FLOWER_BASIC_AUTH=user:password (e.g. admin:$(python -c 'import secrets; "
        "print(secrets.token_urlsafe(16))')), or ORCH_AUTH=off for a local, private run."
    )


app.steps["worker"].add(AgentConsumerStep)
setup_logging.connect(celery_setup_logging, weak=False)


@worker_process_init.connect
def _fresh_connections(**_: Any) -> None:
    """A forked pool process must not share the parent's database or Redis sockets."""
    from db.engine import reset_engine
    from orchestration.redis_client import reset_redis

    reset_engine(close=False)
    reset_redis()
