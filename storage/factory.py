"""Wires the embedded (SQLite) adapters to their files under one data directory."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass

from storage.interfaces import CatalogStore, PriceStore, StockStore
from storage.sqlite.catalog import SqliteCatalogStore
from storage.sqlite.prices import SqlitePriceStore
from storage.sqlite.stock import SqliteStockStore

CATALOG_FILE = "catalog.db"
# Prices and stock live together: both are small, hot rows written by actors, and one
# file keeps the number of WAL files and fsyncs per process down.
LEDGER_FILE = "ledger.db"


@dataclass(frozen=True, slots=True)
class EmbeddedStores:
    catalog: CatalogStore
    prices: PriceStore
    stock: StockStore

    async def close(self) -> None:
        """Close all three, even if one fails; the first failure is re-raised."""
        results = await asyncio.gather(
            self.catalog.close(), self.prices.close(), self.stock.close(), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result


def open_embedded_stores(data_dir: str) -> EmbeddedStores:
    """Build the stores; no file is opened until a store is first used."""
    os.makedirs(data_dir, exist_ok=True)
    ledger = os.path.join(data_dir, LEDGER_FILE)
    return EmbeddedStores(
        catalog=SqliteCatalogStore(os.path.join(data_dir, CATALOG_FILE)),
        prices=SqlitePriceStore(ledger),
        stock=SqliteStockStore(ledger),
    )
