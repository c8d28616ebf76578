"""The merchant API: a merchant's own products, prices and stock.

Every route needs a merchant token (``api.merchant_auth``); another merchant's product
answers 404, exactly like a missing one.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Body, Header, Path, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from actors.domain.catalog import ProductStatus
from actors.domain.errors import DomainError, ErrorCode
from actors.merchant import MerchantCatalog
from api.merchant_auth import MerchantDep
from api.models import (
    IdempotencyKey,
    ImportReportOut,
    PriceOut,
    ProductId,
    ProductList,
    ProductOut,
    Sku,
    StockLevelOut,
)
from api.responses import json

router = APIRouter(prefix="/v1/merchant", tags=["merchant"])

ProductPath = Annotated[ProductId, Path()]
SkuPath = Annotated[Sku, Path()]
IdemKey = Annotated[IdempotencyKey | None, Header(alias="Idempotency-Key")]
NDJSON = "application/x-ndjson"

PRODUCT_EXAMPLE = {
    "title": "Enamel Kettle",
    "brand": "Kestrel",
    "category": "home/kitchen/kettles",
    "description": "A stovetop kettle in enamelled steel.",
    "attributes": {"material": "enamelled steel"},
    "variants": [{"sku": "KST-ENAMEL-1", "options": {"color": "red"}, "images": []}],
}
NDJSON_TYPES = (NDJSON, "application/jsonl", "application/json-seq")
# The body is read as a stream, so FastAPI cannot see it: documented here.
IMPORT_BODY = {
    "required": True,
    "description": "one product JSON object per line (the fields of POST /products)",
    "content": {
        media_type: {
            "schema": {"type": "string"},
            "example": orjson.dumps(PRODUCT_EXAMPLE).decode() + "\n",
        }
        for media_type in NDJSON_TYPES
    },
}


class PriceIn(BaseModel):
    amount: int = Field(ge=0, description="minor units, e.g. 1999 for 19.99")
    currency: str = Field(pattern=r"^[A-Z]{3}$")


class StockIn(BaseModel):
    on_hand: int = Field(ge=0)


def _catalog(request: Request) -> MerchantCatalog:
    catalog: MerchantCatalog = request.app.state.merchant
    return catalog


def _op_id(merchant_id: str, key: str | None) -> str | None:
    return f"merchant:{merchant_id}:{key}" if key else None


@router.get("/products", response_model=ProductList)
async def list_products(
    request: Request,
    merchant_id: MerchantDep,
    status: ProductStatus | None = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> Response:
    items, next_cursor = await _catalog(request).products(merchant_id, status, cursor, limit)
    return json({"items": items, "next_cursor": next_cursor})


@router.post("/products", status_code=201, response_model=ProductOut)
async def create_product(
    request: Request,
    merchant_id: MerchantDep,
    product: Annotated[
        dict[str, Any], Body(openapi_examples={"kettle": {"value": PRODUCT_EXAMPLE}})
    ],
) -> Response:
    doc = await _catalog(request).create(merchant_id, product)
    return json(doc, 201, {"Location": f"/v1/merchant/products/{doc['id']}"})


@router.post(
    "/products/import",
    response_model=ImportReportOut,
    openapi_extra={"requestBody": IMPORT_BODY},
)
async def import_products(request: Request, merchant_id: MerchantDep) -> Response:
    """Bulk import: one product JSON per line (NDJSON), streamed. A line with an ``id`` the
    merchant owns replaces that product's fields; bad lines are reported, good ones kept."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip()
    if content_type not in NDJSON_TYPES:
        raise DomainError(
            ErrorCode.INVALID_ARGUMENT, f"send the products as {NDJSON}, one per line"
        )
    report = await _catalog(request).import_ndjson(merchant_id, request.stream())
    return json(report.as_json())


@router.get("/products/{product_id}", response_model=ProductOut)
async def get_product(
    request: Request, merchant_id: MerchantDep, product_id: ProductPath
) -> Response:
    return json(await _catalog(request).own(merchant_id, product_id))


@router.patch("/products/{product_id}", response_model=ProductOut)
async def update_product(
    request: Request,
    merchant_id: MerchantDep,
    product_id: ProductPath,
    changes: Annotated[dict[str, Any], Body()],
) -> Response:
    return json(await _catalog(request).update(merchant_id, product_id, changes))


@router.post("/products/{product_id}/publish", response_model=ProductOut)
async def publish_product(
    request: Request, merchant_id: MerchantDep, product_id: ProductPath
) -> Response:
    return json(
        await _catalog(request).set_status(merchant_id, product_id, ProductStatus.PUBLISHED)
    )


@router.post("/products/{product_id}/archive", response_model=ProductOut)
async def archive_product(
    request: Request, merchant_id: MerchantDep, product_id: ProductPath
) -> Response:
    return json(await _catalog(request).set_status(merchant_id, product_id, ProductStatus.ARCHIVED))


@router.put("/prices/{sku}", response_model=PriceOut)
async def set_price(
    request: Request, merchant_id: MerchantDep, sku: SkuPath, price: PriceIn, key: IdemKey = None
) -> Response:
    quote = await _catalog(request).set_price(
        merchant_id, sku, price.amount, price.currency, _op_id(merchant_id, key)
    )
    return json(
        {
            "sku": sku,
            "base": {"amount": quote["base"], "currency": quote["currency"]},
            "unit": {"amount": quote["unit"], "currency": quote["currency"]},
            "promotion_id": quote["promotion_id"],
        }
    )


@router.put("/inventory/{sku}", response_model=StockLevelOut)
async def set_stock(
    request: Request, merchant_id: MerchantDep, sku: SkuPath, stock: StockIn, key: IdemKey = None
) -> Response:
    level = await _catalog(request).set_stock(
        merchant_id, sku, stock.on_hand, _op_id(merchant_id, key)
    )
    return json({"sku": sku, **level})
