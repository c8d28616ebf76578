"""The embedded change hub's log: numbering, the ring, resets, and the long poll."""

from __future__ import annotations

import asyncio
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from actors.change_log import MAX_WAIT_S, Batch, ChangeLog


def test_first_question_is_a_reset_then_nothing_new() -> None:
    log: ChangeLog[str] = ChangeLog(4)
    first = log.since(None, 0)
    assert first == Batch(log.epoch, (), 0, True)
    assert log.since(log.epoch, 0) == Batch(log.epoch, (), 0, False)


def test_events_are_numbered_and_returned_in_order() -> None:
    log: ChangeLog[str] = ChangeLog(10, epoch="e1")
    assert [log.append(x) for x in "abc"] == [1, 2, 3]
    assert log.since("e1", 0) == Batch("e1", ("a", "b", "c"), 3, False)
    assert log.since("e1", 2) == Batch("e1", ("c",), 3, False)
    assert log.since("e1", 3) == Batch("e1", (), 3, False)
    assert (log.latest_seq, log.oldest_seq) == (3, 1)


def test_falling_out_of_the_ring_is_a_reset() -> None:
    log: ChangeLog[int] = ChangeLog(3)
    for i in range(1, 6):
        log.append(i)
    assert log.oldest_seq == 3
    # Events 3..5 are all held: no reset for a subscriber that saw 2.
    assert log.since(log.epoch, 2) == Batch(log.epoch, (3, 4, 5), 5, False)
    # Event 2 is gone: a subscriber that saw only 1 missed it.
    assert log.since(log.epoch, 1) == Batch(log.epoch, (), 5, True)
    assert log.since(log.epoch, 0).reset


def test_other_epoch_or_impossible_position_is_a_reset() -> None:
    log: ChangeLog[int] = ChangeLog(8)
    log.append(1)
    assert log.since("another-incarnation", 1).reset
    assert log.since(log.epoch, 2).reset  # ahead of the log: it restarted and refilled
    assert log.since(log.epoch, -1).reset


def test_a_restarted_log_has_a_new_epoch() -> None:
    assert ChangeLog[int](4).epoch != ChangeLog[int](4).epoch


def test_max_events_pages_through() -> None:
    log: ChangeLog[int] = ChangeLog(10)
    for i in range(1, 6):
        log.append(i)
    first = log.since(log.epoch, 0, max_events=2)
    assert (first.events, first.latest_seq, first.reset) == ((1, 2), 2, False)
    second = log.since(log.epoch, first.latest_seq, max_events=2)
    assert second.events == (3, 4)
    third = log.since(log.epoch, second.latest_seq, max_events=2)
    assert (third.events, third.latest_seq) == ((5,), 5)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="capacity"):
        ChangeLog[int](0)
    with pytest.raises(ValueError, match="max_events"):
        ChangeLog[int](1).since(None, 0, max_events=0)


async def test_wait_since_answers_at_once_when_something_is_newer() -> None:
    log: ChangeLog[str] = ChangeLog(4)
    log.append("a")
    batch = await asyncio.wait_for(log.wait_since(log.epoch, 0, 30), 1)
    assert batch.events == ("a",)
    reset = await asyncio.wait_for(log.wait_since("old", 0, 30), 1)
    assert reset.reset


async def test_wait_since_wakes_every_waiter_on_append() -> None:
    log: ChangeLog[str] = ChangeLog(4)
    loop = asyncio.get_running_loop()
    started = loop.time()
    waiters = [asyncio.create_task(log.wait_since(log.epoch, 0, 30)) for _ in range(3)]
    await asyncio.sleep(0.05)
    assert not any(w.done() for w in waiters)
    log.append("a")
    batches = await asyncio.wait_for(asyncio.gather(*waiters), 1)
    assert all(b == Batch(log.epoch, ("a",), 1, False) for b in batches)
    assert loop.time() - started < 5


async def test_wait_since_times_out_with_an_empty_batch() -> None:
    log: ChangeLog[str] = ChangeLog(4)
    loop = asyncio.get_running_loop()
    started = loop.time()
    batch = await log.wait_since(log.epoch, 0, 0.05)
    assert batch == Batch(log.epoch, (), 0, False)
    assert 0.04 <= loop.time() - started < 1
    assert (await log.wait_since(log.epoch, 0, 0)).events == ()


async def test_a_cancelled_waiter_does_not_disturb_the_others() -> None:
    log: ChangeLog[str] = ChangeLog(4)
    doomed = asyncio.create_task(log.wait_since(log.epoch, 0, 30))
    kept = asyncio.create_task(log.wait_since(log.epoch, 0, 30))
    await asyncio.sleep(0.01)
    doomed.cancel()
    await asyncio.sleep(0.01)
    log.append("a")
    assert (await asyncio.wait_for(kept, 1)).events == ("a",)
    assert doomed.cancelled()


def test_wait_is_capped() -> None:
    assert MAX_WAIT_S <= 60


# --- properties ----------------------------------------------------------------------


class LogAndSubscribers(RuleBasedStateMachine):
    """Any interleaving of appends, polls and hub restarts: a subscriber receives every
    event exactly once and in order, or is told to reset; and it is told to reset only
    when it has to (new incarnation, or it fell out of the ring)."""

    SUBSCRIBERS = 3

    @initialize(capacity=st.integers(1, 8))
    def start(self, capacity: int) -> None:
        self.capacity = capacity
        self.log: ChangeLog[int] = ChangeLog(capacity)
        self.appended: list[int] = []  # this incarnation's events; event n has seq n
        self.next_value = 0
        # Each subscriber's position: (epoch, after_seq).
        self.pos: list[tuple[str | None, int]] = [(None, 0)] * self.SUBSCRIBERS

    @rule(n=st.integers(1, 5))
    def append(self, n: int) -> None:
        for _ in range(n):
            self.next_value += 1
            seq = self.log.append(self.next_value)
            self.appended.append(self.next_value)
            assert seq == len(self.appended)

    @rule()
    def restart(self) -> None:
        self.log = ChangeLog(self.capacity)
        self.appended = []

    @rule(i=st.integers(0, SUBSCRIBERS - 1), max_events=st.integers(1, 10))
    def poll(self, i: int, max_events: int) -> None:
        epoch, after = self.pos[i]
        batch = self.log.since(epoch, after, max_events)
        latest = len(self.appended)
        must_reset = epoch != self.log.epoch or after < latest - self.capacity
        assert batch.reset == must_reset, (epoch, after, latest, batch)
        assert batch.epoch == self.log.epoch
        if batch.reset:
            assert batch.events == ()
            assert batch.latest_seq == latest
        else:
            expected = tuple(self.appended[after : after + max_events])
            assert batch.events == expected
            assert batch.latest_seq == after + len(expected)
        self.pos[i] = (batch.epoch, batch.latest_seq)

    @invariant()
    def ring_bounds(self) -> None:
        if hasattr(self, "log"):
            assert self.log.latest_seq - self.log.oldest_seq + 1 <= self.capacity


TestLogAndSubscribers = LogAndSubscribers.TestCase
TestLogAndSubscribers.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)


@settings(max_examples=60, deadline=None)
@given(
    capacity=st.integers(1, 40),
    bursts=st.lists(st.integers(1, 12), min_size=1, max_size=12),
    subscribers=st.integers(1, 4),
    seed=st.integers(0, 2**32 - 1),
)
def test_concurrent_long_polls_never_lose_an_event_silently(
    capacity: int, bursts: list[int], subscribers: int, seed: int
) -> None:
    """Appenders and long-polling subscribers interleaved by the event loop in random
    ways: each subscriber's events between two resets are consecutive, it catches up to
    the end, and with a ring as large as the whole run it is never told to reset after
    its first question."""
    total = sum(bursts)
    rng = random.Random(seed)

    async def run() -> list[list[tuple[str, int]]]:
        log: ChangeLog[int] = ChangeLog(capacity)

        async def subscriber() -> list[tuple[str, int]]:
            got: list[tuple[str, int]] = []
            epoch: str | None = None
            after = 0
            while after < total or epoch is None:
                batch = await log.wait_since(epoch, after, 5, max_events=rng.randint(1, 6))
                if batch.reset:
                    got.append(("reset", batch.latest_seq))
                got.extend(("event", value) for value in batch.events)
                epoch, after = batch.epoch, batch.latest_seq
                for _ in range(rng.randint(0, 3)):
                    await asyncio.sleep(0)
            return got

        tasks = [asyncio.create_task(subscriber()) for _ in range(subscribers)]
        value = 0
        for burst in bursts:
            for _ in range(rng.randint(0, 4)):
                await asyncio.sleep(0)
            for _ in range(burst):
                value += 1
                log.append(value)  # event n is the value n
        return await asyncio.wait_for(asyncio.gather(*tasks), 10)

    for got in asyncio.run(run()):
        assert got[0][0] == "reset"
        # Every event is the one right after what the subscriber had: after the previous
        # event, or after the position a reset moved it to. Nothing skipped, nothing twice.
        position = 0
        for what, n in got:
            if what == "reset":
                assert n >= position
            else:
                assert n == position + 1, got
            position = n
        assert position == total
        if capacity >= total:
            assert [what for what, _ in got].count("reset") == 1, got
