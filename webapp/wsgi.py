"""`gunicorn webapp.wsgi:app` (or `gunicorn 'webapp:create_app()'`)."""

from __future__ import annotations

from webapp import create_app

app = create_app()
