"""Asynchronous order processing: the outbox consumer behind checkout. No Ray.

``run_once`` claims a batch of outbox events as consumer ``order-processor`` (leased, so a
crashed processor's events are claimed again once the lease lapses), handles each at least
once, and completes the batch. ``expire_due`` sweeps unpaid orders past their deadline. A
Ray actor shell calls both periodically.

What each event does:

- ``order.authorized`` (settle): commit each line's reservation (op ``{id}:commit:{sku}``),
  capture the payment (key ``{id}:capture``, retried with the same key while retryable),
  then ``authorized -> paid`` with event ``order.paid``.
- ``order.paid`` (ship): create the shipment (carrier chosen by a stable hash of the order
  id from the configured list, tracking number derived from the order id) and
  ``paid -> fulfilling`` with event ``order.fulfilling``.
- any event, when a ``notify`` hook is given: the hook, at most once per event.

An order that will not be paid (the processor moves it to expired, cancelled or
payment_failed) gives the shopper's cart back: the cart (``order.customer_ref``) is
unfrozen, whoever holds it (op ``{id}:unfreeze``, holder None), just before the move, once
the payment is voided or refused; a cart that no longer exists is fine. Done before the
move, so a failed unfreeze (shard unavailable) leaves the order to be retried by the next
sweep or event delivery, with the same op id.

Crash safety: a handler may be cut off between any two effects and run again, so every
effect is idempotent on its own:

- handlers start from the order's stored status, so a finished step is skipped;
- inventory ops carry fixed op ids; a repeated commit whose reservation is gone is
  confirmed against the stock journal (``StockStore.applied_ops``);
- payment calls carry fixed idempotency keys: the provider answers a repeat with the first
  outcome, so there is one capture, one void, one refund per order;
- status changes are optimistic (expected version): of two racing writers one wins, the
  other re-reads and finds the work done;
- effects that are not idempotent by themselves (a restock ``receive`` after a failed
  capture, a notification) are guarded by ``OrderStore.record_effect``: at most once,
  erring towards "not done" (stock under-counted, never sold twice).

Races with expiry: the processor does not start settling an order whose deadline is within
``expiry_guard_s`` (unless the provider already captured it); the expiry sweep only
touches orders past their deadline, and never one whose payment was captured.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from typing import Any, Protocol, TypeVar

import orjson

from actors.domain.errors import DomainError, ErrorCode
from actors.domain.orders import (
    TRANSITIONS,
    Order,
    OrderLine,
    OrderStatus,
    Shipment,
    transition,
)
from actors.kinds import ShardKind
from actors.payments.provider import PaymentProvider, PaymentState, is_retryable
from actors.payments.webhooks import WebhookEvent
from actors.shop import ShardCaller
from storage.errors import StoreConflict
from storage.interfaces import OrderStore, StockStore
from storage.records import NewOutboxEvent, OutboxEvent

log = logging.getLogger("feira.orders.processor")

CONSUMER = "order-processor"
# Outbox events remembered as claimed-not-completed, for the backlog stats.
MAX_HELD = 10_000
DEFAULT_CARRIERS = ("feira-post",)
_RETRYABLE_SHARD = frozenset(
    {ErrorCode.SHARD_UNAVAILABLE, ErrorCode.SHARD_TIMEOUT, ErrorCode.STORE_UNAVAILABLE}
)
_S = OrderStatus
_UNSET: Any = object()

R = TypeVar("R")
Notifier = Callable[[OutboxEvent], Awaitable[None]]


# --- the contract with checkout (fixed names: both sides derive them) ------------------


def reservation_id(order_id: str, sku: str) -> str:
    return f"{order_id}:{sku}"


def commit_op(order_id: str, sku: str) -> str:
    return f"{order_id}:commit:{sku}"


def release_op(order_id: str, sku: str) -> str:
    return f"{order_id}:release:{sku}"


def capture_key(order_id: str) -> str:
    return f"{order_id}:capture"


def void_key(order_id: str) -> str:
    return f"{order_id}:void"


def authorize_key(order_id: str) -> str:
    return f"{order_id}:authorize"


def refund_key(order_id: str, n: int = 1) -> str:
    """Feira refunds an order in full, once: every refund path uses ``n = 1``, so a
    merchant refund, a failed delivery and a webhook can never refund twice."""
    return f"{order_id}:refund:{n}"


def unfreeze_op(order_id: str) -> str:
    return f"{order_id}:unfreeze"


def _restock_op(order_id: str, sku: str) -> str:
    return f"{order_id}:restock:{sku}"


def choose_carrier(order_id: str, carriers: Sequence[str]) -> str:
    """A stable choice (blake2b, never ``hash()``): the same order, the same carrier."""
    digest = hashlib.blake2b(order_id.encode(), digest_size=8).digest()
    return carriers[int.from_bytes(digest, "big") % len(carriers)]


def tracking_number(order_id: str, carrier: str) -> str:
    digest = hashlib.blake2b(f"{carrier}/{order_id}".encode(), digest_size=8).hexdigest()
    return f"{carrier[:4].upper()}{digest.upper()}"


def _transition(order: Order, target: OrderStatus, now: float, shipment: Any) -> Order:
    """``transition``, setting the shipment only when one is given."""
    if shipment is _UNSET:
        return transition(order, target, now)
    return transition(order, target, now, shipment=shipment)


def order_event(kind: str, order: Order, **extra: Any) -> NewOutboxEvent:
    return NewOutboxEvent(kind, {"order_id": order.id, "status": order.status.value, **extra})


# --- collaborators ---------------------------------------------------------------------


class AuthorizationLookup(Protocol):
    """Finds the payment an authorize call with ``idempotency_key`` created, if any: how
    expiry reconciles a checkout whose authorization timed out (outcome unknown)."""

    async def payment_for_key(self, idempotency_key: str) -> str | None: ...


class SandboxAuthorizations:
    """AuthorizationLookup for the sandbox provider: reads its ledger's key records."""

    def __init__(self, ledger: Any) -> None:
        self._ledger = ledger  # a SandboxLedger (key(key) -> KeyRecord | None)

    async def payment_for_key(self, idempotency_key: str) -> str | None:
        record = await self._ledger.key(idempotency_key)
        if record is None or record.operation != "authorize":
            return None
        outcome = orjson.loads(record.outcome)
        ok = outcome.get("ok")
        return ok.get("payment_id") if isinstance(ok, dict) else None


class StoreSeenEvents:
    """Webhook de-duplication (``SeenEvents``) on ``OrderStore.record_effect``: consumer
    ``webhook:<provider>``, key = event id; durable and shared by every replica.

    ``forget`` cannot delete (the store has no such call), so it only logs: a redelivery
    of an event whose processing failed is then answered as a duplicate. The webhook
    effects are reconciliations the outbox processor also performs, so none is lost."""

    def __init__(self, orders: OrderStore) -> None:
        self._orders = orders

    async def first_time(self, provider: str, event_id: str) -> bool:
        return await self._orders.record_effect(f"webhook:{provider}", event_id)

    async def forget(self, provider: str, event_id: str) -> None:
        log.warning("webhook %s/%s failed; its redelivery will be ignored", provider, event_id)


# --- the processor ---------------------------------------------------------------------


class OrderProcessor:
    def __init__(
        self,
        orders: OrderStore,
        shards: ShardCaller,
        provider: PaymentProvider,
        *,
        journal: StockStore | None = None,
        carriers: Sequence[str] = DEFAULT_CARRIERS,
        authorizations: AuthorizationLookup | None = None,
        notify: Notifier | None = None,
        consumer: str = CONSUMER,
        batch_size: int = 50,
        lease_s: float = 60.0,
        expiry_guard_s: float | None = None,
        payment_attempts: int = 3,
        retry_delay_s: float = 0.2,
        max_event_attempts: int = 20,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not carriers:
            raise ValueError("at least one carrier")
        self.orders = orders
        self.shards = shards
        self.provider = provider
        self.journal = journal
        self.carriers = tuple(carriers)
        self.authorizations = authorizations
        self.notify = notify
        self.consumer = consumer
        self.batch_size = batch_size
        self.lease_s = lease_s
        self.expiry_guard_s = lease_s if expiry_guard_s is None else expiry_guard_s
        self.payment_attempts = max(1, payment_attempts)
        self.retry_delay_s = retry_delay_s
        self.max_event_attempts = max_event_attempts
        self.clock = clock
        # Outbox stats (see ``stats``): events claimed and not completed, by id -> created_at.
        self._held: dict[int, float] = {}
        self.events_completed = 0
        self.event_failures = 0
        self._last_poll_at: float | None = None
        self._started_at = clock()

    # -- the outbox loop

    async def run_once(self, now: float | None = None) -> int:
        """Claim one batch, handle it, complete what was handled; returns how many events
        were completed. An event whose handler failed stays claimed until its lease
        lapses, then is handled again (by this or another processor)."""
        now = self.clock() if now is None else now
        events = await self.orders.claim_events(self.consumer, self.batch_size, self.lease_s, now)
        self._note_claimed(events)
        done: list[int] = []
        for event in events:
            try:
                await self.handle(event, now)
            except Exception:
                self.event_failures += 1
                if event.attempts < self.max_event_attempts:
                    log.exception("event %s (%s) failed; retried later", event.id, event.kind)
                    continue
                # Dead letter: an authorized order left behind expires (void + release).
                log.exception("event %s (%s) given up after %s attempts",
                              event.id, event.kind, event.attempts)
            done.append(event.id)
        await self.orders.complete_events(self.consumer, done)
        for event_id in done:
            self._held.pop(event_id, None)
        self.events_completed += len(done)
        return len(done)

    def _note_claimed(self, events: Sequence[OutboxEvent]) -> None:
        self._last_poll_at = self.clock()
        if len(self._held) + len(events) > MAX_HELD:
            # Claimed long ago and never completed here (another claimer finished them):
            # forget the oldest rather than grow without bound.
            for event_id in sorted(self._held)[: len(self._held) + len(events) - MAX_HELD]:
                del self._held[event_id]
        for event in events:
            self._held[event.id] = event.created_at

    def stats(self) -> dict[str, float]:
        """The outbox as this processor sees it, for metrics.

        ``outbox_backlog``: events claimed and not completed (in hand, or failing and
        waiting for their lease to lapse); ``outbox_oldest_age_s``: age of the oldest of
        them (claims go oldest first, so while the processor is behind this is how long
        events wait); ``outbox_poll_age_s``: time since the last successful claim (a
        processor that cannot reach its store, or is stuck, shows here);
        ``events_completed`` and ``event_failures`` so far. Events committed but not yet
        claimed are not counted: the store has no cheap count, and they wait at most one
        processor interval while ``outbox_poll_age_s`` stays low.
        """
        now = self.clock()
        oldest = min(self._held.values(), default=None)
        last = self._last_poll_at if self._last_poll_at is not None else self._started_at
        return {
            "outbox_backlog": len(self._held),
            "outbox_oldest_age_s": 0.0 if oldest is None else round(max(0.0, now - oldest), 3),
            "outbox_poll_age_s": round(max(0.0, now - last), 3),
            "events_completed": self.events_completed,
            "event_failures": self.event_failures,
        }

    async def handle(self, event: OutboxEvent, now: float) -> None:
        if event.kind == "order.authorized":
            order = await self.orders.get_order(event.order_id)
            if order is not None:
                await self.settle(order, now)
        elif event.kind == "order.paid":
            order = await self.orders.get_order(event.order_id)
            if order is not None:
                await self.ship(order, now)
        if self.notify is not None and await self.orders.record_effect(
            self.consumer, f"notify:{event.id}"
        ):
            await self.notify(event)

    # -- authorized -> paid

    async def settle(self, order: Order, now: float) -> Order:
        """Commit the stock, capture the payment, mark the order paid. A no-op unless the
        order is authorized; safe to repeat after a crash at any point."""
        if order.status is not _S.AUTHORIZED or order.payment is None:
            return order
        payment_id = order.payment.payment_id
        if order.expires_at is not None and order.expires_at <= now + self.expiry_guard_s:
            state = (await self.provider.get(payment_id)).state
            if state is not PaymentState.CAPTURED:
                log.info("order %s is about to expire; left to the expiry sweep", order.id)
                return order
        for line in sorted(order.lines, key=lambda one: one.sku):
            if not await self._commit_line(order, line):
                return await self._abandon(order, now, "a stock reservation lapsed")
        try:
            await self._payment(
                lambda: self.provider.capture(payment_id, order.total, capture_key(order.id))
            )
        except DomainError as error:
            if is_retryable(error):
                raise
            state = (await self.provider.get(payment_id)).state
            if state is not PaymentState.CAPTURED:
                log.warning("order %s: capture refused (%s)", order.id, error.code.value)
                await self._restock(order)
                await self._unfreeze_cart(order)
                return await self._move(order, _S.PAYMENT_FAILED, now, "order.payment_failed")
        return await self._move(order, _S.PAID, now, "order.paid")

    async def _commit_line(self, order: Order, line: OrderLine) -> bool:
        """True when the line's stock is sold to this order (now or by an earlier run);
        False when its reservation is gone without having been committed."""
        op = commit_op(order.id, line.sku)
        try:
            await self.shards.call(
                ShardKind.INVENTORY, line.sku, "commit", op,
                reservation_id(order.id, line.sku), line.sku,
            )
        except DomainError as error:
            if error.code in _RETRYABLE_SHARD:
                raise
            # Ours already (a repeat the shard no longer remembers) or truly gone.
            if self.journal is not None and op in await self.journal.applied_ops([op]):
                return True
            log.warning("order %s: cannot commit %s (%s)", order.id, line.sku, error.code.value)
            return False
        return True

    async def _abandon(self, order: Order, now: float, reason: str) -> Order:
        """Cannot fill the order: void the authorization, return any stock already sold
        to it, cancel it."""
        assert order.payment is not None
        if not await self._void(order.payment.payment_id, order.id):
            raise DomainError(
                ErrorCode.ORDER_CONFLICT, f"order {order.id}: captured but cannot be filled"
            )
        await self._restock(order)
        for line in order.lines:
            await self._release(order, line)
        await self._unfreeze_cart(order)
        log.warning("order %s cancelled: %s", order.id, reason)
        return await self._move(order, _S.CANCELLED, now, "order.cancelled", reason=reason)

    async def _restock(self, order: Order) -> None:
        """Return stock committed to an order that will not be paid. At most once per
        line (a lost restock under-counts stock; a doubled one would sell it twice)."""
        if self.journal is None:
            return
        ops = [commit_op(order.id, line.sku) for line in order.lines]
        committed = await self.journal.applied_ops(ops)
        for line in order.lines:
            if commit_op(order.id, line.sku) not in committed:
                continue
            op = _restock_op(order.id, line.sku)
            if await self.orders.record_effect(self.consumer, op):
                try:
                    await self.shards.call(
                        ShardKind.INVENTORY, line.sku, "receive", op, line.sku, line.quantity
                    )
                except DomainError:
                    log.exception("order %s: restock of %s lost", order.id, line.sku)

    # -- paid -> fulfilling

    async def ship(self, order: Order, now: float) -> Order:
        """Create the shipment and move the order to fulfilling; a no-op unless paid."""
        if order.status is not _S.PAID:
            return order
        carrier = choose_carrier(order.id, self.carriers)
        shipment = Shipment(carrier, tracking_number(order.id, carrier))
        return await self._move(
            order, _S.FULFILLING, now, "order.fulfilling",
            shipment=shipment, carrier=carrier, tracking_number=shipment.tracking_number,
        )

    # -- expiry

    async def expire_due(self, now: float | None = None, limit: int = 100) -> int:
        """Expire unpaid orders past their deadline: void the authorization (if any),
        release the reservations, ``-> expired``. Returns how many expired."""
        now = self.clock() if now is None else now
        expired = 0
        for order in await self.orders.orders_expiring(now, limit):
            try:
                if await self._expire(order, now):
                    expired += 1
            except Exception:
                log.exception("order %s: expiry failed; retried next sweep", order.id)
        return expired

    async def _expire(self, order: Order, now: float) -> bool:
        if not order.expired_at(now):
            return False
        payment_id = order.payment.payment_id if order.payment is not None else None
        if payment_id is None and self.authorizations is not None:
            # Checkout's authorize timed out: the processor may have authorized anyway.
            payment_id = await self.authorizations.payment_for_key(authorize_key(order.id))
        if payment_id is not None and not await self._void(payment_id, order.id):
            log.warning("order %s is past its deadline but captured; settling", order.id)
            await self.settle(order, now)
            return False
        for line in order.lines:
            await self._release(order, line)
        await self._unfreeze_cart(order)
        moved = await self._move(order, _S.EXPIRED, now, "order.expired")
        return moved.status is _S.EXPIRED

    async def _void(self, payment_id: str, order_id: str) -> bool:
        """True when the authorization is released (now or before, or never existed);
        False when the payment was captured (nothing to void)."""
        try:
            await self._payment(lambda: self.provider.void(payment_id, void_key(order_id)))
        except DomainError as error:
            if error.code is ErrorCode.PAYMENT_NOT_FOUND:
                return True
            if error.code is not ErrorCode.PAYMENT_STATE_CONFLICT:
                raise
            state = (await self.provider.get(payment_id)).state
            return state in (PaymentState.VOIDED, PaymentState.DECLINED, PaymentState.FAILED)
        return True

    async def _release(self, order: Order, line: OrderLine) -> None:
        try:
            await self.shards.call(
                ShardKind.INVENTORY, line.sku, "release", release_op(order.id, line.sku),
                reservation_id(order.id, line.sku), line.sku,
            )
        except DomainError as error:
            if error.code in _RETRYABLE_SHARD:
                raise
            # Released already, or lapsed (the shard's TTL sweep released it).

    async def _unfreeze_cart(self, order: Order) -> None:
        """Let the shopper use the cart again: checkout left it frozen for this order,
        which will not be paid. A retryable shard error propagates (the caller is retried,
        and the fixed op id makes a repeat a no-op at the shard); a cart that is gone is
        fine; any other refusal is logged, and the order goes on."""
        cart_id = order.customer_ref
        try:
            await self.shards.call(
                ShardKind.CART, cart_id, "unfreeze", unfreeze_op(order.id), cart_id, None
            )
        except DomainError as error:
            if error.code in _RETRYABLE_SHARD:
                raise
            if error.code is not ErrorCode.CART_NOT_FOUND:
                log.warning(
                    "order %s: cart %s not unfrozen (%s)", order.id, cart_id, error.code.value
                )

    # -- refunds (merchant, failed delivery, provider webhook)

    async def refund(
        self, order_id: str, now: float, *, shipment: Shipment | None = _UNSET, reason: str = ""
    ) -> Order:
        """Refund the order in full and move it to refunded; the same answer when it
        already is. ``shipment`` updates the tracking in the same step."""
        for _ in range(3):
            order = await self._get(order_id)
            if order.status is _S.REFUNDED:
                return order
            if _S.REFUNDED not in TRANSITIONS[order.status] or order.payment is None:
                raise DomainError(
                    ErrorCode.ORDER_CONFLICT,
                    f"order {order_id} is {order.status.value}; it cannot be refunded",
                    order_id=order_id,
                    status=order.status.value,
                )
            payment_id, amount = order.payment.payment_id, order.payment.amount
            try:
                await self._payment(
                    partial(self.provider.refund, payment_id, amount, refund_key(order_id))
                )
            except DomainError as error:
                if is_retryable(error) or error.code is not ErrorCode.PAYMENT_STATE_CONFLICT:
                    raise
                if (await self.provider.get(payment_id)).state is not PaymentState.REFUNDED:
                    raise
            try:
                moved = _transition(order, _S.REFUNDED, now, shipment)
                event = order_event("order.refunded", moved, reason=reason)
                return await self.orders.transition(order.id, order.version, moved, [event])
            except StoreConflict:
                continue  # changed meanwhile: look again (the refund key stays the same)
        raise DomainError(ErrorCode.ORDER_CONFLICT, f"order {order_id} keeps changing; retry")

    # -- provider webhooks

    async def apply_webhook(self, event: WebhookEvent, now: float) -> str:
        """Reconcile the order a verified provider event is about; returns what was done
        (``settled``, ``refunded`` or ``ignored``). Idempotent, like every handler here."""
        data = event.data
        metadata = data.get("metadata")
        order_id = metadata.get("order_id") if isinstance(metadata, Mapping) else None
        if not isinstance(order_id, str):
            return "ignored"
        order = await self.orders.get_order(order_id)
        payment_id = data.get("payment_id")
        if order is None or order.payment is None or order.payment.payment_id != payment_id:
            return "ignored"
        if event.type == "payment.captured" and order.status is _S.AUTHORIZED:
            moved = await self.settle(order, now)
            return "settled" if moved.status is _S.PAID else "ignored"
        if event.type == "payment.refunded" and order.status is not _S.REFUNDED:
            state = (await self.provider.get(order.payment.payment_id)).state
            if state is PaymentState.REFUNDED and _S.REFUNDED in TRANSITIONS[order.status]:
                await self.refund(order_id, now, reason="refunded at the provider")
                return "refunded"
        return "ignored"

    # -- helpers

    async def _get(self, order_id: str) -> Order:
        order = await self.orders.get_order(order_id)
        if order is None:
            raise DomainError(
                ErrorCode.ORDER_NOT_FOUND, f"no order {order_id}", order_id=order_id
            )
        return order

    async def _move(
        self,
        order: Order,
        target: OrderStatus,
        now: float,
        kind: str,
        *,
        shipment: Shipment | None = _UNSET,
        **extra: Any,
    ) -> Order:
        """``order -> target`` with its event; on a lost race, the stored order (whoever
        won moved it, and the caller's step is then skipped on the next look)."""
        moved = _transition(order, target, now, shipment)
        try:
            return await self.orders.transition(
                order.id, order.version, moved, [order_event(kind, moved, **extra)]
            )
        except StoreConflict:
            current = await self._get(order.id)
            log.info("order %s moved meanwhile to %s", order.id, current.status.value)
            return current

    async def _payment(self, call: Callable[[], Awaitable[R]]) -> R:
        """``call`` (which reuses one idempotency key), again while the error is
        retryable, up to ``payment_attempts`` times."""
        for attempt in range(1, self.payment_attempts + 1):
            try:
                return await call()
            except DomainError as error:
                if not is_retryable(error) or attempt == self.payment_attempts:
                    raise
            await asyncio.sleep(self.retry_delay_s * attempt)
        raise AssertionError("unreachable")
