"""Operations: liveness, readiness and Prometheus metrics. No token needed."""

from __future__ import annotations

import logging
from typing import Any

from flask import Response

from orchestration import teams
from webapp import metrics
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
    """200 when PostgreSQL and Redis answer; 503 naming the ones that do not."""
    checks = {"postgres": teams.check_database, "redis": teams.check_redis}
    failed: dict[str, list[str]] = {}
    for name, check in checks.items():
        try:
            check()
        except Exception as exc:
            log.warning("readiness: %s does not answer: %s", name, exc)
            failed[name] = [f"{name} does not answer ({type(exc).__name__})"]
    if failed:
        return error_response(503, "not ready: " + ", ".join(failed) + " unavailable", failed)
    return {"status": "ok", "checks": dict.fromkeys(checks, "ok")}


@blp.route("/metrics", methods=["GET"])
@public
@blp.doc(security=[])
@blp.response(200, {"type": "string"}, content_type="text/plain")
def prometheus_metrics() -> Response:
    """Prometheus text format: API requests and latency, tasks by status, stream backlogs."""
    return metrics.scrape()
