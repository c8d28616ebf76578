"""Products, prices and stock: the read side a shopper browses."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response

from actors.domain.errors import DomainError, ErrorCode
from api.deps import ShopDep
from api.models import PriceOut, ProductId, ProductList, ProductOut, Sku, StockOut
from api.responses import json

router = APIRouter(prefix="/v1", tags=["catalog"])

Category = Annotated[
    str | None, Query(min_length=1, max_length=200, pattern=r"^[a-z0-9_-]+(/[a-z0-9_-]+)*$")
]


@router.get("/products", response_model=ProductList)
async def list_products(
    shop: ShopDep,
    category: Category = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> Response:
    items, next_cursor = await shop.list_products(category, cursor, limit)
    return json({"items": items, "next_cursor": next_cursor})


@router.get("/products/{product_id}", response_model=ProductOut)
async def get_product(shop: ShopDep, product_id: Annotated[ProductId, Path()]) -> Response:
    return json(await shop.product(product_id))


@router.get("/prices/{sku}", response_model=PriceOut)
async def get_price(shop: ShopDep, sku: Annotated[Sku, Path()]) -> Response:
    return json(await shop.price(sku))


def stock_out(sku: str, level: dict[str, int]) -> dict[str, Any]:
    return {"sku": sku, **level, "in_stock": level["available"] > 0}


@router.get("/stock/{sku}", response_model=StockOut)
async def get_stock(shop: ShopDep, sku: Annotated[Sku, Path()]) -> Response:
    levels = await shop.stock([sku])
    if sku not in levels:
        raise DomainError(ErrorCode.SKU_NOT_FOUND, f"unknown SKU {sku!r}", sku=sku)
    return json(stock_out(sku, levels[sku]))


@router.get("/stock", response_model=list[StockOut])
async def get_stock_many(
    shop: ShopDep, sku: Annotated[list[Sku], Query(min_length=1, max_length=100)]
) -> Response:
    levels = await shop.stock(sku)
    return json([stock_out(s, levels[s]) for s in dict.fromkeys(sku) if s in levels])
