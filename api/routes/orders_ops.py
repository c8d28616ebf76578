"""After checkout: logistics operators, payment-provider webhooks, merchants' orders.

- ``GET /v1/logistics/shipments``, ``POST /v1/logistics/shipments/{order_id}/events``:
  carrier tokens (``api.merchant_auth.current_carrier``); a carrier sees only its own.
  The listing pages with ``cursor`` / ``next_cursor``.
- ``POST /v1/payments/webhooks/{provider}``: HMAC-signed (``Feira-Signature``), verified
  against the provider's configured secret, de-duplicated by event id; a bad signature is
  400, a duplicate 200.
- ``GET /v1/merchant/orders``, ``POST /v1/merchant/orders/{order_id}/refund``: merchant
  tokens; a merchant sees its own lines of every order holding one, and refunds only an
  order whose lines are all its own. Another merchant's order answers 404.

Everything here needs an :class:`OrdersOps` in ``app.state.orders_ops``
(``create_api(orders_ops=...)``); without one these routes answer 404 ``feature_disabled``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response
from pydantic import Field

from actors.domain.errors import DomainError, ErrorCode
from actors.domain.orders import Order
from actors.logistics import Logistics, shipment_view
from actors.order_processor import OrderProcessor
from actors.payments.webhooks import SIGNATURE_HEADER, Secrets, SeenEvents, accept
from api.merchant_auth import CarrierDep, MerchantDep
from api.models import (
    MerchantOrderOut,
    MerchantOrdersOut,
    ShipmentsOut,
    ShipmentViewOut,
    Strict,
    WebhookOut,
)
from api.responses import json
from storage.interfaces import OrderStore

router = APIRouter(tags=["orders"])

OrderIdPath = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
ProviderPath = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[a-z0-9_-]+$")]
MAX_WEBHOOK_BYTES = 64 * 1024


@dataclass
class OrdersOps:
    """What these routes need; built once per replica by the deployment."""

    orders: OrderStore
    processor: OrderProcessor
    logistics: Logistics
    webhook_secrets: Mapping[str, Secrets]  # provider name -> its signing secret(s)
    seen: SeenEvents
    clock: Callable[[], float] = field(default=time.time)


class ShipmentEventIn(Strict):
    kind: Literal["picked_up", "in_transit", "delivered", "failed"]
    at: float | None = Field(
        default=None, ge=0, allow_inf_nan=False, description="unix seconds; default now"
    )
    note: str | None = Field(default=None, min_length=1, max_length=1000)


def _ops(request: Request) -> OrdersOps:
    ops: OrdersOps | None = getattr(request.app.state, "orders_ops", None)
    if ops is None:
        raise DomainError(ErrorCode.FEATURE_DISABLED, "order processing is not enabled here")
    return ops


# --- logistics -------------------------------------------------------------------------


@router.get("/v1/logistics/shipments", response_model=ShipmentsOut)
async def list_shipments(
    request: Request,
    carrier: CarrierDep,
    include_done: bool = False,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
) -> Response:
    """Newest first. A page may be short (even empty) with a ``next_cursor`` when most
    shipments are done; follow ``next_cursor`` until it is null."""
    try:
        orders, next_cursor = await _ops(request).logistics.shipments(
            carrier, active_only=not include_done, limit=limit, cursor=cursor
        )
    except ValueError as error:
        raise DomainError(ErrorCode.INVALID_ARGUMENT, str(error)) from error
    items = [shipment_view(order) for order in orders]
    return json({"items": items, "next_cursor": next_cursor})


@router.post("/v1/logistics/shipments/{order_id}/events", response_model=ShipmentViewOut)
async def post_shipment_event(
    request: Request, carrier: CarrierDep, order_id: OrderIdPath, event: ShipmentEventIn
) -> Response:
    order = await _ops(request).logistics.post_event(
        carrier, order_id, event.kind, at=event.at, note=event.note
    )
    return json(shipment_view(order))


# --- payment webhooks ------------------------------------------------------------------


# The body is read raw (its bytes are what is signed), so FastAPI cannot see it.
WEBHOOK_DOC: dict[str, Any] = {
    "parameters": [
        {
            "name": SIGNATURE_HEADER,
            "in": "header",
            "required": True,
            "description": "t=<unix s>,v1=<hex HMAC-SHA256 of '<t>.' + body>[,v1=...]",
            "schema": {"type": "string", "maxLength": 4096},
        }
    ],
    "requestBody": {
        "required": True,
        "description": "the provider's event, signed as sent",
        "content": {"application/json": {"schema": {"type": "object"}}},
    },
}


@router.post(
    "/v1/payments/webhooks/{provider}", response_model=WebhookOut, openapi_extra=WEBHOOK_DOC
)
async def payment_webhook(request: Request, provider: ProviderPath) -> Response:
    ops = _ops(request)
    secret = ops.webhook_secrets.get(provider)
    if secret is None:
        raise DomainError(ErrorCode.FEATURE_DISABLED, f"no webhooks from {provider!r}")
    body = await request.body()
    if len(body) > MAX_WEBHOOK_BYTES:
        raise DomainError(ErrorCode.WEBHOOK_PAYLOAD_INVALID, "webhook body too large")
    now = ops.clock()
    event = await accept(
        ops.seen, provider, secret, request.headers.get(SIGNATURE_HEADER), body, now
    )
    if event is None:
        return json({"received": True, "duplicate": True})
    try:
        outcome = await ops.processor.apply_webhook(event, now)
    except BaseException:
        # Let the provider's redelivery be processed rather than dropped as a duplicate.
        await ops.seen.forget(provider, event.id)
        raise
    return json({"received": True, "duplicate": False, "outcome": outcome})


# --- merchant orders -------------------------------------------------------------------


def merchant_view(order: Order, merchant_id: str) -> dict[str, Any]:
    """The order as one merchant sees it: only its own lines and their amounts."""
    lines = [line for line in order.lines if line.merchant_id == merchant_id]
    return {
        "id": order.id,
        "status": order.status.value,
        "currency": order.currency,
        "lines": [line.to_json() for line in lines],
        "total": sum(line.total for line in lines),
        "whole_order": len(lines) == len(order.lines),
        "shipment": None if order.shipment is None else order.shipment.to_json(),
        "created_at": order.created_at,
        "updated_at": order.updated_at,
    }


@router.get("/v1/merchant/orders", tags=["merchant"], response_model=MerchantOrdersOut)
async def merchant_orders(
    request: Request,
    merchant_id: MerchantDep,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> Response:
    try:
        orders, next_cursor = await _ops(request).orders.list_orders(
            merchant_id=merchant_id, cursor=cursor, limit=limit
        )
    except ValueError as error:
        raise DomainError(ErrorCode.INVALID_ARGUMENT, str(error)) from error
    items = [merchant_view(order, merchant_id) for order in orders]
    return json({"items": items, "next_cursor": next_cursor})


@router.post(
    "/v1/merchant/orders/{order_id}/refund", tags=["merchant"], response_model=MerchantOrderOut
)
async def merchant_refund(
    request: Request, merchant_id: MerchantDep, order_id: OrderIdPath
) -> Response:
    ops = _ops(request)
    order = await ops.orders.get_order(order_id)
    if order is None or merchant_id not in order.merchant_ids:
        raise DomainError(ErrorCode.ORDER_NOT_FOUND, f"no order {order_id!r}", order_id=order_id)
    if order.merchant_ids != {merchant_id}:
        raise DomainError(
            ErrorCode.ORDER_CONFLICT,
            "the order holds other merchants' lines; partial refunds are not supported",
            order_id=order_id,
        )
    refunded = await ops.processor.refund(order_id, ops.clock(), reason="merchant refund")
    return json(merchant_view(refunded, merchant_id))
