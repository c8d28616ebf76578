"""The GraphQL schema: the shopper's read side (products, variants, prices, stock, search).

Products come from the catalog through the per-request product loader; every variant's
``price`` and ``stock`` go through loaders that batch the SKUs of the whole request into
Shop calls of at most 100 SKUs, so a page of products with prices and stock costs one
catalog read, one quotes call and one stock call, not one per product or variant.

Errors: a ``DomainError`` raised below becomes a GraphQL error whose ``extensions.code``
is the ``ErrorCode`` value (``invalid_argument``, ``search_unavailable``, ...). Anything
unexpected is logged with its traceback and answered as ``internal error`` with code
``INTERNAL_ERROR``; no exception text reaches a client.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from datetime import datetime
from enum import Enum
from functools import partial
from typing import Annotated, Any

import strawberry
from graphql import GraphQLError, GraphQLSyntaxError
from strawberry.extensions import SchemaExtension
from strawberry.types import ExecutionContext, Info

from actors.domain.errors import DomainError, ErrorCode
from api.graphql.limits import MAX_PAGE, QueryLimiter, QueryLimits
from api.graphql.loaders import RequestContext
from storage.records import ProductDoc, SearchQuery, SearchResult, SortOrder

log = logging.getLogger("feira.graphql")

INTERNAL_ERROR = "INTERNAL_ERROR"
PARSE_FAILED = "GRAPHQL_PARSE_FAILED"
VALIDATION_FAILED = "GRAPHQL_VALIDATION_FAILED"
INTERNAL_MESSAGE = "internal error"

MAX_CURSOR = 1_000
MAX_QUERY_TEXT = 200
MAX_FILTER_VALUES = 50
# Same category path rule as GET /v1/products.
CATEGORY = re.compile(r"[a-z0-9_-]+(/[a-z0-9_-]+)*")

Ctx = Info[RequestContext, None]


# --- types ----------------------------------------------------------------------------


@strawberry.type(description="An amount in minor units (cents) of an ISO 4217 currency.")
class Money:
    amount: int
    currency: str


@strawberry.type(description="A variant's current price; prices may lag by about a second.")
class Price:
    base: Money = strawberry.field(description="List price, before promotions.")
    unit: Money = strawberry.field(description="What one unit costs now.")
    promotion_id: str | None = strawberry.field(
        description="The promotion that sets `unit`, when one applies."
    )


@strawberry.type
class Stock:
    available: int = strawberry.field(description="Units that can be bought now.")
    in_stock: bool


@strawberry.type(description="A product attribute such as material.")
class Attribute:
    name: str
    value: str


@strawberry.type(description="What sets a variant apart, such as color or size.")
class Option:
    name: str
    value: str


async def _variant_price(root: Variant, info: Ctx) -> Price | None:
    quote = await info.context.loaders.quotes.load(root.sku)
    return None if quote is None else price_of(quote)


async def _variant_stock(root: Variant, info: Ctx) -> Stock | None:
    level = await info.context.loaders.stock.load(root.sku)
    if level is None:
        return None
    available = int(level.get("available", 0))
    return Stock(available=available, in_stock=available > 0)


@strawberry.type
class Variant:
    sku: str
    options: list[Option]
    images: list[str]
    price: Price | None = strawberry.field(
        resolver=_variant_price, description="Null when the SKU has no price."
    )
    stock: Stock | None = strawberry.field(
        resolver=_variant_stock, description="Null when the inventory does not know the SKU."
    )


@strawberry.type(description="A published product.")
class Product:
    id: strawberry.ID
    title: str
    description: str | None
    brand: str
    category: str = strawberry.field(description="Category path, such as home/kitchen.")
    attributes: list[Attribute]
    created_at: datetime
    updated_at: datetime
    variants: list[Variant]


@strawberry.type
class PageInfo:
    has_next_page: bool
    end_cursor: str | None = strawberry.field(
        description="Pass as `after` for the next page; null on the last page."
    )


@strawberry.type
class ProductConnection:
    nodes: list[Product]
    page_info: PageInfo


@strawberry.type
class FacetValue:
    value: str
    count: int


@strawberry.type(
    description="Counts of matching products per value, over the query with every filter "
    "applied. Names: brand, category (full paths), attr.<attribute name>."
)
class Facet:
    name: str
    values: list[FacetValue]


@strawberry.type
class SearchConnection:
    total: int = strawberry.field(description="Matching products (may be capped by the index).")
    nodes: list[Product]
    facets: list[Facet]
    page_info: PageInfo


@strawberry.enum
class SearchSort(Enum):
    RELEVANCE = SortOrder.RELEVANCE.value
    PRICE_ASC = SortOrder.PRICE_ASC.value
    PRICE_DESC = SortOrder.PRICE_DESC.value
    NEWEST = SortOrder.NEWEST.value


@strawberry.input(description="Products whose attribute `name` has one of `values`.")
class AttributeFilter:
    name: str
    values: list[str]


# --- building types from runtime records ----------------------------------------------


def _pairs(raw: Any) -> list[tuple[str, str]]:
    if not isinstance(raw, dict):
        return []
    return [(str(name), str(value)) for name, value in raw.items()]


def _timestamp(raw: Any) -> datetime:
    # Catalog timestamps are ISO 8601 UTC strings ending in "Z".
    return datetime.fromisoformat(str(raw))


def product_of(doc: ProductDoc) -> Product:
    return Product(
        id=strawberry.ID(doc["id"]),
        title=doc["title"],
        description=doc.get("description") or None,
        brand=doc.get("brand", ""),
        category=doc.get("category", ""),
        attributes=[Attribute(name=n, value=v) for n, v in _pairs(doc.get("attributes"))],
        created_at=_timestamp(doc["created_at"]),
        updated_at=_timestamp(doc["updated_at"]),
        variants=[
            Variant(
                sku=v["sku"],
                options=[Option(name=n, value=o) for n, o in _pairs(v.get("options"))],
                images=list(v.get("images", [])),
            )
            for v in doc.get("variants", [])
        ],
    )


def price_of(quote: dict[str, Any]) -> Price:
    currency = quote["currency"]
    return Price(
        base=Money(amount=quote["base"], currency=currency),
        unit=Money(amount=quote["unit"], currency=currency),
        promotion_id=quote.get("promotion_id"),
    )


def _search_connection(result: SearchResult, docs: Sequence[ProductDoc | None]) -> SearchConnection:
    return SearchConnection(
        total=result.total,
        # A hit the catalog no longer publishes (the index lags a little) is left out.
        nodes=[product_of(doc) for doc in docs if doc is not None],
        facets=[
            Facet(name=name, values=[FacetValue(value=v.value, count=v.count) for v in values])
            for name, values in result.facets.items()
        ],
        page_info=PageInfo(
            has_next_page=result.next_cursor is not None, end_cursor=result.next_cursor
        ),
    )


# --- argument checks (the limiter checks `first` too, before execution) ---------------


def _invalid(message: str) -> DomainError:
    return DomainError(ErrorCode.INVALID_ARGUMENT, message)


def _page_size(first: int) -> int:
    if not 1 <= first <= MAX_PAGE:
        raise _invalid(f"first must be between 1 and {MAX_PAGE}, got {first}")
    return first


def _cursor(after: str | None) -> str | None:
    if after is not None and not 1 <= len(after) <= MAX_CURSOR:
        raise _invalid(f"after must be a cursor from pageInfo.endCursor, 1 to {MAX_CURSOR} long")
    return after


def _category(category: str | None) -> str | None:
    if category is not None and (len(category) > 200 or not CATEGORY.fullmatch(category)):
        raise _invalid("category must be a path of lower-case segments, like 'home/kitchen'")
    return category


def _price_bound(name: str, value: int | None) -> int | None:
    if value is not None and value < 0:
        raise _invalid(f"{name} must be >= 0, got {value}")
    return value


def _values(name: str, values: list[str]) -> tuple[str, ...]:
    if not values or len(values) > MAX_FILTER_VALUES:
        raise _invalid(f"{name} takes 1 to {MAX_FILTER_VALUES} values")
    for value in values:
        if not value or len(value) > MAX_QUERY_TEXT:
            raise _invalid(f"{name} values must be 1 to {MAX_QUERY_TEXT} characters")
    return tuple(dict.fromkeys(values))


def search_query(
    text: str | None,
    category: str | None,
    brands: list[str] | None,
    attributes: list[AttributeFilter] | None,
    min_price: int | None,
    max_price: int | None,
    sort: SearchSort,
    first: int,
    after: str | None,
    facets: bool,
) -> SearchQuery:
    text = (text or "").strip()
    if len(text) > MAX_QUERY_TEXT:
        raise _invalid(f"query must be at most {MAX_QUERY_TEXT} characters")
    low, high = _price_bound("minPrice", min_price), _price_bound("maxPrice", max_price)
    if low is not None and high is not None and low > high:
        raise _invalid(f"minPrice {low} is above maxPrice {high}")
    filters = attributes or []
    if len(filters) > MAX_FILTER_VALUES:
        raise _invalid(f"attributes takes at most {MAX_FILTER_VALUES} filters")
    return SearchQuery(
        text=text,
        category=_category(category),
        brands=_values("brands", brands) if brands is not None else (),
        attributes=tuple((f.name, _values(f"attribute {f.name!r}", f.values)) for f in filters),
        min_price=low,
        max_price=high,
        sort=SortOrder(sort.value),
        cursor=_cursor(after),
        limit=_page_size(first),
        facets=facets,
    )


# --- root -----------------------------------------------------------------------------


async def _product(
    info: Ctx, product_id: Annotated[strawberry.ID, strawberry.argument(name="id")]
) -> Product | None:
    doc = await info.context.loaders.products.load(str(product_id))
    return None if doc is None else product_of(doc)


async def _products(
    info: Ctx,
    category: str | None = None,
    first: int = 20,
    after: str | None = None,
) -> ProductConnection | None:
    docs, next_cursor = await info.context.shop.list_products(
        _category(category), _cursor(after), _page_size(first)
    )
    info.context.loaders.prime_products(docs)
    return ProductConnection(
        nodes=[product_of(doc) for doc in docs],
        page_info=PageInfo(has_next_page=next_cursor is not None, end_cursor=next_cursor),
    )


async def _search(
    info: Ctx,
    query: str | None = None,
    category: str | None = None,
    brands: list[str] | None = None,
    attributes: list[AttributeFilter] | None = None,
    min_price: int | None = None,
    max_price: int | None = None,
    sort: SearchSort = SearchSort.RELEVANCE,
    first: int = 20,
    after: str | None = None,
    facets: bool = True,
) -> SearchConnection | None:
    wanted = search_query(
        query, category, brands, attributes, min_price, max_price, sort, first, after, facets
    )
    result = await info.context.shop.search(wanted)
    # One batched product read for the whole page; the variants' prices and stock then
    # resolve in one pass and batch together.
    docs = await info.context.loaders.products.load_many([hit.id for hit in result.hits])
    return _search_connection(result, docs)


@strawberry.type
class Query:
    product: Product | None = strawberry.field(
        resolver=_product,
        description="A published product; null when there is none with this id.",
    )
    products: ProductConnection | None = strawberry.field(
        resolver=_products,
        description="Published products in id order, optionally in one category (and below).",
    )
    search: SearchConnection | None = strawberry.field(
        resolver=_search,
        description="Full-text search with filters and facets; an empty query browses.",
    )


# --- errors ---------------------------------------------------------------------------


def _with_code(error: GraphQLError, code: str, message: str | None = None) -> GraphQLError:
    return GraphQLError(
        message if message is not None else error.message,
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        original_error=None,
        extensions={**(error.extensions or {}), "code": code},
    )


def _domain_extensions(error: DomainError) -> dict[str, Any]:
    details = {k: v for k, v in error.details.items() if isinstance(v, str | int | float | bool)}
    return {**details, "code": error.code.value}


def format_error(error: GraphQLError, logged: set[int] | None = None) -> GraphQLError:
    """The error a client sees: every one carries ``extensions.code``.

    ``logged`` holds the ids of exceptions already logged for this request: a failed
    batch fails every field that waited on it with the same exception, logged once."""
    original = error.original_error
    if isinstance(original, DomainError):
        return GraphQLError(
            original.message,
            nodes=error.nodes,
            source=error.source,
            positions=error.positions,
            path=error.path,
            extensions=_domain_extensions(original),
        )
    if original is not None and not isinstance(original, GraphQLError):
        if logged is None or id(original) not in logged:
            log.error(
                "unexpected error in GraphQL field %s",
                ".".join(str(p) for p in error.path or ()),
                exc_info=original,
            )
        if logged is not None:
            logged.add(id(original))
        return _with_code(error, INTERNAL_ERROR, INTERNAL_MESSAGE)
    if (error.extensions or {}).get("code"):
        return error
    if isinstance(error, GraphQLSyntaxError):
        return _with_code(error, PARSE_FAILED)
    if error.path is None:
        # Validation, variable coercion, operation selection: the request's fault.
        return _with_code(error, VALIDATION_FAILED)
    # A field error graphql-core made itself (such as null for a non-null field) is a bug.
    log.error("GraphQL field error at %s: %s", error.path, error.message)
    return _with_code(error, INTERNAL_ERROR, INTERNAL_MESSAGE)


class ErrorFormatter(SchemaExtension):
    """Applies ``format_error`` to the result of every operation."""

    def on_operation(self) -> Iterator[None]:
        yield
        result = self.execution_context.result
        if result is not None and result.errors:
            logged: set[int] = set()
            result.errors = [format_error(error, logged) for error in result.errors]


class FeiraSchema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        # Strawberry logs every error here, including a shopper's typo. ErrorFormatter
        # logs the unexpected ones instead.
        return


DEFAULT_LIMITS = QueryLimits()


def build_schema(limits: QueryLimits = DEFAULT_LIMITS) -> strawberry.Schema:
    # Extensions are made per request (a factory, not an instance), so they hold no state
    # across requests.
    return FeiraSchema(query=Query, extensions=[partial(QueryLimiter, limits), ErrorFormatter])
