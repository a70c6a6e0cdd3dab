"""`celery -A orchestration flower` refuses to start without authentication (FLOWER_BASIC_AUTH)
unless ORCH_AUTH=off, and refuses a FLOWER_BASIC_AUTH that is not user:password."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests

from tests.support.processes import CELERY, REPO_ROOT, Procs, refused_start
from tests.support.services import free_port


def flower_argv(port: int, *extra: str) -> list[str]:
    return [
        CELERY,
        "-A",
        "orchestration",
        "flower",
        f"--port={port}",
        "--address=127.0.0.1",
        *extra,
    ]


def env_without_auth(procs: Procs, **values: str) -> dict[str, str]:
    env = {k: v for k, v in procs.env().items() if k not in ("FLOWER_BASIC_AUTH", "ORCH_AUTH")}
    env.update(values)
    return env


@pytest.mark.parametrize(
    ("values", "argv", "expected"),
    [
        ({}, [], "FLOWER_BASIC_AUTH is not set: Flower refuses to start without authentication"),
        ({"ORCH_AUTH": "on"}, [], "FLOWER_BASIC_AUTH is not set"),
        ({"FLOWER_BASIC_AUTH": "s3cret-alone"}, [], "entry 1 of 1 is not user:password"),
        ({"FLOWER_BASIC_AUTH": "admin:ok,:nouser"}, [], "entry 2 of 2 is not user:password"),
        ({}, ["--basic-auth=admin"], "entry 1 of 1 is not user:password"),
    ],
    ids=["unset", "auth-on", "no-colon", "no-user", "command-line"],
)
def test_flower_refuses_to_start_without_valid_basic_auth(
    database: str, procs: Procs, values: dict[str, str], argv: list[str], expected: str
) -> None:
    status, stderr = refused_start(
        flower_argv(free_port(), *argv), env_without_auth(procs, **values)
    )
    assert status == 1, stderr[-2000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("Error: ") and expected in last, last
    assert "s3cret-alone" not in stderr  # a malformed entry may be a password: never shown


def test_flower_refuses_to_start_without_basic_auth_from_any_directory(
    database: str, procs: Procs, tmp_path: Path
) -> None:
    """Run from elsewhere (the project importable through PYTHONPATH), there is no
    ./flowerconfig.py for Flower to find: the check must run all the same."""
    env = env_without_auth(procs, PYTHONPATH=str(REPO_ROOT))
    status, stderr = refused_start(flower_argv(free_port()), env, cwd=tmp_path)
    assert status == 1, stderr[-2000:]
    assert "FLOWER_BASIC_AUTH is not set" in stderr.strip().splitlines()[-1]


def test_flower_runs_open_only_with_orch_auth_off(
    database: str, procs: Procs, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FLOWER_BASIC_AUTH", raising=False)
    procs.env_vars["ORCH_AUTH"] = "off"
    port = free_port()
    flower = procs.spawn("flower", flower_argv(port))
    deadline = time.monotonic() + 30
    while True:
        try:
            response = requests.get(f"http://127.0.0.1:{port}/", timeout=2)
            break
        except requests.ConnectionError:
            assert time.monotonic() < deadline and flower.alive(), procs.tails()
            time.sleep(0.2)
    assert response.status_code == 200
