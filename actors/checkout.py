"""Checkout: a shopper pays once and gets exactly one order; stock is never sold twice.

No Ray and no I/O of its own: shards are reached through a :class:`ShardCaller`, orders
through an :class:`OrderStore`, money through a :class:`PaymentProvider`.

The flow of :meth:`CheckoutService.checkout`, for one ``Idempotency-Key``:

1. A stored answer for the key (scope ``checkout``) is replayed (same request hash) or
   refused (``idempotency_mismatch``). Inside one process, concurrent requests with one key
   share one run (single flight) and get the identical answer.
2. The cart is frozen, holder = a digest of the key, so a retry with the same key may go
   on while a checkout under another key is refused (``cart_frozen``). Its lines are
   priced from the pricing shards (never a replica cache) and each SKU's product is read
   for its merchant. ``expected_total`` must match the fresh total (``price_changed``).
3. Stock is reserved SKU by SKU in sorted order (reservation ``{order_id}:{sku}``, op
   ``{order_id}:reserve:{sku}``, TTL = the reservation TTL). A refusal releases what was
   reserved (op ``{order_id}:release:{sku}``).
4. The order is created (``pending_payment``, event ``order.placed``, deadline = start +
   reservation TTL) with the key's record in one transaction. ``DuplicateKey`` there is the
   arbiter between concurrent requests with one key in different processes: the loser
   releases its own reservations and answers as the winner (below).
5. The payment is authorized (key ``{order_id}:authorize``, retried with that key with a
   short backoff), holding no lock. Approved: ``authorized`` (+ ``order.authorized``), 202.
   Declined or refused by the provider: ``payment_failed`` (+ ``order.payment_failed``),
   reservations released, cart unfrozen, 402/422 carrying the order id. The provider kept
   failing: the same, answered 502 ``payment_provider_error``. Outcome unknown (timeouts to
   the end): the order stays ``pending_payment``, holding its stock, answered 202; the
   order processor / expiry reconciles it with the provider (``get`` / ``void``).

Answers and replays. Failures after the freeze and before an order exists (cart_empty,
price_changed, insufficient_stock, an unknown SKU) are stored under the key with
``save_idempotency`` (a ``DuplicateKey`` there again yields to the winner). When an order
exists, its final answer is stored once known under scope ``checkout:outcome`` (same key,
write-once), and a replay returns it exactly. Until then a replay answers 409
``checkout_in_progress`` with ``Retry-After`` (the first request is still running); if no
final answer was stored ``in_flight_s`` after the key was taken (a crashed replica), the
replay answers 202 with the order's current id and status instead. Retryable failures
(shards or stores unavailable) are never stored: retry with the same key.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import orjson

from actors.commerce_metrics import NULL_METRICS, CommerceMetrics
from actors.domain.cart import check_cart_id
from actors.domain.customers import may_see_order
from actors.domain.errors import DomainError, ErrorCode
from actors.domain.money import validate_currency
from actors.domain.orders import (
    Order,
    OrderLine,
    OrderStatus,
    Payment,
    check_order_id,
    transition,
)
from actors.kinds import ShardKind
from actors.payments.provider import (
    Authorization,
    PaymentProvider,
    is_retryable,
    outcome_unknown,
)
from actors.shop import ShardCaller, new_op_id
from storage.errors import DuplicateKey, StorageError, StoreConflict
from storage.interfaces import CatalogStore, OrderStore
from storage.records import IdempotencyRecord, NewOutboxEvent

log = logging.getLogger("feira.checkout")

T = TypeVar("T")

SCOPE = "checkout"
OUTCOME_SCOPE = "checkout:outcome"
MAX_KEY = 255
MAX_TOKEN = 256

# Turns a refusal into the (HTTP status, problem+json body) a client gets; the API layer
# owns that mapping (api/problems.py), the service stores what it returns.
Render = Callable[[DomainError], tuple[int, dict[str, Any]]]

# Shard errors after which the same operation id may be sent again.
_TRANSIENT = frozenset(
    {ErrorCode.SHARD_TIMEOUT, ErrorCode.SHARD_UNAVAILABLE, ErrorCode.STORE_UNAVAILABLE}
)
_OWN_DETAILS = frozenset({"order_id", "order_status", "type", "status", "title"})
# Orders whose cart no checkout holds any more (the shopper may edit it and try again).
_CART_RELEASED = frozenset({OrderStatus.PAYMENT_FAILED, OrderStatus.EXPIRED, OrderStatus.CANCELLED})
# Statuses in which a checkout's order counts as placed (for metrics).
_PLACED = frozenset({OrderStatus.AUTHORIZED.value, OrderStatus.PENDING_PAYMENT.value})


@dataclass(frozen=True, slots=True)
class CheckoutSettings:
    currency: str = "EUR"
    reservation_ttl_s: float = 900.0  # also the unpaid order's deadline
    idempotency_ttl_s: float = 24 * 3600.0  # keys are kept at least 24 h
    payment_attempts: int = 3  # authorize calls per checkout, all with one key
    payment_backoff_s: float = 0.05  # doubled after each failed attempt
    payment_timeout_s: float = 10.0  # per authorize call; past it the outcome is unknown
    shard_attempts: int = 3  # per reserve/release/freeze on a transient shard error
    shard_backoff_s: float = 0.02
    in_flight_s: float = 60.0  # replays answer checkout_in_progress this long at most

    def __post_init__(self) -> None:
        validate_currency(self.currency)
        if self.payment_attempts < 1 or self.shard_attempts < 1:
            raise ValueError("attempts must be >= 1")
        if self.reservation_ttl_s <= 0 or self.idempotency_ttl_s < 24 * 3600:
            raise ValueError("reservation_ttl_s must be > 0 and idempotency_ttl_s >= 24 h")


@dataclass(frozen=True, slots=True)
class CheckoutAnswer:
    """What the client gets: an HTTP status and a JSON body (an order, or a problem)."""

    status: int
    body: dict[str, Any]
    replayed: bool = False  # answered from a stored answer or another request's run

    @property
    def order_id(self) -> str | None:
        found = self.body.get("order_id")
        return found if isinstance(found, str) else None


@dataclass(frozen=True, slots=True)
class CheckoutRequest:
    cart_id: str
    payment_token: str
    expected_total: tuple[int, str] | None = None  # (amount, currency)
    canonical: dict[str, Any] = field(default_factory=dict, compare=False)
    caller: str | None = None  # the signed-in customer; None for a guest

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> CheckoutRequest:
        if not isinstance(body, Mapping):
            raise _invalid("the checkout body must be an object")
        unknown = set(body) - {"cart_id", "payment_token", "expected_total"}
        if unknown:
            raise _invalid(f"unknown fields: {', '.join(sorted(unknown))}")
        cart_id = check_cart_id(body.get("cart_id"))
        token = body.get("payment_token")
        if not isinstance(token, str) or not 0 < len(token) <= MAX_TOKEN:
            raise _invalid(f"payment_token must be 1-{MAX_TOKEN} characters", field="payment_token")
        raw_total = body.get("expected_total")
        expected: tuple[int, str] | None = None
        if raw_total is not None:
            if not isinstance(raw_total, Mapping) or set(raw_total) != {"amount", "currency"}:
                raise _invalid("expected_total is {amount, currency}", field="expected_total")
            amount, currency = raw_total["amount"], raw_total["currency"]
            if type(amount) is not int or amount < 0:
                raise _invalid("expected_total.amount must be an integer >= 0")
            expected = (amount, validate_currency(currency))
        canonical = {
            "cart_id": cart_id,
            "payment_token": token,
            "expected_total": None
            if expected is None
            else {"amount": expected[0], "currency": expected[1]},
        }
        return cls(cart_id, token, expected, canonical)

    @property
    def digest(self) -> str:
        """sha256 of the canonical JSON of the body: tells a retry from a misuse."""
        return hashlib.sha256(orjson.dumps(self.canonical, option=orjson.OPT_SORT_KEYS)).hexdigest()


def new_order_id() -> str:
    # 144 random bits, like a cart id: until accounts exist an order id is a bearer secret.
    return "o-" + secrets.token_urlsafe(18)


def check_idempotency_key(key: str | None) -> str:
    if key is None or key == "":
        raise DomainError(
            ErrorCode.IDEMPOTENCY_KEY_REQUIRED,
            "POST /v1/checkout needs an Idempotency-Key header (e.g. a random UUID per"
            " checkout attempt, reused for every retry of it)",
        )
    if len(key) > MAX_KEY or not key.isprintable() or not key.isascii():
        raise _invalid(f"Idempotency-Key must be 1-{MAX_KEY} printable ASCII characters")
    return key


# --- the order as clients see it -------------------------------------------------------


def payment_state(order: Order) -> str:
    s = order.status
    if s is OrderStatus.PENDING_PAYMENT:
        return "pending"
    if s is OrderStatus.AUTHORIZED:
        return "authorized"
    if s in (OrderStatus.PAID, OrderStatus.FULFILLING, OrderStatus.SHIPPED, OrderStatus.DELIVERED):
        return "captured"
    if s is OrderStatus.REFUNDED:
        return "refunded"
    if s is OrderStatus.PAYMENT_FAILED:
        return "failed"
    return "none" if order.payment is None else "voided"  # expired, cancelled


def order_view(order: Order) -> dict[str, Any]:
    """The order for its shopper: status, priced lines, totals, payment state (provider
    reference, never a token) and tracking. Not the cart id, nor reservation ids."""

    def money(amount: int) -> dict[str, Any]:
        return {"amount": amount, "currency": order.currency}

    payment: dict[str, Any] = {"status": payment_state(order)}
    if order.payment is not None:
        payment |= {
            "provider": order.payment.provider,
            "payment_id": order.payment.payment_id,
            "amount": money(order.payment.amount),
        }
    return {
        "id": order.id,
        "status": order.status.value,
        "currency": order.currency,
        "lines": [
            {
                "sku": line.sku,
                "product_id": line.product_id,
                "merchant_id": line.merchant_id,
                "quantity": line.quantity,
                "unit": money(line.unit_amount),
                "base": money(line.base_amount),
                "line_total": money(line.total),
                "discount": money(line.base_total - line.total),
                "promotion_id": line.promotion_id,
            }
            for line in order.lines
        ],
        "subtotal": money(order.subtotal),
        "discount": money(order.discount),
        "total": money(order.total),
        "payment": payment,
        "shipment": None if order.shipment is None else order.shipment.to_json(),
        "expires_at": order.expires_at,
        "created_at": order.created_at,
        "updated_at": order.updated_at,
    }


def placed_answer(order: Order) -> dict[str, Any]:
    return {"order_id": order.id, **order_view(order)}


# --- the service -----------------------------------------------------------------------


class CheckoutService:
    def __init__(
        self,
        orders: OrderStore,
        shards: ShardCaller,
        payments: PaymentProvider,
        catalog: CatalogStore,
        settings: CheckoutSettings = CheckoutSettings(),
        clock: Callable[[], float] = time.time,
        metrics: CommerceMetrics = NULL_METRICS,
    ) -> None:
        self.orders = orders
        self.shards = shards
        self.payments = payments
        self.catalog = catalog
        self.settings = settings
        self._clock = clock
        self.metrics = metrics
        # key -> (request hash, the run): one run per key at a time in this process.
        self._flights: dict[str, tuple[str, asyncio.Task[CheckoutAnswer]]] = {}

    # --- entry points -------------------------------------------------------------------

    async def checkout(
        self,
        body: Mapping[str, Any],
        idempotency_key: str | None,
        render: Render,
        caller: str | None = None,
    ) -> CheckoutAnswer:
        """Run (or replay) the checkout for ``idempotency_key``. Returns the answer to
        send; raises DomainError for refusals that are not stored (bad input, key misuse,
        a checkout still in progress, retryable shard/store failures).

        ``caller`` is the signed-in customer (None: a guest). Keys are the caller's own:
        another customer sending the same key starts its own checkout, never replays this
        one's answer; and only the cart's owner may check it out.
        """
        key = check_idempotency_key(idempotency_key)
        if caller is not None:
            key = f"{caller}|{key}"
        request = replace(CheckoutRequest.parse(body), caller=caller)
        digest = request.digest
        flight = self._flights.get(key)
        if flight is not None:
            if flight[0] != digest:
                raise _mismatch()
            return replace(await asyncio.shield(flight[1]), replayed=True)
        # A task, shielded: a client that goes away does not stop a checkout half-way.
        task = asyncio.get_running_loop().create_task(self._run(request, key, digest, render))
        self._flights[key] = (digest, task)
        task.add_done_callback(lambda done: self._landed(key, done))
        return await asyncio.shield(task)

    async def get_order(self, order_id: str, caller: str | None = None) -> dict[str, Any]:
        """The order as its customer sees it; another customer's order is not found."""
        try:
            check_order_id(order_id)
        except DomainError:
            order = None
        else:
            order = await self._store(self.orders.get_order(order_id))
        if order is None or not may_see_order(order.customer_ref, caller):
            raise DomainError(
                ErrorCode.ORDER_NOT_FOUND, f"no order {order_id!r}", order_id=order_id
            )
        return order_view(order)

    async def customer_orders(
        self, customer_id: str, cursor: str | None, limit: int
    ) -> tuple[list[dict[str, Any]], str | None]:
        """A signed-in customer's orders, newest first, as ``get_order`` shows them."""
        try:
            orders, next_cursor = await self._store(
                self.orders.list_orders(customer_ref=customer_id, cursor=cursor, limit=limit)
            )
        except ValueError as error:  # a malformed or foreign cursor
            raise _invalid(str(error), field="cursor") from error
        return [order_view(order) for order in orders], next_cursor

    def _landed(self, key: str, task: asyncio.Task[CheckoutAnswer]) -> None:
        if self._flights.get(key, (None, None))[1] is task:
            del self._flights[key]
        if not task.cancelled():
            task.exception()  # retrieved: the awaiting request reports it

    # --- the run ------------------------------------------------------------------------

    async def _run(
        self, request: CheckoutRequest, key: str, digest: str, render: Render
    ) -> CheckoutAnswer:
        record = await self._store(self.orders.get_idempotency(SCOPE, key, now=self._clock()))
        if record is not None:
            return await self._replay(record, digest)
        holder = "checkout:" + hashlib.sha256(key.encode()).hexdigest()[:32]
        # Not stored: nothing happened yet (unknown cart, or another checkout holds it).
        cart = await self._shard(
            ShardKind.CART,
            request.cart_id,
            "freeze",
            new_op_id(),
            request.cart_id,
            holder,
            request.caller,
        )
        order_id = new_order_id()
        started = self._clock()
        attempted: list[str] = []  # SKUs whose reserve may have happened
        try:
            lines = await self._price(cart, request)
            order = Order.create(
                order_id,
                cart["customer_id"] or request.cart_id,
                self.settings.currency,
                lines,
                started,
                expires_at=started + self.settings.reservation_ttl_s,
                reservation_ids=[f"{order_id}:{line.sku}" for line in lines],
            )
            await self._reserve(order_id, lines, attempted)
        except DomainError as error:
            await self._release(order_id, attempted)
            if error.code in _TRANSIENT:
                await self._unfreeze(request.cart_id, holder)
                raise
            return await self._refused(key, digest, error, render, request.cart_id, holder)
        except BaseException:
            await self._release(order_id, attempted)
            await self._unfreeze(request.cart_id, holder)
            raise
        now = self._clock()
        placed = NewOutboxEvent(
            "order.placed",
            {
                "order_id": order_id,
                "status": order.status.value,
                "cart_id": request.cart_id,
                "total": order.total,
                "currency": order.currency,
                "expires_at": order.expires_at,
            },
        )
        provisional = IdempotencyRecord(
            SCOPE,
            key,
            digest,
            {"order_id": order_id, "status": order.status.value},
            202,
            order_id,
            now,
            now + self.settings.idempotency_ttl_s,
        )
        try:
            order = await self.orders.create_order(order, [placed], provisional)
        except DuplicateKey as lost:
            await self._release(order_id, attempted)
            return await self._yield_to(lost.existing, digest, request.cart_id, holder)
        except StorageError as error:
            # Outcome unknown: the order may exist. Its reservations expire at its deadline
            # either way and the freeze stays; a retry with this key finds the record or
            # checks out again.
            log.warning("order %s: create failed (%s); answering retryable", order_id, error)
            raise DomainError(
                ErrorCode.STORE_UNAVAILABLE, "order store unavailable; retry"
            ) from None
        return await self._pay(
            order,
            request,
            key,
            digest,
            provisional.expires_at,
            holder,
            render,
            cart_created_at=float(cart["created_at"]),
        )

    async def _price(self, cart: Mapping[str, Any], request: CheckoutRequest) -> list[OrderLine]:
        """The cart's lines priced now from the pricing shards, with their products."""
        wanted = [(line["sku"], line["quantity"]) for line in cart["lines"]]
        if not wanted:
            raise DomainError(ErrorCode.CART_EMPTY, "the cart is empty", cart_id=request.cart_id)
        skus = [sku for sku, _ in wanted]
        quotes = await self.shards.fanout(ShardKind.PRICING, skus, "quote")
        products = await self._store(
            asyncio.gather(*(self.catalog.product_for_sku(sku) for sku in skus))
        )
        lines: list[OrderLine] = []
        for (sku, quantity), product in zip(wanted, products, strict=True):
            quote = quotes.get(sku)
            if quote is None or product is None or product.get("status") != "published":
                raise DomainError(
                    ErrorCode.SKU_NOT_FOUND, f"{sku!r} is no longer for sale", sku=sku
                )
            if quote["currency"] != self.settings.currency:
                raise DomainError(
                    ErrorCode.CURRENCY_MISMATCH,
                    f"{sku!r} is priced in {quote['currency']}, checkout is in"
                    f" {self.settings.currency}",
                    sku=sku,
                )
            lines.append(
                OrderLine(
                    sku=sku,
                    product_id=str(product["id"]),
                    merchant_id=str(product["merchant_id"]),
                    quantity=quantity,
                    unit_amount=quote["unit"],
                    base_amount=quote["base"],
                    promotion_id=quote["promotion_id"],
                )
            )
        lines.sort(key=lambda line: line.sku)
        total = sum(line.total for line in lines)
        expected = request.expected_total
        if expected is not None and expected != (total, self.settings.currency):
            raise DomainError(
                ErrorCode.PRICE_CHANGED,
                "the cart's total changed since it was shown; review it and check out again",
                expected_total={"amount": expected[0], "currency": expected[1]},
                total={"amount": total, "currency": self.settings.currency},
            )
        return lines

    async def _reserve(
        self, order_id: str, lines: Sequence[OrderLine], attempted: list[str]
    ) -> None:
        """Reserve each line, SKUs in sorted order; INSUFFICIENT_STOCK names the SKU."""
        ttl = self.settings.reservation_ttl_s
        for line in sorted(lines, key=lambda item: item.sku):
            attempted.append(line.sku)
            try:
                await self._shard(
                    ShardKind.INVENTORY,
                    line.sku,
                    "reserve",
                    f"{order_id}:reserve:{line.sku}",
                    f"{order_id}:{line.sku}",
                    line.sku,
                    line.quantity,
                    ttl,
                )
            except DomainError as error:
                if error.code not in _TRANSIENT:
                    attempted.pop()  # refused: certainly not reserved
                raise

    # --- payment ------------------------------------------------------------------------

    async def _pay(
        self,
        order: Order,
        request: CheckoutRequest,
        key: str,
        digest: str,
        expires_at: float,
        holder: str,
        render: Render,
        cart_created_at: float,
    ) -> CheckoutAnswer:
        outcome = await self._authorize(order, request.payment_token)
        if isinstance(outcome, Authorization):
            answer = await self._authorized(order, outcome)
        elif outcome is None:
            log.warning("order %s: authorization outcome unknown; left pending", order.id)
            answer = CheckoutAnswer(202, placed_answer(order))
        else:
            answer = await self._payment_failed(order, outcome, request.cart_id, holder, render)
        # Once per run (replays never get here): placed, or the payment failed.
        if isinstance(outcome, DomainError):
            self.metrics.payment_failed(outcome.code.value)
        elif answer.body.get("status") in _PLACED:
            self.metrics.order_placed(
                max(0.0, self._clock() - cart_created_at), order.total, order.currency
            )
        outcome_record = IdempotencyRecord(
            OUTCOME_SCOPE,
            key,
            digest,
            answer.body,
            answer.status,
            order.id,
            self._clock(),
            expires_at,
        )
        try:
            await self.orders.save_idempotency(outcome_record)
        except DuplicateKey:
            pass  # written by an earlier run of this key: the same outcome (same pay key)
        except StorageError as error:
            log.warning("order %s: final answer not stored (%s)", order.id, error)
        return answer

    async def _authorize(self, order: Order, token: str) -> Authorization | DomainError | None:
        """The authorization; a final refusal; or None when the outcome is unknown."""
        unknown = False
        last: DomainError | None = None
        for attempt in range(self.settings.payment_attempts):
            if attempt:
                await asyncio.sleep(self.settings.payment_backoff_s * 2 ** (attempt - 1))
            try:
                async with asyncio.timeout(self.settings.payment_timeout_s):
                    return await self.payments.authorize(
                        amount=order.total,
                        currency=order.currency,
                        token=token,
                        idempotency_key=f"{order.id}:authorize",
                        metadata={"order_id": order.id},
                    )
            except TimeoutError:
                unknown = True
            except DomainError as error:
                if not is_retryable(error):
                    return error
                unknown = unknown or outcome_unknown(error)
                last = error
            except Exception:
                log.exception("order %s: authorize raised; outcome unknown", order.id)
                unknown = True
        if unknown:
            return None
        return DomainError(
            ErrorCode.PAYMENT_PROVIDER_ERROR,
            "the payment provider kept failing; nothing was charged. Check out again.",
            reason=None if last is None else last.code.value,
        )

    async def _authorized(self, order: Order, authorization: Authorization) -> CheckoutAnswer:
        payment = Payment(self.payments.name, authorization.payment_id, authorization.amount)
        moved = transition(order, OrderStatus.AUTHORIZED, self._clock(), payment=payment)
        event = NewOutboxEvent(
            "order.authorized",
            {
                "order_id": order.id,
                "status": moved.status.value,
                "provider": payment.provider,
                "payment_id": payment.payment_id,
                "amount": payment.amount,
                "currency": order.currency,
            },
        )
        try:
            stored = await self.orders.transition(order.id, order.version, moved, [event])
        except StoreConflict:
            # Someone moved it first (expired or cancelled by the processor): this
            # authorization belongs to no live order, so release it.
            current = await self._store(self.orders.get_order(order.id))
            if current is None or current.status is not OrderStatus.AUTHORIZED:
                await self._void(order.id, payment.payment_id)
            return CheckoutAnswer(202, placed_answer(current or order))
        except StorageError as error:
            # Authorized at the provider, order still pending_payment: the same state as
            # an unknown outcome, which the processor reconciles.
            log.warning("order %s: authorized but not recorded (%s)", order.id, error)
            return CheckoutAnswer(202, placed_answer(order))
        return CheckoutAnswer(202, placed_answer(stored))

    async def _payment_failed(
        self, order: Order, error: DomainError, cart_id: str, holder: str, render: Render
    ) -> CheckoutAnswer:
        moved = transition(order, OrderStatus.PAYMENT_FAILED, self._clock())
        event = NewOutboxEvent(
            "order.payment_failed",
            {
                "order_id": order.id,
                "status": moved.status.value,
                "reason": error.code.value,
                "reservations_released": True,
            },
        )
        try:
            await self.orders.transition(order.id, order.version, moved, [event])
        except StorageError as failure:
            # The order stays pending_payment until it expires; its release op ids are
            # the ones used below, so the expiry's release is answered, not applied twice.
            log.warning("order %s: payment_failed not recorded (%s)", order.id, failure)
        await self._release(order.id, [line.sku for line in order.lines])
        await self._unfreeze(cart_id, holder)
        details = {k: v for k, v in error.details.items() if k not in _OWN_DETAILS}
        status, body = render(
            DomainError(
                error.code,
                error.message,
                **details,
                order_id=order.id,
                order_status=OrderStatus.PAYMENT_FAILED.value,
            )
        )
        return CheckoutAnswer(status, body)

    async def _void(self, order_id: str, payment_id: str) -> None:
        try:
            await self.payments.void(payment_id, f"{order_id}:void")
        except Exception:
            log.exception(
                "order %s: void of %s failed; the processor reconciles", order_id, payment_id
            )

    # --- answers ------------------------------------------------------------------------

    async def _replay(self, record: IdempotencyRecord, digest: str) -> CheckoutAnswer:
        if record.request_hash != digest:
            raise _mismatch()
        if record.order_id is None:
            return CheckoutAnswer(record.status_code, record.response, replayed=True)
        now = self._clock()
        final = await self._store(self.orders.get_idempotency(OUTCOME_SCOPE, record.key, now=now))
        if final is not None:
            return CheckoutAnswer(final.status_code, final.response, replayed=True)
        order = await self._store(self.orders.get_order(record.order_id))
        if order is None:
            raise DomainError(ErrorCode.STORE_UNAVAILABLE, "order not readable yet; retry")
        if order.status is OrderStatus.PENDING_PAYMENT and now - record.created_at < (
            self.settings.in_flight_s
        ):
            raise DomainError(
                ErrorCode.CHECKOUT_IN_PROGRESS,
                "a checkout with this Idempotency-Key is still running; retry shortly",
                order_id=order.id,
            )
        return CheckoutAnswer(202, placed_answer(order), replayed=True)

    async def _yield_to(
        self, winner: IdempotencyRecord, digest: str, cart_id: str, holder: str
    ) -> CheckoutAnswer:
        """Another request with this key committed first: answer as it did. The cart
        stays frozen unless no checkout of this key holds it any more."""
        release = winner.order_id is None
        if not release and winner.order_id is not None:
            order = await self._store(self.orders.get_order(winner.order_id))
            release = order is not None and order.status in _CART_RELEASED
        if release:
            await self._unfreeze(cart_id, holder)
        return await self._replay(winner, digest)

    async def _refused(
        self,
        key: str,
        digest: str,
        error: DomainError,
        render: Render,
        cart_id: str,
        holder: str,
    ) -> CheckoutAnswer:
        """A final refusal before any order: stored under the key, cart unfrozen."""
        status, body = render(error)
        now = self._clock()
        record = IdempotencyRecord(
            SCOPE, key, digest, body, status, None, now, now + self.settings.idempotency_ttl_s
        )
        try:
            await self.orders.save_idempotency(record)
        except DuplicateKey as lost:
            return await self._yield_to(lost.existing, digest, cart_id, holder)
        except StorageError as failure:
            log.warning("checkout refusal not stored (%s); answering anyway", failure)
        self.metrics.checkout_refused(error.code.value)
        await self._unfreeze(cart_id, holder)
        return CheckoutAnswer(status, body)

    # --- shard calls ----------------------------------------------------------------------

    async def _shard(self, kind: ShardKind, key: str, op: str, *args: Any) -> Any:
        """A shard call, sent again with the same op id after a transient failure."""
        for attempt in range(self.settings.shard_attempts):
            try:
                return await self.shards.call(kind, key, op, *args)
            except DomainError as error:
                if error.code not in _TRANSIENT or attempt + 1 == self.settings.shard_attempts:
                    raise
            await asyncio.sleep(self.settings.shard_backoff_s * 2**attempt)
        raise AssertionError("unreachable")

    async def _release(self, order_id: str, skus: Sequence[str]) -> None:
        """Release this order's reservations; best effort (they expire by TTL anyway)."""

        async def one(sku: str) -> None:
            try:
                await self._shard(
                    ShardKind.INVENTORY,
                    sku,
                    "release",
                    f"{order_id}:release:{sku}",
                    f"{order_id}:{sku}",
                    sku,
                )
            except DomainError as error:
                if error.code is not ErrorCode.RESERVATION_NOT_FOUND:
                    log.warning(
                        "order %s: release of %s failed (%s); it expires by TTL",
                        order_id,
                        sku,
                        error.code.value,
                    )

        await asyncio.gather(*(one(sku) for sku in skus))

    async def _unfreeze(self, cart_id: str, holder: str) -> None:
        try:
            await self._shard(ShardKind.CART, cart_id, "unfreeze", new_op_id(), cart_id, holder)
        except DomainError as error:
            log.warning("cart unfreeze failed (%s)", error.code.value)

    @staticmethod
    async def _store(call: Awaitable[T]) -> T:
        """Await a store call; StoreUnavailable and friends become a retryable refusal."""
        try:
            return await call
        except StorageError as error:
            raise DomainError(
                ErrorCode.STORE_UNAVAILABLE, "order store unavailable; retry"
            ) from error


def _invalid(message: str, **details: Any) -> DomainError:
    return DomainError(ErrorCode.INVALID_ARGUMENT, message, **details)


def _mismatch() -> DomainError:
    return DomainError(
        ErrorCode.IDEMPOTENCY_MISMATCH,
        "this Idempotency-Key was used with a different request body",
    )
