"""PostgreSQL adapters for the ledger stores (prices, stock), behind storage.interfaces.

Typical wiring: one ``PgPool`` per process, ``await apply_migrations(pool)`` at startup,
then ``PgPriceStore(pool)`` and ``PgStockStore(pool)`` sharing it; close the stores, then
the pool (the stores do not own it).
"""

from __future__ import annotations

from storage.postgres.migrate import apply_migrations, load_migrations
from storage.postgres.pool import PgPool, map_pg_errors
from storage.postgres.prices import PgPriceStore
from storage.postgres.stock import PgStockStore

__all__ = [
    "PgPool",
    "PgPriceStore",
    "PgStockStore",
    "apply_migrations",
    "load_migrations",
    "map_pg_errors",
]
