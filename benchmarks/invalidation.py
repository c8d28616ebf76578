"""Cache-invalidation delivery latency: publish here → applied by followers in other
processes (Ray actors standing in for BFF replicas), for both buses.

    .venv/bin/python -m benchmarks.invalidation [--events 200] [--followers 2]

Starts a local Ray cluster of its own (like the tests: ``address="local"``), creates the
``ChangeHub`` in a namespace of its own, and ``--followers`` actors that each run
:func:`actors.invalidation.follow`; they stamp ``time.monotonic()`` (one clock for every
process on a Linux host) when an event is applied. The driver publishes ``--events``
one-key price events ``--interval-ms`` apart ("paced", an idle bus: what a merchant edit
sees), then ``--events`` back to back ("burst"). The Redis bus is measured the same way
against ``--redis-url`` (default ``FEIRA_REDIS_URL``, else redis://127.0.0.1:6379/0) under
a random key prefix; it is skipped when no Redis answers.

Ray starts workers at nice 15 and this driver runs at nice 0 on the same cores: under
CPU contention the followers are the ones that wait.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from feira.ray_auth import use_local_auth

NAMESPACE = "feira-bench-inv"


class Follower:
    """A replica stand-in: follows one bus and stamps when each key was applied."""

    def __init__(self, kind: str, redis_url: str | None, prefix: str) -> None:
        self.kind = kind
        self.redis_url = redis_url
        self.prefix = prefix
        self.applied: dict[str, float] = {}
        self.resets = 0
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        from actors.invalidation import ChangeBus, follow

        bus: ChangeBus
        if self.kind == "ray":
            from actors.client import RayChangeBus
            from feira.settings import Settings

            bus = RayChangeBus.connect(Settings(namespace=NAMESPACE))
        else:
            from storage.redis.changes import RedisChangeBus
            from storage.redis.client import RedisClient

            assert self.redis_url is not None
            bus = RedisChangeBus(RedisClient(self.redis_url, prefix=self.prefix))
        self.task = asyncio.get_running_loop().create_task(follow(bus, self))

    def invalidate_products(self, product_ids: Sequence[str]) -> None:
        self._stamp(product_ids)

    def invalidate_prices(self, skus: Sequence[str]) -> None:
        self._stamp(skus)

    def _stamp(self, keys: Sequence[str]) -> None:
        now = time.monotonic()
        for key in keys:
            self.applied.setdefault(key, now)

    def clear_caches(self) -> None:
        self.resets += 1

    async def report(self) -> dict[str, Any]:
        return {"applied": self.applied, "resets": self.resets}


def summarize(latencies_ms: list[float]) -> str:
    if len(latencies_ms) < 2:
        return "too few samples"
    q = statistics.quantiles(latencies_ms, n=100)
    return f"p50 {q[49]:6.2f}  p95 {q[94]:6.2f}  p99 {q[98]:6.2f}  max {max(latencies_ms):6.2f} ms"


async def measure(bus: Any, followers: list[Any], args: argparse.Namespace, tag: str) -> None:
    from actors.invalidation import CacheEvent

    # Wait until every follower is subscribed (its first Reset applied).
    deadline = time.monotonic() + 60
    while True:
        reports = await asyncio.gather(*(f.report.remote() for f in followers))
        if all(r["resets"] >= 1 for r in reports):
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"{tag}: followers did not subscribe within 60 s")
        await asyncio.sleep(0.05)

    for mode in ("paced", "burst"):
        sent: dict[str, float] = {}
        for i in range(args.events):
            key = f"{tag}-{mode}-{i}"
            sent[key] = time.monotonic()
            await bus.publish(CacheEvent.prices([key]))
            if mode == "paced":
                await asyncio.sleep(args.interval_ms / 1000)
        await asyncio.sleep(1.0)
        reports = await asyncio.gather(*(f.report.remote() for f in followers))
        latencies: list[float] = []
        missing = 0
        for report in reports:
            for key, t0 in sent.items():
                t1 = report["applied"].get(key)
                if t1 is None:
                    missing += 1
                else:
                    latencies.append((t1 - t0) * 1000)
        print(
            f"{tag:6} {mode:6} {len(sent):5} events x {len(followers)} followers  "
            f"{summarize(latencies)}" + (f"  ({missing} not applied)" if missing else "")
        )


async def run(args: argparse.Namespace) -> None:
    import ray

    from actors.client import RayChangeBus
    from feira.settings import Settings
    from storage.redis.changes import RedisChangeBus
    from storage.redis.client import RedisClient

    remote_follower: Any = ray.remote(num_cpus=0)(Follower)
    prefix = f"feira-bench-{secrets.token_hex(4)}:"

    print(f"# {args.events} events per mode, paced every {args.interval_ms} ms; python "
          f"{sys.version.split()[0]}, {os.cpu_count()} CPUs")  # fmt: skip
    ray_bus = RayChangeBus.connect(Settings(namespace=NAMESPACE))
    followers = [remote_follower.remote("ray", None, prefix) for _ in range(args.followers)]
    await asyncio.gather(*(f.start.remote() for f in followers))
    await measure(ray_bus, followers, args, "ray")
    await ray_bus.close()
    for f in followers:
        ray.kill(f)

    redis_client = RedisClient(args.redis_url, prefix=prefix)
    try:
        await redis_client.ping()
    except Exception as error:  # noqa: BLE001 - any failure means: no Redis to measure
        print(f"redis  skipped: {error}")
        await redis_client.close()
        return
    redis_bus = RedisChangeBus(redis_client)
    followers = [
        remote_follower.remote("redis", args.redis_url, prefix) for _ in range(args.followers)
    ]
    await asyncio.gather(*(f.start.remote() for f in followers))
    await measure(redis_bus, followers, args, "redis")
    await redis_bus.close()
    for f in followers:
        ray.kill(f)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--events", type=int, default=200, help="events per mode (default 200)")
    p.add_argument("--followers", type=int, default=2, help="follower actors (default 2)")
    p.add_argument("--interval-ms", type=float, default=20.0, help="paced mode spacing")
    p.add_argument(
        "--redis-url",
        default=os.environ.get("FEIRA_REDIS_URL") or "redis://127.0.0.1:6379/0",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run_dir = Path(tempfile.mkdtemp(prefix="feira-bench-inv-"))
    use_local_auth(run_dir)  # before ray is imported, as everywhere else
    import ray

    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        namespace=NAMESPACE,
        logging_level=logging.ERROR,
        log_to_driver=False,
    )
    try:
        asyncio.run(run(args))
    finally:
        ray.shutdown()
        shutil.rmtree(run_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
