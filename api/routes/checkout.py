"""Checkout and the shopper's view of an order.

``POST /v1/checkout`` needs an ``Idempotency-Key`` header: the same key with the same body
gets the same answer (``Idempotent-Replayed: true``), with another body ``422
idempotency_mismatch``. ``202`` carries the order (``Location: /v1/orders/{id}``) in status
``authorized``, or ``pending_payment`` when the payment provider's answer is not known yet
(poll the order). Failures are problem+json; those after an order was placed (a declined
card) carry its ``order_id``. See ``actors/checkout.py`` for the flow.

The service is ``app.state.checkout`` (a :class:`CheckoutService`); without one these
routes answer ``404 feature_disabled``.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, Path, Request
from fastapi.responses import Response
from pydantic import Field, StrictInt

from actors.checkout import CheckoutService, check_idempotency_key
from actors.domain.errors import DomainError, ErrorCode
from actors.domain.validation import INT64_MAX
from api import problems
from api.access import principal_of
from api.models import CartId, OrderOut, PlacedOrderOut, Strict
from api.responses import json

router = APIRouter(tags=["checkout"])

CHECKOUT_PATH = "/v1/checkout"
NO_STORE = {"Cache-Control": "no-store"}


class MoneyIn(Strict):
    amount: StrictInt = Field(ge=0, le=INT64_MAX, description="minor units, e.g. 1999")
    currency: str = Field(pattern=r"^[A-Z]{3}$")


class CheckoutIn(Strict):
    cart_id: CartId
    payment_token: str = Field(
        min_length=1,
        max_length=256,
        pattern=r"^[\x21-\x7e]+$",
        description="the payment provider's token (never a card number)",
    )
    expected_total: MoneyIn | None = Field(
        None, description="the total the shopper saw; checkout refuses (409) if it changed"
    )


def render(error: DomainError) -> tuple[int, dict[str, Any]]:
    """The problem+json a refusal becomes, as a status and a body the service can store."""
    response = problems.domain_problem(error, CHECKOUT_PATH)
    body: dict[str, Any] = orjson.loads(response.body)
    return response.status_code, body


def _service(request: Request) -> CheckoutService:
    service: CheckoutService | None = getattr(request.app.state, "checkout", None)
    if service is None:
        raise DomainError(ErrorCode.FEATURE_DISABLED, "checkout is not configured here")
    return service


@router.post(
    CHECKOUT_PATH,
    status_code=202,
    response_model=PlacedOrderOut,
    responses={
        202: {"description": "order placed: authorized, or pending_payment (poll it)"},
        400: {"description": "Idempotency-Key missing or malformed"},
        402: {"description": "payment declined (order payment_failed, cart unfrozen)"},
        409: {"description": "insufficient_stock, price_changed, cart_frozen, in progress"},
        422: {"description": "cart_empty, idempotency_mismatch, payment_token_invalid"},
    },
)
async def checkout(
    request: Request,
    body: CheckoutIn,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> Response:
    key = check_idempotency_key(idempotency_key)
    service = _service(request)
    caller = principal_of(request.scope).customer
    answer = await service.checkout(body.model_dump(mode="json"), key, render, caller)
    headers = dict(NO_STORE)
    if answer.status == 202 and answer.order_id is not None:
        headers["Location"] = f"/v1/orders/{answer.order_id}"
    if answer.replayed:
        headers["Idempotent-Replayed"] = "true"
    media_type = problems.PROBLEM_JSON if answer.status >= 400 else "application/json"
    return Response(orjson.dumps(answer.body), answer.status, headers, media_type)


@router.get("/v1/orders/{order_id}", response_model=OrderOut)
async def get_order(
    request: Request, order_id: Annotated[str, Path(min_length=1, max_length=64)]
) -> Response:
    order = await _service(request).get_order(order_id, principal_of(request.scope).customer)
    return json(order, headers=dict(NO_STORE))
