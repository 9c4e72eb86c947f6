"""The one "made ahead by a filler thread" pool (sandbox/pool.py) that namespaces and warm
containers share: what it promises its two users, on a pool of plain numbers.

A subclass that makes numbers is a third real user of the class, not a mock: the filler thread,
the lock and the waits are the ones the netns and warm pools run on.
"""

from __future__ import annotations

import itertools
import threading

from sandbox.pool import MadeAheadPool
from weldr_agent import runner


class Numbers(MadeAheadPool[int]):
    thread_name = "test-numbers"
    what = "a number"
    retry_seconds = 0.05

    def __init__(self, size: int, *, failures: int = 0, gate: threading.Event | None = None,
                 hold: float | None = 0.0) -> None:
        super().__init__()
        self._size = size
        self._count = itertools.count(1)
        self.failures = failures
        self.gate = gate
        self.hold_for = hold
        self.made: list[int] = []
        self.discarded: list[int] = []
        self.making = threading.Event()  # set when a make has begun

    @property
    def size(self) -> int:
        return self._size

    def _make(self) -> int:
        self.making.set()
        if self.gate is not None:
            self.gate.wait(10)
        if self.failures:
            self.failures -= 1
            raise OSError("the machine said no")
        number = next(self._count)
        self.made.append(number)
        return number

    def _discard(self, item: int) -> None:
        self.discarded.append(item)

    def _hold(self) -> float | None:
        return self.hold_for


def test_the_filler_keeps_size_ready_and_replaces_what_is_taken() -> None:
    pool = Numbers(2)
    pool._filler_start()
    try:
        assert runner.wait_until(lambda: pool.ready_count() == 2, timeout=10)
        assert pool.made == [1, 2]  # and no more: a full pool waits

        assert pool._pop() == 1  # oldest first

        assert runner.wait_until(lambda: pool.ready_count() == 2, timeout=10)
        assert pool.made == [1, 2, 3]
    finally:
        pool._close(join=10)


def test_a_failed_make_is_retried_and_the_filler_lives_on() -> None:
    pool = Numbers(1, failures=3)
    pool._filler_start()
    try:
        assert runner.wait_until(lambda: pool.ready_count() == 1, timeout=10)
        assert pool.made == [1]
    finally:
        pool._close(join=10)


def test_a_hold_keeps_the_filler_back_until_it_lifts() -> None:
    # given a pool whose subclass says "not now" (as the warm pool does after a start)
    pool = Numbers(1, hold=None)
    pool._filler_start()
    try:
        assert not runner.wait_until(lambda: pool.made, timeout=0.3)
        # when the hold lifts and the filler is woken
        with pool._lock:
            pool.hold_for = 0.0
            pool._lock.notify_all()
        # then it makes one
        assert runner.wait_until(lambda: pool.ready_count() == 1, timeout=10)
    finally:
        pool._close(join=10)


def test_closing_hands_back_the_ready_and_discards_the_one_being_made() -> None:
    # given a pool with one ready and the filler in the middle of making the next
    gate = threading.Event()
    pool = Numbers(2)
    pool._filler_start()
    assert runner.wait_until(lambda: pool.ready_count() == 2, timeout=10)
    pool.gate = gate
    pool.making.clear()
    taken = pool._pop()
    assert taken is not None
    assert runner.wait_until(lambda: pool.ready_count() == 1 and len(pool.made) == 2, timeout=10)
    # (the filler woken by the take is inside the make, not about to start it: a close before
    # it got there would rightly make nothing)
    assert pool.making.wait(10)

    # when it is closed while the make is under way
    closer = threading.Thread(target=lambda: handed.extend(pool._close(join=10)))
    handed: list[int] = []
    closer.start()
    assert runner.wait_until(lambda: pool._closed, timeout=10)
    gate.set()
    closer.join(10)

    # then the ready one is handed back, the one made after the close is discarded (nothing
    # outlives the pool), and nothing is left ready
    assert handed == [2]
    assert pool.discarded == [3]
    assert pool.ready_count() == 0
    assert pool._pop() is None
