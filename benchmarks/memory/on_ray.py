"""The real shard actors on a local Ray cluster of the benchmark's own: RSS per item."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import random
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from benchmarks.memory.figures import LOAD_CONCURRENCY, NAMESPACE, SETTLE_S, Sample, ShardFigure
from benchmarks.memory.workload import cart_plan, demo_stock, fresh, progress_bar

# --- on Ray -----------------------------------------------------------------------------------


def _probe_function() -> Callable[[Any], dict[str, Any]]:
    """What runs in the shard actor (``__ray_call__``): gc, then its own memory figures.
    Made here so that cloudpickle sends it by value (workers cannot import benchmarks/)."""

    def probe(shard: Any) -> dict[str, Any]:
        import contextlib
        import ctypes
        import os

        gc.collect()
        pid = os.getpid()
        with open(f"/proc/{pid}/status") as f:
            status = f.read()
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        with open(f"/proc/{pid}/status") as f:
            status_trimmed = f.read()
        service = shard.service
        stats = service.stats()
        dispatch = getattr(service, "_dispatch", None)
        return {
            "pid": pid,
            "status": status,
            "status_trimmed": status_trimmed,
            "items": int(stats.get("carts", stats.get("skus", 0))),
            "op_log": len(dispatch.log) if dispatch is not None else -1,
        }

    return probe


async def _workers(n: int, work: Callable[[], Awaitable[bool]]) -> None:
    """``n`` coroutines calling ``work`` until it says there is no more."""

    async def loop() -> None:
        while await work():
            pass

    await asyncio.gather(*(loop() for _ in range(n)))


async def ray_carts(client: Any, handle: Any, carts: int, skus: Sequence[str], seed: int,
                    progress: bool) -> ShardFigure:  # fmt: skip
    from actors.kinds import ShardKind
    from actors.shop import new_cart_id, new_op_id

    probe = _probe_function()
    rnd = random.Random(seed)
    remaining = iter(range(carts))

    async def shopper() -> bool:
        if next(remaining, None) is None:
            return False
        cart_id = new_cart_id()
        await client.call(ShardKind.CART, cart_id, "create", new_op_id(), cart_id, None)
        for sku, quantity in cart_plan(rnd, skus):
            cid = fresh(cart_id)
            await client.call(ShardKind.CART, cid, "add", new_op_id(), cid, fresh(sku),
                              quantity, None)  # fmt: skip
        bar.update()
        return True

    # Warm up (code paths, buffers, the first batches), then measure from there.
    with progress_bar(1_000, "carts (warm-up)", progress) as bar:
        remaining = iter(range(min(1_000, carts)))
        await _workers(min(LOAD_CONCURRENCY, carts), shopper)
    await asyncio.sleep(SETTLE_S)
    before = Sample.of(await handle.__ray_call__.remote(probe))
    remaining = iter(range(carts))
    began = time.monotonic()
    with progress_bar(carts, "carts", progress) as bar:
        await _workers(LOAD_CONCURRENCY, shopper)
    took = time.monotonic() - began
    await asyncio.sleep(SETTLE_S)
    after = Sample.of(await handle.__ray_call__.remote(probe))
    return ShardFigure("cart", carts, took, before, after)


async def ray_stock(client: Any, handle: Any, count: int, seed: int,
                    progress: bool) -> ShardFigure:  # fmt: skip
    from actors.kinds import ShardKind
    from actors.shop import new_op_id

    probe = _probe_function()
    # Warm up on SKUs of their own, outside the demo catalog's numbering.
    levels: Iterator[tuple[str, int]] = iter((f"WARM-{i:06d}", 5) for i in range(1_000))

    async def merchant() -> bool:
        item = next(levels, None)
        if item is None:
            return False
        sku, on_hand = item
        sku = fresh(sku)
        await client.call(ShardKind.INVENTORY, sku, "set_on_hand", new_op_id(), sku, on_hand)
        bar.update()
        return True

    with progress_bar(1_000, "SKUs (warm-up)", progress) as bar:
        await _workers(LOAD_CONCURRENCY, merchant)
    await asyncio.sleep(SETTLE_S)
    before = Sample.of(await handle.__ray_call__.remote(probe))
    levels = demo_stock(count, seed)
    began = time.monotonic()
    with progress_bar(count, "SKUs", progress) as bar:
        await _workers(LOAD_CONCURRENCY, merchant)
    took = time.monotonic() - began
    await asyncio.sleep(SETTLE_S)
    after = Sample.of(await handle.__ray_call__.remote(probe))
    return ShardFigure("inventory", count, took, before, after)


def on_ray(args: argparse.Namespace, data_dir: Path, skus: Sequence[str]) -> list[ShardFigure]:
    """Start a local cluster of our own, load the shards, measure them, stop it."""
    from feira.ray_auth import use_local_auth
    from feira.settings import Settings

    os.environ.pop("RAY_ADDRESS", None)  # a cluster of our own, never someone's
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    use_local_auth(data_dir)  # before the first import of ray
    import ray

    from actors.client import ShardClient, ensure_shards
    from actors.kinds import ShardKind

    settings = Settings(
        data_dir=data_dir,
        namespace=NAMESPACE,
        cart_shards=1,
        inventory_shards=1,
        pricing_shards=1,
        postgres_url=None,
        redis_url=None,
        mongo_url=None,
        elasticsearch_url=None,
        # Loading queues thousands of operations at once; a deadline is not what is measured.
        shard_call_timeout_ms=120_000,
    )
    # A temp dir of its own: then /tmp/ray/session_latest is never this cluster, so a tool
    # that finds "its" cluster through that link cannot take this one for it.
    ray_dir = Path(tempfile.mkdtemp(prefix="fmr-", dir="/tmp"))
    ray.init(
        address="local",
        num_cpus=args.ray_cpus,
        include_dashboard=False,
        namespace=NAMESPACE,
        logging_level=logging.ERROR,
        log_to_driver=False,
        _temp_dir=str(ray_dir),
    )
    try:
        gcs = ray.get_runtime_context().gcs_address
        if gcs.endswith(":6379"):
            raise SystemExit(f"Ray's GCS took Redis's port ({gcs}); not measuring")
        handles = ensure_shards(settings)
        client = ShardClient(settings, handles)

        async def run() -> list[ShardFigure]:
            out: list[ShardFigure] = []
            if args.carts:
                out.append(await ray_carts(client, handles[ShardKind.CART][0], args.carts, skus,
                                           args.seed, args.progress))  # fmt: skip
            if args.skus:
                out.append(await ray_stock(client, handles[ShardKind.INVENTORY][0], args.skus,
                                           args.seed, args.progress))  # fmt: skip
            return out

        return asyncio.run(run())
    finally:
        ray.shutdown()
        shutil.rmtree(ray_dir, ignore_errors=True)
