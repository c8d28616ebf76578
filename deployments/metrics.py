"""Commerce metrics through Ray's metrics API (``ray.util.metrics``).

Each Ray worker process exports what it records on its node's Prometheus endpoint (the
node's metrics export port), with Ray's ``ray_`` prefix. See :mod:`actors.commerce_metrics`
for what counts and the PromQL for conversion and orders per minute.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from actors.commerce_metrics import CommerceMetrics

log = logging.getLogger("feira.metrics")

# Cart created -> order placed, in seconds: from a quick repeat buyer to a cart left open
# for an hour (longer ones land in +Inf).
CHECKOUT_DURATION_BOUNDARIES: tuple[float, ...] = (
    1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600,
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class _Instruments:
    carts_created: Any
    orders_placed: Any
    order_value: Any
    payment_failures: Any
    checkout_refusals: Any
    checkout_duration: Any


@functools.cache
def _instruments() -> _Instruments:
    """Created on first use, once per process (not at import: a driver that imports this
    module registers nothing)."""
    from ray.util.metrics import Counter, Histogram

    return _Instruments(
        carts_created=Counter(
            "feira_carts_created", "Carts created (a cart is a shopping session)"
        ),
        orders_placed=Counter(
            "feira_orders_placed",
            "Checkouts that placed an order (authorized or payment pending)",
            tag_keys=("currency",),
        ),
        order_value=Counter(
            "feira_order_value_minor",
            "Total of the orders placed, in minor units of the currency",
            tag_keys=("currency",),
        ),
        payment_failures=Counter(
            "feira_payment_failures",
            "Checkouts whose payment was declined or failed, by error code",
            tag_keys=("reason",),
        ),
        checkout_refusals=Counter(
            "feira_checkout_refusals",
            "Checkouts refused before any order (empty cart, price changed, out of stock...)",
            tag_keys=("code",),
        ),
        checkout_duration=Histogram(
            "feira_checkout_duration_seconds",
            "Time from the cart's creation to its order being placed",
            boundaries=list(CHECKOUT_DURATION_BOUNDARIES),
        ),
    )


class RayCommerceMetrics:
    """:class:`actors.commerce_metrics.CommerceMetrics` on ``ray.util.metrics``.

    Cheap to construct and to pickle; the instruments are made on the first record in each
    process. Recording never raises: a metrics failure is logged, the request goes on.
    """

    def cart_created(self) -> None:
        try:
            _instruments().carts_created.inc()
        except Exception:
            log.exception("metrics: cart_created not recorded")

    def order_placed(
        self, seconds_since_cart_created: float, total_minor: int, currency: str
    ) -> None:
        try:
            m = _instruments()
            tags = {"currency": currency}
            m.orders_placed.inc(1, tags=tags)
            if total_minor > 0:
                m.order_value.inc(total_minor, tags=tags)
            m.checkout_duration.observe(max(0.0, seconds_since_cart_created))
        except Exception:
            log.exception("metrics: order_placed not recorded")

    def payment_failed(self, reason: str) -> None:
        try:
            _instruments().payment_failures.inc(1, tags={"reason": reason})
        except Exception:
            log.exception("metrics: payment_failed not recorded")

    def checkout_refused(self, code: str) -> None:
        try:
            _instruments().checkout_refusals.inc(1, tags={"code": code})
        except Exception:
            log.exception("metrics: checkout_refused not recorded")


if TYPE_CHECKING:
    _conforms: CommerceMetrics = RayCommerceMetrics()
