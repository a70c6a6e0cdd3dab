"""ORCH_HISTORY_DAYS: the event history and the message log older than it go (beat runs
orchestration.prune_history hourly); newer rows stay, and 0 keeps everything."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import text

from db.engine import get_engine
from orchestration import orchestrator, retention
from orchestration.config import reload_settings
from orchestration.decomposition import create_task
from tests.factories import ManagerFactory, TeamFactory, WorkerFactory


@pytest.fixture
def worked_team() -> uuid.UUID:
    """A team with events and assignment messages, a third of each backdated 40 days."""
    team = TeamFactory(active=True)
    ManagerFactory(team=team)
    WorkerFactory(team=team, max_concurrent_tasks=30)
    team_id = uuid.UUID(str(team.id))
    for n in range(30):
        create_task(team_id, {"title": f"t{n}"})
    assert len(orchestrator.run_pass(team_id).assigned) == 30
    with get_engine().begin() as conn:
        for table in ("task_events", "messages"):
            conn.execute(
                text(
                    f"UPDATE {table} SET created_at = now() - interval '40 days' WHERE id IN "
                    f"(SELECT id FROM {table} WHERE team_id = :t ORDER BY created_at, id "
                    f"LIMIT (SELECT count(*) / 3 FROM {table} WHERE team_id = :t))"
                ),
                {"t": team_id},
            )
    return team_id


def counts(team_id: uuid.UUID) -> dict[str, tuple[int, int]]:
    """Per table: (rows older than 30 days, newer rows)."""
    with get_engine().connect() as conn:
        return {
            table: tuple(
                conn.execute(
                    text(
                        f"SELECT count(*) FILTER (WHERE created_at < now() - interval '30 days'), "
                        f"count(*) FILTER (WHERE created_at >= now() - interval '30 days') "
                        f"FROM {table} WHERE team_id = :t"
                    ),
                    {"t": team_id},
                ).one()
            )
            for table in ("task_events", "messages")
        }


@pytest.fixture
def retention_days(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("ORCH_HISTORY_DAYS", "30")
    reload_settings()
    yield
    monkeypatch.undo()
    reload_settings()


def test_history_older_than_the_retention_goes(
    worked_team: uuid.UUID, retention_days: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = counts(worked_team)
    assert all(old > 0 and new > 0 for old, new in before.values()), before
    monkeypatch.setattr(retention, "BATCH", 7)  # several batches
    pruned = retention.prune_history()
    after = counts(worked_team)
    assert after == {table: (0, new) for table, (_, new) in before.items()}
    assert (pruned.events, pruned.messages) == (
        before["task_events"][0],
        before["messages"][0],
    )


def test_no_retention_keeps_everything(worked_team: uuid.UUID) -> None:
    before = counts(worked_team)
    assert retention.prune_history() == retention.Pruned(0, 0, 0)
    assert counts(worked_team) == before


def test_decompositions_that_ended_before_the_retention_go(retention_days: None) -> None:
    team = TeamFactory()
    ManagerFactory(team=team)
    team_id = uuid.UUID(str(team.id))
    # (status, days since it finished or was created)
    rows = [
        ("succeeded", 40),
        ("failed", 40),
        ("cancelled", 40),
        ("succeeded", 5),
        ("queued", 40),  # open, however old: kept
        ("planning", 40),
    ]
    with get_engine().begin() as conn:
        for status, days in rows:
            conn.execute(
                text(
                    "INSERT INTO decompositions (team_id, goal, max_depth, status, created_at, "
                    "finished_at) VALUES (:t, 'goal', 3, CAST(:s AS decomposition_status), "
                    "now() - make_interval(days => :d), "
                    "CASE WHEN :final THEN now() - make_interval(days => :d) END)"
                ),
                {
                    "t": team_id,
                    "s": status,
                    "d": days,
                    "final": status not in ("queued", "planning"),
                },
            )
    assert retention.prune_history().decompositions == 3
    with get_engine().connect() as conn:
        kept = conn.execute(
            text("SELECT status::text FROM decompositions ORDER BY status")
        ).scalars()
        assert sorted(kept) == ["planning", "queued", "succeeded"]
