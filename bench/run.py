"""`make bench` (`python -m bench.run [--quick] [sizes...]`): the five benchmarks of issue 7.

Writes bench/results/bench.json (bench-quick.json with --quick), a PNG plot beside it, and,
for a full run, the results table in bench/README.md. Each benchmark runs on its own throw-away
database and private redis-server (see bench/harness.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

from bench import harness
from bench.harness import log

FULL = {
    "throughput_tasks": 5000,
    "peer_tasks": 5000,
    "throughput_rounds": 3,
    "chain": 500,
    "seed_chain": 20,
    "backlogs": [100, 10_000, 100_000],
    "pass_ready": 50,
    "edge_sizes": [1_000, 10_000, 100_000],
    "api_edges": 500,
    "plan_nodes": 5_000,
    "soak_tasks": 50_000,
}
QUICK = {
    "throughput_tasks": 500,
    "peer_tasks": 1000,
    "throughput_rounds": 1,
    "chain": 100,
    "seed_chain": 4,
    "backlogs": [100, 1_000, 10_000],
    "pass_ready": 50,
    "edge_sizes": [1_000, 10_000],
    "api_edges": 100,
    "plan_nodes": 1_000,
    "soak_tasks": 3_000,
}
BENCHES = ("throughput", "latency", "passcost", "edges", "soak")


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    p.add_argument("--quick", action="store_true", help="a smoke run of a minute or two")
    p.add_argument("--only", nargs="*", choices=BENCHES, help="run only these benchmarks")
    p.add_argument("--throughput-tasks", type=int)
    p.add_argument("--peer-tasks", type=int)
    p.add_argument("--throughput-rounds", type=int)
    p.add_argument("--chain", type=int)
    p.add_argument("--seed-chain", type=int)
    p.add_argument("--backlogs", type=int, nargs="+")
    p.add_argument("--pass-ready", type=int)
    p.add_argument("--edge-sizes", type=int, nargs="+")
    p.add_argument("--api-edges", type=int)
    p.add_argument("--plan-nodes", type=int)
    p.add_argument("--soak-tasks", type=int)
    p.add_argument("--no-readme", action="store_true", help="do not rewrite bench/README.md")
    return p.parse_args(argv)


def sizes(args: argparse.Namespace) -> dict[str, Any]:
    chosen = dict(QUICK if args.quick else FULL)
    for key in chosen:
        value = getattr(args, key, None)
        if value is not None:
            chosen[key] = value
    return chosen


def missing_dependencies() -> list[str]:
    import importlib.util

    return [m for m in ("procrastinate", "matplotlib") if importlib.util.find_spec(m) is None]


def main(argv: list[str]) -> int:
    args = parse(argv)
    missing = missing_dependencies()
    if missing:
        print(
            f"bench needs {' and '.join(missing)} (bench-only): "
            f"{sys.executable} -m pip install procrastinate matplotlib",
            file=sys.stderr,
        )
        return 2
    size = sizes(args)
    only = set(args.only or BENCHES)
    name = "bench-quick" if args.quick else "bench"
    from bench import edges, latency, passcost, soak, throughput

    plan: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        (
            "throughput",
            lambda: throughput.run(
                size["throughput_tasks"], size["peer_tasks"], rounds=size["throughput_rounds"]
            ),
        ),
        ("latency", lambda: latency.run(size["chain"], size["seed_chain"])),
        ("passcost", lambda: passcost.run(size["backlogs"], ready=size["pass_ready"])),
        ("edges", lambda: edges.run(size["edge_sizes"], size["api_edges"], size["plan_nodes"])),
        ("soak", lambda: soak.run(size["soak_tasks"])),
    ]
    results: dict[str, Any] = {}
    previous = harness.RESULTS / f"{name}.json"
    if args.only and previous.exists():
        # A partial run refreshes its benchmarks in the last full results.
        results = json.loads(previous.read_text())
        results.setdefault("partial_reruns", []).append(
            {"command": "python -m bench.run " + " ".join(argv), "commit": harness.git_commit()}
        )
    else:
        results = {
            "command": "python -m bench.run " + " ".join(argv),
            "commit": harness.git_commit(),
            "machine": harness.machine(),
        }
    results["sizes"] = {**results.get("sizes", {}), **size}
    started = time.monotonic()
    failed = False
    for key, bench in plan:
        if key not in only:
            continue
        t0 = time.monotonic()
        load_before = [round(x, 2) for x in os.getloadavg()]
        try:
            results[key] = bench()
        except Exception as exc:
            failed = True
            log(f"{key} FAILED: {exc}")
            results[key] = {
                "error": f"{type(exc).__name__}: {exc}",
                "trace": traceback.format_exc(),
            }
        results[key]["wall_s"] = round(time.monotonic() - t0, 1)
        results[key]["load_average_before"] = load_before
        results[key]["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
        harness.write_json(name, results)
    if args.only and "partial_reruns" in results:
        results["partial_reruns"][-1]["wall_s"] = round(time.monotonic() - started, 1)
    else:
        results["wall_s"] = round(time.monotonic() - started, 1)
    path = harness.write_json(name, results)
    log(f"results: {path}")
    from bench import report

    png = report.plot(results, harness.RESULTS / f"{name}.png")
    log(f"plot: {png}")
    if not args.quick and not args.no_readme:
        report.write_readme(results)
        log("table: bench/README.md")
    print(report.table(results))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
