"""What the SQLite and PostgreSQL order stores share: row encoding, checks and cursors.

An order is stored whole as its JSON document, next to the few columns queries need
(status, version, customer_ref, carrier, expires_at, created_at) and one ``order_merchants``
row per merchant with a line in it. The document is the truth; the columns are derived from it
on every write.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import orjson

from actors.domain.errors import DomainError
from actors.domain.orders import Order, OrderStatus, status_allowed
from storage.cursors import decode_cursor, encode_cursor
from storage.errors import RecordNotFound, StoreConflict, StoreIntegrityError
from storage.records import IdempotencyRecord, NewOutboxEvent

MAX_PAGE = 100


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def loads(text: str | bytes) -> Any:
    return orjson.loads(text)


def order_doc(order: Order) -> str:
    if not isinstance(order, Order):
        raise StoreIntegrityError(f"expected an Order, got {type(order).__name__}")
    return dumps(order.to_json())


def load_order(doc: str | bytes) -> Order:
    try:
        return Order.from_json(loads(doc))
    except (DomainError, orjson.JSONDecodeError) as exc:
        raise StoreIntegrityError(f"stored order is corrupt: {exc}") from exc


def check_new_order(order: Order) -> None:
    if not isinstance(order, Order):
        raise StoreIntegrityError(f"expected an Order, got {type(order).__name__}")
    if order.version != 1:
        raise StoreIntegrityError(f"order {order.id}: a new order has version 1")


def event_rows(events: Sequence[NewOutboxEvent]) -> list[tuple[str, str]]:
    """(kind, payload JSON) per event, checked before any transaction opens."""
    rows = []
    for event in events:
        if not isinstance(event, NewOutboxEvent):
            raise StoreIntegrityError(f"expected a NewOutboxEvent, got {type(event).__name__}")
        if not isinstance(event.kind, str) or not event.kind:
            raise StoreIntegrityError("an outbox event needs a kind")
        if not isinstance(event.payload, dict):
            raise StoreIntegrityError("an outbox event payload is a JSON object")
        rows.append((event.kind, dumps(event.payload)))
    return rows


def idempotency_row(record: IdempotencyRecord) -> tuple[Any, ...]:
    if not isinstance(record, IdempotencyRecord):
        raise StoreIntegrityError(f"expected an IdempotencyRecord, got {type(record).__name__}")
    for name in ("scope", "key", "request_hash"):
        value = getattr(record, name)
        if not isinstance(value, str) or not value:
            raise StoreIntegrityError(f"idempotency {name} must be a non-empty string")
    if type(record.status_code) is not int or not 100 <= record.status_code <= 599:
        raise StoreIntegrityError("idempotency status_code must be an HTTP status")
    if not isinstance(record.response, dict):
        raise StoreIntegrityError("idempotency response must be a JSON object")
    for name in ("created_at", "expires_at"):
        value = getattr(record, name)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(
            value
        ):
            raise StoreIntegrityError(f"idempotency {name} must be a finite number")
    return (
        record.scope,
        record.key,
        record.request_hash,
        dumps(record.response),
        record.status_code,
        record.order_id,
        float(record.created_at),
        float(record.expires_at),
    )


def idempotency_record(row: Iterable[Any]) -> IdempotencyRecord:
    scope, key, request_hash, response, status_code, order_id, created_at, expires_at = row
    return IdempotencyRecord(
        scope, key, request_hash, loads(response), status_code, order_id, created_at, expires_at
    )


def check_transition(
    order_id: str,
    expected_version: int,
    new_order: Order,
    stored: tuple[str, int] | None,
) -> None:
    """Refuse a transition before anything is written. ``stored`` is the row's
    (status, version), None when the order does not exist."""
    if not isinstance(new_order, Order) or new_order.id != order_id:
        raise StoreIntegrityError(f"transition of {order_id}: new order has another id")
    if new_order.version != expected_version + 1:
        raise StoreIntegrityError(
            f"order {order_id}: new version must be {expected_version + 1}, "
            f"got {new_order.version}"
        )
    if stored is None:
        raise RecordNotFound(f"order {order_id} does not exist")
    status, version = stored
    if version != expected_version:
        raise StoreConflict(
            f"order {order_id} is at version {version}, not {expected_version}"
        )
    if not status_allowed(OrderStatus(status), new_order.status):
        raise StoreConflict(
            f"order {order_id} cannot go from {status} to {new_order.status.value}"
        )


def carrier_of(order: Order) -> str | None:
    """The ``carrier`` column: the shipment's carrier, None until the order has one."""
    return None if order.shipment is None else order.shipment.carrier


def check_listing(
    customer_ref: str | None,
    merchant_id: str | None,
    carrier: str | None,
    cursor: str | None,
    limit: int,
) -> tuple[float, str] | None:
    """Validate a listing request; the (created_at, id) it resumes after, if any."""
    if sum(owner is not None for owner in (customer_ref, merchant_id, carrier)) != 1:
        raise ValueError("list orders by exactly one of customer_ref, merchant_id and carrier")
    if type(limit) is not int or not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be between 1 and {MAX_PAGE}, got {limit}")
    if cursor is None:
        return None
    position = decode_cursor(cursor)
    created, sep, order_id = position.partition("|")
    try:
        created_at = float(created)
    except ValueError:
        created_at = math.nan
    if not sep or not order_id or not math.isfinite(created_at):
        raise ValueError(f"malformed cursor {cursor!r}: not a cursor returned by a listing")
    return created_at, order_id


def listing_query(
    customer_ref: str | None,
    merchant_id: str | None,
    carrier: str | None,
    cursor: str | None,
    limit: int,
    mark: Callable[[int], str],
) -> tuple[str, list[object]]:
    """The validated listing as SQL and its arguments, newest first, one row more than
    ``limit`` (it says whether another page exists). ``mark(n)`` is the adapter's n-th
    placeholder (``$n`` or ``?``)."""
    after = check_listing(customer_ref, merchant_id, carrier, cursor, limit)
    if merchant_id is not None:
        query = (
            "SELECT o.doc FROM order_merchants AS m JOIN orders AS o ON o.id = m.order_id"
            f" WHERE m.merchant_id = {mark(1)}"
        )
        at, oid = "m.created_at", "m.order_id"
        owner: object = merchant_id
    else:
        column = "customer_ref" if customer_ref is not None else "carrier"
        query = f"SELECT o.doc FROM orders AS o WHERE o.{column} = {mark(1)}"
        at, oid = "o.created_at", "o.id"
        owner = customer_ref if customer_ref is not None else carrier
    args: list[object] = [owner]
    if after is not None:
        # Row comparison: strictly before the cursor's (created_at, id).
        query += f" AND ({at}, {oid}) < ({mark(2)}, {mark(3)})"
        args += [after[0], after[1]]
    query += f" ORDER BY {at} DESC, {oid} DESC LIMIT {mark(len(args) + 1)}"
    return query, [*args, limit + 1]


def next_cursor(page: list[Order], limit: int, fetched: int) -> str | None:
    """One extra row was fetched: if it came back, another page exists."""
    if fetched <= limit or not page:
        return None
    last = page[-1]
    # repr() round-trips a float exactly.
    return encode_cursor(f"{last.created_at!r}|{last.id}")


def check_claim(consumer: str, limit: int, lease_s: float, now: float) -> None:
    if not isinstance(consumer, str) or not consumer:
        raise ValueError("consumer must be a non-empty string")
    if type(limit) is not int or limit < 1:
        raise ValueError("limit must be an integer >= 1")
    for name, value in (("lease_s", lease_s), ("now", now)):
        if not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number")
    if lease_s <= 0:
        raise ValueError("lease_s must be > 0")
