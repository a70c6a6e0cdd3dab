"""Bench-local experiments behind the proposed engine fixes (`python -m bench.experiments`).

The engine's AgentConsumer runs in this process (no Celery: one consumer, 4 agent threads, as
in one worker main process) on a private database and redis-server, in variants:

- stock: the engine as it is (a full orchestrator.run_pass in the agent thread after every
  completion);
- coalesced: the same consumer, but the run_pass it calls after a completion only flags the
  team and wakes ONE pass thread per process (the `orchestrator` the consumer module calls is
  swapped for a proxy), which runs run_pass for the flagged teams (completions
  arriving during a pass cause exactly one more pass) — the proposed consumer change;
- coalesced+no-ping: as coalesced, with the engine's pool built without pool_pre_ping (the
  proposed db/engine.py change: one round trip fewer per transaction).

For each: N independent zero-duration tasks (tasks/s from the first pass to the last
completion) and a chain (unblock latency p50/p99, measured as in bench.latency).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import uuid
from typing import Any

from bench import harness
from bench.harness import BulkTask, log


class _Coalescing:
    """The orchestrator as the consumer module sees it, with run_pass replaced by "flag the
    team and wake the process's one pass thread" (the proposed consumer change)."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self._wanted: set[uuid.UUID] = set()
        self._lock = threading.Lock()
        self._want = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="pass", daemon=True)
        self._thread.start()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def run_pass(self, team_id: uuid.UUID) -> None:
        with self._lock:
            self._wanted.add(team_id)
        self._want.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            if not self._want.wait(0.5):
                continue
            self._want.clear()
            with self._lock:
                teams, self._wanted = self._wanted, set()
            for team in teams:
                try:
                    self._real.run_pass(team)
                except Exception as exc:
                    log(f"pass failed: {exc}")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)


def _consumer(variant: str) -> tuple[Any, _Coalescing | None]:
    from orchestration import consumer as consumer_module
    from orchestration import orchestrator

    proxy = None
    if variant.startswith("coalesced"):
        proxy = _Coalescing(orchestrator)
        consumer_module.orchestrator = proxy  # type: ignore[assignment]
    else:
        consumer_module.orchestrator = orchestrator
    return consumer_module.AgentConsumer(concurrency=4), proxy


def _no_ping_engine() -> None:
    from sqlalchemy import create_engine
    from sqlalchemy.orm import sessionmaker

    import db.engine as dbe
    from orchestration.config import get_settings

    dbe.reset_engine()
    dbe._engine = create_engine(
        get_settings().database_url,
        pool_size=10,
        max_overflow=20,
        pool_pre_ping=False,
        pool_recycle=1800,
    )
    dbe._engine_pid = os.getpid()
    dbe._sessions = sessionmaker(dbe._engine, expire_on_commit=False)


def variant_run(variant: str, tasks: int, chain: int) -> dict[str, Any]:
    from sqlalchemy import text

    from bench import latency
    from db.engine import get_engine
    from orchestration import orchestrator

    out: dict[str, Any] = {"variant": variant}
    with harness.stack(f"exp_{variant.replace('+', '_').replace('-', '_')}") as st:
        harness.use_env(st.database, st.redis_url, harness.worker_env(st))
        if variant.endswith("no-ping"):
            _no_ping_engine()
        for label, shape in (("throughput", "flat"), ("chain", "chain")):
            team = harness.make_team(workers=8 if shape == "flat" else 4, capacity=4)
            if shape == "flat":
                batch = [BulkTask(uuid.uuid4()) for _ in range(tasks)]
            else:
                ids = [uuid.uuid4() for _ in range(chain)]
                batch = [BulkTask(ids[i], [ids[i - 1]] if i else []) for i in range(chain)]
            harness.bulk_insert(team, batch)
            with get_engine().begin() as conn:
                conn.execute(text("UPDATE teams SET status = 'active' WHERE id = :t"), {"t": team})
            consumer, proxy = _consumer(variant)
            consumer.start()
            time.sleep(0.5)
            released = time.time()
            orchestrator.run_pass(team)

            def finished(t: uuid.UUID = team, n: int = len(batch)) -> bool:
                return harness.status_counts(t).get("completed", 0) >= n

            def progress(t: uuid.UUID = team) -> str:
                return str(harness.status_counts(t))

            try:
                harness.wait_for(f"{variant} {label}", finished, 600, progress=progress)
            finally:
                consumer.stop(10)
                if proxy is not None:
                    proxy.close()
                from orchestration import consumer as consumer_module

                consumer_module.orchestrator = orchestrator
            if shape == "flat":
                with get_engine().connect() as conn:
                    last = float(
                        conn.execute(
                            text(
                                "SELECT extract(epoch FROM max(completion_time)) FROM tasks "
                                "WHERE team_id = :t"
                            ),
                            {"t": team},
                        ).scalar()
                        or 0
                    )
                out["tasks"] = tasks
                out["tasks_per_s"] = round(tasks / (last - released), 1)
            else:
                lat = latency._latencies([t.id for t in batch])
                summary = latency._summary(lat)
                out["chain"] = chain
                out["p50_ms"] = summary["p50_ms"]
                out["p99_ms"] = summary["p99_ms"]
                out["breakdown"] = latency._breakdown([t.id for t in batch])
    log(
        f"  {variant}: {out.get('tasks_per_s')} tasks/s, "
        f"p50 {out.get('p50_ms')} ms, p99 {out.get('p99_ms')} ms"
    )
    return out


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.experiments", description=__doc__)
    p.add_argument("--tasks", type=int, default=2000)
    p.add_argument("--chain", type=int, default=200)
    p.add_argument("--variants", nargs="+", default=["stock", "coalesced", "coalesced+no-ping"])
    args = p.parse_args(argv)
    rows = []
    for variant in args.variants:
        log(f"experiment: {variant}")
        rows.append(variant_run(variant, args.tasks, args.chain))
    result = {
        "command": "python -m bench.experiments " + " ".join(argv),
        "commit": harness.git_commit(),
        "machine": harness.machine(),
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "rows": rows,
    }
    path = harness.write_json("experiments", result)
    print(json.dumps(rows, indent=2))
    log(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
