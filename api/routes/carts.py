"""Carts: create, view, add, change, remove. A cart id is the guest's bearer secret; a
signed-in customer's cart answers only that customer (others get 404)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Path
from fastapi.responses import Response

from api.deps import ShopDep
from api.merchant_auth import PrincipalDep
from api.models import (
    CartId,
    CartItemAdd,
    CartItemUpdate,
    CartOut,
    IdempotencyKey,
    Sku,
)
from api.responses import json

router = APIRouter(prefix="/v1/carts", tags=["carts"])

CartPath = Annotated[CartId, Path(description="Cart id returned at creation")]
SkuPath = Annotated[Sku, Path()]
# A client that retries a mutation with the same key gets the first answer back.
IdemKey = Annotated[IdempotencyKey | None, Header(alias="Idempotency-Key")]


def _op_id(cart_id: str, key: str | None) -> str | None:
    return f"{cart_id}:{key}" if key else None


@router.post("", status_code=201, response_model=CartOut)
async def create_cart(shop: ShopDep, who: PrincipalDep) -> Response:
    """A guest cart, or with a customer token a cart owned by that customer."""
    cart = await shop.create_cart(who.customer)
    return json(cart, 201, {"Location": f"/v1/carts/{cart['id']}"})


@router.get("/{cart_id}", response_model=CartOut)
async def get_cart(shop: ShopDep, cart_id: CartPath, who: PrincipalDep) -> Response:
    return json(await shop.get_cart(cart_id, who.customer))


@router.post("/{cart_id}/items", response_model=CartOut)
async def add_item(
    shop: ShopDep,
    cart_id: CartPath,
    item: CartItemAdd,
    who: PrincipalDep,
    idempotency_key: IdemKey = None,
) -> Response:
    op_id = _op_id(cart_id, idempotency_key)
    return json(await shop.add_item(cart_id, item.sku, item.quantity, op_id, who.customer))


@router.patch("/{cart_id}/items/{sku}", response_model=CartOut)
async def set_quantity(
    shop: ShopDep,
    cart_id: CartPath,
    sku: SkuPath,
    body: CartItemUpdate,
    who: PrincipalDep,
    idempotency_key: IdemKey = None,
) -> Response:
    op_id = _op_id(cart_id, idempotency_key)
    return json(await shop.set_quantity(cart_id, sku, body.quantity, op_id, who.customer))


@router.delete("/{cart_id}/items/{sku}", response_model=CartOut)
async def remove_item(
    shop: ShopDep,
    cart_id: CartPath,
    sku: SkuPath,
    who: PrincipalDep,
    idempotency_key: IdemKey = None,
) -> Response:
    op_id = _op_id(cart_id, idempotency_key)
    return json(await shop.remove_item(cart_id, sku, op_id, who.customer))
