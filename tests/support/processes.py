"""Subprocesses for the end-to-end tests, the benchmarks and the fault campaign: `celery worker`
and `celery beat` started from the repo root exactly as in production (and anything else, such
as Flower or a peer's worker), each in a process group of its own so that a SIGKILL takes its
pool children with it, each logging to a file of its own."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import requests

from tests.support.services import tail

REPO_ROOT = Path(__file__).resolve().parents[2]
CELERY = str(Path(sys.executable).parent / "celery")
GUNICORN = str(Path(sys.executable).parent / "gunicorn")
READY_TIMEOUT = 60.0


def refused_start(
    argv: list[str], env: dict[str, str], timeout: float = 30.0, cwd: Path = REPO_ROOT
) -> tuple[int, str]:
    """The exit status and stderr of a process run from the repository root (or `cwd`) that
    is expected to refuse to start; one still running after `timeout` is killed with its
    process group, and the caller's test fails."""
    popen = subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _, stderr = popen.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(popen.pid, signal.SIGKILL)
        _, stderr = popen.communicate()
        raise AssertionError(f"{argv[0]} started:\n{stderr[-2000:]}") from None
    return popen.returncode, stderr


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    killed: bool = False

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None


@dataclass
class Procs:
    """Starts, waits for, kills and stops subprocesses; their logs go to `directory`, their
    environment is this process's with `env_vars` over it."""

    directory: Path
    env_vars: dict[str, str] = field(default_factory=dict)
    procs: list[Proc] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.env_vars)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def spawn(self, name: str, argv: list[str]) -> Proc:
        log_path = self.directory / f"{name}-{len(self.procs) + 1}.log"
        with open(log_path, "wb") as out:
            popen = subprocess.Popen(
                argv,
                cwd=REPO_ROOT,
                env=self.env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        proc = Proc(name, popen, log_path)
        self.procs.append(proc)
        return proc

    def worker(self, app: str = "orchestration", concurrency: int = 1) -> Proc:
        """A `celery worker` started, not waited for."""
        argv = [CELERY, "-A", app, "worker", "--loglevel=INFO", "-c", str(concurrency)]
        tag = uuid.uuid4().hex[:6]
        return self.spawn(
            "worker", [*argv, "-n", f"w-{tag}@%h", "--without-mingle", "--without-gossip"]
        )

    def start_workers(self, count: int) -> list[Proc]:
        """`count` engine workers, started together, each ready with its agent consumer."""
        started = [self.worker() for _ in range(count)]
        for proc in started:
            self.wait_for_log(proc, "ready.")
            self.wait_for_log(proc, "agent consumer")
        return started

    def start_beat(self) -> Proc:
        """A `celery beat` with a schedule file of its own, started."""
        schedule = self.directory / f"beat-schedule-{len(self.procs) + 1}"
        argv = [CELERY, "-A", "orchestration", "beat", "--loglevel=INFO"]
        proc = self.spawn("beat", [*argv, "--schedule", str(schedule), "--pidfile="])
        self.wait_for_log(proc, "beat: Starting")
        return proc

    def engine(self, workers: int, beats: int = 1) -> tuple[list[Proc], list[Proc]]:
        """The engine running: `workers` ready workers, then `beats` beat processes."""
        return self.start_workers(workers), [self.start_beat() for _ in range(beats)]

    def api(self, port: int, workers: int, threads: int) -> tuple[str, Proc]:
        """`gunicorn -k gthread` serving the API on `port`, answering /health: its URL."""
        argv = [GUNICORN, "-k", "gthread", "-w", str(workers), "--threads", str(threads)]
        proc = self.spawn("gunicorn", [*argv, "-b", f"127.0.0.1:{port}", "webapp:create_app()"])
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{url}/health", timeout=2).status_code == 200:
                    return url, proc
            if time.monotonic() > deadline or not proc.alive():
                raise RuntimeError(f"the API did not start:\n{tail(proc.log)}")
            time.sleep(0.1)

    def wait_for_log(self, proc: Proc, needle: str, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not proc.alive():
                raise RuntimeError(f"{proc.name} exited early:\n{tail(proc.log)}")
            with contextlib.suppress(OSError):
                if needle in proc.log.read_text(errors="replace"):
                    return
            time.sleep(0.1)
        raise RuntimeError(f"{proc.name} not ready in {timeout}s:\n{tail(proc.log)}")

    def kill(self, proc: Proc) -> None:
        """SIGKILL the process group (main process and its pool children): no cleanup at all."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.popen.wait(10)
        proc.killed = True

    def stop(self, *procs: Proc, timeout: float = 15.0) -> None:
        """SIGTERM each group and wait for the whole of `timeout`; then SIGKILL what is left
        (a worker's pool children may outlive it)."""
        live = [p for p in procs if p.alive()]
        for proc in live:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in live:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(max(0.1, deadline - time.monotonic()))
        for proc in procs:
            if proc.killed:
                continue
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(5)

    def stop_all(self) -> None:
        self.stop(*self.procs)

    def all_logs(self) -> str:
        return "\n".join(p.log.read_text(errors="replace") for p in self.procs if p.log.exists())

    def tails(self, lines: int = 30) -> str:
        return "\n".join(
            f"----- {p.name} (pid {p.pid}{', killed' if p.killed else ''}) -----\n"
            f"{tail(p.log, lines)}"
            for p in self.procs
        )


@contextlib.contextmanager
def processes(directory: Path, env_vars: dict[str, str]) -> Iterator[Procs]:
    """Procs whose every process is stopped on the way out."""
    procs = Procs(directory, env_vars)
    try:
        yield procs
    finally:
        procs.stop_all()
