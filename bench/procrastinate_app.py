"""The Postgres-queue peer: procrastinate running no-op jobs.

`python -m bench.procrastinate_app` runs one worker (concurrency 1) against PROCRASTINATE_DSN.
"""

from __future__ import annotations

import logging
import os
import sys

from procrastinate import App, PsycopgConnector

DSN = os.environ.get("PROCRASTINATE_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
QUEUE = "noop"


async def noop() -> None:
    return None


def build(dsn: str) -> App:
    """An app on `dsn` with the no-op task registered."""
    new = App(connector=PsycopgConnector(conninfo=dsn))
    new.task(name="bench.noop", queue=QUEUE)(noop)
    return new


app = build(DSN)


def main() -> int:
    logging.basicConfig(level=logging.WARNING)
    concurrency = int(os.environ.get("PROCRASTINATE_CONCURRENCY", "1"))
    with app.open():
        print("procrastinate worker ready.", flush=True)
        app.run_worker(
            queues=[QUEUE], concurrency=concurrency, wait=True, install_signal_handlers=True
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
