"""Concurrent calls of one process answered by shared calls of a batch function (group commit).

Calls carry a key (a team); each key has a few slots. A call that finds one of its key's
slots free runs at once, as a batch of its key's calls waiting then; calls that arrive while
every slot of their key is busy wait, and the next batch takes all of them. A lone caller
waits for nobody, one key never waits for another, and under load one round trip and one
commit serve many callers. No I/O of its own; no framework."""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections import defaultdict
from collections.abc import Callable, Hashable, Sequence
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")
R = TypeVar("R")


class _Call(Generic[T, R]):
    __slots__ = ("answered", "error", "item", "lead", "result", "wake")

    def __init__(self, item: T, lock: threading.Lock) -> None:
        self.item = item
        self.wake = threading.Condition(lock)
        self.lead = False  # this call's thread holds one of its key's slots
        self.answered = False
        self.result: R | None = None
        self.error: BaseException | None = None


class Coalescer(Generic[K, T, R]):
    """`submit(key, item)` returns what `run(key, items)` gave for item, from a call of `run`
    that may carry other threads' items of the same key: `run` returns one result per item, in
    order, or raises for all of them. At most `slots` calls of `run` at once for a key, each
    with at most `most` items. A batch that follows one of n > 1 items within `gather` seconds
    waits out the rest of that time for n callers; a key whose last batch had one never waits."""

    def __init__(
        self,
        run: Callable[[K, list[T]], Sequence[R]],
        *,
        slots: int,
        most: int,
        gather: float = 0.0,
    ) -> None:
        self._run = run
        self._slots = slots
        self._most = most
        self._gather = gather
        self._reset()
        ref = weakref.ref(self)

        def reset_in_child() -> None:
            # A forked child has none of its parent's threads: nothing waits, nothing runs.
            coalescer = ref()
            if coalescer is not None:
                coalescer._reset()

        os.register_at_fork(after_in_child=reset_in_child)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._waiting: defaultdict[K, list[_Call[T, R]]] = defaultdict(list)
        self._held: defaultdict[K, int] = defaultdict(int)
        self._last: dict[K, tuple[int, float]] = {}
        self._gathering: dict[K, _Call[T, R]] = {}

    def submit(self, key: K, item: T) -> R:
        call: _Call[T, R] = _Call(item, self._lock)
        with call.wake:
            self._waiting[key].append(call)
            gathering = self._gathering.get(key)
            if gathering is not None and len(self._waiting[key]) >= self._last[key][0]:
                gathering.wake.notify()
            if self._held[key] < self._slots:
                self._held[key] += 1
                call.lead = True
            while not (call.lead or call.answered):
                call.wake.wait()
        if call.lead:
            self._serve(key, call)
        if call.error is not None:
            raise call.error
        return call.result  # type: ignore[return-value]

    def _serve(self, key: K, own: _Call[T, R]) -> None:
        """Run batches of key on the slot this thread holds until its own call is answered (by
        this thread or another), then pass the slot to a waiting call, or free it."""
        while True:
            with self._lock:
                last = self._last.get(key)
                if last is not None and last[0] > 1 and not own.answered:
                    # Callers of the key's last batch, answered a moment ago, are likely to call
                    # again: wait up to `gather` after it for as many as it had (commit_delay).
                    left = self._gather - (time.monotonic() - last[1])
                    if (
                        left > 0
                        and len(self._waiting[key]) < last[0]
                        and key not in self._gathering  # the other slot gathers for both
                    ):
                        self._gathering[key] = own
                        own.wake.wait(left)
                        del self._gathering[key]
                waiting = self._waiting[key]
                if own.answered or not waiting:
                    self._pass_slot(key)
                    break
                batch, self._waiting[key] = waiting[: self._most], waiting[self._most :]
            self._answer(key, batch)
        with own.wake:
            while not own.answered:
                own.wake.wait()

    def _pass_slot(self, key: K) -> None:
        waiting = self._waiting[key]
        for call in waiting:
            if not call.lead:
                call.lead = True
                call.wake.notify()
                return
        self._held[key] -= 1
        if not self._held[key]:
            del self._held[key]
        if not waiting:
            del self._waiting[key]

    def _answer(self, key: K, batch: list[_Call[T, R]]) -> None:
        results: Sequence[R] = ()
        error: BaseException | None = None
        try:
            results = self._run(key, [c.item for c in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{len(results)} results for {len(batch)} items")
        except BaseException as exc:  # every caller of the batch gets it, whatever it is
            error = exc
        with self._lock:
            now = time.monotonic()
            self._last[key] = (len(batch), now)
            if len(self._last) > 1024:  # keys that have gone quiet: their moment has passed
                self._last = {k: v for k, v in self._last.items() if now - v[1] < self._gather}
            for n, call in enumerate(batch):
                if error is None:
                    call.result = results[n]
                else:
                    call.error = error
                call.answered = True
                call.wake.notify()
