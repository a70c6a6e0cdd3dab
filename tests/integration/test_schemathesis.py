"""Property-based tests of the API against its own OpenAPI document (schemathesis): whatever
the generated request, valid or not, no 5xx, and every response conforms to its documented
schema.

One pytest test per operation (stable ids, so pytest-xdist can distribute them). Path ids that
are well-formed UUIDs are replaced by a real team's, task's and member's ids, so generated
bodies reach the services instead of stopping at a 404."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import checks as st_checks
from schemathesis.core.result import Ok
from schemathesis.generation.modes import GenerationMode

from webapp.testing import ADMIN_TOKEN, V1, ApiClient, make_app

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
CHECKS = [
    st_checks.not_a_server_error,
    st_checks.response_schema_conformance,
    st_checks.content_type_conformance,
    st_checks.status_code_conformance,
]
MODES = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]

# Loaded at collection: serving the document needs no database.
SCHEMA = schemathesis.openapi.from_wsgi(f"{V1}/openapi.json", make_app(), headers=AUTH)
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations() if isinstance(result, Ok)]


@pytest.fixture
def world(database: str) -> dict[str, str]:
    client = ApiClient(make_app().test_client())
    team = client.create_team("fuzzed")
    client.add_member(team["id"], "manager", agent_id="manager")
    member = client.add_member(team["id"], "worker", agent_id="worker")
    dep = client.create_task(team["id"], "dependency")
    task = client.create_task(team["id"], "task", depends_on=[dep["id"]])
    return {
        "team_id": team["id"],
        "task_id": task["id"],
        "depends_on_task_id": dep["id"],
        "member_id": member["id"],
    }


def _is_uuid(value: Any) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


def test_every_route_is_documented() -> None:
    assert all(isinstance(result, Ok) for result in SCHEMA.get_all_operations())
    labels = {f"{op.method.upper()} {op.path}" for op in OPERATIONS}
    assert len(labels) == len(OPERATIONS) >= 27


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda op: f"{op.method.upper()} {op.path}")
@settings(
    max_examples=25,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(data=st.data())
def test_api_conforms_to_its_schema(operation: Any, world: dict[str, str], data: Any) -> None:
    mode = data.draw(st.sampled_from(MODES), label="mode")
    case = data.draw(operation.as_strategy(generation_mode=mode), label="case")
    params = case.path_parameters or {}
    for name, value in list(params.items()):
        if name in world and _is_uuid(value):
            params[name] = world[name]
    if case.path.endswith("/events"):
        case.query = {**(case.query or {}), "timeout": 0}  # a finite stream
    case.call_and_validate(headers=AUTH, checks=CHECKS)
