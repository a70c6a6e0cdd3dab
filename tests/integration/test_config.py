"""Settings from the environment: a bad value names its variable, and libpq-style database URLs
work as they are."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from db.engine import reset_engine
from orchestration.config import ConfigError, reload_settings
from webapp.testing import V1, ApiClient, environment, make_app

REPO_ROOT = Path(__file__).resolve().parents[2]

BAD_VALUES = [
    ("ORCH_PASS_INTERVAL", "abc"),
    ("ORCH_PASS_INTERVAL", "0"),
    ("LLM_TIMEOUT", "soon"),
    ("ORCH_SIM_DURATION", "-1"),
    ("ORCH_SIM_FAILURE_RATE", "1.5"),
    ("ORCH_SIM_SEED", "lucky"),
    ("ORCH_VISIBILITY_TIMEOUT", "nan"),
    ("ORCH_MAX_DELIVERIES", "2.5"),
    ("ORCH_MAX_ATTEMPTS", "0"),
    ("ORCH_RETRY_BACKOFF", "fast"),
    ("ORCH_AGENT_CONCURRENCY", "-3"),
    ("ORCH_READ_AHEAD", "lots"),
    ("ORCH_RECONCILE_INTERVAL", "inf"),
    ("ORCH_EVENTS_MAXLEN", "many"),
    ("ORCH_DASHBOARD_GRAPH_LIMIT", "x"),
    ("ORCH_AUTH", "of"),
    ("ORCH_TASK_EVENTS", "maybe"),
    ("ORCH_LOG_FORMAT", "xml"),
    ("ORCH_LOG_LEVEL", "loud"),
]


@pytest.mark.parametrize(("name", "value"), BAD_VALUES, ids=lambda v: str(v))
def test_a_bad_value_names_the_variable_its_value_and_what_is_expected(
    name: str, value: str
) -> None:
    with pytest.raises(ConfigError) as caught, environment(**{name: value}):
        pass
    message = str(caught.value)
    assert f"{name}={value!r}" in message and "expected" in message
    assert "\n" not in message
    reload_settings()  # the environment is restored: the settings load again


def test_the_api_refuses_to_start_naming_the_variable(database: str) -> None:
    env = {**os.environ, "ORCH_PASS_INTERVAL": "abc", "ORCH_AUTH": "off"}
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "webapp", "run", "--port", "0"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert "ORCH_PASS_INTERVAL='abc' is invalid: expected a number of seconds > 0" in last
    assert "could not convert" not in result.stderr


@pytest.mark.parametrize("scheme", ["postgres", "postgresql"])
def test_libpq_style_database_urls_work(database: str, scheme: str) -> None:
    plain = make_url(database).set(drivername=scheme).render_as_string(hide_password=False)
    assert plain.startswith(f"{scheme}://")
    try:
        with environment(DATABASE_URL=plain):
            reset_engine()
            api = ApiClient(make_app().test_client())
            team = api.create_team("libpq")
            assert api.get(f"{V1}/teams/{team['id']}").status_code == 200
            assert api.get("/ready").status_code == 200
    finally:
        reset_engine()
