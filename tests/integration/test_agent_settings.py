"""A process refuses to start on an agent setting that cannot work: the worker on its executor
or reviewer, the API on its planner. A dotted-path executor that resolves still starts."""

from __future__ import annotations

import time

import pytest

from orchestration import lifecycle
from orchestration.decomposition import create_task, get_task
from orchestration.teams import add_member, create_team
from tests.support.processes import CELERY, Procs, refused_start
from webapp import ConfigurationError
from webapp.testing import environment, make_app


def worker(env: dict[str, str], procs: Procs) -> tuple[int, str]:
    """The exit status and stderr of a `celery worker` expected to refuse to start; one that
    starts is killed, its pool with it, after 30 s."""
    argv = [CELERY, "-A", "orchestration", "worker", "-c", "1", "--without-mingle"]
    return refused_start(argv, {**procs.env(), **env})


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"ORCH_EXECUTOR": "nosuch.module:fn"}, "ORCH_EXECUTOR='nosuch.module:fn'"),
        ({"ORCH_EXECUTOR": "tests.fakes.callables:nothing"}, "has no attribute 'nothing'"),
        ({"ORCH_EXECUTOR": "tests.fakes.nosuch:fn"}, "no module 'tests.fakes.nosuch'"),
        ({"ORCH_REVIEWER": "strict"}, "unknown ORCH_REVIEWER 'strict'"),
        ({"ORCH_EXECUTOR": "llm", "LLM_BASE_URL": ""}, "ORCH_EXECUTOR='llm'"),
    ],
    ids=["no-module", "no-attribute", "no-submodule", "reviewer", "llm-without-server"],
)
def test_the_worker_refuses_an_executor_it_cannot_resolve(
    database: str, procs: Procs, env: dict[str, str], named: str
) -> None:
    status, stderr = worker(env, procs)
    assert status == 1, stderr[-2000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("Error: the worker refuses to start: ") and named in last, last
    assert "Traceback" not in stderr


def test_a_worker_runs_a_dotted_path_executor_from_the_working_directory(
    database: str, procs: Procs
) -> None:
    """tests.fakes.callables is importable from the repository root, the worker's working
    directory, as a user's module next to their settings is."""
    procs.env_vars["ORCH_EXECUTOR"] = "tests.fakes.callables:echo"
    procs.start_workers(1)
    team = create_team("dotted")
    add_member(team.id, "worker", agent_id="echoer")
    lifecycle.start_team(team.id)
    task = create_task(team.id, {"title": "say it back"})
    deadline = time.monotonic() + 60
    while (done := get_task(team.id, task.id)).status not in ("completed", "failed"):
        assert time.monotonic() < deadline, procs.tails()
        time.sleep(0.2)
    assert done.status == "completed", (done.error_message, procs.tails())
    assert done.output_data == {"title": "say it back", "agent": "echoer", "attempt": 1}


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"ORCH_PLANNER": "bogus"}, "unknown ORCH_PLANNER 'bogus'"),
        ({"ORCH_PLANNER": "llm", "LLM_BASE_URL": None}, "ORCH_PLANNER='llm'"),
    ],
    ids=["unknown", "llm-without-server"],
)
def test_the_api_refuses_a_planner_it_cannot_build(
    database: str, env: dict[str, str | None], named: str
) -> None:
    with pytest.raises(ConfigurationError) as caught, environment(**env):
        make_app()
    assert named in str(caught.value)
    assert "LLM_BASE_URL" in str(caught.value) or env["ORCH_PLANNER"] == "bogus"
