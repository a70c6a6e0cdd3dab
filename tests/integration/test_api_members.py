"""Members: add, list, update availability, capacity and skills."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session

from db.models import TeamMember
from webapp.testing import V1, ApiClient, assert_error, unknown_id

MEMBER_KEYS = {
    "id",
    "team_id",
    "agent_id",
    "role",
    "specialization",
    "skills",
    "status",
    "current_workload",
    "max_concurrent_tasks",
    "tasks_completed",
    "tasks_failed",
    "total_tokens_used",
    "total_cost",
    "joined_at",
    "last_active_at",
}


def members(team_id: str) -> str:
    return f"{V1}/teams/{team_id}/members"


def test_add_worker_with_defaults(api: ApiClient, team: dict[str, Any]) -> None:
    response = api.post(members(team["id"]), {"role": "worker"})
    assert response.status_code == 201
    body = response.get_json()
    assert set(body) == MEMBER_KEYS
    assert body["team_id"] == team["id"]
    assert body["role"] == "worker"
    assert re.fullmatch(r"worker-[0-9a-f]{8}", body["agent_id"])
    assert body["status"] == "idle"
    assert body["max_concurrent_tasks"] == 3
    assert body["current_workload"] == 0
    assert body["tasks_completed"] == body["tasks_failed"] == 0
    assert body["total_tokens_used"] == 0
    assert body["total_cost"] == 0
    assert body["specialization"] is None
    assert body["skills"] is None
    assert body["last_active_at"] is None


def test_add_member_with_everything(api: ApiClient, team: dict[str, Any]) -> None:
    body = api.add_member(
        team["id"],
        "manager",
        agent_id="boss",
        specialization="Researcher/Analyzer",
        skills={"research": 1, "planning": 0.75},
        max_concurrent_tasks=7,
    )
    assert body["role"] == "manager"
    assert body["agent_id"] == "boss"
    assert body["specialization"] == "Researcher/Analyzer"
    assert body["skills"] == {"research": 1.0, "planning": 0.75}
    assert body["max_concurrent_tasks"] == 7


def test_duplicate_agent_id_is_a_conflict(
    api: ApiClient, team: dict[str, Any], other_team: dict[str, Any]
) -> None:
    api.add_member(team["id"], agent_id="w1")
    assert_error(api.post(members(team["id"]), {"role": "worker", "agent_id": "w1"}), 409)
    # Another team may use the same agent id.
    api.add_member(other_team["id"], agent_id="w1")


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"role": "boss"},
        {"role": "WORKER"},
        {"role": 1},
        {"role": "worker", "max_concurrent_tasks": 0},
        {"role": "worker", "max_concurrent_tasks": 1001},
        {"role": "worker", "max_concurrent_tasks": -1},
        {"role": "worker", "max_concurrent_tasks": 10**30},
        {"role": "worker", "max_concurrent_tasks": "3"},
        {"role": "worker", "max_concurrent_tasks": 2.5},
        {"role": "worker", "max_concurrent_tasks": True},
        {"role": "worker", "skills": {"coding": 1.5}},
        {"role": "worker", "skills": {"coding": -0.1}},
        {"role": "worker", "skills": {"coding": "0.5"}},
        {"role": "worker", "skills": {"coding": True}},
        {"role": "worker", "skills": {"": 0.5}},
        {"role": "worker", "skills": ["coding"]},
        {"role": "worker", "skills": {f"s{i}": 0.5 for i in range(101)}},
        {"role": "worker", "agent_id": ""},
        {"role": "worker", "agent_id": "a" * 201},
        {"role": "worker", "agent_id": 12},
        {"role": "worker", "specialization": ""},
        {"role": "worker", "specialization": "s" * 201},
        {"role": "worker", "status": "idle"},
    ],
)
def test_add_member_validation(api: ApiClient, team: dict[str, Any], body: dict[str, Any]) -> None:
    assert_error(api.post(members(team["id"]), body), 422, errors=True)


def test_add_member_to_unknown_team(api: ApiClient) -> None:
    assert_error(api.post(members(unknown_id()), {"role": "worker"}), 404)


def test_list_members(api: ApiClient, team: dict[str, Any], other_team: dict[str, Any]) -> None:
    first = api.add_member(team["id"], "manager")
    second = api.add_member(team["id"])
    api.add_member(other_team["id"])
    response = api.get(members(team["id"]))
    assert response.status_code == 200
    assert [m["id"] for m in response.get_json()] == [first["id"], second["id"]]
    assert all(set(m) == MEMBER_KEYS for m in response.get_json())


def test_list_members_of_unknown_team(api: ApiClient) -> None:
    assert_error(api.get(members(unknown_id())), 404)


def test_offline_and_back(api: ApiClient, team: dict[str, Any]) -> None:
    member = api.add_member(team["id"])
    url = f"{members(team['id'])}/{member['id']}"
    offline = api.patch(url, {"status": "offline"})
    assert offline.status_code == 200
    assert offline.get_json()["status"] == "offline"
    assert set(offline.get_json()) == MEMBER_KEYS
    online = api.patch(url, {"status": "idle"})
    assert online.status_code == 200
    assert online.get_json()["status"] == "idle"


def test_back_online_with_work_in_flight_is_active(
    api: ApiClient, team: dict[str, Any], session: Session
) -> None:
    member = api.add_member(team["id"])
    url = f"{members(team['id'])}/{member['id']}"
    api.patch(url, {"status": "offline"})
    session.execute(
        update(TeamMember)
        .where(TeamMember.id == uuid.UUID(member["id"]))
        .values(current_workload=2)
    )
    session.commit()
    body = api.patch(url, {"status": "idle"}).get_json()
    assert body["status"] == "active"
    assert body["current_workload"] == 2


def test_update_capacity_and_skills(api: ApiClient, team: dict[str, Any]) -> None:
    member = api.add_member(team["id"], skills={"coding": 0.2})
    url = f"{members(team['id'])}/{member['id']}"
    response = api.patch(url, {"max_concurrent_tasks": 9, "skills": {"testing": 0.9}})
    assert response.status_code == 200
    body = response.get_json()
    assert body["max_concurrent_tasks"] == 9
    assert body["skills"] == {"testing": 0.9}
    assert body["status"] == "idle"
    # An empty body changes nothing.
    assert api.patch(url, {}).get_json()["max_concurrent_tasks"] == 9
    listed = api.get(members(team["id"])).get_json()
    assert listed[0]["max_concurrent_tasks"] == 9


@pytest.mark.parametrize(
    "body",
    [
        {"status": "active"},
        {"status": "busy"},
        {"status": None},
        {"max_concurrent_tasks": 0},
        {"max_concurrent_tasks": None},
        {"skills": {"x": 2}},
        {"skills": None},
        {"role": "manager"},
        {"agent_id": "renamed"},
    ],
)
def test_update_member_validation(
    api: ApiClient, team: dict[str, Any], body: dict[str, Any]
) -> None:
    member = api.add_member(team["id"])
    assert_error(api.patch(f"{members(team['id'])}/{member['id']}", body), 422, errors=True)


def test_update_unknown_member(api: ApiClient, team: dict[str, Any]) -> None:
    assert_error(api.patch(f"{members(team['id'])}/{unknown_id()}", {"status": "offline"}), 404)


def test_update_member_through_another_team(
    api: ApiClient, team: dict[str, Any], other_team: dict[str, Any]
) -> None:
    member = api.add_member(team["id"])
    url = f"{members(other_team['id'])}/{member['id']}"
    assert_error(api.patch(url, {"status": "offline"}), 404)
