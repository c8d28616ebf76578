"""Cache invalidation over real Redis pub/sub: delivery, the Reset rule on (re)subscribe,
reconnects after the server drops us, restarts, and a connection that went silent."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import statistics
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
import pytest
import redis.asyncio as aioredis

from actors.invalidation import (
    Backoff,
    CacheEvent,
    Change,
    ChangeBus,
    FollowStats,
    Reset,
    follow,
)
from storage.errors import StoreUnavailable
from storage.redis.changes import RedisChangeBus
from storage.redis.client import RedisClient
from tests.conftest import free_port
from tests.redis_stores.conftest import _answers

FAST = Backoff(0.01, 0.05)

MakeBus = Callable[..., RedisChangeBus]


@pytest.fixture
async def make_bus(redis_url: str, prefix: str) -> AsyncIterator[MakeBus]:
    """Buses on this test's prefix, each with a client of its own, closed at the end."""
    made: list[RedisChangeBus] = []

    def make(url: str = redis_url, **options: Any) -> RedisChangeBus:
        client_options = options.pop("client_options", {})
        bus = RedisChangeBus(RedisClient(url, prefix=prefix, **client_options), **options)
        made.append(bus)
        return bus

    yield make
    for bus in made:
        await bus.close()


async def next_change(sub: AsyncIterator[Change], timeout_s: float = 5.0) -> Change:
    return await asyncio.wait_for(anext(sub), timeout_s)


def with_name(url: str, name: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}client_name={name}"


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[str, ...]]] = []
        self.applied_at: dict[str, float] = {}

    def invalidate_products(self, product_ids: Sequence[str]) -> None:
        self.calls.append(("products", tuple(product_ids)))

    def invalidate_prices(self, skus: Sequence[str]) -> None:
        now = time.perf_counter()
        for sku in skus:
            self.applied_at[sku] = now
        self.calls.append(("prices", tuple(skus)))

    def clear_caches(self) -> None:
        self.calls.append(("clear", ()))


def applied(target: Recorder, key: str) -> Callable[[], bool]:
    return lambda: key in target.applied_at


async def until(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


def test_satisfies_the_protocol(client: RedisClient) -> None:
    _: ChangeBus = RedisChangeBus(client)


def test_channel_takes_the_client_prefix(client: RedisClient, prefix: str) -> None:
    assert RedisChangeBus(client).channel == f"{prefix}cache"
    assert RedisChangeBus(client, "other").channel == f"{prefix}other"
    with pytest.raises(ValueError, match="channel"):
        RedisChangeBus(client, "has space")


async def test_every_subscriber_gets_reset_then_events(make_bus: MakeBus) -> None:
    publisher = make_bus()
    subs = [make_bus().subscribe() for _ in range(2)]
    for sub in subs:
        assert await next_change(sub) == Reset("subscribed")
    events = [CacheEvent.products(["p-1", "p-2"]), CacheEvent.prices(["SKU-1"])]
    for event in events:
        await publisher.publish(event)
    for sub in subs:
        assert [await next_change(sub) for _ in events] == events


async def test_payload_is_compact_json_on_the_prefixed_channel(
    make_bus: MakeBus, redis_url: str
) -> None:
    bus = make_bus()
    raw = aioredis.Redis.from_url(redis_url)
    pubsub = raw.pubsub(ignore_subscribe_messages=True)
    try:
        await pubsub.subscribe(bus.channel)
        await pubsub.get_message(timeout=1)
        await bus.publish(CacheEvent.prices(["SKU-1"]))
        message = None
        for _ in range(50):
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
            if message:
                break
        assert message is not None
        assert message["data"] == b'{"kind":"price","keys":["SKU-1"]}'
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await raw.aclose()


async def test_other_prefixes_do_not_hear_it(make_bus: MakeBus, redis_url: str) -> None:
    ours = make_bus()
    theirs = RedisChangeBus(RedisClient(redis_url, prefix=f"{ours.channel}-other:"))
    sub = theirs.subscribe()
    try:
        assert isinstance(await next_change(sub), Reset)
        await ours.publish(CacheEvent.prices(["SKU-1"]))
        with pytest.raises(TimeoutError):
            await next_change(sub, 0.3)
    finally:
        await theirs.close()


async def test_unreadable_message_is_a_reset(make_bus: MakeBus, redis_url: str) -> None:
    bus = make_bus()
    sub = bus.subscribe()
    assert isinstance(await next_change(sub), Reset)
    raw = aioredis.Redis.from_url(redis_url)
    try:
        await raw.publish(bus.channel, b"not json")
        await raw.publish(bus.channel, orjson.dumps({"kind": "stock", "keys": ["x"]}))
    finally:
        await raw.aclose()
    assert await next_change(sub) == Reset("unreadable message")
    assert await next_change(sub) == Reset("unreadable message")
    await bus.publish(CacheEvent.prices(["SKU-1"]))
    assert await next_change(sub) == CacheEvent.prices(["SKU-1"])


async def test_unreachable_server(closed_port_url: str, make_bus: MakeBus) -> None:
    bus = make_bus(
        closed_port_url,
        backoff=FAST,
        client_options={"connect_timeout_s": 0.3, "socket_timeout_s": 0.3},
    )
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match=r"publish cache event on redis at 127\.0\.0\.1"):
        await bus.publish(CacheEvent.prices(["SKU-1"]))
    assert time.monotonic() - started < 3
    # A subscription does not fail: it keeps trying, quietly, until closed.
    sub = bus.subscribe()
    waiting: asyncio.Future[Change] = asyncio.ensure_future(anext(sub))
    await asyncio.sleep(0.5)
    assert not waiting.done()
    await bus.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(waiting, 3)
    with pytest.raises(StoreUnavailable, match="closed"):
        await bus.publish(CacheEvent.prices(["SKU-1"]))


async def test_close_ends_a_quiet_subscription(make_bus: MakeBus) -> None:
    bus = make_bus()
    sub = bus.subscribe()
    assert isinstance(await next_change(sub), Reset)
    waiting: asyncio.Future[Change] = asyncio.ensure_future(anext(sub))
    await asyncio.sleep(0.1)
    await bus.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(waiting, 3)


async def test_dropped_connection_is_a_reset_then_events_flow_again(
    make_bus: MakeBus, redis_url: str
) -> None:
    """The server kills our subscriber connection (as it does to one that falls behind):
    redis-py reconnects by itself, and the re-subscription must still be a Reset."""
    name = f"feira-test-{secrets.token_hex(4)}"
    publisher = make_bus()
    bus = make_bus(with_name(redis_url, name), backoff=FAST)
    sub = bus.subscribe()
    assert isinstance(await next_change(sub), Reset)
    await publisher.publish(CacheEvent.prices(["before"]))
    assert await next_change(sub) == CacheEvent.prices(["before"])
    admin = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        killed = 0
        for line in (await admin.execute_command("CLIENT", "LIST", "TYPE", "pubsub")).splitlines():
            fields = dict(f.split("=", 1) for f in line.split(" ") if "=" in f)
            if fields.get("name") == name:
                await admin.execute_command("CLIENT", "KILL", "ID", fields["id"])
                killed += 1
        assert killed == 1
    finally:
        await admin.aclose()
    assert await next_change(sub) == Reset("subscribed")
    await publisher.publish(CacheEvent.prices(["after"]))
    assert await next_change(sub) == CacheEvent.prices(["after"])


class FreezableProxy:
    """A TCP proxy to Redis whose current connections can be frozen: bytes stop flowing
    both ways and nothing is closed, like a peer that vanished. New connections flow."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.frozen: list[asyncio.Event] = []
        self.server: asyncio.Server | None = None
        self.port = 0
        self.writers: list[asyncio.StreamWriter] = []
        self.handlers: list[asyncio.Task[Any]] = []

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    def freeze_all(self) -> None:
        for event in self.frozen:
            event.set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.append(task)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.writers += [writer, up_writer]
        frozen = asyncio.Event()
        self.frozen.append(frozen)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            while data := await src.read(65536):
                if frozen.is_set():
                    await asyncio.Event().wait()  # swallow it, and everything after
                dst.write(data)
                await dst.drain()

        with contextlib.suppress(OSError, asyncio.CancelledError):
            await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for w in self.writers:
            w.close()
        for task in self.handlers:
            task.cancel()
        await asyncio.gather(*self.handlers, return_exceptions=True)


async def test_a_silent_connection_is_noticed_and_replaced(
    make_bus: MakeBus, redis_url: str
) -> None:
    parts = urlsplit(redis_url)
    if parts.scheme != "redis" or parts.hostname != "127.0.0.1" or parts.port is None:
        pytest.skip("the proxy needs the test Redis on redis://127.0.0.1")
    proxy = FreezableProxy(parts.port)
    await proxy.start()
    try:
        publisher = make_bus()
        netloc = parts.netloc.replace(f"127.0.0.1:{parts.port}", f"127.0.0.1:{proxy.port}")
        bus = make_bus(
            urlunsplit(parts._replace(netloc=netloc)),
            ping_interval_s=0.2,
            backoff=FAST,
            client_options={"socket_timeout_s": 0.3, "connect_timeout_s": 0.3},
        )
        sub = bus.subscribe()
        assert isinstance(await next_change(sub), Reset)
        proxy.freeze_all()
        started = time.monotonic()
        # Nothing arrives on the frozen connection; the missing PONGs give it away.
        assert await next_change(sub, 5) == Reset("subscribed")
        assert time.monotonic() - started < 3
        await publisher.publish(CacheEvent.prices(["after"]))
        assert await next_change(sub) == CacheEvent.prices(["after"])
    finally:
        await proxy.close()


@pytest.fixture
def own_redis(tmp_path: Path) -> Any:
    """A private redis-server on a fixed port that the test can stop and start again."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("needs redis-server on PATH to restart a server")
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        procs.append(
            subprocess.Popen(
                [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(tmp_path), "--loglevel", "warning"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while not _answers(url):
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)

    def stop() -> None:
        proc = procs[-1]
        proc.terminate()
        proc.wait(timeout=10)

    start()
    yield url, start, stop
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


async def test_server_restart_is_survived_with_a_reset(own_redis: Any, make_bus: MakeBus) -> None:
    url, start, stop = own_redis
    options = {"connect_timeout_s": 0.3, "socket_timeout_s": 0.5}
    publisher = make_bus(url, client_options=options)
    target = Recorder()
    stats = FollowStats()
    bus = make_bus(url, backoff=FAST, ping_interval_s=0.5, client_options=options)
    task = asyncio.create_task(follow(bus, target, backoff=FAST, stats=stats))
    try:
        await until(lambda: stats.resets == 1)
        await publisher.publish(CacheEvent.prices(["before"]))
        await until(lambda: stats.events == 1)
        await asyncio.to_thread(stop)
        with pytest.raises(StoreUnavailable):
            await publisher.publish(CacheEvent.prices(["lost"]))
        await asyncio.sleep(0.5)  # the subscription retries meanwhile, and does not die
        assert not task.done()
        await asyncio.to_thread(start)
        await until(lambda: stats.resets >= 2, timeout_s=10)
        await publisher.publish(CacheEvent.prices(["after"]))
        await until(lambda: ("prices", ("after",)) in target.calls)
        assert ("prices", ("lost",)) not in target.calls
        assert target.calls[-2] == ("clear", ())
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_follow_applies_events_with_low_latency(make_bus: MakeBus) -> None:
    """Publish → applied by a follower on another connection (same process). The figure
    is printed, not asserted (see benchmarks/invalidation.py for the cross-process one)."""
    publisher = make_bus()
    target = Recorder()
    stats = FollowStats()
    task = asyncio.create_task(follow(make_bus(), target, stats=stats))
    try:
        await until(lambda: stats.resets == 1)
        latencies = []
        for i in range(100):
            key = f"SKU-{i}"
            sent = time.perf_counter()
            await publisher.publish(CacheEvent.prices([key]))
            await until(applied(target, key))
            latencies.append((target.applied_at[key] - sent) * 1000)
        assert stats.events == 100
        q = statistics.quantiles(latencies, n=100)
        print(
            f"\nredis pub/sub publish→applied, same process, 100 events: "
            f"p50 {q[49]:.2f} ms, p95 {q[94]:.2f} ms, max {max(latencies):.2f} ms"
        )
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
