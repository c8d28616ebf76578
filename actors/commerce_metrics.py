"""Commerce metrics: what the shop and checkout report, without Ray.

:class:`Shop` and :class:`~actors.checkout.CheckoutService` report through a
:class:`CommerceMetrics`; a deployment passes ``deployments.metrics.RayCommerceMetrics``
(Ray's metrics API, exported by every node's Prometheus endpoint), unit tests an
:class:`InMemoryMetrics`, and anything else gets :class:`NullMetrics`.

What counts:

* **A session is a cart.** A guest's visit starts with ``POST /v1/carts`` and everything it
  buys goes through that cart, so :meth:`CommerceMetrics.cart_created` marks a session
  (carts merged at sign-in count as two sessions).
* **An order is placed** when its checkout ends with the order ``authorized``, or left
  ``pending_payment`` because the payment outcome is unknown. Declined and failed payments
  are :meth:`CommerceMetrics.payment_failed` instead, refusals before any order (empty
  cart, price changed, out of stock, unknown SKU) :meth:`CommerceMetrics.checkout_refused`.
  Each is reported once per checkout run: a replayed stored answer, or a retry that joins a
  run still in flight, reports nothing. Retryable failures (a shard or store unavailable)
  and malformed requests are not reported.
* **Checkout duration** is from the cart's creation (``created_at`` in the snapshot frozen
  by the checkout) to the order being placed.

The ratios are left to Prometheus, from the counters (Ray exports custom metrics with a
``ray_`` prefix; counters get ``_total``)::

    # conversion: sessions that placed an order / sessions
    sum(rate(ray_feira_orders_placed_total[5m])) / sum(rate(ray_feira_carts_created_total[5m]))
    # orders per minute
    60 * sum(rate(ray_feira_orders_placed_total[5m]))
    # payment failures per minute, by reason
    60 * sum by (reason) (rate(ray_feira_payment_failures_total[5m]))
    # checkout duration, P50
    histogram_quantile(0.5, sum by (le) (rate(ray_feira_checkout_duration_seconds_bucket[5m])))

Implementations must be cheap and must not raise: they are called on the request path.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Protocol


class CommerceMetrics(Protocol):
    def cart_created(self) -> None:
        """A session started (a cart was created)."""

    def order_placed(
        self, seconds_since_cart_created: float, total_minor: int, currency: str
    ) -> None:
        """A checkout placed an order (authorized, or pending an unknown payment outcome)."""

    def payment_failed(self, reason: str) -> None:
        """A checkout's payment was declined or failed; ``reason`` is the error code."""

    def checkout_refused(self, code: str) -> None:
        """A checkout was refused before any order existed; ``code`` is the error code."""


class NullMetrics:
    """Reports nothing."""

    def cart_created(self) -> None:
        pass

    def order_placed(
        self, seconds_since_cart_created: float, total_minor: int, currency: str
    ) -> None:
        pass

    def payment_failed(self, reason: str) -> None:
        pass

    def checkout_refused(self, code: str) -> None:
        pass


NULL_METRICS = NullMetrics()


@dataclass(frozen=True, slots=True)
class PlacedOrder:
    seconds_since_cart_created: float
    total_minor: int
    currency: str


@dataclass
class InMemoryMetrics:
    """Counts and observations kept in memory, for tests."""

    carts_created: int = 0
    orders: list[PlacedOrder] = field(default_factory=list)
    payment_failures: Counter[str] = field(default_factory=Counter)
    checkout_refusals: Counter[str] = field(default_factory=Counter)

    @property
    def orders_placed(self) -> int:
        return len(self.orders)

    @property
    def conversion(self) -> float:
        """Orders placed / sessions (carts created); 0 before the first cart."""
        return self.orders_placed / self.carts_created if self.carts_created else 0.0

    def cart_created(self) -> None:
        self.carts_created += 1

    def order_placed(
        self, seconds_since_cart_created: float, total_minor: int, currency: str
    ) -> None:
        self.orders.append(PlacedOrder(seconds_since_cart_created, total_minor, currency))

    def payment_failed(self, reason: str) -> None:
        self.payment_failures[reason] += 1

    def checkout_refused(self, code: str) -> None:
        self.checkout_refusals[code] += 1
