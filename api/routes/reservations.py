"""Stock holds for internal services: a queue-based flash sale, a point of sale, a
marketplace connector. Shoppers never call these; checkout reserves on its own. The
same operations as gRPC ``Reserve``/``Release``, for callers that speak HTTP."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import Response

from api.deps import ShopDep
from api.models import ReservationId, ReservationIn, ReservationOut, Sku
from api.responses import json

router = APIRouter(prefix="/v1/stock", tags=["inventory"])


@router.post("/{sku}/reservations", status_code=201, response_model=ReservationOut)
async def reserve(shop: ShopDep, sku: Annotated[Sku, Path()], body: ReservationIn) -> Response:
    """Hold ``quantity`` units until ``ttl_s`` (default: the checkout reservation TTL)
    passes, or 409 ``insufficient_stock``. Naming ``reservation_id`` makes retries safe."""
    reply = await shop.reserve_stock(sku, body.quantity, body.reservation_id, body.ttl_s)
    return json(reply, 201)


@router.delete("/{sku}/reservations/{reservation_id}", response_model=ReservationOut)
async def release(
    shop: ShopDep,
    sku: Annotated[Sku, Path()],
    reservation_id: Annotated[ReservationId, Path()],
) -> Response:
    """Give a held quantity back; 404 ``reservation_not_found`` once it expired or was
    released."""
    return json(await shop.release_stock(sku, reservation_id))
