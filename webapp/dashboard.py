"""The operations dashboard: static HTML shells at /dashboard and /dashboard/teams/<id>.

The pages carry no data. They ask for a bearer token once (kept in the tab's sessionStorage,
never in a URL), then call the JSON API with it and follow the team's event stream with
fetch(), since EventSource cannot send an Authorization header. Everything is served from this
app (templates/ and static/): no CDN, no build step.

Register with `app.register_blueprint(dashboard.bp)`.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from flask import Blueprint, Response, current_app, render_template, send_from_directory

from webapp.auth import public

STATIC_DIR = Path(__file__).parent / "static"

# The pages load only what this app serves; the API is same-origin.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "form-action 'none'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    )
)

bp = Blueprint("dashboard", __name__, template_folder="templates", url_prefix="/dashboard")


def _page(template: str, **context: object) -> Response:
    response = Response(render_template(template, **context), mimetype="text/html")
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.route("", methods=["GET"])
@bp.route("/", methods=["GET"])
@public
def teams_page() -> Response:
    """Every team the token reaches, with status and task counts."""
    return _page("dashboard_teams.html")


@bp.route("/teams/<uuid:team_id>", methods=["GET"])
@public
def team_page(team_id: uuid.UUID) -> Response:
    """One team: task tree, dependency graph, workers, assignment log, live. A team of more
    than ORCH_DASHBOARD_GRAPH_LIMIT tasks is not drawn (the layered layout of many more takes a
    browser too long), and its tree lists that many, the first by priority."""
    limit = int(current_app.config["ORCH_DASHBOARD_GRAPH_LIMIT"])
    return _page("dashboard_team.html", team_id=str(team_id), graph_limit=limit)


@bp.route("/static/<path:filename>", methods=["GET"])
@public
def static(filename: str) -> Response:
    response = send_from_directory(STATIC_DIR, filename, max_age=0)
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
