"""Agent executions as Celery task events, so Flower (and `celery events`) shows each run of a
task by an agent as an `orchestration.execute_task` with the team and task it belongs to, and
each planning of a decomposition as an `orchestration.plan_goal`."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

from orchestration import streams

log = logging.getLogger(__name__)

TASK_NAME = "orchestration.execute_task"
PLANNING_NAME = "orchestration.plan_goal"
FAILED_RESULTS = ("failed", "dead_letter")


def execution_id(entry: streams.Entry) -> str:
    """One id per delivery of an entry (a redelivery is a new execution)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{entry.team_id}/{entry.entry_id}/{time.time_ns()}"))


class CeleryEvents:
    """Sends task-received/started/succeeded/failed events through the worker's broker,
    buffered: one message carries every event of the last FLUSH_INTERVAL (Celery's receivers,
    Flower's among them, take a list of events as well as one)."""

    FLUSH_INTERVAL = 0.25
    BUFFER_LIMIT = 100

    def __init__(self, app: Any, hostname: str) -> None:
        self.app = app
        self.hostname = hostname
        self._lock = threading.Lock()
        self._dispatcher: Any = None
        self._stop = threading.Event()
        self._flusher = threading.Thread(target=self._flush_loop, name="task-events", daemon=True)
        self._flusher.start()

    def _send(self, kind: str, **fields: Any) -> None:
        try:
            with self._lock:
                if self._dispatcher is None:
                    self._dispatcher = self.app.events.Dispatcher(
                        connection=self.app.connection_for_write(),
                        hostname=self.hostname,
                        enabled=True,
                        buffer_group=["task"],
                        buffer_limit=self.BUFFER_LIMIT,
                    )
                self._dispatcher.send(kind, **fields)
        except Exception as exc:  # monitoring never stops the work
            log.warning("task event %s not sent: %s", kind, exc)
            with self._lock:
                self._dispatcher = None

    def flush(self) -> None:
        try:
            with self._lock:
                if self._dispatcher is not None:
                    self._dispatcher.flush()
        except Exception as exc:
            log.warning("task events not flushed: %s", exc)
            with self._lock:
                self._dispatcher = None

    def _flush_loop(self) -> None:
        while not self._stop.wait(self.FLUSH_INTERVAL):
            self.flush()

    def started(self, entry: streams.Entry) -> str:
        return self._began(
            execution_id(entry),
            TASK_NAME,
            [str(entry.team_id), str(entry.task_id)],
            {"worker_id": str(entry.worker_id), "entry_id": entry.entry_id},
        )

    def planning(self, team_id: uuid.UUID, decomposition_id: uuid.UUID, attempt: int) -> str:
        """A decomposition's planning attempt, shown as an `orchestration.plan_goal`."""
        return self._began(
            str(uuid.uuid4()),
            PLANNING_NAME,
            [str(team_id), str(decomposition_id)],
            {"attempt": attempt},
        )

    def _began(self, uid: str, name: str, args: list[str], kwargs: dict[str, Any]) -> str:
        self._send(
            "task-received",
            uuid=uid,
            name=name,
            args=repr(args),
            kwargs=repr(kwargs),
            retries=0,
            eta=None,
            root_id=uid,
            parent_id=None,
        )
        self._send("task-started", uuid=uid)
        return uid

    def finished(self, uid: str, result: str, runtime: float) -> None:
        if result in FAILED_RESULTS:
            self._send("task-failed", uuid=uid, exception=result, traceback="")
        else:
            self._send("task-succeeded", uuid=uid, result=repr(result), runtime=runtime)

    def crashed(self, uid: str, exc: BaseException) -> None:
        self._send("task-failed", uuid=uid, exception=repr(exc), traceback="")

    def close(self) -> None:
        self._stop.set()
        self.flush()
        with self._lock:
            if self._dispatcher is not None:
                self._dispatcher.close()
                self._dispatcher = None
