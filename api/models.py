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


ReservationId = Annotated[str, Field(min_length=8, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")]


class ReservationIn(Strict):
    """A hold on stock for an internal service; the caller may name it, which makes a
    retry of the same request (same id, SKU and quantity) answer the first hold."""

    quantity: Quantity = 1
    ttl_s: Annotated[float, Field(ge=1, le=86_400)] | None = None
    reservation_id: ReservationId | None = None


class ReservationOut(BaseModel):
    reservation_id: str
    sku: str
    quantity: int
    expires_at: float
    available: int  # of the SKU, after this hold


class VariantOut(BaseModel):
    sku: str
    options: dict[str, str]
    images: list[str]


class ProductOut(BaseModel):
    """A product document (created_at/updated_at: ISO 8601 text)."""

    id: str
    title: str
    description: str
    brand: str
    category: str
    status: str
    merchant_id: str
    attributes: dict[str, str]
    variants: list[VariantOut]


class ProductList(BaseModel):
    items: list[ProductOut]
    next_cursor: str | None


class ProductPage(BaseModel):
    product: ProductOut
    prices: dict[str, PriceOut]
    stock: dict[str, int]
    recommendations: list[ProductOut]


# --- response documents -----------------------------------------------------------------
# The routes answer with raw JSON (api.responses.json) for speed; these models only
# document what they answer (``response_model=``), and Schemathesis checks every answer
# against them (tests/security/test_schemathesis.py). Unknown extra members are allowed.


class StatusOut(BaseModel):
    status: str


class PingOut(BaseModel):
    ok: bool


class Jwk(BaseModel):
    kty: str
    crv: str
    x: str
    kid: str
    use: str
    alg: str


class JwksOut(BaseModel):
    keys: list[Jwk]


class TokenOut(BaseModel):
    """RFC 6749 §5.1. ``refresh_token`` only from the refresh grant (and sign-in)."""

    access_token: str
    token_type: str
    expires_in: int
    scope: str
    refresh_token: str | None = None


class AccountOut(BaseModel):
    id: str
    email: str
    name: str | None
    cart_id: str | None
    created_at: float


class MergeOut(BaseModel):
    merged: bool
    reason: str | None = None
    skipped: list[str] | None = None


class SignInOut(TokenOut):
    refresh_token: str | None
    customer: AccountOut
    cart: CartOut | None
    merge: MergeOut | None


class MobileVariantOut(BaseModel):
    s: str
    o: dict[str, str]
    p: int | None
    q: int


class MobileProductOut(BaseModel):
    """The compact product page: id, title, brand, image, variants, currency, picks."""

    id: str
    t: str
    b: str | None
    img: str | None
    v: list[MobileVariantOut]
    cur: str | None
    rec: list[dict[str, str]]


class SearchHitOut(BaseModel):
    id: str
    title: str
    brand: str
    category: str
    price: MoneyOut | None
    score: float


class FacetValueOut(BaseModel):
    value: str
    count: int


class SearchOut(BaseModel):
    items: list[SearchHitOut]
    total: int
    facets: dict[str, list[FacetValueOut]]
    next_cursor: str | None


class StockLevelOut(BaseModel):
    sku: str
    on_hand: int
    reserved: int
    sold: int
    available: int


class ImportReportOut(BaseModel):
    accepted: int
    rejected: int
    errors: list[dict[str, Any]]
    errors_truncated: bool


class OrderLineOut(BaseModel):
    sku: str
    product_id: str
    merchant_id: str
    quantity: int
    unit: MoneyOut
    base: MoneyOut
    line_total: MoneyOut
    discount: MoneyOut
    promotion_id: str | None


class PaymentOut(BaseModel):
    status: str
    provider: str | None = None
    payment_id: str | None = None
    amount: MoneyOut | None = None


class ShipmentEventOut(BaseModel):
    kind: str
    at: float
    note: str | None


class ShipmentOut(BaseModel):
    carrier: str
    tracking_number: str
    events: list[ShipmentEventOut]


class OrderOut(BaseModel):
    """An order as its shopper sees it."""

    id: str
    status: str
    currency: str
    lines: list[OrderLineOut]
    subtotal: MoneyOut
    discount: MoneyOut
    total: MoneyOut
    payment: PaymentOut
    shipment: ShipmentOut | None
    expires_at: float | None
    created_at: float
    updated_at: float


class PlacedOrderOut(OrderOut):
    order_id: str


class OrdersOut(BaseModel):
    items: list[OrderOut]
    next_cursor: str | None


class MerchantOrderLineOut(BaseModel):
    sku: str
    product_id: str
    merchant_id: str
    quantity: int
    unit_amount: int
    base_amount: int
    promotion_id: str | None


class MerchantOrderOut(BaseModel):
    """An order as one merchant sees it: only its own lines and their total."""

    id: str
    status: str
    currency: str
    lines: list[MerchantOrderLineOut]
    total: int
    whole_order: bool
    shipment: ShipmentOut | None
    created_at: float
    updated_at: float


class MerchantOrdersOut(BaseModel):
    items: list[MerchantOrderOut]
    next_cursor: str | None


class ShipmentLineOut(BaseModel):
    sku: str
    quantity: int


class ShipmentViewOut(BaseModel):
    """A shipment as its carrier sees it."""

    order_id: str
    status: str
    carrier: str
    tracking_number: str
    events: list[ShipmentEventOut]
    lines: list[ShipmentLineOut]
    updated_at: float


class ShipmentsOut(BaseModel):
    items: list[ShipmentViewOut]
    next_cursor: str | None


class WebhookOut(BaseModel):
    received: bool
    duplicate: bool
    outcome: str | None = None


class ApiKeyOut(BaseModel):
    key_id: str
    role: str | None
    subject: str | None
    scopes: list[str]
    plan: str
    label: str
    created_at: float
    revoked_at: float | None


class ApiKeyCreatedOut(ApiKeyOut):
    api_key: str = Field(description="the key itself: shown this once, only its hash is kept")


class ApiKeysOut(BaseModel):
    items: list[ApiKeyOut]
