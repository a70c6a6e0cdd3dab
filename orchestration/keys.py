"""Redis key names. Every per-team key carries the team id as a hash tag, so a Redis Cluster
keeps a team's keys on one shard."""

from __future__ import annotations

import uuid


def _tag(team_id: uuid.UUID | str) -> str:
    return "{" + str(team_id) + "}"


def task_stream(team_id: uuid.UUID | str) -> str:
    return f"team:{_tag(team_id)}:task_stream"


def consumer_group(team_id: uuid.UUID | str) -> str:
    return f"team:{_tag(team_id)}:workers"


def dead_letter(team_id: uuid.UUID | str) -> str:
    return f"team:{_tag(team_id)}:dead_letter"


def events(team_id: uuid.UUID | str) -> str:
    return f"team:{_tag(team_id)}:events"


def pass_requested(team_id: uuid.UUID | str) -> str:
    return f"team:{_tag(team_id)}:pass_requested"


def pass_again(team_id: uuid.UUID | str) -> str:
    return f"team:{_tag(team_id)}:pass_again"


def pass_running(team_id: uuid.UUID | str) -> str:
    return f"team:{_tag(team_id)}:pass_running"


def of_team(team_id: uuid.UUID | str) -> list[str]:
    """Every key of one team (its consumer group lives inside its task stream)."""
    return [
        task_stream(team_id),
        dead_letter(team_id),
        events(team_id),
        pass_requested(team_id),
        pass_again(team_id),
        pass_running(team_id),
    ]
