"""/metrics under a multi-process server: gunicorn with two worker processes, as the README
recommends, answers every scrape with the requests both processes served."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.support.processes import Procs
from tests.support.services import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]

TOKEN = "metrics-admin-token"
REQUESTS = 24


@pytest.fixture
def api_url(workers: Procs) -> Iterator[str]:
    workers.env_vars["ORCH_ADMIN_TOKEN"] = TOKEN
    url, _ = workers.api(free_port(), workers=2, threads=2)
    yield url


def requests_counted(url: str) -> float:
    text = requests.get(f"{url}/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if (sample.name, labels.get("route"), labels.get("status")) == (
                "orch_api_requests_total",
                "/api/v1/teams",
                "200",
            ):
                return float(sample.value)
    return 0.0


def test_every_scrape_counts_the_requests_of_every_server_process(api_url: str) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for _ in range(REQUESTS):  # a connection each: gunicorn spreads them over its workers
        assert requests.get(f"{api_url}/api/v1/teams", headers=auth, timeout=5).ok
    time.sleep(1.5)  # each process writes its counts about once a second
    assert [requests_counted(api_url) for _ in range(8)] == [REQUESTS] * 8
