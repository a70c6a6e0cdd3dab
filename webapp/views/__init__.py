"""One blueprint per resource. Views validate (schemas), call a service, serialize."""

from __future__ import annotations

from flask_smorest import Blueprint

from webapp.views import (
    assignments,
    decompositions,
    dependencies,
    events,
    members,
    ops,
    tasks,
    teams,
)

BLUEPRINTS: tuple[Blueprint, ...] = (
    teams.blp,
    members.blp,
    tasks.blp,
    decompositions.blp,
    dependencies.blp,
    assignments.blp,
    events.blp,
    ops.blp,
)
