# syntax=docker/dockerfile:1
# One image for every process of the stack (api, worker, beat, flower, migrate); see
# docker-compose.yml and README "Deploying and scaling".
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first (pinned by requirements.lock), so a code change does not reinstall them.
COPY pyproject.toml requirements.lock README.md ./
COPY celeryconfig.py ./
COPY db ./db
COPY orchestration ./orchestration
COPY webapp ./webapp
RUN pip install -c requirements.lock . \
    && useradd --create-home --home-dir /home/orch --uid 10001 --user-group orch \
    && mkdir -p /app/var \
    && chown orch:orch /app/var

USER orch

# The API; compose overrides the command for worker, beat, flower and migrate.
EXPOSE 8000
CMD ["gunicorn", "--bind", "0.0.0.0:8000", "--workers", "2", "--worker-class", "gthread", \
     "--threads", "8", "webapp:create_app()"]
