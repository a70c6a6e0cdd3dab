"""Teams: create, list, read, start/pause/resume, team tokens."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import ApiToken
from webapp.testing import V1, ApiClient, assert_error, unknown_id

TEAM_KEYS = {
    "id",
    "name",
    "description",
    "status",
    "status_reason",
    "token_budget",
    "created_at",
    "updated_at",
    "started_at",
    "paused_at",
    "task_counts",
}
STATUSES = {
    "pending",
    "blocked",
    "assigned",
    "in_progress",
    "review",
    "completed",
    "failed",
    "cancelled",
}


def test_create_team(api: ApiClient) -> None:
    response = api.post(f"{V1}/teams", {"name": "research", "description": "finds things"})
    assert response.status_code == 201
    body = response.get_json()
    assert set(body) == TEAM_KEYS
    assert body["name"] == "research"
    assert body["description"] == "finds things"
    assert body["status"] == "inactive"
    assert body["task_counts"] == dict.fromkeys(STATUSES, 0)
    assert body["started_at"] is None


def test_create_team_without_description(api: ApiClient) -> None:
    response = api.post(f"{V1}/teams", {"name": "x"})
    assert response.status_code == 201
    assert response.get_json()["description"] is None


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"name": ""},
        {"name": "x" * 201},
        {"name": 5},
        {"name": None},
        {"name": "ok", "description": "d" * 20_001},
        {"name": "ok", "extra": 1},
        {"name": "nul\x00"},
    ],
    ids=["missing", "empty", "too-long", "number", "null", "long-description", "unknown", "nul"],
)
def test_create_team_validation(api: ApiClient, body: dict[str, Any]) -> None:
    assert_error(api.post(f"{V1}/teams", body), 422, errors=True)


def test_create_team_names_the_field(api: ApiClient) -> None:
    body = assert_error(api.post(f"{V1}/teams", {"name": "", "colour": "red"}), 422, errors=True)
    assert set(body["errors"]) == {"name", "colour"}


def test_list_and_get_teams(
    api: ApiClient, team: dict[str, Any], other_team: dict[str, Any]
) -> None:
    response = api.get(f"{V1}/teams")
    assert response.status_code == 200
    assert [t["id"] for t in response.get_json()] == [team["id"], other_team["id"]]
    got = api.get(f"{V1}/teams/{team['id']}")
    assert got.status_code == 200
    assert got.get_json()["id"] == team["id"]
    assert set(got.get_json()) == TEAM_KEYS


def test_task_counts(api: ApiClient, team: dict[str, Any]) -> None:
    api.create_task(team["id"], "a")
    first = api.create_task(team["id"], "b")
    api.create_task(team["id"], "c", depends_on=[first["id"]])
    counts = api.get(f"{V1}/teams/{team['id']}").get_json()["task_counts"]
    assert counts == {**dict.fromkeys(STATUSES, 0), "pending": 2, "blocked": 1}


def test_unknown_team(api: ApiClient) -> None:
    assert_error(api.get(f"{V1}/teams/{unknown_id()}"), 404)


def test_start_pause_resume(api: ApiClient, team: dict[str, Any]) -> None:
    base = f"{V1}/teams/{team['id']}"
    started = api.post(f"{base}/start")
    assert started.status_code == 200
    assert started.get_json()["status"] == "active"
    assert started.get_json()["started_at"] is not None
    assert set(started.get_json()) == TEAM_KEYS
    paused = api.post(f"{base}/pause")
    assert paused.status_code == 200
    assert paused.get_json()["status"] == "paused"
    resumed = api.post(f"{base}/resume")
    assert resumed.status_code == 200
    assert resumed.get_json()["status"] == "active"


@pytest.mark.parametrize(
    ("before", "action", "message"),
    [
        ([], "pause", "cannot pause a team that is inactive: start it first"),
        ([], "resume", "cannot resume a team that is inactive: start it first"),
        (["start"], "start", "cannot start a team that is active: it is running already"),
        (["start"], "resume", "cannot resume a team that is active: it is running already"),
        (["start", "pause"], "pause", "cannot pause a team that is paused: resume it to go on"),
        (["start", "pause"], "start", "cannot start a team that is paused: resume it to go on"),
    ],
)
def test_impossible_transitions_say_what_to_do_instead(
    api: ApiClient, team: dict[str, Any], before: list[str], action: str, message: str
) -> None:
    base = f"{V1}/teams/{team['id']}"
    for step in before:
        assert api.post(f"{base}/{step}").status_code == 200
    assert assert_error(api.post(f"{base}/{action}"), 409)["message"] == message


@pytest.mark.parametrize("action", ["start", "pause", "resume", "tokens"])
def test_actions_on_unknown_team(api: ApiClient, action: str) -> None:
    assert_error(api.post(f"{V1}/teams/{unknown_id()}/{action}"), 404)


def test_create_token(api: ApiClient, team: dict[str, Any], session: Session) -> None:
    response = api.post(f"{V1}/teams/{team['id']}/tokens")
    assert response.status_code == 201
    body = response.get_json()
    assert set(body) == {"token", "id", "prefix"}
    token = body["token"]
    assert len(token) >= 40
    rows = session.scalars(select(ApiToken)).all()
    assert len(rows) == 1
    assert rows[0].token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert token not in (rows[0].token_hash, rows[0].prefix)
    assert token.startswith(rows[0].prefix)
    assert (body["id"], body["prefix"]) == (str(rows[0].id), rows[0].prefix)
    assert rows[0].team_id.hex == team["id"].replace("-", "")
    # Each call makes another token; both work.
    second = api.create_token(team["id"])
    assert second != token
    for t in (token, second):
        assert api.as_token(t).get(f"{V1}/teams/{team['id']}").status_code == 200


def test_team_token_sees_only_its_team(
    api: ApiClient, team: dict[str, Any], other_team: dict[str, Any]
) -> None:
    scoped = api.as_token(api.create_token(team["id"]))
    listed = scoped.get(f"{V1}/teams")
    assert listed.status_code == 200
    assert [t["id"] for t in listed.get_json()] == [team["id"]]
    assert scoped.get(f"{V1}/teams/{team['id']}").status_code == 200
    assert_error(scoped.get(f"{V1}/teams/{other_team['id']}"), 404)
    assert scoped.post(f"{V1}/teams/{team['id']}/start").status_code == 200


def test_team_token_cannot_create_teams_or_tokens(api: ApiClient, team: dict[str, Any]) -> None:
    scoped = api.as_token(api.create_token(team["id"]))
    assert_error(scoped.post(f"{V1}/teams", {"name": "mine"}), 403)
    assert_error(scoped.post(f"{V1}/teams/{team['id']}/tokens"), 403)
    assert [t["name"] for t in api.get(f"{V1}/teams").get_json()] == ["alpha"]


def test_tokens_are_listed_without_their_secret_and_revoked(
    api: ApiClient, team: dict[str, Any], other_team: dict[str, Any]
) -> None:
    first = api.post(f"{V1}/teams/{team['id']}/tokens").get_json()
    second = api.post(f"{V1}/teams/{team['id']}/tokens").get_json()
    api.as_token(first["token"]).get(f"{V1}/teams")  # records its use
    listed = api.get(f"{V1}/teams/{team['id']}/tokens")
    assert listed.status_code == 200
    rows = listed.get_json()
    assert [(r["id"], r["prefix"]) for r in rows] == [
        (first["id"], first["prefix"]),
        (second["id"], second["prefix"]),
    ]
    assert set(rows[0]) == {"id", "prefix", "created_at", "last_used_at"}
    assert rows[0]["last_used_at"] is not None and rows[1]["last_used_at"] is None
    assert first["token"] not in listed.get_data(as_text=True)
    # A team token can neither list nor revoke, even its own.
    scoped = api.as_token(first["token"])
    assert_error(scoped.get(f"{V1}/teams/{team['id']}/tokens"), 403)
    assert_error(scoped.delete(f"{V1}/teams/{team['id']}/tokens/{second['id']}"), 403)
    # Revoked: refused from the next request on; the other token still works.
    assert api.delete(f"{V1}/teams/{team['id']}/tokens/{first['id']}").status_code == 204
    assert_error(api.as_token(first["token"]).get(f"{V1}/teams"), 401)
    assert api.as_token(second["token"]).get(f"{V1}/teams").status_code == 200
    assert [r["id"] for r in api.get(f"{V1}/teams/{team['id']}/tokens").get_json()] == [
        second["id"]
    ]
    # Gone already, another team's, or an unknown team: 404.
    assert_error(api.delete(f"{V1}/teams/{team['id']}/tokens/{first['id']}"), 404)
    assert_error(api.delete(f"{V1}/teams/{other_team['id']}/tokens/{second['id']}"), 404)
    assert_error(api.get(f"{V1}/teams/{unknown_id()}/tokens"), 404)


def test_team_token_of_a_deleted_team_is_refused(
    api: ApiClient, team: dict[str, Any], session: Session
) -> None:
    from sqlalchemy import delete

    from db.models import Team

    token = api.create_token(team["id"])
    session.execute(delete(Team).where(Team.id == team["id"]))
    session.commit()
    assert_error(api.as_token(token).get(f"{V1}/teams"), 401)


def test_create_team_with_a_token_budget_and_change_it(api: ApiClient) -> None:
    created = api.post(f"{V1}/teams", {"name": "budgeted", "token_budget": 5000}).get_json()
    assert created["token_budget"] == 5000
    response = api.patch(f"{V1}/teams/{created['id']}", {"token_budget": None, "name": "free"})
    assert response.status_code == 200
    body = response.get_json()
    assert body["token_budget"] is None and body["name"] == "free"
    assert set(body) == TEAM_KEYS


@pytest.mark.parametrize(
    "body",
    [{"token_budget": -1}, {"token_budget": "many"}, {"token_budget": 1.5}, {"name": ""}, {"x": 1}],
)
def test_update_team_validation(api: ApiClient, team: dict[str, Any], body: Any) -> None:
    assert_error(api.patch(f"{V1}/teams/{team['id']}", body), 422)


def test_update_unknown_team(api: ApiClient) -> None:
    assert_error(api.patch(f"{V1}/teams/{unknown_id()}", {"name": "x"}), 404)
