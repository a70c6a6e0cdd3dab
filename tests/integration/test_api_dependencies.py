"""Dependencies: add (201, or 200 when it exists), remove (204), cycles (409), the graph."""

from __future__ import annotations

from typing import Any

import pytest

import db.engine
from webapp.testing import V1, ApiClient, assert_error, unknown_id

EDGE_KEYS = {"id", "task_id", "depends_on_task_id", "dependency_type", "created_at"}


def deps(team_id: str, task_id: str) -> str:
    return f"{V1}/teams/{team_id}/tasks/{task_id}/dependencies"


def test_add_dependency(api: ApiClient, team: dict[str, Any]) -> None:
    a = api.create_task(team["id"], "a")
    b = api.create_task(team["id"], "b")
    response = api.post(deps(team["id"], b["id"]), {"depends_on_task_id": a["id"]})
    assert response.status_code == 201
    edge = response.get_json()
    assert set(edge) == EDGE_KEYS
    assert edge["task_id"] == b["id"]
    assert edge["depends_on_task_id"] == a["id"]
    assert edge["dependency_type"] == "blocks"
    again = api.post(deps(team["id"], b["id"]), {"depends_on_task_id": a["id"]})
    assert again.status_code == 200
    assert again.get_json() == edge
    task_b = api.get(f"{V1}/teams/{team['id']}/tasks/{b['id']}").get_json()
    assert task_b["status"] == "blocked"


def test_self_dependency(api: ApiClient, team: dict[str, Any]) -> None:
    a = api.create_task(team["id"], "a")
    body = assert_error(api.post(deps(team["id"], a["id"]), {"depends_on_task_id": a["id"]}), 409)
    assert body["message"]


def test_cycle_names_its_tasks(api: ApiClient, team: dict[str, Any]) -> None:
    a = api.create_task(team["id"], "a")
    b = api.create_task(team["id"], "b", depends_on=[a["id"]])
    c = api.create_task(team["id"], "c", depends_on=[b["id"]])
    body = assert_error(
        api.post(deps(team["id"], a["id"]), {"depends_on_task_id": c["id"]}), 409, errors=True
    )
    assert set(body["errors"]["cycle"]) == {a["id"], b["id"], c["id"]}


def test_hierarchy_cycle(api: ApiClient, team: dict[str, Any]) -> None:
    parent = api.create_task(team["id"], "parent")
    child = api.create_task(team["id"], "child", parent_task_id=parent["id"])
    body = assert_error(
        api.post(deps(team["id"], child["id"]), {"depends_on_task_id": parent["id"]}),
        409,
        errors=True,
    )
    assert "cycle" in body["errors"]


def test_dependency_on_another_teams_task(
    api: ApiClient, team: dict[str, Any], other_team: dict[str, Any]
) -> None:
    mine = api.create_task(team["id"], "mine")
    theirs = api.create_task(other_team["id"], "theirs")
    body = assert_error(
        api.post(deps(team["id"], mine["id"]), {"depends_on_task_id": theirs["id"]}),
        422,
        errors=True,
    )
    assert "depends_on_task_id" in body["errors"]
    # The other team's task through this team's path is unknown.
    assert_error(api.post(deps(team["id"], theirs["id"]), {"depends_on_task_id": mine["id"]}), 404)


def test_add_dependency_unknown_task(api: ApiClient, team: dict[str, Any]) -> None:
    a = api.create_task(team["id"], "a")
    assert_error(api.post(deps(team["id"], unknown_id()), {"depends_on_task_id": a["id"]}), 404)
    assert_error(
        api.post(deps(team["id"], a["id"]), {"depends_on_task_id": unknown_id()}), 422, errors=True
    )


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"depends_on_task_id": "x"},
        {"depends_on_task_id": None},
        {"depends_on_task_id": 7},
        {"depends_on_task_id": ["a"]},
        {"depends_on_task_id": "00000000-0000-0000-0000-000000000000", "type": "blocks"},
    ],
)
def test_add_dependency_validation(
    api: ApiClient, team: dict[str, Any], body: dict[str, Any]
) -> None:
    a = api.create_task(team["id"], "a")
    assert_error(api.post(deps(team["id"], a["id"]), body), 422, errors=True)


def test_remove_dependency(api: ApiClient, team: dict[str, Any]) -> None:
    a = api.create_task(team["id"], "a")
    b = api.create_task(team["id"], "b", depends_on=[a["id"]])
    url = f"{deps(team['id'], b['id'])}/{a['id']}"
    response = api.delete(url)
    assert response.status_code == 204
    assert response.get_data() == b""
    assert api.get(f"{V1}/teams/{team['id']}/tasks/{b['id']}").get_json()["status"] == "pending"
    assert_error(api.delete(url), 404)
    assert_error(api.delete(f"{deps(team['id'], unknown_id())}/{a['id']}"), 404)


def test_dependency_graph(api: ApiClient, team: dict[str, Any], other_team: dict[str, Any]) -> None:
    a = api.create_task(team["id"], "a")
    b = api.create_task(team["id"], "b", depends_on=[a["id"]])
    c = api.create_task(team["id"], "c", parent_task_id=a["id"])
    api.create_task(other_team["id"], "elsewhere")
    response = api.get(f"{V1}/teams/{team['id']}/dependency-graph")
    assert response.status_code == 200
    graph = response.get_json()
    assert set(graph) == {"nodes", "edges"}
    nodes = {n["id"]: n for n in graph["nodes"]}
    assert set(nodes) == {a["id"], b["id"], c["id"]}
    assert all(set(n) == {"id", "title", "status", "parent_task_id"} for n in graph["nodes"])
    assert nodes[c["id"]]["parent_task_id"] == a["id"]
    assert nodes[b["id"]]["status"] == "blocked"
    assert graph["edges"] == [{"task_id": b["id"], "depends_on_task_id": a["id"]}]


def test_dependency_graph_written_a_chunk_at_a_time(
    api: ApiClient, team: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db.engine, "CHUNK_ROWS", 2)
    assert api.get(f"{V1}/teams/{team['id']}/dependency-graph").get_json() == {
        "nodes": [],
        "edges": [],
    }
    first = api.create_task(team["id"], "first")
    created = [first["id"]]
    edges = []
    for i in range(6):
        task = api.create_task(team["id"], f"t{i}", depends_on=created[-2:])
        edges += [{"task_id": task["id"], "depends_on_task_id": d} for d in created[-2:]]
        created.append(task["id"])
    graph = api.get(f"{V1}/teams/{team['id']}/dependency-graph").get_json()
    assert [n["id"] for n in graph["nodes"]] == created
    assert sorted(graph["edges"], key=str) == sorted(edges, key=str)
    assert len(graph["edges"]) == 11


def test_dependency_graph_unknown_team(api: ApiClient) -> None:
    assert_error(api.get(f"{V1}/teams/{unknown_id()}/dependency-graph"), 404)


def test_add_dependencies_in_a_batch(api: ApiClient, team: dict[str, Any]) -> None:
    a = api.create_task(team["id"], "a")
    b = api.create_task(team["id"], "b")
    c = api.create_task(team["id"], "c")
    edges = [
        {"task_id": b["id"], "depends_on_task_id": a["id"]},
        {"task_id": c["id"], "depends_on_task_id": b["id"]},
    ]
    response = api.post(f"{V1}/teams/{team['id']}/dependencies", {"edges": edges})
    assert response.status_code == 201
    assert response.get_json() == {"created": 2, "existing": 0}
    cycle = [{"task_id": a["id"], "depends_on_task_id": c["id"]}]
    response = api.post(f"{V1}/teams/{team['id']}/dependencies", {"edges": cycle})
    body = assert_error(response, 409)
    assert body["errors"]["cycle"][0] == a["id"]
    bad_bodies: list[dict[str, Any]] = [
        {"edges": []},
        {"edges": [{"task_id": a["id"]}]},
        {"edges": "x"},
        {},
    ]
    for bad in bad_bodies:
        assert_error(api.post(f"{V1}/teams/{team['id']}/dependencies", bad), 422)
