"""Backend-for-frontend screens: one call per screen. Mobile gets a compact payload."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from fastapi.responses import Response

from api.deps import ShopDep
from api.models import MobileProductOut, ProductId, ProductPage
from api.responses import json

router = APIRouter(prefix="/bff", tags=["bff"])

ProductPath = Annotated[ProductId, Path()]


@router.get("/web/product/{product_id}", response_model=ProductPage)
async def web_product(shop: ShopDep, product_id: ProductPath) -> Response:
    return json(await shop.product_page(product_id))


def _unit(page: dict[str, Any], sku: str) -> int | None:
    price = page["prices"].get(sku)
    return None if price is None else int(price["unit"]["amount"])


def compact_product_page(page: dict[str, Any]) -> dict[str, Any]:
    p = page["product"]
    prices = list(page["prices"].values())
    return {
        "id": p["id"],
        "t": p["title"],
        "b": p.get("brand"),
        "img": next((img for v in p.get("variants", []) for img in v.get("images", [])), None),
        "v": [
            {
                "s": v["sku"],
                "o": v.get("options", {}),
                "p": _unit(page, v["sku"]),
                "q": page["stock"].get(v["sku"], 0),
            }
            for v in p.get("variants", [])
        ],
        "cur": prices[0]["unit"]["currency"] if prices else None,
        "rec": [{"id": r["id"], "t": r["title"]} for r in page["recommendations"]],
    }


@router.get("/mobile/product/{product_id}", response_model=MobileProductOut)
async def mobile_product(shop: ShopDep, product_id: ProductPath) -> Response:
    return json(compact_product_page(await shop.product_page(product_id)))
