"""The one "made ahead by a filler thread" pool (sandbox/pool.py) that namespaces and warm
containers share: what it promises its two users, on a pool of plain numbers.

A subclass that makes numbers is a third real user of the class, not a mock: the filler thread,
the lock and the waits are the ones the netns and warm pools run on.
"""

from __future__ import annotations

import itertools
import threading
import time

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
        # Set when the filler enters a make.
        self.making = threading.Event()
        # From this monotonic time on, the size is 1 (as a warm pool's after its burst).
        self.shrink_at: float | None = None

    @property
    def size(self) -> int:
        if self.shrink_at is not None and time.monotonic() >= self.shrink_at:
            return 1
        return self._size

    def _full_wait(self) -> float | None:
        return None if self.shrink_at is None else self.shrink_at - time.monotonic()

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
    # The filler is inside the make (not merely about to wake: a close before it wakes makes
    # nothing, which this test is not about).
    assert pool.making.wait(10)
    assert runner.wait_until(lambda: pool.ready_count() == 1 and len(pool.made) == 2, timeout=10)

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


def test_a_size_that_falls_has_the_filler_discard_the_newest_beyond_it() -> None:
    # given a full pool of three whose size falls to one a moment later, unannounced
    pool = Numbers(3)
    pool._filler_start()
    try:
        assert runner.wait_until(lambda: pool.ready_count() == 3, timeout=10)
        pool.shrink_at = time.monotonic() + 0.2
        with pool._lock:
            pool._lock.notify_all()  # the filler now waits for the shrink time, not forever
        # then: the filler wakes by itself and discards the two newest, keeping the oldest
        assert runner.wait_until(lambda: pool.ready_count() == 1, timeout=10)
        assert runner.wait_until(lambda: sorted(pool.discarded) == [2, 3], timeout=10)
        assert pool._pop() == 1
        # and it refills to the new size, not the old one
        assert runner.wait_until(lambda: pool.ready_count() == 1, timeout=10)
        assert not runner.wait_until(lambda: pool.ready_count() > 1, timeout=0.3)
    finally:
        pool._close(join=10)


def test_a_namespace_given_back_as_the_agent_stops_is_emptied_before_the_firewall_goes(
        monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The netns pool's shutdown waits for the namespaces given back just before it: emptying a
    slot's egress chain after the firewall is gone made the chain anew (iptables-restore
    declares it), and it outlived the agent (a `WELDR-<instance>-S0` chain left by a suite run).
    What the pool does is recorded in order; its threads, lock and waits are the real ones."""
    from sandbox import network

    order: list[tuple] = []
    emptying, closed = threading.Event(), threading.Event()

    def detach(*, slot: int, interface: str) -> None:
        emptying.set()
        closed.wait(10)  # the shutdown has begun: the pool is closed
        time.sleep(0.2)  # and has gone as far as it goes without waiting for this
        order.append(("chain emptied", slot))

    monkeypatch.setattr(network.egress, "sandbox_detach", detach)
    monkeypatch.setattr(network, "_netns_delete", lambda ns: order.append(("deleted", ns.slot)))
    monkeypatch.setattr(network, "firewall_down", lambda: order.append(("firewall down",)))
    monkeypatch.setattr(network.NetnsPool, "reset", lambda self, everything=False: None)
    pool = network.NetnsPool(size=0)
    close = pool._close

    def close_then_tell(*, join: float) -> list:
        ready = close(join=join)
        closed.set()
        return ready

    monkeypatch.setattr(pool, "_close", close_then_tell)

    # given a namespace given back, its chain being emptied
    pool.release(network.netns_for(7))
    assert emptying.wait(10)
    # when the agent stops
    pool.shutdown()
    runner.wait_until(lambda: ("deleted", 7) in order, timeout=10)

    # then the chain was emptied (and the namespace deleted) before the firewall went
    assert order == [("chain emptied", 7), ("deleted", 7), ("firewall down",)]
