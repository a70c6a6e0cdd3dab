"""The assignment log: newest first, with score, breakdown and explanation."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.orm import Session

from db.models import Message
from webapp.testing import V1, ApiClient, assert_error, unknown_id

ASSIGNMENT_KEYS = {"task_id", "worker_id", "score", "breakdown", "explanation", "created_at"}


def log_assignment(
    session: Session, team_id: str, task_id: str, worker: dict[str, Any], at: datetime, score: float
) -> None:
    session.add(
        Message(
            team_id=uuid.UUID(team_id),
            task_id=uuid.UUID(task_id),
            worker_id=uuid.UUID(worker["id"]),
            from_agent_id="manager",
            to_agent_id=worker["agent_id"],
            message_type="task_assignment",
            content=f"Assigned to {worker['agent_id']} (Generalist)",
            meta={
                "score": score,
                "breakdown": {"skill": 0.5, "workload": 1.0, "success_rate": 0.5},
            },
            created_at=at,
        )
    )
    session.commit()


def test_assignments_newest_first(
    api: ApiClient, team: dict[str, Any], other_team: dict[str, Any], session: Session
) -> None:
    worker = api.add_member(team["id"], agent_id="w1")
    first = api.create_task(team["id"], "first")
    second = api.create_task(team["id"], "second")
    now = datetime.now(UTC)
    log_assignment(session, team["id"], first["id"], worker, now - timedelta(seconds=5), 0.7)
    log_assignment(session, team["id"], second["id"], worker, now, 0.65)
    session.add(
        Message(team_id=uuid.UUID(team["id"]), message_type="note", content="not an assignment")
    )
    session.commit()
    response = api.get(f"{V1}/teams/{team['id']}/assignments")
    assert response.status_code == 200
    rows = response.get_json()
    assert [r["task_id"] for r in rows] == [second["id"], first["id"]]
    assert all(set(r) == ASSIGNMENT_KEYS for r in rows)
    assert rows[0]["worker_id"] == worker["id"]
    assert rows[0]["score"] == 0.65
    assert rows[0]["breakdown"] == {"skill": 0.5, "workload": 1.0, "success_rate": 0.5}
    assert rows[0]["explanation"] == "Assigned to w1 (Generalist)"
    assert api.get(f"{V1}/teams/{other_team['id']}/assignments").get_json() == []
    page = api.get(f"{V1}/teams/{team['id']}/assignments", query_string={"limit": 1, "offset": 1})
    assert [r["task_id"] for r in page.get_json()] == [first["id"]]


@pytest.mark.parametrize(
    "query", [{"limit": 0}, {"limit": 1001}, {"limit": "x"}, {"offset": -1}, {"offset": "1.5"}]
)
def test_assignments_paging_validation(
    api: ApiClient, team: dict[str, Any], query: dict[str, Any]
) -> None:
    response = api.get(f"{V1}/teams/{team['id']}/assignments", query_string=query)
    assert_error(response, 422, errors=True)


def test_assignments_unknown_team(api: ApiClient) -> None:
    assert_error(api.get(f"{V1}/teams/{unknown_id()}/assignments"), 404)
