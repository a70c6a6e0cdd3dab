"""The pipeline's counters and histograms, recorded by the consumer and the passes in Redis,
appear in the API's /metrics."""

# ruff: noqa: F811

from __future__ import annotations

import re

from prometheus_client.parser import text_string_to_metric_families

from orchestration import metrics
from orchestration.consumer import AgentConsumer
from tests.integration.test_pipeline import (  # noqa: F401 (fixtures)
    active_team,
    all_final,
    consumer,
    executor,
    fast_settings,
    new_task,
    run_until,
)
from webapp.testing import ApiClient


def test_pipeline_counters_and_histograms_are_exported(
    consumer: AgentConsumer, anonymous: ApiClient
) -> None:
    team_id = active_team(workers=2, capacity=2)
    first = new_task(team_id, "first")
    second = new_task(team_id, "second", depends_on=[first])
    new_task(team_id, "third", depends_on=[second])
    run_until(team_id, all_final(team_id))
    metrics.flush()
    body = anonymous.get("/metrics").get_data(as_text=True)
    families = {f.name: f for f in text_string_to_metric_families(body)}
    team = str(team_id)

    def total(name: str, **labels: str) -> float:
        return sum(
            s.value
            for s in families[name].samples
            if s.name == name + "_total" and all(s.labels.get(k) == v for k, v in labels.items())
        )

    assert total("orch_passes", team_id=team) >= 3
    assert total("orch_assignments", team_id=team) == 3
    assert total("orch_executions", team_id=team, result="completed") == 3
    assert total("orch_tokens", team_id=team) == 30  # the recording executor: 10 a task
    latency = [
        s for s in families["orch_unblock_latency_seconds"].samples if s.name.endswith("_count")
    ]
    assert sum(s.value for s in latency) == 2  # second and third waited
    executions = families["orch_execution_seconds"].samples
    assert any(s.name.endswith("_bucket") and s.labels["le"] == "+Inf" for s in executions)
    assert re.search(r"^orch_pass_duration_seconds_count [1-9]", body, re.MULTILINE)
