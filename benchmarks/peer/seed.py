"""Load the demo catalog's prices and stock into the peer's PostgreSQL tables.

    FEIRA_PEER_POSTGRES_URL=postgresql://postgres@127.0.0.1:5432/feira_peer \\
        .venv/bin/python -m benchmarks.peer.seed --products 2000 --catalog var/catalog.db

The rows come from ``storage.demo.generate`` with the seed and currency ``feira up`` uses,
so the peer sells the same SKUs at the same prices with the same starting stock as a
freshly seeded Feira. Re-running resets every seeded SKU (prices, ``on_hand``, nothing
reserved or sold). With ``--catalog``, an empty SQLite catalog file there is seeded with the
same products, so the peer can run without a Feira data directory.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Iterable
from itertools import islice
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from benchmarks.peer.db import create_schema
from benchmarks.peer.settings import PeerSettings
from storage.demo import DemoItem, generate
from storage.sqlite.catalog import SqliteCatalogStore

BATCH = 5_000


def upserts(schema: str) -> tuple[str, str]:
    s = f'"{schema}"'
    prices = (
        f"INSERT INTO {s}.prices (sku, product_id, merchant_id, amount, currency) "
        "SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[]) "
        "ON CONFLICT (sku) DO UPDATE SET product_id = EXCLUDED.product_id, "
        "merchant_id = EXCLUDED.merchant_id, amount = EXCLUDED.amount, "
        "currency = EXCLUDED.currency"
    )
    stock = (
        f"INSERT INTO {s}.stock (sku, on_hand, reserved, sold) "
        "SELECT sku, on_hand, 0, 0 FROM unnest($1::text[], $2::integer[]) AS t(sku, on_hand) "
        "ON CONFLICT (sku) DO UPDATE SET on_hand = EXCLUDED.on_hand, reserved = 0, sold = 0"
    )
    return prices, stock


async def write_batch(conn: Any, schema: str, items: list[DemoItem]) -> int:
    prices_sql, stock_sql = upserts(schema)
    columns: list[list[Any]] = [[], [], [], [], []]
    for item in items:
        product = item.product
        for price in item.prices:
            columns[0].append(price.sku)
            columns[1].append(product["id"])
            columns[2].append(product["merchant_id"])
            columns[3].append(price.amount)
            columns[4].append(price.currency)
    skus = [s.sku for item in items for s in item.stock]
    on_hand = [s.on_hand for item in items for s in item.stock]
    async with conn.transaction():
        await conn.execute(prices_sql, *columns)
        await conn.execute(stock_sql, skus, on_hand)
    return len(skus)


async def seed_peer(
    dsn: str,
    schema: str,
    products: int,
    *,
    seed: int = 7,
    currency: str = "EUR",
    catalog_path: str | None = None,
) -> int:
    """Seed ``products`` demo products' SKUs; returns the number of SKUs written."""
    conn = await asyncpg.connect(dsn)
    written = 0
    try:
        await create_schema(conn, schema)
        items = generate(products, seed=seed, currency=currency)
        while chunk := list(islice(items, BATCH)):
            written += await write_batch(conn, schema, chunk)
    finally:
        await conn.close()
    if catalog_path is not None:
        await seed_catalog(catalog_path, products, seed=seed, currency=currency)
    return written


async def seed_catalog(path: str, products: int, *, seed: int = 7, currency: str = "EUR") -> int:
    """The same products into a SQLite catalog file, if it has none yet."""
    catalog = SqliteCatalogStore(path)
    try:
        if await catalog.count_products() > 0:
            return 0
        docs: Iterable[Any] = (i.product for i in generate(products, seed=seed, currency=currency))
        return await catalog.put_products(docs)
    finally:
        await catalog.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.peer.seed", description=__doc__)
    p.add_argument("--products", type=int, default=2000, help="as FEIRA_DEMO_PRODUCTS")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--catalog", default=None, help="also seed this SQLite catalog if empty")
    args = p.parse_args(argv)
    settings = PeerSettings.from_env()
    skus = asyncio.run(
        seed_peer(
            settings.postgres_url,
            settings.schema,
            args.products,
            seed=args.seed,
            currency=settings.currency,
            catalog_path=args.catalog,
        )
    )
    print(f"seeded {skus} SKUs of {args.products} products into schema {settings.schema}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
