"""The order processor in-process: real inventory shards, SQLite order store, sandbox
payments. Orders are created directly in the states checkout leaves them in."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from actors.domain.errors import DomainError, ErrorCode
from actors.domain.orders import Order, OrderLine, OrderStatus, Payment, transition
from actors.inventory_service import InventoryService
from actors.kinds import ShardKind
from actors.order_processor import (
    OrderProcessor,
    SandboxAuthorizations,
    authorize_key,
    choose_carrier,
    reservation_id,
    tracking_number,
)
from actors.payments.provider import Capture, PaymentState
from actors.payments.sandbox import InMemoryLedger, SandboxProvider, WebhookDelivery
from actors.router import ShardRouter
from storage.records import NewOutboxEvent
from tests.inprocess import InProcess, build_inprocess

WEBHOOK_SECRET = b"whsec_order_processor_test_32byt"
CARRIERS = ("dhl", "ups", "ctt")
SKUS = ("SKU-0000001-1", "SKU-0000002-1", "SKU-0000003-1")


@dataclass
class Env:
    run: InProcess
    provider: SandboxProvider
    ledger: InMemoryLedger
    deliveries: list[WebhookDelivery] = field(default_factory=list)

    def processor(self, **options: Any) -> OrderProcessor:
        defaults: dict[str, Any] = {
            "journal": self.run.stores.stock,
            "carriers": CARRIERS,
            "authorizations": SandboxAuthorizations(self.ledger),
            "retry_delay_s": 0.0,
        }
        provider = options.pop("provider", self.provider)
        return OrderProcessor(
            self.run.stores.orders, self.run.router, provider, **(defaults | options)
        )

    def webhooks(self, kind: str) -> list[WebhookDelivery]:
        return [d for d in self.deliveries if d.event.type == kind]

    async def stock(self, sku: str) -> dict[str, int]:
        levels: Mapping[str, dict[str, int]] = await self.run.router.fanout(
            ShardKind.INVENTORY, [sku], "stock"
        )
        return levels[sku]


async def make_env(tmp_path: Path) -> Env:
    run = await build_inprocess(tmp_path, 10)
    ledger = InMemoryLedger()
    env = Env(run, SandboxProvider(ledger), ledger)

    async def sink(delivery: WebhookDelivery) -> None:
        env.deliveries.append(delivery)

    env.provider = SandboxProvider(ledger, on_event=sink, webhook_secret=WEBHOOK_SECRET)
    for sku in SKUS:
        await run.router.call(ShardKind.INVENTORY, sku, "set_on_hand", f"seed:{sku}", sku, 10)
    return env


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    made = await make_env(tmp_path)
    yield made
    await made.run.stores.close()


async def place(
    env: Env,
    order_id: str,
    lines: list[tuple[str, int, str]],  # (sku, quantity, merchant id)
    *,
    token: str = "tok_approve",
    authorize: bool = True,
    expires_in: float = 3600.0,
    cart_id: str | None = None,
) -> Order:
    """Reserve, create the order pending payment, authorize it, mark it authorized: what
    checkout does. With ``authorize=False`` (or a timing-out token) it stays pending."""
    now = time.time()
    for sku, quantity, _ in lines:
        await env.run.router.call(
            ShardKind.INVENTORY, sku, "reserve", f"{order_id}:reserve:{sku}",
            reservation_id(order_id, sku), sku, quantity,
        )
    order = Order.create(
        order_id,
        f"cart-{order_id}" if cart_id is None else cart_id,
        "EUR",
        [OrderLine(sku, f"p-{sku}", merchant, qty, 900, 1000) for sku, qty, merchant in lines],
        now,
        expires_at=now + expires_in,
        reservation_ids=[reservation_id(order_id, sku) for sku, _, _ in lines],
    )
    placed = NewOutboxEvent("order.placed", {"order_id": order_id, "status": "pending_payment"})
    orders = env.run.stores.orders
    order = await orders.create_order(order, [placed])
    if not authorize:
        return order
    try:
        auth = await env.provider.authorize(
            amount=order.total, currency="EUR", token=token,
            idempotency_key=authorize_key(order_id), metadata={"order_id": order_id},
        )
    except DomainError as error:
        if error.code is not ErrorCode.PAYMENT_TIMEOUT:
            raise
        return order  # checkout leaves it pending_payment
    moved = transition(
        order, OrderStatus.AUTHORIZED, now, payment=Payment("sandbox", auth.payment_id, order.total)
    )
    event = NewOutboxEvent("order.authorized", {"order_id": order_id, "status": "authorized"})
    return await orders.transition(order_id, order.version, moved, [event])


async def drain(processor: OrderProcessor, now: float | None = None) -> None:
    for _ in range(10):
        if await processor.run_once(now) == 0:
            return


async def get(env: Env, order_id: str) -> Order:
    order = await env.run.stores.orders.get_order(order_id)
    assert order is not None
    return order


async def test_authorized_order_is_paid_then_fulfilled(env: Env) -> None:
    await place(env, "o-1", [(SKUS[0], 2, "m-001"), (SKUS[1], 1, "m-001")])
    assert (await env.stock(SKUS[0]))["reserved"] == 2
    await drain(env.processor())
    order = await get(env, "o-1")
    assert order.status is OrderStatus.FULFILLING
    carrier = choose_carrier("o-1", CARRIERS)
    assert order.shipment is not None
    assert order.shipment.carrier == carrier
    assert order.shipment.tracking_number == tracking_number("o-1", carrier)
    assert await env.stock(SKUS[0]) == {"on_hand": 10, "reserved": 0, "sold": 2, "available": 8}
    assert (await env.stock(SKUS[1]))["sold"] == 1
    assert order.payment is not None
    payment = await env.provider.get(order.payment.payment_id)
    assert (payment.state, payment.captured) == (PaymentState.CAPTURED, order.total)
    assert len(env.webhooks("payment.captured")) == 1
    # The reservation is gone: committing it again is refused by the shard.
    with pytest.raises(DomainError) as caught:
        await env.run.router.call(
            ShardKind.INVENTORY, SKUS[0], "commit", "another-op",
            reservation_id("o-1", SKUS[0]), SKUS[0],
        )
    assert caught.value.code is ErrorCode.RESERVATION_NOT_FOUND
    # Nothing left to do, and running again changes nothing.
    assert await env.processor().run_once() == 0
    assert (await get(env, "o-1")).version == order.version


async def test_two_processors_at_once_capture_once(env: Env) -> None:
    for n in range(4):
        await place(env, f"c-{n}", [(SKUS[n % 3], 1, "m-001")])
    first, second = env.processor(batch_size=3), env.processor(batch_size=3)
    for _ in range(6):
        await asyncio.gather(first.run_once(), second.run_once())
    for n in range(4):
        assert (await get(env, f"c-{n}")).status is OrderStatus.FULFILLING
    assert len(env.webhooks("payment.captured")) == 4
    sold = [(await env.stock(sku))["sold"] for sku in SKUS]
    assert sold == [2, 1, 1]


class Killed(BaseException):
    """The process dying: not an error a handler catches."""


class KilledAfterCapture:
    """The real provider, but the process dies right after the first capture succeeded
    (before the order could be marked paid)."""

    def __init__(self, inner: SandboxProvider) -> None:
        self.inner = inner
        self.name = inner.name

    async def capture(self, payment_id: str, amount: int, idempotency_key: str) -> Capture:
        await self.inner.capture(payment_id, amount, idempotency_key)
        raise Killed

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_killed_between_capture_and_paid_captures_once(env: Env) -> None:
    await place(env, "k-1", [(SKUS[0], 3, "m-001")])
    with pytest.raises(Killed):
        await env.processor(provider=KilledAfterCapture(env.provider)).run_once()
    order = await get(env, "k-1")
    assert order.status is OrderStatus.AUTHORIZED
    assert len(env.webhooks("payment.captured")) == 1
    # Restarted: the event is claimed again once the dead processor's lease lapsed.
    restarted = env.processor()
    assert await restarted.run_once() == 0  # still leased
    await drain(restarted, time.time() + 61)
    assert (await get(env, "k-1")).status is OrderStatus.FULFILLING
    assert len(env.webhooks("payment.captured")) == 1  # the retry replayed the capture
    assert (await env.stock(SKUS[0]))["sold"] == 3


class KilledAfterCommit:
    def __init__(self, inner: SandboxProvider) -> None:
        self.inner = inner
        self.name = inner.name

    async def capture(self, payment_id: str, amount: int, idempotency_key: str) -> Capture:
        raise Killed

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_killed_after_commit_with_restarted_shards_sells_once(env: Env) -> None:
    await place(env, "k-2", [(SKUS[1], 2, "m-001"), (SKUS[2], 1, "m-001")])
    with pytest.raises(Killed):
        await env.processor(provider=KilledAfterCommit(env.provider)).run_once()
    assert (await env.stock(SKUS[1]))["sold"] == 2
    # The shards restart too, past their recall window: they no longer know the commit
    # op ids, and the reservations are gone. The stock journal says they were ours.
    fresh = [
        InventoryService(env.run.stores.stock, 900, 1000, recall_window_s=0) for _ in range(2)
    ]
    env.run.router = ShardRouter(
        {kind: [s.apply for s in fresh] for kind in (ShardKind.INVENTORY,)},
        max_batch=64, max_inflight=2, timeout_s=5,
    )
    await drain(env.processor(), time.time() + 61)
    assert (await get(env, "k-2")).status is OrderStatus.FULFILLING
    assert await env.stock(SKUS[1]) == {"on_hand": 10, "reserved": 0, "sold": 2, "available": 8}
    assert (await env.stock(SKUS[2]))["sold"] == 1
    assert len(env.webhooks("payment.captured")) == 1


async def test_a_failed_capture_is_retried_with_the_same_key(env: Env) -> None:
    await place(env, "f-1", [(SKUS[0], 1, "m-001")], token="tok_fail_capture")
    await drain(env.processor())
    assert (await get(env, "f-1")).status is OrderStatus.FULFILLING
    assert len(env.webhooks("payment.captured")) == 1


async def test_expiry_voids_and_releases_stock(env: Env) -> None:
    order = await place(env, "e-1", [(SKUS[0], 4, "m-001")], expires_in=30)
    assert (await env.stock(SKUS[0]))["available"] == 6
    processor = env.processor()
    assert await processor.expire_due(time.time()) == 0  # not due yet
    # The processor leaves an order this close to its deadline to the expiry sweep.
    await drain(processor)
    assert (await get(env, "e-1")).status is OrderStatus.AUTHORIZED
    assert await processor.expire_due(time.time() + 31) == 1
    expired = await get(env, "e-1")
    assert expired.status is OrderStatus.EXPIRED
    assert await env.stock(SKUS[0]) == {"on_hand": 10, "reserved": 0, "sold": 0, "available": 10}
    assert order.payment is not None
    assert (await env.provider.get(order.payment.payment_id)).state is PaymentState.VOIDED
    assert await processor.expire_due(time.time() + 31) == 0
    assert len(env.webhooks("payment.voided")) == 1


async def test_expiry_reconciles_a_timed_out_authorization(env: Env) -> None:
    order = await place(env, "t-1", [(SKUS[2], 1, "m-001")], token="tok_timeout")
    assert order.status is OrderStatus.PENDING_PAYMENT
    assert order.payment is None
    [authorized] = env.webhooks("payment.authorized")
    assert await env.processor().expire_due(time.time() + 3601) == 1
    assert (await get(env, "t-1")).status is OrderStatus.EXPIRED
    payment = await env.provider.get(authorized.event.data["payment_id"])
    assert payment.state is PaymentState.VOIDED
    assert (await env.stock(SKUS[2]))["available"] == 10


async def test_an_unpaid_pending_order_just_expires(env: Env) -> None:
    await place(env, "p-1", [(SKUS[1], 1, "m-001")], authorize=False)
    assert await env.processor().expire_due(time.time() + 3601) == 1
    assert (await get(env, "p-1")).status is OrderStatus.EXPIRED
    assert (await env.stock(SKUS[1]))["available"] == 10


async def frozen_cart(env: Env, cart_id: str) -> None:
    """A cart as checkout leaves it: one line, frozen by the checkout's holder."""
    router = env.run.router
    await router.call(ShardKind.CART, cart_id, "create", f"{cart_id}:create", cart_id, None)
    await router.call(ShardKind.CART, cart_id, "add", f"{cart_id}:add", cart_id, SKUS[0], 1)
    await router.call(
        ShardKind.CART, cart_id, "freeze", f"{cart_id}:freeze", cart_id, "checkout:abc"
    )


async def cart(env: Env, cart_id: str) -> dict[str, Any]:
    snapshot: dict[str, Any] = await env.run.router.call(ShardKind.CART, cart_id, "get", cart_id)
    return snapshot


async def test_an_order_that_will_not_be_paid_gives_the_cart_back(env: Env) -> None:
    """Expired (authorized or pending) and cancelled orders unfreeze the shopper's cart,
    which checkout left frozen; a cart that no longer exists is no obstacle."""
    carts = {"x-1": "cart-expired-authorized", "x-2": "cart-expired-pending-0",
             "x-3": "cart-cancelled-0000000"}
    for cart_id in carts.values():
        await frozen_cart(env, cart_id)
    await place(env, "x-1", [(SKUS[0], 1, "m-001")], expires_in=30, cart_id=carts["x-1"])
    await place(env, "x-2", [(SKUS[1], 1, "m-001")], authorize=False, expires_in=30,
                cart_id=carts["x-2"])
    await place(env, "x-3", [(SKUS[2], 1, "m-001")], cart_id=carts["x-3"])
    await place(env, "x-4", [(SKUS[2], 1, "m-001")], expires_in=30)  # its cart is gone
    for cart_id in carts.values():
        assert (await cart(env, cart_id))["frozen_by"] == "checkout:abc"
    # x-3's reservation lapses before the processor settles it: cancelled.
    await env.run.router.call(
        ShardKind.INVENTORY, SKUS[2], "release", "lapsed", reservation_id("x-3", SKUS[2]),
        SKUS[2],
    )
    processor = env.processor()
    await drain(processor)
    assert (await get(env, "x-3")).status is OrderStatus.CANCELLED
    assert "frozen_by" not in await cart(env, carts["x-3"])
    assert (await cart(env, carts["x-1"]))["frozen_by"] == "checkout:abc"  # not due yet
    assert await processor.expire_due(time.time() + 31) == 3
    for order_id in ("x-1", "x-2", "x-4"):
        assert (await get(env, order_id)).status is OrderStatus.EXPIRED
    for order_id in ("x-1", "x-2"):
        cart_id = carts[order_id]
        assert "frozen_by" not in await cart(env, cart_id)
        # The shopper can use the cart again.
        changed = await env.run.router.call(
            ShardKind.CART, cart_id, "add", f"{cart_id}:again", cart_id, SKUS[1], 1
        )
        assert len(changed["lines"]) == 2
    # Frozen again by a new checkout: a repeated unfreeze of the old order (same op id,
    # e.g. a sweep cut off before its move) does not lift it.
    cart_id = carts["x-1"]
    await env.run.router.call(ShardKind.CART, cart_id, "freeze", "refreeze", cart_id, "new")
    await env.run.router.call(
        ShardKind.CART, cart_id, "unfreeze", "x-1:unfreeze", cart_id, None
    )
    assert (await cart(env, cart_id))["frozen_by"] == "new"
