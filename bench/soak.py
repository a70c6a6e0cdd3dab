"""Benchmark 5: memory of the worker and beat processes over a long run.

N independent zero-duration tasks through two `celery -A orchestration worker -c 1` and one
beat. VmRSS (from /proc) is sampled every second for each worker's process tree (the main
process, which runs the agent consumer, plus its pool child, which runs passes) and for beat.
Warm-up ends when `warmup` of the tasks have completed; growth is the mean of the last five
samples minus the mean of the five samples at the end of the warm-up.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

from bench import harness
from bench.harness import BulkTask, log
from tests.support.processes import processes


def run(tasks: int, warmup: float = 0.1, timeout: float = 3600) -> dict[str, Any]:
    from orchestration import lifecycle

    with harness.stack("soak") as st:
        env = harness.worker_env(st)
        harness.use_env(st.database, st.redis_url, env)
        team = harness.make_team(workers=8, capacity=4)
        harness.bulk_insert(team, [BulkTask(uuid.uuid4()) for _ in range(tasks)])
        with processes(st.directory, env) as procs:
            workers, (beat,) = procs.engine(workers=2)
            samples: list[dict[str, float]] = []
            done = {"n": 0}
            stop = threading.Event()
            started = time.monotonic()

            def sample() -> None:
                while not stop.is_set():
                    row = {
                        "t": round(time.monotonic() - started, 2),
                        "completed": done["n"],
                        "beat_mib": harness.rss_kib(beat.pid) / 1024,
                    }
                    for i, w in enumerate(workers):
                        row[f"worker{i + 1}_mib"] = harness.tree_rss_kib(w.pid) / 1024
                        row[f"worker{i + 1}_main_mib"] = harness.rss_kib(w.pid) / 1024
                    samples.append(row)
                    stop.wait(1.0)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            lifecycle.start_team(team)

            def finished() -> bool:
                done["n"] = harness.status_counts(team).get("completed", 0)
                return done["n"] >= tasks

            try:
                harness.wait_for(
                    "the soak", finished, timeout, interval=1.0, progress=lambda: str(done["n"])
                )
            finally:
                stop.set()
                sampler.join(5)
            elapsed = time.monotonic() - started
    warm = [s for s in samples if s["completed"] >= warmup * tasks]
    keys = [k for k in samples[0] if k.endswith("_mib")] if samples else []

    def mean(rows: list[dict[str, float]], key: str) -> float:
        return sum(r[key] for r in rows) / len(rows) if rows else float("nan")

    growth = {key: round(mean(warm[-5:], key) - mean(warm[:5], key), 2) for key in keys if warm}
    after = {key: round(mean(warm[:5], key), 1) for key in keys if warm}
    end = {key: round(mean(warm[-5:], key), 1) for key in keys if warm}
    worst = max((v for k, v in growth.items() if not k.endswith("main_mib")), default=0.0)
    return {
        "tasks": tasks,
        "seconds": round(elapsed, 1),
        "tasks_per_s": round(tasks / elapsed, 1),
        "warmup_fraction": warmup,
        "rss_after_warmup_mib": after,
        "rss_at_end_mib": end,
        "growth_mib": growth,
        "samples": samples,
        "targets": {"growth_under_10mb": worst < 10 * 1_000_000 / 2**20},
    }


if __name__ == "__main__":
    import json
    import sys

    result = run(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
    result.pop("samples")
    print(json.dumps(result, indent=2))
    log("soak done")
