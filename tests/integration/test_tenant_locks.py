"""A request of one team naming another team's task never reads or locks that task: it answers
at once, as for an id that does not exist. Before, it locked the row first and checked the team
after, so it waited behind the other team's transactions (and its timing told which ids
existed), and one batch could lock 10,000 of another team's rows."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable

import pytest
from sqlalchemy import text

from db.engine import session_scope
from orchestration.decomposition import create_task
from orchestration.dependencies import add_dependencies, add_dependency, remove_dependency
from orchestration.errors import InvalidInput, NotFound
from tests.factories import TeamFactory


def new_team() -> uuid.UUID:
    return uuid.UUID(str(TeamFactory(active=True).id))


def new_task(team_id: uuid.UUID, title: str) -> uuid.UUID:
    return create_task(team_id, {"title": title}).id


REQUESTS: dict[str, Callable[[uuid.UUID, uuid.UUID, uuid.UUID], object]] = {
    "parent": lambda team, own, foreign: create_task(
        team, {"title": "x", "parent_task_id": foreign}
    ),
    "depends_on": lambda team, own, foreign: create_task(
        team, {"title": "x", "depends_on": [foreign]}
    ),
    "edge": lambda team, own, foreign: add_dependency(team, own, foreign),
    "edge_batch": lambda team, own, foreign: add_dependencies(team, [(own, foreign)]),
    "edge_of_foreign_task": lambda team, own, foreign: add_dependency(team, foreign, own),
    "remove": lambda team, own, foreign: remove_dependency(team, foreign, own),
}


@pytest.mark.parametrize("request_name", sorted(REQUESTS))
def test_another_teams_task_is_not_found_without_waiting_for_its_lock(request_name: str) -> None:
    mine, theirs = new_team(), new_team()
    own = new_task(mine, "mine")
    foreign = new_task(theirs, "theirs")
    outcome: dict[str, object] = {}

    def call() -> None:
        try:
            outcome["result"] = REQUESTS[request_name](mine, own, foreign)
        except Exception as exc:  # read below
            outcome["error"] = exc

    caller = threading.Thread(target=call)
    with session_scope() as theirs_busy:
        # The other team's transaction, holding its task's row for a while.
        theirs_busy.execute(text("SELECT 1 FROM tasks WHERE id = :id FOR UPDATE"), {"id": foreign})
        caller.start()
        caller.join(timeout=5)
        answered_while_locked = not caller.is_alive()
    caller.join(timeout=20)
    assert answered_while_locked, f"{request_name} waited for another team's row lock"
    assert isinstance(outcome.get("error"), NotFound | InvalidInput), outcome
