"""`make demo`: the real thing on local PostgreSQL and Redis.

Starts the API (gunicorn), a Celery worker and Celery beat as separate processes, creates a
team through the HTTP API, has a worker's heuristic planner decompose a sample goal in the
background, and follows the work to completion with a live progress bar. Ends with the task
tree, who did what and why, and the totals, then stops the processes it started.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import requests
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.tree import Tree

from orchestration.cli import STATUS_STYLE

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / ".run" / "demo"
GOAL = (
    "Research the market for electric bikes in Europe, then analyze the pricing data of the "
    "top ten brands and write a report summarizing the findings. After that, build a price "
    "comparison dashboard. Finally, test and deploy the dashboard."
)
FINAL = {"completed", "failed", "cancelled"}
TIMEOUT = 150.0

console = Console()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Processes:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, args: list[str]) -> Path:
        log = RUN / f"{name}.log"
        handle = log.open("wb")
        proc = subprocess.Popen(
            args,
            cwd=ROOT,
            env=self.env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs.append((name, proc))
        return log

    def check(self) -> None:
        for name, proc in self.procs:
            if proc.poll() is not None:
                raise SystemExit(
                    f"demo: the {name} process exited ({proc.returncode}); see {RUN / name}.log"
                )

    def stop(self) -> None:
        for _, proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for _, proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def wait_for(what: str, ready: Any, procs: Processes, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        procs.check()
        try:
            if ready():
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise SystemExit(f"demo: {what} not ready after {timeout:.0f}s; logs in {RUN}")


class Api:
    def __init__(self, base: str, token: str) -> None:
        self.base = base
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {token}"

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, f"{self.base}/api/v1{path}", timeout=30, **kwargs)
        if response.status_code >= 400:
            raise SystemExit(f"demo: {method} {path} -> {response.status_code} {response.text}")
        return response.json() if response.content else None


def main() -> int:
    RUN.mkdir(parents=True, exist_ok=True)
    port = free_port()
    token = secrets.token_urlsafe(24)
    env = dict(os.environ)
    env.update(
        ORCH_ADMIN_TOKEN=token,
        ORCH_SIM_DURATION=env.get("ORCH_SIM_DURATION", "0.8"),
        ORCH_PASS_INTERVAL=env.get("ORCH_PASS_INTERVAL", "2.0"),
        PYTHONUNBUFFERED="1",
    )
    bin_dir = Path(sys.executable).parent
    procs = Processes(env)
    started = time.monotonic()
    try:
        console.rule("[bold]agent orchestration demo")
        console.print(f"PostgreSQL  {env.get('DATABASE_URL', '(default)')}")
        console.print(f"Redis       {env.get('REDIS_URL', '(default)')}")
        procs.start(
            "api",
            [
                str(bin_dir / "gunicorn"),
                "-b",
                f"127.0.0.1:{port}",
                "-w",
                "2",
                "--threads",
                "4",
                "webapp:create_app()",
            ],
        )
        worker_log = procs.start(
            "worker",
            [
                str(bin_dir / "celery"),
                "-A",
                "orchestration",
                "worker",
                "-c",
                "2",
                "-n",
                "demo@%h",
                "--loglevel=INFO",
            ],
        )
        procs.start(
            "beat",
            [
                str(bin_dir / "celery"),
                "-A",
                "orchestration",
                "beat",
                "--loglevel=INFO",
                "--schedule",
                str(RUN / "beat-schedule"),
            ],
        )
        base = f"http://127.0.0.1:{port}"
        wait_for("the API", lambda: requests.get(f"{base}/ready", timeout=2).ok, procs)
        wait_for("the worker", lambda: "ready." in worker_log.read_text(errors="ignore"), procs)
        console.print(f"API         {base}   worker, beat: running   logs: {RUN}")

        api = Api(base, token)
        team = api.call("POST", "/teams", json={"name": "E-bike launch", "description": "demo"})
        team_id = team["id"]
        api.call(
            "POST", f"/teams/{team_id}/members", json={"role": "manager", "agent_id": "manager"}
        )
        for agent_id, spec in (
            ("coder", "Technical Executor"),
            ("writer", "Content Creator"),
            ("analyst", "Researcher/Analyzer"),
        ):
            api.call(
                "POST",
                f"/teams/{team_id}/members",
                json={
                    "role": "worker",
                    "agent_id": agent_id,
                    "specialization": spec,
                    "max_concurrent_tasks": 2,
                },
            )
        api.call("POST", f"/teams/{team_id}/start")
        console.print(f"\n[bold]Goal:[/] {GOAL}\n")
        tasks = planned(api, procs, team_id)
        if tasks is None:
            return 1

        total = len(tasks)
        deadline = time.monotonic() + TIMEOUT
        with Progress(
            TextColumn("[bold blue]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            bar = progress.add_task("working", total=total, detail="")
            while True:
                procs.check()
                counts = api.call("GET", f"/teams/{team_id}")["task_counts"]
                finished = sum(counts.get(s, 0) for s in FINAL)
                detail = "  ".join(f"{s} {n}" for s, n in counts.items() if n)
                progress.update(bar, completed=finished, detail=detail)
                if finished >= total or time.monotonic() > deadline:
                    break
                time.sleep(0.25)

        report(api, team_id, tasks)
        elapsed = time.monotonic() - started
        counts = api.call("GET", f"/teams/{team_id}")["task_counts"]
        ok = counts.get("completed", 0) == total
        console.print(
            f"\n{'[green]All' if ok else '[red]Not all'} {total} tasks completed[/] "
            f"({counts}) in {elapsed:.1f}s."
        )
        console.print(
            f"Where to look: process logs in {RUN}/ (api.log, worker.log, beat.log); the same "
            "stack by hand: `flask --app webapp run`, `celery -A orchestration worker`, "
            "`celery -A orchestration beat`, `celery -A orchestration flower`."
        )
        return 0 if ok else 1
    finally:
        procs.stop()


def planned(api: Api, procs: Processes, team_id: str) -> list[dict[str, Any]] | None:
    """The goal decomposed in the background (POST .../decompositions): the worker's planning
    thread makes the tasks while the demo polls. The tasks, parents first; None if it failed."""
    began = time.monotonic()
    made = api.call("POST", f"/teams/{team_id}/decompositions", json={"goal": GOAL, "max_depth": 3})
    console.print(f"Queued for the manager's planner: decomposition {made['id']}.")
    deadline = began + TIMEOUT
    while made["status"] in ("queued", "planning") and time.monotonic() < deadline:
        procs.check()
        time.sleep(0.1)
        made = api.call("GET", f"/teams/{team_id}/decompositions/{made['id']}")
    if made["status"] != "succeeded":
        console.print(f"[red]The decomposition is {made['status']}:[/] {made.get('error') or ''}")
        return None
    by_id = {t["id"]: t for t in api.call("GET", f"/teams/{team_id}/tasks")}
    console.print(
        f"A worker's planner made {len(made['task_ids'])} tasks "
        f"in {time.monotonic() - began:.1f}s (attempt {made['attempts']}).\n"
    )
    return [by_id[task_id] for task_id in made["task_ids"]]


def report(api: Api, team_id: str, tasks: list[dict[str, Any]]) -> None:
    members = {m["id"]: m for m in api.call("GET", f"/teams/{team_id}/members")}
    root = tasks[0]
    hierarchy = api.call("GET", f"/teams/{team_id}/tasks/{root['id']}/hierarchy")

    def label(task: dict[str, Any]) -> str:
        style = STATUS_STYLE.get(task["status"], "white")
        who = members.get(task.get("assigned_to") or "", {}).get("agent_id")
        took = ""
        if task.get("start_time") and task.get("completion_time"):
            from datetime import datetime

            t0 = datetime.fromisoformat(task["start_time"])
            t1 = datetime.fromisoformat(task["completion_time"])
            took = f" {(t1 - t0).total_seconds():.1f}s"
        skills = ", ".join(task.get("required_skills") or [])
        return (
            f"[{style}]{task['status']:<10}[/] {task['title']}"
            + (f" [dim]({skills})[/]" if skills else "")
            + (f" [cyan]<- {who}[/]{took}" if who else "")
        )

    def add(node: Any, branch: dict[str, Any]) -> None:
        child = node.add(label(branch["task"]))
        for sub in branch["subtasks"]:
            add(child, sub)

    tree = Tree(label(hierarchy["task"]))
    for sub in hierarchy["subtasks"]:
        add(tree, sub)
    console.rule("[bold]Task tree")
    console.print(tree)

    console.rule("[bold]Who did what, and why")
    titles = {t["id"]: t["title"] for t in tasks}
    for entry in reversed(api.call("GET", f"/teams/{team_id}/assignments")):
        console.print(
            f"[bold]{titles.get(entry['task_id'], entry['task_id'])}[/]  score {entry['score']:.3f}"
        )
        for line in entry["explanation"].splitlines():
            console.print(f"    {line}")

    table = Table(title="Totals per member")
    for column in ("agent", "role", "specialization", "completed", "failed", "tokens", "cost $"):
        table.add_column(column)
    tokens = 0
    cost = Decimal(0)
    for m in members.values():
        tokens += int(m["total_tokens_used"])
        cost += Decimal(str(m["total_cost"]))
        table.add_row(
            m["agent_id"],
            m["role"],
            m.get("specialization") or "-",
            str(m["tasks_completed"]),
            str(m["tasks_failed"]),
            str(m["total_tokens_used"]),
            f"{Decimal(str(m['total_cost'])):.6f}",
        )
    table.add_row("team", "", "", "", "", str(tokens), f"{cost:.6f}", style="bold")
    console.print(table)


if __name__ == "__main__":
    sys.exit(main())
