"""Request and response schemas. Money is always integer minor units plus a currency."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt

Sku = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[\x21-\x7e]+$")]
# Absurd quantities are refused by the schema; the cart's own limit is lower.
Quantity = Annotated[StrictInt, Field(ge=1, le=1_000_000)]
CartId = Annotated[str, Field(min_length=16, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
IdempotencyKey = Annotated[str, Field(min_length=8, max_length=128, pattern=r"^[\x21-\x7e]+$")]
ProductId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CartCreate(Strict):
    customer_id: Annotated[str, Field(min_length=1, max_length=64)] | None = None


class CartItemAdd(Strict):
    sku: Sku
    quantity: Quantity = 1


class CartItemUpdate(Strict):
    quantity: Quantity


class MoneyOut(BaseModel):
    amount: int
    currency: str


class CartLineOut(BaseModel):
    sku: str
    quantity: int
    unit: MoneyOut
    base: MoneyOut
    line_total: MoneyOut
    discount: MoneyOut
    promotion_id: str | None


class CartOut(BaseModel):
    id: str
    customer_id: str | None
    version: int
    created_at: float
    updated_at: float
    currency: str
    item_count: int
    lines: list[CartLineOut]
    subtotal: MoneyOut
    discount_total: MoneyOut
    total: MoneyOut


class PriceOut(BaseModel):
    sku: str
    base: MoneyOut
    unit: MoneyOut
    promotion_id: str | None


class StockOut(BaseModel):
    sku: str
    on_hand: int
    reserved: int
    sold: int
    available: int
    in_stock: bool


class ProductList(BaseModel):
    items: list[dict[str, Any]]
    next_cursor: str | None


class ProductPage(BaseModel):
    product: dict[str, Any]
    prices: dict[str, PriceOut]
    stock: dict[str, int]
    recommendations: list[dict[str, Any]]
