"""The coalescer answers each caller with its own result, batches what waits, keeps to its
slots per key, and never lets one key wait for another."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest

from orchestration.coalesce import Coalescer

JOIN = 10.0


class Recorder:
    """A batch function: results are item * 10; records batches and concurrency per key, and
    can be held (gate) so that callers pile up behind it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.batches: list[tuple[str, list[int]]] = []
        self.running: dict[str, int] = {}
        self.most_at_once: dict[str, int] = {}
        self.gates: dict[str, threading.Event] = {}
        self.entered = threading.Semaphore(0)

    def __call__(self, key: str, items: list[int]) -> list[int]:
        with self.lock:
            self.batches.append((key, list(items)))
            self.running[key] = self.running.get(key, 0) + 1
            self.most_at_once[key] = max(self.most_at_once.get(key, 0), self.running[key])
        self.entered.release()
        gate = self.gates.get(key)
        if gate is not None:
            assert gate.wait(JOIN)
        with self.lock:
            self.running[key] -= 1
        if -1 in items:
            raise ValueError("refused")
        return [i * 10 for i in items]


def in_threads(calls: list[Callable[[], Any]]) -> tuple[list[threading.Thread], list[Any]]:
    """Each call in a thread of its own; outcomes[i] is what calls[i] returned or raised."""
    outcomes: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        try:
            outcomes[i] = calls[i]()
        except Exception as exc:  # the test reads it
            outcomes[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    return threads, outcomes


def joined(threads: list[threading.Thread]) -> None:
    for t in threads:
        t.join(JOIN)
        assert not t.is_alive(), "a caller never returned"


def until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + JOIN
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.005)


def behind_a_held_batch(
    coalescer: Coalescer[str, int, int], run: Recorder, first: int, later: list[int]
) -> tuple[list[threading.Thread], list[Any], list[threading.Thread], list[Any]]:
    """submit("a", first) runs and is held at its gate; submit("a", n) for each n in later
    then waits behind it. The caller opens run.gates["a"] and joins the threads."""
    run.gates["a"] = threading.Event()
    held, held_out = in_threads([partial(coalescer.submit, "a", first)])
    assert run.entered.acquire(timeout=JOIN)
    waiting, waiting_out = in_threads([partial(coalescer.submit, "a", n) for n in later])
    until(lambda: len(coalescer._waiting.get("a", ())) == len(later))
    return held, held_out, waiting, waiting_out


def test_a_lone_call_runs_at_once_as_a_batch_of_one() -> None:
    run = Recorder()
    coalescer = Coalescer(run, slots=2, most=100)
    assert coalescer.submit("a", 4) == 40
    assert coalescer.submit("a", 5) == 50
    assert run.batches == [("a", [4]), ("a", [5])]


def test_calls_that_wait_go_together_and_each_gets_its_own_result() -> None:
    run = Recorder()
    coalescer = Coalescer(run, slots=1, most=100)
    first, first_out, later, later_out = behind_a_held_batch(coalescer, run, 1, [*range(2, 9)])
    run.gates["a"].set()
    joined(first + later)
    assert first_out == [10]
    assert later_out == [n * 10 for n in range(2, 9)]
    assert run.batches == [("a", [1]), ("a", list(range(2, 9)))]
    assert not coalescer._held and not coalescer._waiting


def test_a_batch_takes_at_most_most_items() -> None:
    run = Recorder()
    coalescer = Coalescer(run, slots=1, most=3)
    first, _, later, later_out = behind_a_held_batch(coalescer, run, 0, [*range(1, 8)])
    run.gates["a"].set()
    joined(first + later)
    assert later_out == [n * 10 for n in range(1, 8)]
    assert sorted(len(items) for _, items in run.batches) == [1, 1, 3, 3]


@pytest.mark.parametrize("slots", [1, 2, 3])
def test_no_more_runs_at_once_for_a_key_than_its_slots(slots: int) -> None:
    run = Recorder()
    coalescer = Coalescer(run, slots=slots, most=100)
    run.gates["a"] = threading.Event()
    threads, outcomes = in_threads([partial(coalescer.submit, "a", n) for n in range(40)])
    for _ in range(slots):
        assert run.entered.acquire(timeout=JOIN)
    until(
        lambda: (
            sum(len(w) for w in coalescer._waiting.values())
            + sum(len(items) for _, items in run.batches)
            == 40
        )
    )
    run.gates["a"].set()
    joined(threads)
    assert outcomes == [n * 10 for n in range(40)]
    assert run.most_at_once["a"] == slots
    assert sorted(i for _, items in run.batches for i in items) == list(range(40))


def test_one_key_never_waits_for_another() -> None:
    run = Recorder()
    run.gates["slow"] = threading.Event()
    coalescer = Coalescer(run, slots=1, most=100)
    slow, slow_out = in_threads([lambda: coalescer.submit("slow", 1)])
    assert run.entered.acquire(timeout=JOIN)
    assert coalescer.submit("fast", 2) == 20
    run.gates["slow"].set()
    joined(slow)
    assert slow_out == [10]


def test_a_failed_batch_fails_each_of_its_callers_and_the_next_runs() -> None:
    run = Recorder()
    coalescer = Coalescer(run, slots=1, most=100)
    first, first_out, later, later_out = behind_a_held_batch(coalescer, run, 1, [-1, 2, 3])
    run.gates["a"].set()
    joined(first + later)
    assert first_out == [10]
    assert all(isinstance(o, ValueError) for o in later_out)
    assert coalescer.submit("a", 4) == 40
    assert not coalescer._held


def test_many_callers_at_once_each_get_their_own_answer() -> None:
    run = Recorder()
    coalescer = Coalescer(run, slots=2, most=5)
    keys = ["a", "b"]

    def caller(c: int) -> list[int]:
        return [coalescer.submit(keys[c % 2], c * 1000 + n) for n in range(300)]

    threads, outcomes = in_threads([partial(caller, c) for c in range(8)])
    joined(threads)
    for c in range(8):
        assert outcomes[c] == [(c * 1000 + n) * 10 for n in range(300)]
    assert max(run.most_at_once.values()) <= 2
    assert all(len(items) <= 5 for _, items in run.batches)
    assert sum(len(items) for _, items in run.batches) == 8 * 300
    assert not coalescer._held and not coalescer._waiting


def test_after_a_shared_batch_the_next_waits_for_as_many_callers_within_gather() -> None:
    run = Recorder()
    coalescer = Coalescer(run, slots=1, most=100, gather=30.0)
    first, _, shared, _ = behind_a_held_batch(coalescer, run, 0, [1, 2, 3])
    run.gates["a"].set()
    joined(first + shared)
    assert run.batches == [("a", [0]), ("a", [1, 2, 3])]
    # Three callers again, one after the other: the first waits for the other two.
    again = []
    for n in (4, 5, 6):
        threads, outcomes = in_threads([partial(coalescer.submit, "a", n)])
        again.append((threads, outcomes))
        time.sleep(0.05)
    for threads, _ in again:
        joined(threads)
    assert [o for _, outcomes in again for o in outcomes] == [40, 50, 60]
    assert run.batches[2:] == [("a", [4, 5, 6])]


def test_a_lone_caller_never_waits_to_gather() -> None:
    run = Recorder()
    coalescer = Coalescer(run, slots=1, most=100, gather=30.0)
    started = time.monotonic()
    assert [coalescer.submit("a", n) for n in range(5)] == [0, 10, 20, 30, 40]
    assert time.monotonic() - started < 15  # far below one gather window
    assert run.batches == [("a", [n]) for n in range(5)]
