"""DELETE /teams/{id}: a team goes with everything it holds, in PostgreSQL and in Redis, and
only when nothing of it is in flight; other teams are untouched."""

from __future__ import annotations

import uuid
from typing import Any

import redis
from sqlalchemy import text

from db.engine import get_engine
from orchestration import keys, metrics, orchestrator
from webapp.testing import V1, ApiClient, assert_error

TABLES = ("team_members", "tasks", "task_events", "messages", "api_tokens")


def rows_of(team_id: str) -> dict[str, int]:
    with get_engine().connect() as conn:
        counts = {
            table: int(
                conn.execute(
                    text(f"SELECT count(*) FROM {table} WHERE team_id = :t"), {"t": team_id}
                ).scalar_one()
            )
            for table in TABLES
        }
        counts["task_dependencies"] = int(
            conn.execute(
                text(
                    "SELECT count(*) FROM task_dependencies d JOIN tasks t ON t.id = d.task_id "
                    "WHERE t.team_id = :t"
                ),
                {"t": team_id},
            ).scalar_one()
        )
    return counts


def busy_team(api: ApiClient, name: str) -> dict[str, Any]:
    """A team that has worked: members, tasks with an edge, an assignment logged, events,
    a token, streams and metrics in Redis; paused, with its task assigned."""
    team = api.create_team(name)
    tid = team["id"]
    api.post(f"{V1}/teams/{tid}/members", {"role": "manager"})
    api.post(f"{V1}/teams/{tid}/members", {"role": "worker"})
    first = api.post(f"{V1}/teams/{tid}/tasks", {"title": "first"}).get_json()
    api.post(f"{V1}/teams/{tid}/tasks", {"title": "second", "depends_on": [first["id"]]})
    api.create_token(tid)
    assert api.post(f"{V1}/teams/{tid}/start").status_code == 200
    assert orchestrator.run_pass(uuid.UUID(tid)).assigned
    metrics.flush()
    assert api.post(f"{V1}/teams/{tid}/pause").status_code == 200
    return {"id": tid, "first": first["id"]}


def cancel(api: ApiClient, team: dict[str, Any]) -> None:
    assert api.post(f"{V1}/teams/{team['id']}/tasks/{team['first']}/cancel").status_code == 200


def test_a_team_goes_with_all_it_holds_and_only_it(
    api: ApiClient, redis_client: redis.Redis
) -> None:
    doomed, kept = busy_team(api, "doomed"), busy_team(api, "kept")
    assert_error(api.delete(f"{V1}/teams/{doomed['id']}"), 409)  # its task is assigned
    cancel(api, doomed)
    before = rows_of(doomed["id"])
    assert all(before.values()), before
    kept_before = rows_of(kept["id"])

    assert api.delete(f"{V1}/teams/{doomed['id']}").status_code == 204

    assert rows_of(doomed["id"]) == dict.fromkeys(before, 0)
    assert_error(api.get(f"{V1}/teams/{doomed['id']}"), 404)
    assert not any(redis_client.exists(k) for k in keys.of_team(doomed["id"]))
    assert not [s for s in metrics.read() if s.labels.get("team_id") == doomed["id"]]
    assert rows_of(kept["id"]) == kept_before
    assert redis_client.exists(keys.task_stream(kept["id"]))
    assert [s for s in metrics.read() if s.labels.get("team_id") == kept["id"]]
    assert_error(api.delete(f"{V1}/teams/{doomed['id']}"), 404)


def test_an_active_team_is_not_deleted(api: ApiClient) -> None:
    team = api.create_team("live")
    api.post(f"{V1}/teams/{team['id']}/start")
    response = api.delete(f"{V1}/teams/{team['id']}")
    assert_error(response, 409)
    assert "pause it first" in response.get_json()["message"]
