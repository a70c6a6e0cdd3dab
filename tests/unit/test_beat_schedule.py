"""celeryconfig's beat schedule: the pass every ORCH_PASS_INTERVAL, reconciliation every
ORCH_RECONCILE_INTERVAL, each naming a task the Celery app has registered."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from orchestration.config import reload_settings

CELERYCONFIG = Path(__file__).resolve().parents[2] / "celeryconfig.py"


@pytest.fixture
def config(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """celeryconfig as read by a process started with these intervals (a fresh copy: the
    module the app already loaded is left as it is)."""
    monkeypatch.setenv("ORCH_PASS_INTERVAL", "0.7")
    monkeypatch.setenv("ORCH_RECONCILE_INTERVAL", "4")
    reload_settings()
    spec = importlib.util.spec_from_file_location("celeryconfig_under_test", CELERYCONFIG)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    monkeypatch.undo()
    reload_settings()


def scheduled(config: ModuleType, task: str) -> dict[str, Any]:
    """The one beat entry running `task`, whatever its key."""
    entries = [e for e in config.beat_schedule.values() if e["task"] == task]
    assert len(entries) == 1, f"beat runs {task} {len(entries)} times: {config.beat_schedule}"
    return entries[0]


def registered_tasks() -> set[str]:
    import orchestration.tasks  # noqa: F401 (registers the tasks, as the worker's imports do)
    from orchestration.celery import app

    return set(app.tasks)


def test_beat_runs_the_pass_of_every_active_team_every_pass_interval(config: ModuleType) -> None:
    entry = scheduled(config, "orchestration.orchestrate_active_teams")
    assert entry["schedule"] == timedelta(seconds=0.7)
    assert entry["task"] in registered_tasks()
    assert "orchestration.orchestrate_team" in registered_tasks()  # what it fans out


def test_beat_reconciles_the_streams_every_reconcile_interval(config: ModuleType) -> None:
    entry = scheduled(config, "orchestration.reconcile_streams")
    assert entry["schedule"] == timedelta(seconds=4)
    assert entry["task"] in registered_tasks()


def test_beat_prunes_the_history_every_hour(config: ModuleType) -> None:
    entry = scheduled(config, "orchestration.prune_history")
    assert entry["schedule"] == timedelta(hours=1)
    assert entry["task"] in registered_tasks()


def test_every_beat_entry_names_a_registered_task(config: ModuleType) -> None:
    assert {e["task"] for e in config.beat_schedule.values()} <= registered_tasks()
    assert config.imports == ("orchestration.tasks",)
