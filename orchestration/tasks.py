"""Celery tasks: a few lines each, calling a service."""

from __future__ import annotations

import uuid
from typing import Any

from orchestration import orchestrator, retention
from orchestration.celery import app


@app.task(name="orchestration.orchestrate_team", ignore_result=True)
def orchestrate_team(team_id: str) -> dict[str, Any]:
    """One pass for one team."""
    team = uuid.UUID(team_id)
    orchestrator.clear_request(team)
    result = orchestrator.run_pass(team)
    return {"team_id": team_id, "assigned": len(result.assigned), "skipped": result.skipped}


@app.task(name="orchestration.orchestrate_active_teams", ignore_result=True)
def orchestrate_active_teams() -> int:
    """Beat: fan out a pass to every active team."""
    teams = orchestrator.active_team_ids()
    for team_id in teams:
        orchestrate_team.apply_async(args=[str(team_id)], expires=30)
    return len(teams)


@app.task(name="orchestration.reconcile_streams", ignore_result=True)
def reconcile_streams() -> dict[str, int]:
    """Beat: re-emit lost assignments and trim acknowledged entries, team by team."""
    reemitted = trimmed = 0
    for team_id in orchestrator.working_team_ids():
        result = orchestrator.reconcile(team_id)
        reemitted += result.reemitted
        trimmed += result.trimmed
    return {"reemitted": reemitted, "trimmed": trimmed}


@app.task(name="orchestration.prune_history", ignore_result=True)
def prune_history() -> dict[str, int]:
    """Beat: drop the history older than ORCH_HISTORY_DAYS (nothing when it is 0)."""
    pruned = retention.prune_history()
    return {
        "events": pruned.events,
        "messages": pruned.messages,
        "decompositions": pruned.decompositions,
    }
