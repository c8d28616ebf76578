"""What the memory benchmark loads: demo SKUs and stock, carts of three lines, wire batches."""

from __future__ import annotations

import itertools
import pickle
import random
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from tqdm import tqdm

from benchmarks.memory.figures import LINES_PER_CART, WIRE_BATCH, Op

# --- the workload -----------------------------------------------------------------------------


def fresh(text: str) -> str:
    """An equal string that is a new object, as a value parsed from a request would be
    (the pickler would otherwise send one object shared by every op of a batch)."""
    return text.encode().decode()


def catalog_skus(products: int, seed: int) -> list[str]:
    """The SKUs of the published products among the first ``products`` demo products."""
    from storage.demo import generate

    return [
        variant["sku"]
        for item in generate(products, seed=seed)
        if item.product["status"] == "published"
        for variant in item.product["variants"]
    ]


def demo_stock(count: int, seed: int) -> Iterator[tuple[str, int]]:
    """``count`` (sku, on_hand) of the demo catalog, in order."""
    from storage.demo import generate

    levels = (level for item in generate(count, seed=seed) for level in item.stock)
    for level in itertools.islice(levels, count):
        yield level.sku, level.on_hand


def cart_plan(rnd: random.Random, skus: Sequence[str]) -> list[tuple[str, int]]:
    """Three distinct SKUs and a quantity of 1-3 each, for one cart."""
    return [(sku, rnd.randint(1, 3)) for sku in rnd.sample(skus, LINES_PER_CART)]


def cart_ops(rnd: random.Random, skus: Sequence[str]) -> list[Op]:
    """The operations one guest shopper's cart gets from the BFF: create, then three adds."""
    from actors.shop import new_cart_id, new_op_id

    cart_id = new_cart_id()
    ops: list[Op] = [("create", (new_op_id(), cart_id, None))]
    for sku, quantity in cart_plan(rnd, skus):
        ops.append(("add", (new_op_id(), fresh(cart_id), fresh(sku), quantity, None)))
    return ops


def wire_batches(ops: Iterable[Op], size: int = WIRE_BATCH) -> Iterator[list[Op]]:
    """``ops`` in batches, each through pickle as a shard call's arguments are."""
    it = iter(ops)
    while batch := list(itertools.islice(it, size)):
        yield pickle.loads(pickle.dumps(batch, protocol=5))


def progress_bar(total: int, what: str, enabled: bool) -> tqdm[Any]:
    return tqdm(total=total, unit=f" {what}", unit_scale=True, disable=not enabled, mininterval=1)
