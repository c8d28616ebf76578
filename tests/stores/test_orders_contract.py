"""The order store contract: every test runs on SQLite and on a real PostgreSQL.

Orders, their outbox, per-consumer claims with leases, effect de-duplication and the
checkout idempotency keys.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson
import pytest

from actors.domain.orders import (
    Order,
    OrderLine,
    OrderStatus,
    Payment,
    Shipment,
    ShipmentEvent,
    record_shipment_event,
    transition,
)
from storage.errors import (
    DuplicateKey,
    RecordNotFound,
    StoreConflict,
    StoreIntegrityError,
)
from storage.interfaces import OrderStore
from storage.postgres.orders import PgOrderStore
from storage.records import IdempotencyRecord, NewOutboxEvent, OutboxEvent
from storage.sqlite.connection import SqliteExecutor, immediate_transaction
from storage.sqlite.orders import MIGRATIONS, SqliteOrderStore
from tests.stores.conftest import contract_stores

T0 = 1_700_000_000.0
DAY = 86_400.0
S = OrderStatus


@dataclass
class Orders:
    backend: str
    store: OrderStore
    # Another store on the same data, with its own connection(s): a second process.
    another: Callable[[], OrderStore]


@pytest.fixture
async def orders(backend: tuple[str, str]) -> AsyncIterator[Orders]:
    async with contract_stores(backend, SqliteOrderStore, PgOrderStore, extra_pool_size=2) as (
        store,
        another,
    ):
        yield Orders(backend[0], store, another)


def line(sku: str, merchant: str = "m-1", quantity: int = 1, amount: int = 1000) -> OrderLine:
    return OrderLine(sku, f"p-{sku}", merchant, quantity, amount, amount)


def order(
    order_id: str = "ord-1",
    customer: str = "cust-1",
    created_at: float = T0,
    merchants: tuple[str, ...] = ("m-1",),
    expires_at: float | None = T0 + 900,
) -> Order:
    lines = [line(f"SKU-{i}", m) for i, m in enumerate(merchants)]
    return Order.create(order_id, customer, "EUR", lines, created_at, expires_at=expires_at)


def created(o: Order) -> NewOutboxEvent:
    return NewOutboxEvent("order.created", {"order_id": o.id, "total": o.total})


def key(
    k: str = "key-1",
    order_id: str | None = "ord-1",
    at: float = T0,
    ttl: float = DAY,
    body: str = "hash-a",
) -> IdempotencyRecord:
    return IdempotencyRecord(
        scope="checkout:cust-1",
        key=k,
        request_hash=body,
        response={"order_id": order_id, "status": "pending_payment"},
        status_code=202,
        order_id=order_id,
        created_at=at,
        expires_at=at + ttl,
    )


async def drain(store: OrderStore, consumer: str = "c", now: float = T0) -> list[OutboxEvent]:
    return await store.claim_events(consumer, 1000, 30, now)


async def authorize(store: OrderStore, o: Order, *events: NewOutboxEvent) -> Order:
    moved = transition(o, S.AUTHORIZED, o.updated_at + 1, payment=Payment("sb", "pay", o.total))
    return await store.transition(o.id, o.version, moved, list(events))


# --- create and idempotency -----------------------------------------------------------------


async def test_create_writes_order_and_events(orders: Orders) -> None:
    store = orders.store
    o = order(merchants=("m-1", "m-2"))
    second = NewOutboxEvent("order.reserved", {"skus": ["SKU-0", "SKU-1"], "n": 2.5})
    assert await store.create_order(o, [created(o), second], key()) == o
    assert await store.get_order("ord-1") == o
    assert await store.get_order("missing") is None
    events = await drain(store)
    assert [(e.order_id, e.kind, e.payload, e.created_at, e.attempts) for e in events] == [
        ("ord-1", "order.created", {"order_id": "ord-1", "total": 2000}, T0, 1),
        ("ord-1", "order.reserved", {"skus": ["SKU-0", "SKU-1"], "n": 2.5}, T0, 1),
    ]
    assert events[0].id < events[1].id
    assert await store.get_idempotency("checkout:cust-1", "key-1", now=T0 + 1) == key()


async def test_same_key_twice_raises_with_the_first_record_and_writes_nothing(
    orders: Orders,
) -> None:
    store = orders.store
    first = order("ord-1")
    await store.create_order(first, [created(first)], key())
    retry = order("ord-2", merchants=("m-9",))
    with pytest.raises(DuplicateKey) as info:
        await store.create_order(retry, [created(retry)], key(order_id="ord-2", at=T0 + 5))
    assert info.value.existing == key()
    # Nothing of the second attempt exists: no order, no merchant row, no event.
    assert await store.get_order("ord-2") is None
    assert await store.list_orders(merchant_id="m-9") == ([], None)
    assert [e.order_id for e in await drain(store)] == ["ord-1"]
    # A different body with the same key is the caller's 422; the store still refuses.
    with pytest.raises(DuplicateKey) as info:
        await store.create_order(retry, [], key(order_id="ord-2", body="hash-b"))
    assert info.value.existing.request_hash == "hash-a"


async def test_concurrent_requests_with_one_key_make_one_order(orders: Orders) -> None:
    stores = [orders.store, orders.another(), orders.another()]
    attempts = [order(f"ord-{i}") for i in range(6)]
    results = await asyncio.gather(
        *(
            stores[i % 3].create_order(o, [created(o)], key(order_id=o.id))
            for i, o in enumerate(attempts)
        ),
        return_exceptions=True,
    )
    winners = [r for r in results if isinstance(r, Order)]
    losers = [r for r in results if isinstance(r, DuplicateKey)]
    assert len(winners) == 1, results
    assert len(losers) == 5, results
    assert {loser.existing.order_id for loser in losers} == {winners[0].id}
    assert [e.order_id for e in await drain(orders.store)] == [winners[0].id]


async def test_expired_key_is_absent_and_can_be_taken_again(orders: Orders) -> None:
    store = orders.store
    short = key(ttl=10)
    first = order("ord-1")
    await store.create_order(first, [], short)
    assert await store.get_idempotency("checkout:cust-1", "key-1", now=T0 + 9.5) == short
    assert await store.get_idempotency("checkout:cust-1", "key-1", now=T0 + 10) is None
    assert await store.get_idempotency("checkout:other", "key-1", now=T0) is None
    # Reused after expiry: the new request wins the key.
    later = order("ord-2", created_at=T0 + 20)
    fresh = key(order_id="ord-2", at=T0 + 20, body="hash-b")
    await store.create_order(later, [], fresh)
    assert await store.get_idempotency("checkout:cust-1", "key-1", now=T0 + 21) == fresh
    assert await store.get_order("ord-1") == first


async def test_purge_drops_only_expired_keys(orders: Orders) -> None:
    store = orders.store
    await store.save_idempotency(key("a", None, ttl=10))
    await store.save_idempotency(key("b", None, ttl=DAY))
    await store.save_idempotency(key("c", None, ttl=20))
    assert await store.purge_idempotency(T0 + 20) == 2
    assert await store.purge_idempotency(T0 + 20) == 0
    assert await store.get_idempotency("checkout:cust-1", "b", now=T0) == key("b", None)
    assert await store.get_idempotency("checkout:cust-1", "a", now=T0) is None


async def test_save_idempotency_without_an_order(orders: Orders) -> None:
    store = orders.store
    refusal = replace(key(order_id=None), response={"code": "insufficient_stock"}, status_code=409)
    await store.save_idempotency(refusal)
    assert await store.get_idempotency("checkout:cust-1", "key-1", now=T0) == refusal
    with pytest.raises(DuplicateKey) as info:
        await store.save_idempotency(key())
    assert info.value.existing == refusal
    o = order()
    with pytest.raises(DuplicateKey):
        await store.create_order(o, [created(o)], key())
    assert await store.get_order(o.id) is None


async def test_existing_order_id_is_a_conflict_and_keeps_no_key(orders: Orders) -> None:
    store = orders.store
    o = order()
    await store.create_order(o, [created(o)])
    with pytest.raises(StoreConflict):
        await store.create_order(o, [created(o)], key("other"))
    assert await store.get_idempotency("checkout:cust-1", "other", now=T0) is None
    assert len(await drain(store)) == 1


async def test_refused_input_writes_nothing(orders: Orders) -> None:
    store = orders.store
    o = order()
    with pytest.raises(StoreIntegrityError):
        await store.create_order(o, [NewOutboxEvent("x", ["not", "an", "object"])])  # type: ignore[arg-type]
    with pytest.raises(StoreIntegrityError):
        await store.create_order(o, [NewOutboxEvent("", {})])
    with pytest.raises(StoreIntegrityError):
        await store.create_order(replace(o, version=2), [])
    with pytest.raises(StoreIntegrityError):
        await store.create_order(o, [], replace(key(), status_code=99))
    assert await store.get_order(o.id) is None
    assert await drain(store) == []


# --- transitions ----------------------------------------------------------------------------


async def test_transition_replaces_the_order_and_appends_events(orders: Orders) -> None:
    store = orders.store
    o = order()
    await store.create_order(o, [created(o)])
    authorized = await authorize(store, o, NewOutboxEvent("order.authorized", {"v": 2}))
    assert authorized.version == 2
    assert await store.get_order(o.id) == authorized
    paid = transition(authorized, S.PAID, T0 + 5)
    assert await store.transition(o.id, 2, paid, []) == paid
    assert await store.get_order(o.id) == paid
    events = await drain(store)
    assert [(e.kind, e.created_at) for e in events] == [
        ("order.created", T0),
        ("order.authorized", T0 + 1),
    ]


async def test_wrong_version_is_a_conflict_and_writes_nothing(orders: Orders) -> None:
    store = orders.store
    o = order()
    await store.create_order(o, [created(o)])
    authorized = await authorize(store, o)
    # A second writer still holding version 1 loses, and its event is not written.
    stale = transition(o, S.CANCELLED, T0 + 2)
    with pytest.raises(StoreConflict):
        await store.transition(o.id, 1, stale, [NewOutboxEvent("order.cancelled", {})])
    assert await store.get_order(o.id) == authorized
    assert [e.kind for e in await drain(store)] == ["order.created"]


async def test_concurrent_writers_of_one_version_one_wins(orders: Orders) -> None:
    o = order()
    await orders.store.create_order(o, [])
    stores = [orders.store, orders.another(), orders.another()]
    moves = [
        transition(o, S.CANCELLED, T0 + 1),
        transition(o, S.EXPIRED, T0 + 1),
        transition(o, S.PAYMENT_FAILED, T0 + 1),
    ]
    results = await asyncio.gather(
        *(
            s.transition(o.id, 1, m, [NewOutboxEvent(m.status.value, {})])
            for s, m in zip(stores, moves, strict=True)
        ),
        return_exceptions=True,
    )
    won = [r for r in results if isinstance(r, Order)]
    assert len(won) == 1, results
    assert all(isinstance(r, StoreConflict) for r in results if not isinstance(r, Order))
    assert await orders.store.get_order(o.id) == won[0]
    assert [e.kind for e in await drain(orders.store)] == [won[0].status.value]


async def test_store_refuses_a_status_change_off_the_table(orders: Orders) -> None:
    store = orders.store
    o = order()
    await store.create_order(o, [])
    jumped = replace(o, status=S.SHIPPED, version=2)  # pending_payment -> shipped
    with pytest.raises(StoreConflict):
        await store.transition(o.id, 1, jumped, [NewOutboxEvent("order.shipped", {})])
    # Same status with new data (e.g. reservation ids) is a valid write.
    same = replace(o, reservation_ids=("r-1",), version=2, updated_at=T0 + 1)
    assert await store.transition(o.id, 1, same) == same
    assert await drain(store) == []


async def test_transition_refusals(orders: Orders) -> None:
    store = orders.store
    o = order()
    with pytest.raises(RecordNotFound):
        await store.transition(o.id, 1, transition(o, S.CANCELLED, T0), [])
    await store.create_order(o, [])
    with pytest.raises(StoreIntegrityError):  # version must be expected + 1
        await store.transition(o.id, 1, replace(o, status=S.CANCELLED, version=3), [])
    with pytest.raises(StoreIntegrityError):  # another order's id
        await store.transition("ord-9", 1, transition(o, S.CANCELLED, T0), [])
    assert await store.get_order(o.id) == o


# --- listings and expiry --------------------------------------------------------------------


async def test_list_by_customer_and_by_merchant_with_cursor_paging(orders: Orders) -> None:
    store = orders.store
    specs = [  # id, customer, created_at, merchants
        ("o-a", "alice", T0 + 1, ("m-1",)),
        ("o-b", "alice", T0 + 3, ("m-2",)),
        ("o-c", "alice", T0 + 3, ("m-1", "m-2")),  # ties on created_at: id breaks them
        ("o-d", "bob", T0 + 2, ("m-1",)),
        ("o-e", "alice", T0 + 0.5, ("m-2", "m-3")),
        ("o-f", "alice", T0 + 7, ("m-1",)),
        ("o-g", "alice", T0 + 3, ("m-3",)),
    ]
    for oid, customer, at, merchants in specs:
        o = order(oid, customer, at, merchants)
        await store.create_order(o, [created(o)])

    async def pages(limit: int, **owner: str) -> list[list[str]]:
        out, cursor = [], None
        while True:
            page, cursor = await store.list_orders(cursor=cursor, limit=limit, **owner)
            out.append([o.id for o in page])
            if cursor is None:
                return out

    assert await pages(3, customer_ref="alice") == [["o-f", "o-g", "o-c"], ["o-b", "o-a", "o-e"]]
    assert await pages(2, customer_ref="alice") == [["o-f", "o-g"], ["o-c", "o-b"], ["o-a", "o-e"]]
    assert await pages(10, customer_ref="bob") == [["o-d"]]
    assert await pages(10, customer_ref="nobody") == [[]]
    assert await pages(2, merchant_id="m-1") == [["o-f", "o-c"], ["o-d", "o-a"]]
    assert await pages(1, merchant_id="m-2") == [["o-c"], ["o-b"], ["o-e"]]
    # A merchant's listing returns whole orders, lines of other merchants included.
    page, _ = await store.list_orders(merchant_id="m-3", limit=5)
    assert [o.id for o in page] == ["o-g", "o-e"]
    assert page[1].merchant_ids == frozenset({"m-2", "m-3"})
    for bad in (
        {},
        {"customer_ref": "a", "merchant_id": "m"},
        {"customer_ref": "a", "carrier": "c"},
        {"merchant_id": "m", "carrier": "c"},
    ):
        with pytest.raises(ValueError, match="exactly one"):
            await store.list_orders(**bad)  # type: ignore[arg-type]
    for limit in (0, 101):
        with pytest.raises(ValueError, match="limit"):
            await store.list_orders(customer_ref="alice", limit=limit)
    for cursor in ("!!", "bm9waXBl", "YWJjfA"):  # not base64url; "nopipe"; "abc|"
        with pytest.raises(ValueError, match="cursor"):
            await store.list_orders(customer_ref="alice", cursor=cursor)


async def ship(store: OrderStore, o: Order, carrier: str) -> Order:
    """pending -> authorized -> paid -> fulfilling with a shipment by ``carrier``."""
    o = await authorize(store, o)
    paid = transition(o, S.PAID, o.updated_at + 1)
    o = await store.transition(o.id, o.version, paid)
    shipment = Shipment(carrier, f"TRK-{o.id}")
    fulfilling = transition(o, S.FULFILLING, o.updated_at + 1, shipment=shipment)
    return await store.transition(o.id, o.version, fulfilling)


async def test_list_by_carrier_with_cursor_paging(orders: Orders) -> None:
    store = orders.store
    specs = [  # id, created_at, carrier (None: never shipped)
        ("o-a", T0 + 1, "dhl"),
        ("o-b", T0 + 3, "dhl"),
        ("o-c", T0 + 3, "ups"),
        ("o-d", T0 + 3, "dhl"),  # ties with o-b on created_at: id breaks them
        ("o-e", T0 + 9, None),
        ("o-f", T0 + 7, "dhl"),
        ("o-g", T0 + 0.5, "ups"),
    ]
    for oid, at, carrier in specs:
        o = order(oid, "alice", at)
        await store.create_order(o, [created(o)])
        if carrier is not None:
            await ship(store, o, carrier)

    async def pages(limit: int, carrier: str) -> list[list[str]]:
        out, cursor = [], None
        while True:
            page, cursor = await store.list_orders(carrier=carrier, cursor=cursor, limit=limit)
            assert all(o.shipment is not None and o.shipment.carrier == carrier for o in page)
            out.append([o.id for o in page])
            if cursor is None:
                return out

    assert await pages(2, "dhl") == [["o-f", "o-d"], ["o-b", "o-a"]]
    assert await pages(3, "dhl") == [["o-f", "o-d", "o-b"], ["o-a"]]
    assert await pages(10, "ups") == [["o-c", "o-g"]]
    assert await pages(1, "ups") == [["o-c"], ["o-g"]]
    assert await pages(10, "nobody") == [[]]
    # Whole orders, as stored (the shipment included).
    page, _ = await store.list_orders(carrier="dhl", limit=1)
    assert page == [await store.get_order("o-f")]
    for limit in (0, 101):
        with pytest.raises(ValueError, match="limit"):
            await store.list_orders(carrier="dhl", limit=limit)
    with pytest.raises(ValueError, match="cursor"):
        await store.list_orders(carrier="dhl", cursor="bm9waXBl")


async def test_an_order_is_listed_by_its_carrier_once_it_has_a_shipment(
    orders: Orders,
) -> None:
    store = orders.store
    o = order("o-1")
    await store.create_order(o, [created(o)])
    assert await store.list_orders(carrier="dhl") == ([], None)
    o = await authorize(store, o)
    o = await store.transition(o.id, o.version, transition(o, S.PAID, T0 + 2))
    assert await store.list_orders(carrier="dhl") == ([], None)
    other = order("o-2", created_at=T0 + 5)
    await store.create_order(other, [])
    await ship(store, other, "ups")  # another carrier's
    shipped = await store.get_order("o-1")
    assert shipped is not None
    fulfilling = transition(shipped, S.FULFILLING, T0 + 3, shipment=Shipment("dhl", "TRK-1"))
    await store.transition("o-1", shipped.version, fulfilling)
    page, cursor = await store.list_orders(carrier="dhl")
    assert ([x.id for x in page], cursor) == (["o-1"], None)
    # Later changes keep it listed, with what was written last.
    event = ShipmentEvent("picked_up", T0 + 4)
    moved = transition(
        fulfilling,
        S.SHIPPED,
        T0 + 4,
        shipment=replace(fulfilling.shipment, events=(event,)),  # type: ignore[arg-type]
    )
    await store.transition("o-1", fulfilling.version, moved)
    tracked = record_shipment_event(moved, ShipmentEvent("in_transit", T0 + 5), T0 + 5)
    await store.transition("o-1", moved.version, tracked)
    assert await store.list_orders(carrier="dhl") == ([tracked], None)
    # Other carriers' orders never appear, in any status; the customer still sees both.
    page, _ = await store.list_orders(carrier="ups")
    assert [x.id for x in page] == ["o-2"]
    assert await store.list_orders(carrier="DHL") == ([], None)
    page, _ = await store.list_orders(customer_ref="cust-1")
    assert [x.id for x in page] == ["o-2", "o-1"]
    # Seen the same through another connection (another process).
    another = orders.another()
    assert await another.list_orders(carrier="dhl") == ([tracked], None)


async def test_sqlite_upgrade_fills_in_the_carrier_of_existing_orders(tmp_path: Path) -> None:
    """SQLite only: a ledger written at schema version 1 (no carrier column) lists its
    shipped orders by carrier once opened by the current store."""
    path = str(tmp_path / "ledger.db")
    old = SqliteExecutor(path, component="orders", migrations=MIGRATIONS[:1])
    o = order("o-1")
    paid = transition(
        transition(o, S.AUTHORIZED, T0 + 1, payment=Payment("sb", "pay", o.total)),
        S.PAID,
        T0 + 2,
    )
    shipped = transition(paid, S.FULFILLING, T0 + 3, shipment=Shipment("dhl", "TRK-1"))

    def insert(conn: Any, orders_: list[Order]) -> None:
        with immediate_transaction(conn):
            for x in orders_:
                conn.execute(
                    "INSERT INTO orders (id, customer_ref, status, version, expires_at,"
                    " created_at, updated_at, doc) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        x.id,
                        x.customer_ref,
                        x.status.value,
                        x.version,
                        x.expires_at,
                        x.created_at,
                        x.updated_at,
                        orjson.dumps(x.to_json()).decode(),
                    ),
                )

    await old.run(insert, [shipped, order("o-2")])
    await old.close()
    store = SqliteOrderStore(path)
    try:
        assert await store.list_orders(carrier="dhl") == ([shipped], None)
        page, _ = await store.list_orders(customer_ref="cust-1")
        assert {x.id for x in page} == {"o-1", "o-2"}
    finally:
        await store.close()


async def test_orders_expiring_lists_unpaid_orders_past_their_deadline(orders: Orders) -> None:
    store = orders.store
    pending = order("o-1", expires_at=T0 + 100)
    later = order("o-2", expires_at=T0 + 300)
    never = order("o-3", expires_at=None)
    authorized_one = order("o-4", expires_at=T0 + 50)
    paid_one = order("o-5", expires_at=T0 + 10)
    for o in (pending, later, never, authorized_one, paid_one):
        await store.create_order(o, [])
    await authorize(store, authorized_one)
    paid = await authorize(store, paid_one)
    await store.transition(paid.id, 2, transition(paid, S.PAID, T0 + 3))
    assert [o.id for o in await store.orders_expiring(T0 + 100, 10)] == ["o-4", "o-1"]
    assert [o.id for o in await store.orders_expiring(T0 + 100, 1)] == ["o-4"]
    assert [o.id for o in await store.orders_expiring(T0 + 1000, 10)] == ["o-4", "o-1", "o-2"]
    assert await store.orders_expiring(T0, 10) == []
    # Once expired, it leaves the list.
    await store.transition("o-1", 1, transition(pending, S.EXPIRED, T0 + 101))
    assert [o.id for o in await store.orders_expiring(T0 + 1000, 10)] == ["o-4", "o-2"]


# --- outbox ---------------------------------------------------------------------------------


async def make_events(store: OrderStore, n: int) -> list[int]:
    """n orders with one event each; returns the event ids in order."""
    for i in range(n):
        o = order(f"ord-{i:03d}")
        await store.create_order(o, [NewOutboxEvent("order.created", {"i": i})])
    ids = [e.id for e in await store.claim_events("probe", 10_000, 1, T0)]
    assert len(ids) == n
    return ids


async def test_claim_complete_and_lease_expiry(orders: Orders) -> None:
    store = orders.store
    ids = await make_events(store, 5)
    first = await store.claim_events("proc", 2, 30, T0)
    assert [e.id for e in first] == ids[:2]
    # Leased events are not handed out again while the lease is live.
    second = await store.claim_events("proc", 10, 30, T0 + 1)
    assert [e.id for e in second] == ids[2:]
    assert await store.claim_events("proc", 10, 30, T0 + 29) == []
    await store.complete_events("proc", [ids[0], ids[2], ids[3], ids[4], 999_999])
    # The claimer of ids[1] crashed: after its lease it comes back, attempt 2.
    again = await store.claim_events("proc", 10, 30, T0 + 30)
    assert [(e.id, e.attempts) for e in again] == [(ids[1], 2)]
    assert await store.claim_events("proc", 10, 30, T0 + 59) == []
    await store.complete_events("proc", [ids[1]])
    assert await store.claim_events("proc", 10, 30, T0 + 10_000) == []
    # Another consumer has its own progress; completing without a claim is allowed.
    await store.complete_events("notify", [ids[0]])
    assert [e.id for e in await store.claim_events("notify", 10, 30, T0)] == ids[1:]
    await store.complete_events("notify", [])


async def test_completed_events_stay_done_for_a_late_claimer(orders: Orders) -> None:
    store = orders.store
    ids = await make_events(store, 2)
    claimed = await store.claim_events("proc", 10, 5, T0)
    # The first claimer is slow; its lease lapses and a second one takes both...
    retaken = await store.claim_events("proc", 10, 5, T0 + 6)
    assert [e.id for e in retaken] == ids
    # ...then both complete (effects are de-duplicated separately): still done once.
    await store.complete_events("proc", [e.id for e in claimed])
    await store.complete_events("proc", [e.id for e in retaken])
    assert await store.claim_events("proc", 10, 5, T0 + 100) == []


async def test_two_concurrent_claimers_never_share_a_live_lease(orders: Orders) -> None:
    ids = await make_events(orders.store, 60)
    a, b = orders.another(), orders.another()
    got: dict[str, list[int]] = {"a": [], "b": []}
    for _ in range(40):
        batches = await asyncio.gather(
            a.claim_events("proc", 4, 60, T0), b.claim_events("proc", 4, 60, T0)
        )
        if not batches[0] and not batches[1]:
            break
        got["a"] += [e.id for e in batches[0]]
        got["b"] += [e.id for e in batches[1]]
    assert not set(got["a"]) & set(got["b"])
    assert sorted(got["a"] + got["b"]) == ids
    assert len(got["a"] + got["b"]) == len(ids)


async def test_events_of_one_order_come_in_commit_order(orders: Orders) -> None:
    store = orders.store
    o = order()
    await store.create_order(o, [created(o)])
    authorized = await authorize(store, o, NewOutboxEvent("a", {}), NewOutboxEvent("b", {}))
    paid = transition(authorized, S.PAID, T0 + 2)
    await store.transition(o.id, 2, paid, [NewOutboxEvent("c", {})])
    events = await drain(store)
    assert [e.kind for e in events] == ["order.created", "a", "b", "c"]
    assert [e.id for e in events] == sorted(e.id for e in events)


async def test_record_effect_once(orders: Orders) -> None:
    store = orders.store
    assert await store.record_effect("proc", "capture:ord-1") is True
    assert await store.record_effect("proc", "capture:ord-1") is False
    assert await store.record_effect("proc", "commit:ord-1") is True
    assert await store.record_effect("other", "capture:ord-1") is True
    stores = (store, orders.another(), orders.another())
    results = await asyncio.gather(*(s.record_effect("proc", "ship:ord-1") for s in stores))
    assert sorted(results) == [False, False, True]


async def test_claim_arguments_are_checked(orders: Orders) -> None:
    bad: list[tuple[str, Any]] = [("consumer", ""), ("limit", 0), ("lease_s", 0), ("now", 1e999)]
    for name, value in bad:
        args: dict[str, Any] = {"consumer": "c", "limit": 1, "lease_s": 1.0, "now": T0}
        args[name] = value
        with pytest.raises(ValueError, match=name):
            await orders.store.claim_events(**args)
