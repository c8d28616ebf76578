"""The pricing shard's service over a real SQLite store: durable before acknowledged."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from actors.pricing_service import PricingService
from actors.protocol import unwrap
from storage.errors import StoreUnavailable
from storage.records import PriceRecord
from storage.sqlite.prices import SqlitePriceStore


class FailingWrites(SqlitePriceStore):
    fail = False

    async def put_prices(self, records: Iterable[PriceRecord]) -> int:
        if self.fail:
            raise StoreUnavailable("down")
        return await super().put_prices(records)


async def test_failed_price_write_is_refused_and_forgotten(tmp_path: Path) -> None:
    store = FailingWrites(str(tmp_path / "ledger.db"))
    await store.put_prices([PriceRecord("A", 1000, "EUR", "home")])
    svc = PricingService(store, "EUR", 100)
    assert unwrap((await svc.apply([("quote", (["A"],))]))[0])["A"]["unit"] == 1000
    store.fail = True
    reply = (await svc.apply([("set_price", ("op-1", "A", 900, "home")), ("quote", (["A"],))]))
    assert reply[0][1][0] == "store_unavailable"
    store.fail = False
    # Not acknowledged, so not kept: the book reloads the stored price.
    assert unwrap((await svc.apply([("quote", (["A"],))]))[0])["A"]["unit"] == 1000
    # The retry with the same op id applies now, and a restarted shard sees it.
    unwrap((await svc.apply([("set_price", ("op-1", "A", 900, "home"))]))[0])
    restarted = PricingService(store, "EUR", 100)
    assert unwrap((await restarted.apply([("quote", (["A"],))]))[0])["A"]["unit"] == 900
    await store.close()
