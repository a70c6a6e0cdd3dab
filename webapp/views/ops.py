"""Operations: liveness, readiness and Prometheus metrics. No token needed."""

from __future__ import annotations

import logging
from typing import Any

from flask import Response

from db.engine import migration_needed
from orchestration import errors, teams
from webapp import auth, metrics, readiness
from webapp.auth import public
from webapp.errors import error_response
from webapp.parsing import Blueprint
from webapp.schemas import HealthSchema, ReadySchema

log = logging.getLogger(__name__)

blp = Blueprint(
    "ops", __name__, url_prefix="", description="Operations: health, readiness, metrics."
)


@blp.route("/health", methods=["GET"])
@public
@blp.doc(security=[])
@blp.response(200, HealthSchema)
def health() -> dict[str, str]:
    """The process answers."""
    return {"status": "ok"}


@blp.route("/ready", methods=["GET"])
@public
@blp.doc(security=[])
@blp.response(200, ReadySchema)
@blp.alt_response(503, response="SERVICE_UNAVAILABLE")
def ready() -> Any:
    """200 when PostgreSQL (migrated to the latest revision) and Redis answer; 503 naming
    the problem of each that does not."""
    checks = {"postgres": _check_postgres, "redis": teams.check_redis}
    failed: dict[str, list[str]] = {}
    for name, check in checks.items():
        try:
            check()
        except errors.Unavailable as exc:
            log.warning("readiness: %s: %s", name, exc.message)
            failed[name] = [f"{name}: {exc.message}"]
        except Exception as exc:
            log.warning("readiness: %s does not answer: %s", name, exc)
            fix = migration_needed(exc)
            failed[name] = [
                f"{name}: {fix}" if fix else f"{name} does not answer ({type(exc).__name__})"
            ]
    if failed:
        problems = "; ".join(problem for found in failed.values() for problem in found)
        return error_response(503, f"not ready: {problems}", failed)
    return {"status": "ok", "checks": dict.fromkeys(checks, "ok")}


def _check_postgres() -> None:
    teams.check_database()
    readiness.check_schema()


@blp.route("/metrics", methods=["GET"])
@public
@blp.doc(security=[])
@blp.response(200, {"type": "string"}, content_type="text/plain")
def prometheus_metrics() -> Response:
    """Prometheus text format: API requests and latency, tasks by status, stream backlogs.
    Open to anyone unless ORCH_METRICS_TOKEN is set: then that token (or the admin token)."""
    auth.check_scraper()
    return metrics.scrape()
