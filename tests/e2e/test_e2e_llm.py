"""A goal run end to end with the LLM planner, executor and reviewer, against a real local HTTP
server speaking the chat-completions wire format (the only thing that stands in for a model),
real `celery worker` processes and a private redis-server."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from decimal import Decimal

import pytest
from sqlalchemy import text

from db.engine import get_engine
from orchestration import lifecycle
from orchestration.config import reload_settings
from orchestration.decomposition import decompose_goal
from orchestration.teams import add_member, create_team
from tests.e2e.conftest import all_final, wait_until
from tests.fakes.chat_server import FakeChatServer, RecordedRequest, Reply, completion
from tests.support.invariants import check_invariants
from tests.support.processes import Procs

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]

PRICES = {"fake-model": {"prompt": 1.5, "completion": 4.0}}  # USD per million tokens

PLAN = {
    "key": "launch",
    "title": "Launch the product page",
    "subtasks": [
        {"key": "research", "title": "Research competitors", "required_skills": ["research"]},
        {
            "key": "write",
            "title": "Write the page copy",
            "required_skills": ["writing"],
            "acceptance_criteria": ["mentions the price"],
            "depends_on": ["research"],
        },
        {
            "key": "build",
            "title": "Build the page",
            "required_skills": ["coding"],
            "depends_on": ["write"],
        },
    ],
}


class ModelServer:
    """Answers as planner, reviewer or executor by the prompt, with varying usage; remembers
    every usage it reported."""

    def __init__(self, server: FakeChatServer) -> None:
        self.server = server
        self.lock = threading.Lock()
        self.reported: list[tuple[str, int, int]] = []  # (role, prompt, completion)
        self.reviews: dict[str, int] = {}

    def __call__(self, request: RecordedRequest) -> Reply:
        prompt = request.prompt
        with self.lock:
            n = len(self.reported) + 1
            if "TaskNode" in prompt:
                role, content = "planner", json.dumps(PLAN)
            elif "You review a worker's output" in prompt:
                role = "reviewer"
                seen = self.reviews.get("write", 0)
                self.reviews["write"] = seen + 1
                if seen == 0:
                    content = json.dumps({"accepted": False, "feedback": "state the price: 999"})
                else:
                    content = json.dumps({"accepted": True, "feedback": "the price is there"})
            else:
                role = "executor"
                content = "Done. The price is 999 EUR.\n\nAcceptance criteria: mentions the price."
            usage = (100 + 7 * n, 40 + 3 * n)
            self.reported.append((role, *usage))
        body = completion(content, prompt_tokens=usage[0], completion_tokens=usage[1])
        return Reply(200, json.dumps(body).encode(), {"Content-Type": "application/json"})

    def totals(self, role: str | None = None) -> tuple[int, Decimal]:
        rows = [r for r in self.reported if role is None or r[0] == role]
        tokens = sum(p + c for _, p, c in rows)
        cost = sum(
            (
                Decimal(p) * Decimal(str(PRICES["fake-model"]["prompt"]))
                + Decimal(c) * Decimal(str(PRICES["fake-model"]["completion"]))
                for _, p, c in rows
            ),
            Decimal(0),
        ) / Decimal(1_000_000)
        return tokens, cost


@pytest.fixture
def model(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModelServer]:
    server = FakeChatServer().start()
    responder = ModelServer(server)
    server.respond(responder)
    env = {
        "ORCH_PLANNER": "llm",
        "ORCH_EXECUTOR": "llm",
        "ORCH_REVIEWER": "llm",
        "LLM_BASE_URL": server.url,
        "LLM_API_KEY": "sk-test-secret",
        "LLM_MODEL": "fake-model",
        "LLM_PRICES": json.dumps(PRICES),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    reload_settings()
    try:
        yield responder
    finally:
        server.stop()
        monkeypatch.undo()
        reload_settings()


def test_e2e_llm_agents_complete_a_goal_with_exact_token_and_cost_totals(
    model: ModelServer, workers: Procs
) -> None:
    workers.env_vars.update(_llm_env(model))
    workers.start_workers(2)
    team = create_team(f"llm-{uuid.uuid4().hex[:6]}")
    team_id = uuid.UUID(str(team.id))
    add_member(team_id, "manager", agent_id="manager")
    add_member(team_id, "worker", agent_id="coder", specialization="Technical Executor")
    add_member(team_id, "worker", agent_id="writer", specialization="Content Creator")
    add_member(team_id, "worker", agent_id="analyst", specialization="Researcher/Analyzer")
    lifecycle.start_team(team_id)

    tasks = decompose_goal(team_id, "Launch the product page", max_depth=2)
    assert [t.title for t in tasks] == [
        "Launch the product page",
        "Research competitors",
        "Write the page copy",
        "Build the page",
    ]
    wait_until("the goal to finish", all_final(team_id), team_id, workers, timeout=60)

    assert check_invariants(team_id) == {"completed": 4}
    with get_engine().connect() as conn:
        members = {
            r.agent_id: r
            for r in conn.execute(
                text(
                    "SELECT agent_id, total_tokens_used, total_cost, tasks_completed "
                    "FROM team_members WHERE team_id = :t"
                ),
                {"t": team_id},
            )
        }
        by_title = {
            r.title: r
            for r in conn.execute(
                text(
                    "SELECT title, actual_tokens, cost, revision_count, assigned_to "
                    "FROM tasks WHERE team_id = :t"
                ),
                {"t": team_id},
            )
        }
    # Every token and cent the server reported is counted once, on the agent that spent it.
    all_tokens, all_cost = model.totals()
    assert sum(m.total_tokens_used for m in members.values()) == all_tokens
    assert sum(Decimal(m.total_cost) for m in members.values()) == all_cost
    manager_tokens, manager_cost = model.totals("planner")
    review_tokens, review_cost = model.totals("reviewer")
    assert members["manager"].total_tokens_used == manager_tokens + review_tokens
    assert Decimal(members["manager"].total_cost) == manager_cost + review_cost
    executor_tokens, _ = model.totals("executor")
    assert sum(t.actual_tokens or 0 for t in by_title.values()) == executor_tokens
    assert len([r for r in model.reported if r[0] == "executor"]) == 4  # 3 and a revision
    assert by_title["Write the page copy"].revision_count == 1
    assert {m: members[m].tasks_completed for m in ("coder", "writer", "analyst")} == {
        "coder": 1,
        "writer": 1,
        "analyst": 1,
    }
    # The revision's prompt carried the reviewer's feedback and the research output.
    executor_prompts = [
        r.prompt for r in model.server.requests if "Write the page copy" in r.prompt
    ]
    assert any("state the price: 999" in p for p in executor_prompts)
    assert any("Research competitors" in p for p in executor_prompts)
    assert all(
        r.headers.get("authorization") == "Bearer sk-test-secret" for r in model.server.requests
    )
    assert "sk-test-secret" not in workers.all_logs()


def _llm_env(model: ModelServer) -> dict[str, str]:
    return {
        "ORCH_PLANNER": "llm",
        "ORCH_EXECUTOR": "llm",
        "ORCH_REVIEWER": "llm",
        "LLM_BASE_URL": model.server.url,
        "LLM_API_KEY": "sk-test-secret",
        "LLM_MODEL": "fake-model",
        "LLM_PRICES": json.dumps(PRICES),
    }
