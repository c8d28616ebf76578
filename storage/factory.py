"""Picks the adapter behind each store interface: production servers when their URLs are
given, the embedded SQLite ones otherwise. Nothing connects until first use."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field

from storage.carts import CartCheckpointStore
from storage.identity import IdentityStore
from storage.interfaces import CatalogStore, OrderStore, PriceStore, SearchIndex, StockStore
from storage.mongo.catalog import MongoCatalogStore
from storage.postgres import PgPool, PgPriceStore, PgStockStore, apply_migrations
from storage.postgres.identity import PgIdentityStore
from storage.postgres.orders import PgOrderStore
from storage.redis.carts import RedisCartCheckpoints
from storage.redis.client import RedisClient
from storage.search.elastic import ElasticSearchIndex
from storage.search.tantivy_index import TantivySearchIndex
from storage.sqlite.catalog import SqliteCatalogStore
from storage.sqlite.identity import SqliteIdentityStore
from storage.sqlite.orders import SqliteOrderStore
from storage.sqlite.prices import SqlitePriceStore
from storage.sqlite.stock import SqliteStockStore

CATALOG_FILE = "catalog.db"
# Prices and stock live together: both are small, hot rows written by actors, and one
# file keeps the number of WAL files and fsyncs per process down.
LEDGER_FILE = "ledger.db"
# Accounts, API keys and refresh tokens: apart from the hot ledger, so a backup or a
# restore of one never touches the other.
IDENTITY_FILE = "identity.db"
SEARCH_DIR = "search"


@dataclass(frozen=True, slots=True)
class Stores:
    catalog: CatalogStore
    prices: PriceStore
    stock: StockStore
    orders: OrderStore
    identity: IdentityStore
    # None in embedded mode: carts then live in shard memory only.
    carts: CartCheckpointStore | None = None
    pg_pool: PgPool | None = field(default=None, repr=False)
    redis: RedisClient | None = field(default=None, repr=False)

    async def migrate(self) -> list[str]:
        """Apply pending PostgreSQL migrations (SQLite adapters migrate themselves)."""
        return await apply_migrations(self.pg_pool) if self.pg_pool else []

    async def close(self) -> None:
        """Close every store, even if one fails; the first failure is re-raised."""
        closing = [
            self.catalog.close(),
            self.prices.close(),
            self.stock.close(),
            self.orders.close(),
            self.identity.close(),
        ]
        if self.carts is not None:
            closing.append(self.carts.close())
        results = await asyncio.gather(*closing, return_exceptions=True)
        if self.pg_pool is not None:
            await self.pg_pool.close()
        for result in results:
            if isinstance(result, BaseException):
                raise result


def open_stores(
    data_dir: str,
    *,
    postgres_url: str | None = None,
    redis_url: str | None = None,
    redis_prefix: str = "feira:",
    mongo_url: str | None = None,
    mongo_database: str = "feira",
) -> Stores:
    """Build the stores; no file or connection is opened until a store is first used."""
    os.makedirs(data_dir, exist_ok=True)
    ledger = os.path.join(data_dir, LEDGER_FILE)
    catalog: CatalogStore = (
        MongoCatalogStore(mongo_url, mongo_database)
        if mongo_url
        else SqliteCatalogStore(os.path.join(data_dir, CATALOG_FILE))
    )
    pool = PgPool(postgres_url) if postgres_url else None
    redis = RedisClient(redis_url, prefix=redis_prefix) if redis_url else None
    return Stores(
        catalog=catalog,
        prices=PgPriceStore(pool) if pool else SqlitePriceStore(ledger),
        stock=PgStockStore(pool) if pool else SqliteStockStore(ledger),
        orders=PgOrderStore(pool) if pool else SqliteOrderStore(ledger),
        identity=PgIdentityStore(pool)
        if pool
        else SqliteIdentityStore(os.path.join(data_dir, IDENTITY_FILE)),
        carts=RedisCartCheckpoints(redis) if redis else None,
        pg_pool=pool,
        redis=redis,
    )


def open_embedded_stores(data_dir: str) -> Stores:
    return open_stores(data_dir)


def open_search_index(
    data_dir: str, *, elasticsearch_url: str | None = None, index: str = "feira-products"
) -> SearchIndex:
    """Elasticsearch when its URL is given, else the Tantivy index under ``data_dir``.
    Any number of processes may search a Tantivy directory; only one may write it."""
    if elasticsearch_url:
        return ElasticSearchIndex(elasticsearch_url, index)
    return TantivySearchIndex(os.path.join(data_dir, SEARCH_DIR))
