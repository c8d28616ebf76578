"""Guest-cart merge at sign-in: the domain rule, and once-only through the shard."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.cart_service import CartService
from actors.domain.cart import Cart, CartLimits
from actors.domain.errors import DomainError, ErrorCode
from actors.kinds import ShardKind
from actors.pricing_service import PricingService
from actors.protocol import unwrap
from actors.router import ShardRouter
from actors.shop import Shop
from storage.records import PriceRecord
from storage.sqlite.catalog import SqliteCatalogStore
from storage.sqlite.prices import SqlitePriceStore

LIMITS = CartLimits(max_lines=3, max_quantity_per_line=5)


def test_merge_adds_up_caps_and_reports_what_did_not_fit() -> None:
    cart = Cart.new("c" * 20, "cust-1", 0.0)
    cart.add("A", 4, LIMITS, 0.0)
    cart.add("B", 1, LIMITS, 0.0)
    skipped = cart.merge([("A", 3), ("C", 2), ("D", 1)], LIMITS, 1.0)
    assert cart.lines == {"A": 5, "B": 1, "C": 2}
    assert skipped == ["A", "D"]
    assert cart.updated_at == 1.0


def test_bad_merge_input_changes_nothing() -> None:
    cart = Cart.new("c" * 20, None, 0.0)
    cart.add("A", 1, LIMITS, 0.0)
    before = cart.snapshot()
    with pytest.raises(DomainError) as info:
        cart.merge([("B", 1), ("C", 0)], LIMITS, 1.0)
    assert info.value.code is ErrorCode.QUANTITY_INVALID
    assert cart.snapshot() == before


async def test_merge_through_the_shard_applies_once(tmp_path: Path) -> None:
    prices = SqlitePriceStore(str(tmp_path / "ledger.db"))
    await prices.put_prices([PriceRecord("A", 100, "EUR", "home")])
    service = CartService(LIMITS, 3600, 100)
    router = ShardRouter(
        {
            ShardKind.CART: [service.apply],
            ShardKind.PRICING: [PricingService(prices, "EUR", 100).apply],
        },
        max_batch=10,
        max_inflight=1,
        timeout_s=2,
    )
    shop = Shop(router, SqliteCatalogStore(str(tmp_path / "catalog.db")), "EUR")
    guest = (await shop.create_cart())["id"]
    mine = (await shop.create_cart("cust-1"))["id"]
    await shop.add_item(guest, "A", 2)
    await shop.add_item(mine, "A", 1, caller="cust-1")
    first = await shop.merge_carts(guest, mine, "cust-1")
    again = await shop.merge_carts(guest, mine, "cust-1")
    assert [(line["sku"], line["quantity"]) for line in first["lines"]] == [("A", 3)]
    assert [(line["sku"], line["quantity"]) for line in again["lines"]] == [("A", 3)]
    assert first["customer_id"] == "cust-1"
    with pytest.raises(DomainError):
        await shop.merge_carts(mine, mine, "cust-1")
    snap = unwrap((await service.apply([("get", (mine, "cust-1"))]))[0])
    assert snap["lines"] == [{"sku": "A", "quantity": 3}]
    # Someone else's cart is neither a merge target nor a merge source.
    for target, source in ((mine, guest), (guest, mine)):
        with pytest.raises(DomainError) as refused:
            await shop.merge_carts(source, target, "cust-2")
        assert refused.value.code is ErrorCode.CART_NOT_FOUND
    after = unwrap((await service.apply([("get", (mine, "cust-1"))]))[0])
    assert after["version"] == snap["version"]
    await prices.close()
