"""One pool of things made ahead of the start that needs one, by a filler thread.

Two things a sandbox's start waits for are slow to make and can be made before anyone asks: a
network namespace with its veth link (network.NetnsPool) and a created, not yet started
container (`runc run`, ~50 ms: warm.WarmPool). Both keep up to `size` ready, made one at a
time by a background thread and taken by a start; a size that falls (warm.WarmPool's after a
burst) has the filler discard what is beyond it. At shutdown both stop the thread (a thing
being made must not outlive the pool) and discard what is ready. That mechanism is this class;
what a thing is, how it is made and thrown away, and when the filler holds back, is theirs.
"""

from __future__ import annotations

import logging
import threading
from typing import ClassVar, Generic, TypeVar

logger = logging.getLogger("weldr.sandbox")

T = TypeVar("T")


class MadeAheadPool(Generic[T]):
    """Up to `size` things made ahead by one filler thread; subclasses say what a thing is."""

    # The filler's thread name, what the log calls a thing, and how long the filler waits after
    # a failed make (a broken machine must not spin it).
    thread_name: ClassVar[str] = "made-ahead"
    what: ClassVar[str] = "a pooled thing"
    retry_seconds: ClassVar[float] = 1.0

    def __init__(self) -> None:
        # One lock for the pool and the subclass's own bookkeeping (a Condition's lock is
        # reentrant: a subclass may call _pop while holding it).
        self._lock = threading.Condition()
        self._ready: list[T] = []
        self._closed = False
        self._filler: threading.Thread | None = None

    # -- what a subclass says ------------------------------------------------------------------

    @property
    def size(self) -> int:
        """How many to keep ready."""
        raise NotImplementedError

    def _make(self) -> T:
        """Make one (called without the lock); clean up after itself and raise on failure."""
        raise NotImplementedError

    def _discard(self, item: T) -> None:
        """Throw away one that will not be used (called without the lock)."""
        raise NotImplementedError

    def _hold(self) -> float | None:
        """With the lock held and fewer than `size` ready: seconds to wait before making the
        next one (0 or less: make it now; None: until notified)."""
        return 0.0

    def _made(self, item: T) -> None:
        """With the lock held, as soon as a make returned (kept or, after a close, discarded)."""

    def _full_wait(self) -> float | None:
        """With the lock held and `size` ready: seconds until `size` may shrink (None: until
        notified). A pool whose size falls discards what it holds beyond it."""
        return None

    # -- the mechanism -------------------------------------------------------------------------

    def _filler_start(self) -> None:
        thread = threading.Thread(target=self._fill, name=self.thread_name, daemon=True)
        with self._lock:
            self._filler = thread
        thread.start()

    def _fill(self) -> None:
        while True:
            surplus: T | None = None
            with self._lock:
                while not self._closed:
                    if len(self._ready) > self.size:
                        # The newest goes first: the oldest have waited longest to be used.
                        surplus = self._ready.pop()
                        break
                    if len(self._ready) >= self.size:
                        wait = self._full_wait()
                        wait = None if wait is None else max(wait, 0.01)
                    else:
                        wait = self._hold()
                        if wait is not None and wait <= 0:
                            break
                    self._lock.wait(wait)
                if self._closed and surplus is None:
                    return
            if surplus is not None:
                self._discard(surplus)
                continue
            try:
                item = self._make()
            except Exception:
                logger.exception("could not make %s", self.what)
                with self._lock:
                    self._lock.wait_for(lambda: self._closed, timeout=self.retry_seconds)
                continue
            with self._lock:
                self._made(item)
                closed = self._closed
                if not closed:
                    self._ready.append(item)
                    self._lock.notify_all()
            if closed:
                self._discard(item)
                return

    def _pop(self) -> T | None:
        """The oldest ready thing, or None; the filler is woken to replace it."""
        with self._lock:
            if not self._ready:
                return None
            item = self._ready.pop(0)
            self._lock.notify_all()
            return item

    def _close(self, *, join: float) -> list[T]:
        """Stop the filler (waiting up to `join` seconds for a thing it is making) and hand
        back the ready ones for the caller to discard."""
        with self._lock:
            self._closed = True
            ready, self._ready = self._ready, []
            self._lock.notify_all()
            filler, self._filler = self._filler, None
        if filler is not None and filler is not threading.current_thread():
            filler.join(join)
        return ready

    def ready_count(self) -> int:
        with self._lock:
            return len(self._ready)
