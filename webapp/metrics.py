"""Prometheus metrics: pipeline gauges computed at scrape time from PostgreSQL and Redis, and
the counters and histograms every process records in Redis (orchestration.metrics): the
pipeline's and the API's requests by route template, method and status (count and latency).
Every API process counts into the same place, so a scrape answered by any one of a
multi-process server's workers sees the requests all of them served.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

from flask import Flask, Response, current_app, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from orchestration import metrics as pipeline_metrics
from orchestration import teams

log = logging.getLogger(__name__)

EXTENSION = "orch_metrics"
UNMATCHED = "<unmatched>"


class PipelineCollector(Collector):
    """Tasks by team and status; task stream length and unacknowledged entries per active team;
    open decompositions."""

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "orch_pipeline_scrape_ok", "1 when the pipeline gauges could be computed"
        )
        try:
            stats = teams.pipeline_stats()
        except Exception as exc:
            log.warning("pipeline metrics unavailable: %s: %s", type(exc).__name__, exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        tasks = GaugeMetricFamily(
            "orch_tasks", "tasks by team and status", labels=["team_id", "status"]
        )
        for team_id, counts in sorted(stats.tasks.items(), key=lambda item: str(item[0])):
            for status, count in counts.items():
                tasks.add_metric([str(team_id), status], count)
        yield tasks
        length = GaugeMetricFamily(
            "orch_stream_length", "entries in an active team's task stream", labels=["team_id"]
        )
        pending = GaugeMetricFamily(
            "orch_stream_pending",
            "delivered but unacknowledged entries of an active team's task stream",
            labels=["team_id"],
        )
        for stream in stats.streams:
            length.add_metric([str(stream.team_id)], stream.length)
            pending.add_metric([str(stream.team_id)], stream.pending)
        yield length
        yield pending
        plans = GaugeMetricFamily(
            "orch_decompositions",
            "decompositions waiting for a planner (queued) or being planned, all teams",
            labels=["status"],
        )
        for status, count in stats.decompositions.items():
            plans.add_metric([status], count)
        yield plans
        yield GaugeMetricFamily(
            "orch_decomposition_queued_seconds",
            "how long the oldest queued decomposition has waited for a planner (0: none)",
            value=stats.oldest_queued,
        )
        yield from cluster_metrics()


def cluster_metrics() -> Iterator[Metric]:
    """The counters and histograms every worker, beat and API process records in Redis."""
    samples: dict[str, list[pipeline_metrics.Sample]] = {}
    for sample in pipeline_metrics.read():
        samples.setdefault(sample.spec.name, []).append(sample)
    for name, spec in pipeline_metrics.SPECS.items():
        rows = samples.get(name, [])
        labels = list(spec.labels)
        if spec.kind == "counter":
            counter = CounterMetricFamily(name, spec.help, labels=labels)
            for row in rows:
                counter.add_metric([row.labels.get(n, "") for n in labels], row.value)
            yield counter
            continue
        series: dict[tuple[str, ...], dict[str, float]] = {}
        for row in rows:
            series.setdefault(tuple(row.labels.get(n, "") for n in labels), {})[row.suffix] = (
                row.value
            )
        histogram = HistogramMetricFamily(name, spec.help, labels=labels)
        for key, parts in series.items():
            buckets = [(_bound(b), parts.get(f"le={b}", 0.0)) for b in pipeline_metrics.BUCKETS]
            histogram.add_metric(list(key), buckets, parts.get("sum", 0.0))
        yield histogram


def _bound(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


class Metrics:
    def __init__(self) -> None:
        # Each app its own registry: an app factory may run many times in one process.
        self.registry = CollectorRegistry()
        self.registry.register(PipelineCollector())

    def exposition(self) -> bytes:
        pipeline_metrics.flush()  # this process's latest counts, this request's own included
        return generate_latest(self.registry)


def _start() -> None:
    g.orch_request_started = time.perf_counter()


def _observe(response: Response) -> Response:
    started = g.pop("orch_request_started", None)
    if started is None:
        return response
    rule = request.url_rule
    labels = {
        "route": rule.rule if rule is not None else UNMATCHED,
        "method": request.method if rule is not None else "other",
        "status": str(response.status_code),
    }
    pipeline_metrics.inc("orch_api_requests", 1.0, **labels)
    pipeline_metrics.observe(
        "orch_api_request_duration_seconds", time.perf_counter() - started, **labels
    )
    return response


def scrape() -> Response:
    metrics: Metrics = current_app.extensions[EXTENSION]
    return Response(metrics.exposition(), status=200, content_type=CONTENT_TYPE_LATEST)


def init_app(app: Flask) -> None:
    app.extensions[EXTENSION] = Metrics()
    app.before_request(_start)
    app.after_request(_observe)
