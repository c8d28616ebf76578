"""The state of the embedded change hub: a bounded, numbered log of recent events.

Each incarnation of a log has a random ``epoch``; events are numbered 1, 2, 3, ... within
it. A subscriber remembers the epoch and the last sequence number it saw and asks for what
came after. The answer is either every newer event, in order, or ``reset=True`` when the
log cannot give them: the epoch differs (the hub restarted and lost its memory, or this is
the subscriber's first question) or the subscriber fell so far behind that the events it
missed have left the ring. A subscriber that is told ``reset`` must assume it missed
anything, and continues from ``latest_seq``.

No Ray and no I/O here: the Ray shell (``actors.shells.ChangeHub``) and the in-process bus
(``actors.invalidation.InProcessBus``) are thin wrappers around :class:`ChangeLog`.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
from collections import deque
from typing import Generic, NamedTuple, TypeVar

T = TypeVar("T")

DEFAULT_CAPACITY = 10_000
DEFAULT_MAX_EVENTS = 1_000
# A long poll holds an actor slot; one that asks to wait longer than this is cut short.
MAX_WAIT_S = 60.0


class Batch(NamedTuple, Generic[T]):
    """One answer of :meth:`ChangeLog.since`.

    ``events`` are the events numbered ``after_seq + 1 .. latest_seq`` in order (empty on
    ``reset`` or when nothing is newer). Ask next with ``(epoch, latest_seq)``.
    """

    epoch: str
    events: tuple[T, ...]
    latest_seq: int
    reset: bool


class ChangeLog(Generic[T]):
    """A ring of the last ``capacity`` events with their sequence numbers."""

    __slots__ = ("_latest", "_ring", "_wakeup", "epoch")

    def __init__(self, capacity: int = DEFAULT_CAPACITY, epoch: str | None = None) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.epoch = epoch if epoch is not None else secrets.token_hex(8)
        self._ring: deque[T] = deque(maxlen=capacity)
        self._latest = 0
        # Set by append, replaced by the next waiter: created lazily so that the log can
        # be built outside an event loop.
        self._wakeup: asyncio.Event | None = None

    @property
    def capacity(self) -> int:
        maxlen = self._ring.maxlen
        assert maxlen is not None
        return maxlen

    @property
    def latest_seq(self) -> int:
        """The number of the newest event; 0 while the log is empty."""
        return self._latest

    @property
    def oldest_seq(self) -> int:
        """The number of the oldest event still held (``latest_seq + 1`` when empty)."""
        return self._latest - len(self._ring) + 1

    def append(self, event: T) -> int:
        """Add an event; returns its sequence number and wakes every waiter."""
        self._ring.append(event)
        self._latest += 1
        if self._wakeup is not None:
            self._wakeup.set()
            self._wakeup = None
        return self._latest

    def since(
        self, epoch: str | None, after_seq: int, max_events: int = DEFAULT_MAX_EVENTS
    ) -> Batch[T]:
        """The events after ``after_seq`` of incarnation ``epoch``, oldest first, at most
        ``max_events`` of them (``latest_seq`` then says how far the batch goes)."""
        if max_events < 1:
            raise ValueError("max_events must be >= 1")
        if (
            epoch != self.epoch
            or after_seq > self._latest
            # The event numbered after_seq + 1 has left the ring (or never existed).
            or after_seq + 1 < self.oldest_seq
        ):
            return Batch(self.epoch, (), self._latest, True)
        newer = self._latest - after_seq
        if newer == 0:
            return Batch(self.epoch, (), self._latest, False)
        start = len(self._ring) - newer
        count = min(newer, max_events)
        events = tuple(itertools.islice(self._ring, start, start + count))
        return Batch(self.epoch, events, after_seq + count, False)

    async def wait_since(
        self,
        epoch: str | None,
        after_seq: int,
        timeout_s: float,
        max_events: int = DEFAULT_MAX_EVENTS,
    ) -> Batch[T]:
        """Like :meth:`since`, but when nothing is newer, wait up to ``timeout_s`` (at most
        :data:`MAX_WAIT_S`) for an event and answer as soon as one is appended. On timeout
        the answer is an empty batch, not an error."""
        batch = self.since(epoch, after_seq, max_events)
        if batch.reset or batch.events or timeout_s <= 0:
            return batch
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(timeout_s, MAX_WAIT_S)
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return batch
            if self._wakeup is None:
                self._wakeup = asyncio.Event()
            wakeup = self._wakeup
            try:
                async with asyncio.timeout(remaining):
                    await wakeup.wait()
            except TimeoutError:
                return self.since(epoch, after_seq, max_events)
            batch = self.since(epoch, after_seq, max_events)
            if batch.reset or batch.events:
                return batch
