"""The worker side: each `celery worker` process consumes the task streams of working teams.

One reader thread per process reads every working team's stream with XREADGROUP (the team's
group, this process's consumer name), reclaims entries idle past the visibility timeout with
XAUTOCLAIM, and dead-letters entries delivered too often. The entries it reads together are
claimed in PostgreSQL together (one statement, fencing out any earlier holder) and handed to a
small pool of agent threads, which run each through the executor and reviewer plug-ins.
Finished executions are committed by a completion thread in groups: one conditional statement
for all the outcomes that finished while the previous group committed, then one XACK per team.
An entry is acknowledged only after its outcome has committed. While an entry is held, a
heartbeat keeps its idle time low so that nobody reclaims a task that is still being worked on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any, TypeVar

import redis
from sqlalchemy.exc import DataError, OperationalError

from db.engine import migration_needed
from db.models import TaskStatus
from orchestration import keys, lifecycle, metrics, orchestrator, planning, streams
from orchestration.agents.base import ExecutionFailed, Executor, Reviewer, TaskContext
from orchestration.config import Settings, get_settings
from orchestration.errors import AgentError
from orchestration.logs import log_context
from orchestration.monitoring import CeleryEvents
from orchestration.redis_client import get_redis

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

TEAMS_REFRESH = 1.0
POLL_FALLBACK = 1.0
MAX_HELD = 4  # entries held (running, claimed ahead or waiting for their commit) per agent thread
# Automatic read-ahead claims entries ahead of the agent threads only while executions are this
# short: then a claim's round trip, not the agent, is what keeps a thread waiting; for longer
# ones a claimed entry would wait in this process while another process's agents sit idle.
READ_AHEAD_BELOW = 0.05
GIL_SWITCH_INTERVAL = 0.001
# Seconds between checks that the running tasks are still this process's runs: a task cancelled
# (or taken over) meanwhile has its context's `cancelled` set, so its agent may stop early. A
# cancellation rings a doorbell too, heard at once; the check catches what the ring missed.
CANCEL_POLL = 1.0
# Seconds between looks for queued decompositions when no doorbell rang.
PLANNING_POLL = 5.0
COMMIT_ATTEMPTS = 3
# Outcomes that could not commit (the database unreachable) stay held, their entries kept alive
# by the heartbeat, and are committed again after a wait doubling up to this many seconds.
FINISH_BACKOFF_MAX = 5.0
# XAUTOCLAIM calls a team gets per reclaim round: each looks at no more than 10 x COUNT entries
# of the pending list, from where the last one stopped, so a long list is walked in rounds.
RECLAIM_CALLS = 10

# Refresh the idle time of an entry only while this consumer still owns it.
_HEARTBEAT = """
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if p[1] and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
    return 1
end
return 0
"""


def _retried(change: Callable[[list[T]], R], batch: list[T]) -> R:
    """Run a grouped change again when its transaction was a deadlock victim or lost its
    connection: otherwise the whole group would wait out the visibility timeout."""
    for attempt in range(1, COMMIT_ATTEMPTS + 1):
        try:
            return change(batch)
        except OperationalError as exc:
            if attempt == COMMIT_ATTEMPTS:
                raise
            log.warning("%s of %d entries: %s; retrying", change.__name__, len(batch), exc.orig)
            time.sleep(0.05 * attempt)
    raise AssertionError("unreachable")  # pragma: no cover


class _Repeats:
    """The same error, again and again (a server down, a schema not migrated): logged the first
    time and then once a minute with how often it came, not every second with its traceback."""

    EVERY = 60.0

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self._last = ""
        self._since = 0.0
        self._count = 0

    def due(self, exc: BaseException) -> bool:
        """True when exc should be logged now."""
        what = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"
        now = time.monotonic()
        if what == self._last:
            if now - self._since < self.EVERY:
                self._count += 1
                return False
            log.warning("the next error came %d more times in the last minute", self._count)
        self._last, self._since, self._count = what, now, 0
        return True


def consumer_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass
class Run:
    """What one entry's handling used, for metrics."""

    agent_id: str = ""
    tokens: int = 0
    cost: Decimal = Decimal(0)


@dataclass
class _Finishing:
    """An executed entry whose outcome waits for the completion thread's next commit."""

    entry: streams.Entry
    completion: lifecycle.Completion
    run: Run
    uid: str | None
    began: float


@dataclass
class _Running:
    """An entry whose agent is at work: what the watcher needs to stop it, or to end its
    attempt when it outlives ORCH_RUN_TIMEOUT."""

    entry: streams.Entry
    token: str
    context: TaskContext
    attempts: int
    run: Run
    uid: str | None
    began: float
    call_began: float  # when its current execution or review began
    timed_out: float | None = None  # when the watcher ended its attempt for it
    warned: bool = False
    returned: bool = False  # its agent returned (the watcher no longer gives it up)
    given_up: bool = False  # the watcher gave up on its agent: its thread is not counted
    replaced: bool = False  # ... and a spare thread took its place


class _AgentThreads:
    """A consumer's agent threads: `size` daemon threads take runs from one queue, so no more
    than `size` agents work at once. An agent the watcher gave up on (past ORCH_RUN_TIMEOUT)
    keeps its thread, since Python cannot stop one: replace() starts another in its place, up
    to `spares` of them, and returned() brings the count back down once it returns. Daemons: a
    hung agent never holds up the process's exit, as a ThreadPoolExecutor's threads would."""

    def __init__(self, size: int, spares: int, prefix: str) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], object] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._size = size
        self._spares = spares
        self._prefix = prefix
        self._alive = 0
        self._started = 0
        self._replaced = 0  # given-up agents still running, each with a thread in its place
        self._surplus = 0  # threads to end when next idle (their given-up agents returned)
        self._closed = False

    def submit(self, fn: Callable[..., object], *args: Any) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("the agent threads are shut down")
            if self._alive < self._size + self._replaced:
                self._start()
        self._jobs.put(lambda: fn(*args))

    def _start(self) -> None:
        self._alive += 1
        self._started += 1
        name = f"{self._prefix}_{self._started}"
        threading.Thread(target=self._work, name=name, daemon=True).start()

    def _work(self) -> None:
        while True:
            with self._lock:
                if self._surplus > 0:
                    self._surplus -= 1
                    self._alive -= 1
                    return
            job = self._jobs.get()
            if job is None:
                with self._lock:
                    self._alive -= 1
                return
            try:
                job()
            except Exception:
                log.exception("agent thread: unexpected error")

    @property
    def alive(self) -> int:
        with self._lock:
            return self._alive

    def replace(self) -> bool:
        """A running agent is given up on: start a thread in its place. False when every
        spare is taken (the process runs one agent fewer until one returns)."""
        with self._lock:
            if self._closed or self._replaced >= self._spares:
                return False
            self._replaced += 1
            self._start()
            return True

    def returned(self) -> None:
        """A replaced agent returned at last: one thread too many, the next idle one ends."""
        with self._lock:
            self._replaced -= 1
            self._surplus += 1

    def shutdown(self) -> None:
        """Take no more runs; each thread ends once the runs queued before are done (one
        running a given-up agent, whenever that returns)."""
        with self._lock:
            self._closed = True
            threads = self._size + self._spares
        for _ in range(threads):
            self._jobs.put(None)


class AgentConsumer:
    def __init__(
        self,
        concurrency: int | None = None,
        name: str | None = None,
        settings: Settings | None = None,
        executor: Executor | None = None,
        reviewer: Reviewer | None = None,
        monitor: CeleryEvents | None = None,
    ) -> None:
        self.settings = settings or get_settings()
        self.concurrency = max(1, concurrency or self.settings.agent_concurrency)
        self.name = name or consumer_name()
        self._executor = executor
        self.monitor = monitor
        self._reviewer = reviewer
        self._stop = threading.Event()
        self._stop_reading = threading.Event()
        self._inflight: dict[str, streams.Entry] = {}
        self._claims: dict[str, str] = {}  # entry id -> claim token of the running task
        self._running: dict[str, _Running] = {}  # entry id -> its run, while its agent works
        self._lock = threading.Lock()
        self._pool = _AgentThreads(self.concurrency, spares=self.concurrency, prefix="agent")
        self._short = 0  # agents given up on with no spare thread left to replace them
        self._threads: list[threading.Thread] = []
        self._teams: list[uuid.UUID] = []
        self._teams_at = 0.0
        self._groups: set[uuid.UUID] = set()
        self._last_reclaim = 0.0
        self._reclaim_from: dict[uuid.UUID, str] = {}  # XAUTOCLAIM's cursor per team
        self._doorbell = streams.Doorbell(streams.NOTIFY_STREAM)
        self._wake: set[uuid.UUID] = set()
        self._heartbeat_script: Any = None
        self._pass_teams: set[uuid.UUID] = set()
        self._pass_wanted = threading.Event()
        self._finishing: list[_Finishing] = []  # executed, waiting for the completion thread
        self._waiting = 0  # entries executed whose outcome has not committed yet
        self._slot_freed = threading.Event()
        self._typical_run = float("inf")  # moving average of execution times, seconds
        self._finish_wanted = threading.Event()

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        # Many short bursts of I/O-bound threads in one process: with the default 5 ms GIL
        # switch interval, a thread back from a round trip (the pass, holding the team's pass
        # lock) could wait that long behind another's Python work. 1 ms measured ~20 % faster.
        sys.setswitchinterval(min(sys.getswitchinterval(), GIL_SWITCH_INTERVAL))
        for target, label in (
            (self._read_loop, "stream-reader"),
            (self._heartbeat_loop, "heartbeat"),
            (self._pass_loop, "passes"),
            (self._finish_loop, "completions"),
            (self._cancel_loop, "cancellations"),
            *(
                (self._planning_loop, f"planning_{n + 1}")
                for n in range(self.settings.planning_concurrency)
            ),
        ):
            thread = threading.Thread(target=target, name=label, daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("agent consumer %s started with %d agent threads", self.name, self.concurrency)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop reading; let running agents finish and their outcomes commit, the heartbeat
        keeping their entries claimed meanwhile (else another process would reclaim and run
        them again); then stop the rest."""
        self._stop_reading.set()
        self._slot_freed.set()
        reader, others = self._threads[:1], self._threads[1:]  # start() begins with the reader
        for thread in reader:
            thread.join(timeout)
        # Entries claimed ahead run too (they are short, or read-ahead was forced): cancelled,
        # they would wait out the visibility timeout before another process took them. An
        # agent given up on (ORCH_RUN_TIMEOUT) is not waited for: its attempt is over.
        self._pool.shutdown()
        while self._running_entries() > 0:
            time.sleep(0.05)
        deadline = time.monotonic() + timeout
        while not self._finish_pending() and time.monotonic() < deadline:
            time.sleep(0.5)
        self._stop.set()
        self._finish_wanted.set()
        for thread in others:
            thread.join(timeout)
        if self.monitor is not None:
            self.monitor.close()

    # -- reading ---------------------------------------------------------------------------

    def _read_loop(self) -> None:
        repeated = _Repeats()
        while not self._stop_reading.is_set():
            try:
                self._read_once()
                repeated.clear()
            except redis.RedisError as exc:
                if repeated.due(exc):
                    log.warning("stream reader: Redis unavailable (%s); retrying", exc)
                self._groups.clear()
                self._stop_reading.wait(1.0)
            except Exception as exc:
                fix = migration_needed(exc)
                if fix is not None:
                    if repeated.due(exc):
                        log.error("stream reader: %s; retrying", fix)
                    self._stop_reading.wait(5.0)
                    continue
                if repeated.due(exc):
                    log.exception("stream reader: unexpected error; retrying")
                self._stop_reading.wait(1.0)

    def _working_teams(self) -> list[uuid.UUID]:
        now = time.monotonic()
        if now - self._teams_at > TEAMS_REFRESH:
            self._teams = orchestrator.working_team_ids()
            self._teams_at = now
        return self._teams

    def read_ahead(self) -> int:
        """How many entries may be claimed ahead of the agent threads (ORCH_READ_AHEAD; auto:
        one round of them while executions are short, none otherwise)."""
        if self.settings.read_ahead is not None:
            return self.settings.read_ahead
        return self.concurrency if self._typical_run < READ_AHEAD_BELOW else 0

    @property
    def agent_threads(self) -> int:
        """Agent threads alive: more than the concurrency while agents given up on still run."""
        return self._pool.alive

    def _running_entries(self) -> int:
        """Entries running or waiting for an agent thread (not those waiting for their commit,
        nor those whose agents were given up on)."""
        with self._lock:
            return len(self._inflight) - self._waiting

    def _free_slots(self) -> int:
        """Entries this process can take now: free agent threads plus the read-ahead (entries
        waiting for their commit hold no thread, but only a few rounds of them may wait). A
        thread held by an agent given up on, with no spare to replace it, is not free."""
        ahead = self.read_ahead()
        with self._lock:
            running = len(self._inflight) - self._waiting + self._short
            return min(
                self.concurrency + ahead - running,
                MAX_HELD * self.concurrency - len(self._inflight),
            )

    def _read_once(self) -> None:
        free = self._free_slots()
        if free <= 0:
            self._slot_freed.clear()
            if self._free_slots() <= 0:
                self._slot_freed.wait(0.5)
            return
        teams = self._working_teams()
        now = time.monotonic()
        if now - self._last_reclaim > min(5.0, self.settings.visibility_timeout / 4):
            self._last_reclaim = now
            free -= self._reclaim(teams, free)
            if free <= 0:
                return
        wake, self._wake = self._wake, set()
        if not wake <= set(teams):
            # A team just started or resumed: read it now, not after the cache expires.
            self._teams_at = 0.0
            teams = self._working_teams()
        order = [t for t in teams if t in wake] + [t for t in teams if t not in wake]
        got = self._read_streams(order, free)
        if got == 0:
            self._wait_for_doorbell()

    def _ensure_groups(self, teams: list[uuid.UUID]) -> None:
        missing = [t for t in teams if t not in self._groups]
        for team_id in missing:
            streams.ensure_group(team_id)
            self._groups.add(team_id)

    def _read_streams(self, teams: list[uuid.UUID], free: int) -> int:
        if not teams:
            return 0
        self._ensure_groups(teams)
        r = get_redis()
        got = 0
        for team_id in teams:
            if free - got <= 0:
                break
            try:
                reply = r.xreadgroup(
                    keys.consumer_group(team_id),
                    self.name,
                    {keys.task_stream(team_id): ">"},
                    count=free - got,
                )
            except redis.ResponseError as exc:
                if "NOGROUP" in str(exc):
                    self._groups.discard(team_id)
                    continue
                raise
            batch = [
                streams.Entry.parse(team_id, entry_id, fields)
                for _stream, entries in reply or []
                for entry_id, fields in entries
            ]
            self._dispatch(batch)
            got += len(batch)
        return got

    def _wait_for_doorbell(self) -> None:
        for ring in self._doorbell.wait(POLL_FALLBACK):
            try:
                self._wake.add(uuid.UUID(ring["team_id"]))
            except (KeyError, ValueError):
                continue

    def _reclaim(self, teams: list[uuid.UUID], free: int) -> int:
        """Take over entries idle past the visibility timeout; dead-letter the overdelivered."""
        self._ensure_groups(teams)
        r = get_redis()
        idle_ms = int(self.settings.visibility_timeout * 1000)
        taken: list[streams.Entry] = []
        for team_id in teams:
            if free - len(taken) <= 0:
                break
            stream, group = keys.task_stream(team_id), keys.consumer_group(team_id)
            claimed: list[tuple[str, dict[str, str]]] = []
            try:
                for _ in range(RECLAIM_CALLS):
                    reply = r.xautoclaim(
                        stream,
                        group,
                        self.name,
                        idle_ms,
                        self._reclaim_from.get(team_id, "0-0"),
                        count=free - len(taken) - len(claimed),
                    )
                    self._reclaim_from[team_id] = reply[0]
                    claimed += reply[1]
                    if reply[0] == "0-0" or len(taken) + len(claimed) >= free:
                        break  # the whole list seen, or enough taken
            except redis.ResponseError as exc:
                if "NOGROUP" in str(exc):
                    self._groups.discard(team_id)
                    self._reclaim_from.pop(team_id, None)
                    continue
                raise
            for entry_id, fields in claimed:
                if not fields:
                    continue  # deleted while pending: nothing to run
                entry = streams.Entry.parse(team_id, entry_id, fields)
                info = r.xpending_range(stream, group, min=entry_id, max=entry_id, count=1)
                deliveries = int(info[0]["times_delivered"]) if info else 1
                if deliveries > self.settings.max_deliveries:
                    self._dead_letter(entry, deliveries)
                    continue
                log.warning(
                    "reclaimed entry %s of task %s (delivery %d)",
                    entry_id,
                    entry.task_id,
                    deliveries,
                )
                taken.append(entry)
        self._dispatch(taken)
        return len(taken)

    def _dead_letter(self, entry: streams.Entry, deliveries: int) -> None:
        reason = (
            f"delivered {deliveries} times without completing "
            f"(limit ORCH_MAX_DELIVERIES={self.settings.max_deliveries}); moved to dead letter"
        )
        failed = lifecycle.fail(entry.task_id, None, reason)
        streams.dead_letter(entry, deliveries, reason)
        log.error("dead-lettered entry %s of task %s", entry.entry_id, entry.task_id)
        metrics.inc("orch_dead_letters", team_id=entry.team_id)
        if failed:
            self._want_pass(entry.team_id)

    # -- executing -------------------------------------------------------------------------

    def _dispatch(self, entries: list[streams.Entry]) -> None:
        """Claim the entries' tasks in one transaction and start the claimed ones."""
        if not entries:
            return
        requests = [
            lifecycle.ClaimRequest(
                e.task_id,
                e.worker_id,
                f"{self.name}/{e.entry_id}/{uuid.uuid4().hex[:8]}",
                e.assignment,
            )
            for e in entries
        ]
        with self._lock:
            for entry, request in zip(entries, requests, strict=True):
                self._inflight[entry.entry_id] = entry
                self._claims[entry.entry_id] = request.token
        try:
            claimed = _retried(lifecycle.claim_many, requests)
        except Exception:
            # Left pending: reclaimed after the visibility timeout.
            log.exception("claims of %d entries not recorded", len(entries))
            self._release(entries)
            return
        stale: list[streams.Entry] = []
        for at, (entry, request, task) in enumerate(zip(entries, requests, claimed, strict=True)):
            if task is None:
                stale.append(entry)
                continue
            try:
                self._pool.submit(self._run, entry, request.token, task)
            except RuntimeError:
                # Stopping, and the reader outlived stop()'s wait for it: these stay pending
                # for another process to reclaim (nothing waits for them here).
                log.warning("stopping: %d claimed entries left for reclaim", len(entries) - at)
                self._release(entries[at:])
                break
        if stale:
            self._settle_stale(stale)

    def _settle_stale(self, entries: list[streams.Entry]) -> None:
        """Entries whose task is no longer theirs to run: acknowledged, nothing else."""
        try:
            streams.ack_many(entries)
        except redis.RedisError as exc:
            log.warning("stale entries not acknowledged: %s", exc)
        for entry in entries:
            if self.monitor:
                self.monitor.finished(self.monitor.started(entry), "stale", 0.0)
            self._count(entry, Run(), "stale", 0.0)
        self._release(entries)

    def _release(self, entries: list[streams.Entry]) -> None:
        with self._lock:
            for entry in entries:
                self._inflight.pop(entry.entry_id, None)
                self._claims.pop(entry.entry_id, None)
        self._slot_freed.set()

    def _run(self, entry: streams.Entry, token: str, claimed: lifecycle.Claimed) -> None:
        with log_context(
            team_id=entry.team_id,
            task_id=entry.task_id,
            worker_id=entry.worker_id,
            entry_id=entry.entry_id,
        ):
            self._run_entry(entry, token, claimed)

    def _run_entry(self, entry: streams.Entry, token: str, claimed: lifecycle.Claimed) -> None:
        uid = self.monitor.started(entry) if self.monitor else None
        began = time.monotonic()
        run = Run(agent_id=claimed.context.agent.agent_id)
        running = _Running(entry, token, claimed.context, claimed.attempts, run, uid, began, began)
        with self._lock:
            self._running[entry.entry_id] = running
        try:
            result = self._handle(entry, token, claimed, run)
            if self._returned(running):
                # Its attempt was ended for it (and recorded, or cancelled): what it brings is
                # stale; the entry is acknowledged (reclaimed and found stale otherwise).
                log.warning(
                    "the agent given up on returned after %.0f s; its result is discarded",
                    time.monotonic() - began,
                )
                with contextlib.suppress(redis.RedisError):
                    streams.ack_many([entry])
                self._release([entry])
                return
            self._ran(time.monotonic() - began)
            if isinstance(result, lifecycle.Completion):
                self._finish_later(_Finishing(entry, result, run, uid, began))
                return
            streams.ack_many([entry])
            self._finished(entry, run, result, uid, began)
        except Exception as exc:
            # Left pending: reclaimed after the visibility timeout.
            self._returned(running)
            log.exception("entry %s of task %s not handled", entry.entry_id, entry.task_id)
            if self.monitor and uid:
                self.monitor.crashed(uid, exc)
        finally:
            with self._lock:
                self._running.pop(entry.entry_id, None)
                if running.replaced and not self._hand_on_spare():
                    # Under the lock: a give-up meanwhile must see the spare free again.
                    self._pool.returned()
                if running.given_up and not running.replaced:
                    self._short -= 1
        self._release([entry])

    def _hand_on_spare(self) -> bool:
        """(Under the lock.) A replaced agent returned: its spare goes to an agent given up
        on with none, if there is one (True), instead of ending."""
        waiting = next((r for r in self._running.values() if r.given_up and not r.replaced), None)
        if waiting is None:
            return False
        waiting.replaced = True
        self._short -= 1
        return True

    def _returned(self, running: _Running) -> bool:
        """Its agent is back: True when the watcher had given up on it."""
        with self._lock:
            running.returned = True
            return running.given_up

    def _give_up(self, running: _Running) -> bool:
        """The watcher ended the attempt of an agent that still runs: a spare thread takes
        its place, and its entry no longer counts as running (nor is it heartbeated). False
        when the agent was back meanwhile: its run finishes (stale) as any run does."""
        with self._lock:
            if running.returned:
                return False
            running.given_up = True
            running.replaced = self._pool.replace()
            self._inflight.pop(running.entry.entry_id, None)
            if not running.replaced:
                self._short += 1
        self._slot_freed.set()
        if running.replaced:
            log.warning("a spare agent thread takes the place of the agent given up on")
        else:
            log.error(
                "every spare agent thread is taken by agents given up on: this process runs "
                "one agent fewer until one returns"
            )
        return True

    def _ran(self, took: float) -> None:
        with self._lock:
            previous = self._typical_run
            self._typical_run = took if previous == float("inf") else 0.8 * previous + 0.2 * took

    def _finished(
        self, entry: streams.Entry, run: Run, result: str, uid: str | None, began: float
    ) -> None:
        took = time.monotonic() - began
        if self.monitor and uid:
            self.monitor.finished(uid, result, took)
        self._count(entry, run, result, took)
        if result in ("completed", "failed", "retrying", "cancelled"):
            self._want_pass(entry.team_id)

    def _count(self, entry: streams.Entry, run: Run, result: str, took: float) -> None:
        labels = {"team_id": entry.team_id, "agent_id": run.agent_id}
        metrics.inc("orch_executions", team_id=entry.team_id, agent_id=run.agent_id, result=result)
        if result != "stale":
            metrics.observe("orch_execution_seconds", took, agent_id=run.agent_id)
        if run.tokens:
            metrics.inc("orch_tokens", run.tokens, **labels)
        if run.cost:
            metrics.inc("orch_cost_usd", float(run.cost), **labels)

    def executor(self) -> Executor:
        if self._executor is not None:
            return self._executor
        from orchestration.agents import get_executor

        return get_executor()

    def reviewer(self) -> Reviewer:
        if self._reviewer is not None:
            return self._reviewer
        from orchestration.agents import get_reviewer

        return get_reviewer()

    def _handle(
        self, entry: streams.Entry, token: str, claimed: lifecycle.Claimed, run: Run
    ) -> str | lifecycle.Completion:
        """Execute (and review) the claimed task: an outcome, or the completion to commit."""
        if claimed.unblock_latency is not None:
            metrics.observe("orch_unblock_latency_seconds", claimed.unblock_latency)
        settings = self.settings
        if claimed.status is TaskStatus.IN_PROGRESS and claimed.attempts > settings.max_attempts:
            log.error("the last worker was lost mid-run, attempts spent; the task fails")
            failed = lifecycle.fail(
                entry.task_id,
                token,
                f"gave up after {claimed.attempts - 1} attempts "
                f"(ORCH_MAX_ATTEMPTS={settings.max_attempts}); the last worker was lost mid-run",
            )
            return "failed" if failed else "stale"  # cancelled since its claim, say
        ctx = claimed.context
        status = claimed.status
        output = claimed.output or {}
        revisions = claimed.revision_count
        while True:
            if status is TaskStatus.IN_PROGRESS:
                self._calling(entry)
                try:
                    result = self.executor().execute(ctx)
                except Exception as exc:
                    if isinstance(exc, ExecutionFailed):
                        run.tokens += exc.tokens
                        run.cost += exc.cost
                    if ctx.cancelled.is_set():
                        return self._stopped()
                    return self._execution_failed(entry, token, claimed.attempts, exc)
                run.tokens += result.tokens
                run.cost += result.cost
                if ctx.cancelled.is_set():
                    return self._stopped()
                if not claimed.has_criteria:
                    return lifecycle.Completion(
                        entry.task_id,
                        token,
                        TaskStatus.IN_PROGRESS,
                        result.output,
                        result.tokens,
                        result.cost,
                    )
                if not lifecycle.submit_for_review(
                    entry.task_id, token, result.output, result.tokens, result.cost
                ):
                    return "stale"
                status, output = TaskStatus.REVIEW, result.output
            self._calling(entry)
            try:
                verdict = self.reviewer().review(ctx, output)
            except Exception as exc:
                # The reviewer works as the manager: what it spent counts there, not here.
                spent = exc if isinstance(exc, ExecutionFailed | AgentError) else None
                if spent is not None:
                    lifecycle.record_manager_usage(entry.team_id, spent.tokens, spent.cost)
                if ctx.cancelled.is_set():
                    return self._stopped()
                failure = ExecutionFailed(f"review failed: {str(exc) or type(exc).__name__}")
                return self._execution_failed(entry, token, claimed.attempts, failure)
            run.tokens += verdict.tokens
            run.cost += verdict.cost
            lifecycle.record_manager_usage(entry.team_id, verdict.tokens, verdict.cost)
            if verdict.accepted:
                return lifecycle.Completion(entry.task_id, token, TaskStatus.REVIEW, None)
            if revisions + 1 > claimed.max_revisions:
                log.error(
                    "rejected by the reviewer after %d revision(s); the task fails: %s",
                    revisions,
                    verdict.feedback,
                )
                failed = lifecycle.fail(
                    entry.task_id,
                    token,
                    f"rejected by the reviewer after {revisions} revision(s) "
                    f"(max_revisions={claimed.max_revisions}): {verdict.feedback}",
                )
                return "failed" if failed else "stale"
            revision = lifecycle.send_back(entry.task_id, token, verdict.feedback)
            if revision is None:
                return "stale"
            revisions = revision
            ctx = replace(ctx, revision=revision, feedback=verdict.feedback)
            status = TaskStatus.IN_PROGRESS

    def _calling(self, entry: streams.Entry) -> None:
        """An execution or a review begins: ORCH_RUN_TIMEOUT counts from now."""
        with self._lock:
            running = self._running.get(entry.entry_id)
            if running is not None:
                running.call_began = time.monotonic()

    def _stopped(self) -> str:
        log.info("run stopped: the task was cancelled or taken over while it ran")
        return "stale"

    def _execution_failed(
        self, entry: streams.Entry, token: str, attempts: int, exc: Exception
    ) -> str:
        message = str(exc) or type(exc).__name__
        tokens = exc.tokens if isinstance(exc, ExecutionFailed) else 0
        cost = exc.cost if isinstance(exc, ExecutionFailed) else Decimal(0)
        # The task's error_message keeps it too; the log is where an operator looks first.
        limit = self.settings.max_attempts
        final = isinstance(exc, ExecutionFailed) and not exc.retryable
        if attempts < limit and not final:
            backoff = self.settings.retry_backoff * (2 ** (attempts - 1))
            log.warning(
                "execution failed (attempt %d of %d): %s; retrying in %g s",
                attempts,
                limit,
                message,
                backoff,
            )
            if lifecycle.retry_later(entry.task_id, token, message, backoff, tokens, cost):
                orchestrator.request_pass(entry.team_id, countdown=backoff)
                return "retrying"
            return "stale"
        spent = f"{attempts} attempt(s)" + (", not retried" if attempts < limit else "")
        log.error(
            "execution failed (attempt %d of %d): %s; the task fails%s",
            attempts,
            limit,
            message,
            " (another attempt would end the same way)" if attempts < limit else "",
        )
        failed = lifecycle.fail(
            entry.task_id, token, f"failed after {spent}: {message}", tokens, cost
        )
        return "failed" if failed else "stale"

    # -- completions -----------------------------------------------------------------------

    def _finish_later(self, item: _Finishing) -> None:
        with self._lock:
            self._finishing.append(item)
            self._waiting += 1
        self._finish_wanted.set()
        self._slot_freed.set()

    def _finish_loop(self) -> None:
        failures = 0
        while not self._stop.is_set():
            if not self._finish_wanted.wait(0.5):
                continue
            self._finish_wanted.clear()
            if self._finish_pending():
                failures = 0
            else:
                failures += 1
                self._stop.wait(min(FINISH_BACKOFF_MAX, 0.1 * 2**failures))

    def _finish_pending(self) -> bool:
        """Commit every outcome waiting (one transaction), then acknowledge their entries.
        False when the database could not be reached: the outcomes stay held, first in line
        for the next try, and their entries stay claimed (a run that succeeded is not thrown
        away, to run again and spend an attempt, because of a short outage)."""
        with self._lock:
            batch, self._finishing = self._finishing, []
        if not batch:
            return True
        return self._commit_outcomes(batch)

    def _commit_outcomes(self, batch: list[_Finishing]) -> bool:
        entries = [item.entry for item in batch]

        def complete(completions: list[lifecycle.Completion]) -> set[uuid.UUID]:
            # Acknowledged in the round trip that publishes the events, after the commit.
            return lifecycle.complete_many(
                completions, also=lambda pipe: streams.queue_ack(pipe, entries)
            )

        try:
            done = _retried(complete, [item.completion for item in batch])
        except OperationalError as exc:
            log.warning(
                "outcomes of %d entries not committed yet (%s); held, to try again",
                len(batch),
                exc.orig,
            )
            with self._lock:
                self._finishing[:0] = batch
            self._finish_wanted.set()
            return False
        except Exception as exc:
            if len(batch) > 1:
                # One outcome the database refuses must not take the others down: each alone.
                log.warning("outcomes of %d entries not committed together (%s)", len(batch), exc)
                for at, item in enumerate(batch):
                    if not self._commit_outcomes([item]):
                        with self._lock:
                            self._finishing[:0] = batch[at + 1 :]
                        return False
                return True
            [item] = batch
            if isinstance(exc, DataError) and lifecycle.fail(
                item.entry.task_id,
                item.completion.token,
                f"its result could not be stored: {exc.orig}",
            ):
                # Running it again would spend another attempt to end the same way.
                log.error("result of task %s not storable: %s", item.entry.task_id, exc.orig)
                streams.ack_many([item.entry])
                self._finished(item.entry, item.run, "failed", item.uid, item.began)
            else:
                # Left pending: reclaimed after the visibility timeout, and run again.
                log.exception("outcome of task %s not committed", item.entry.task_id)
                if self.monitor and item.uid:
                    self.monitor.crashed(item.uid, exc)
            self._forget(batch)
            return True
        for item in batch:
            result = "completed" if item.entry.task_id in done else "stale"
            with log_context(team_id=item.entry.team_id, task_id=item.entry.task_id):
                self._finished(item.entry, item.run, result, item.uid, item.began)
        self._forget(batch)
        return True

    def _forget(self, batch: list[_Finishing]) -> None:
        with self._lock:
            self._waiting -= len(batch)
            for item in batch:
                self._inflight.pop(item.entry.entry_id, None)
                self._claims.pop(item.entry.entry_id, None)
        self._slot_freed.set()

    # -- passes ----------------------------------------------------------------------------

    def _want_pass(self, team_id: uuid.UUID) -> None:
        """Ask this process's pass thread for a pass of the team: completions that land while
        it runs one make a single next pass, instead of one pass each."""
        with self._lock:
            self._pass_teams.add(team_id)
        self._pass_wanted.set()

    def _pass_loop(self) -> None:
        while not self._stop.is_set():
            if not self._pass_wanted.wait(0.5):
                continue
            self._pass_wanted.clear()
            with self._lock:
                teams, self._pass_teams = self._pass_teams, set()
            for team_id in teams:
                try:
                    orchestrator.run_pass(team_id)
                except Exception:
                    # Beat's next pass (or the next completion) assigns what this one did not.
                    log.exception("pass for team %s failed", team_id)

    # -- decompositions --------------------------------------------------------------------

    def _planning_loop(self) -> None:
        """Plan the decompositions queued by POST .../decompositions, one at a time on each of
        ORCH_PLANNING_CONCURRENCY threads (the manager's planner, e.g. an LLM call: agent
        capacity and the Celery pool are not taken). The doorbell wakes it; a look every
        PLANNING_POLL seconds finds what a lost ring or a lapsed lease left."""
        doorbell = streams.Doorbell(streams.PLANNING_STREAM)
        repeated = _Repeats()
        while not self._stop_reading.is_set():
            try:
                claimed = planning.claim_next(self.name)
                repeated.clear()
                if claimed is not None:
                    self._plan(claimed)
            except Exception as exc:
                # A schema behind the code is the stream reader's to say (once).
                if migration_needed(exc) is None and repeated.due(exc):
                    log.warning("planning: %s; retrying", exc)
                self._stop_reading.wait(PLANNING_POLL)
                continue
            if claimed is not None:
                continue
            # Listened to a second at a time, so that a stopping process is not held.
            look_again = time.monotonic() + PLANNING_POLL
            while not self._stop_reading.is_set() and time.monotonic() < look_again:
                try:
                    if doorbell.wait(min(1.0, look_again - time.monotonic())):
                        break
                except Exception:  # Redis away (or its client reset): the look finds the work
                    self._stop_reading.wait(1.0)

    def _plan(self, claimed: planning.Claimed) -> None:
        uid = (
            self.monitor.planning(claimed.team_id, claimed.id, claimed.attempt)
            if self.monitor
            else None
        )
        began = time.monotonic()
        try:
            result = planning.plan(claimed, self._stop_reading)
        except Exception as exc:
            if self.monitor and uid:
                self.monitor.crashed(uid, exc)
            raise
        took = time.monotonic() - began
        if self.monitor and uid:
            self.monitor.finished(uid, result, took)
        metrics.inc("orch_plannings", team_id=claimed.team_id, result=result)
        metrics.observe("orch_planning_seconds", took)

    # -- cancellations ---------------------------------------------------------------------

    def _cancel_loop(self) -> None:
        # Every running task is checked each CANCEL_POLL; one named by the cancellation
        # doorbell is checked as soon as it rings (the database decides, not the ring).
        doorbell = streams.Doorbell(streams.CANCEL_STREAM)
        next_check = time.monotonic() + CANCEL_POLL
        while not self._stop.is_set():
            heard: set[str] = set()
            try:
                for ring in doorbell.wait(max(0.0, next_check - time.monotonic())):
                    heard.update(ring.get("tasks", "").split(","))
            except redis.RedisError:
                self._stop.wait(max(0.0, next_check - time.monotonic()))
            due = time.monotonic() >= next_check
            if due:
                next_check = time.monotonic() + CANCEL_POLL
                self._time_limits()
            with self._lock:
                running = [
                    (r.context, self._claims[entry_id])
                    for entry_id, r in self._running.items()
                    if entry_id in self._claims
                    and not r.context.cancelled.is_set()
                    and (due or str(r.context.task_id) in heard)
                ]
            if not running:
                continue
            try:
                lost = lifecycle.lost_claims([(c.task_id, claim) for c, claim in running])
            except Exception as exc:
                log.warning("cancellations not checked: %s", exc)
                continue
            for context, _ in running:
                if context.task_id in lost:
                    with log_context(team_id=context.team_id, task_id=context.task_id):
                        log.info("the task is no longer this run's: asking its agent to stop")
                    context.cancelled.set()

    def _time_limits(self) -> None:
        """End the attempt of each run whose execution or review has outlived ORCH_RUN_TIMEOUT:
        a failed attempt like any other (retried with backoff, or the task fails), its agent
        asked to stop. Whatever the agent returns later is stale. Python cannot stop a thread:
        a spare one takes its place (_give_up), up to as many as the agent threads."""
        limit = self.settings.run_timeout
        if limit <= 0:
            return
        now = time.monotonic()
        with self._lock:
            overdue = [
                r
                for r in self._running.values()
                if r.timed_out is None and now - r.call_began > limit
            ]
            stuck = [
                r
                for r in self._running.values()
                if r.timed_out is not None and not r.warned and now - r.timed_out > limit
            ]
            for r in stuck:
                r.warned = True
        for r in stuck:
            with log_context(team_id=r.entry.team_id, task_id=r.entry.task_id):
                log.error(
                    "the agent given up on is still running %.0f s after its time limit (%s)",
                    now - r.call_began,
                    "a spare thread has its place"
                    if r.replaced
                    else "this process has one agent thread fewer until it returns",
                )
        for r in overdue:
            with log_context(
                team_id=r.entry.team_id, task_id=r.entry.task_id, entry_id=r.entry.entry_id
            ):
                failure = ExecutionFailed(f"timed out after {limit:g} s (ORCH_RUN_TIMEOUT)")
                try:
                    result = self._execution_failed(r.entry, r.token, r.attempts, failure)
                except Exception as exc:
                    log.warning("time limit not recorded (%s); trying again", exc)
                    continue
                r.timed_out = time.monotonic()
                r.context.cancelled.set()
                if not self._give_up(r):
                    continue  # its agent was back meanwhile: the run records its (stale) end
                if result == "stale":
                    # A cancel (or its outcome) got there first.
                    self._finished(r.entry, r.run, "stale", r.uid, r.began)
                    continue
                with self._lock:
                    self._claims.pop(r.entry.entry_id, None)
                try:
                    streams.ack_many([r.entry])
                except redis.RedisError as exc:
                    # Reclaimed later, found stale and acknowledged then.
                    log.warning("timed-out entry not acknowledged: %s", exc)
                self._finished(r.entry, r.run, result, r.uid, r.began)

    # -- heartbeat -------------------------------------------------------------------------

    def _heartbeat_loop(self) -> None:
        interval = max(0.2, self.settings.visibility_timeout / 3)
        while not self._stop.wait(interval):
            with self._lock:
                running = list(self._inflight.values())
                claims = [
                    (entry.task_id, self._claims[entry.entry_id])
                    for entry in running
                    if entry.entry_id in self._claims
                ]
            if not running:
                continue
            try:
                lifecycle.touch(claims)
            except Exception as exc:
                log.warning("heartbeat not recorded in the database: %s", exc)
            try:
                r = get_redis()
                if self._heartbeat_script is None:
                    self._heartbeat_script = r.register_script(_HEARTBEAT)
                for entry in running:
                    self._heartbeat_script(
                        keys=[keys.task_stream(entry.team_id)],
                        args=[keys.consumer_group(entry.team_id), self.name, entry.entry_id],
                    )
            except redis.RedisError as exc:
                log.warning("heartbeat failed: %s", exc)
                self._heartbeat_script = None
