"""Product search: full text with typo tolerance, filters, facets, sort, cursor pages."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import Response

from actors.domain.errors import DomainError, ErrorCode
from actors.domain.validation import INT64_MAX
from api.deps import ShopDep
from api.models import SearchOut
from api.responses import json
from storage.records import SearchQuery, SearchResult, SortOrder

router = APIRouter(prefix="/v1", tags=["search"])

CATEGORY_PATTERN = r"^[a-z0-9_-]+(/[a-z0-9_-]+)*$"
MAX_FILTER_VALUES = 20


def attribute_filters(values: list[str]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """``["color:red", "color:blue", "size:M"]`` ->
    ``(("color", ("blue", "red")), ("size", ("M",)))``."""
    grouped: dict[str, set[str]] = {}
    for value in values:
        name, _, wanted = value.partition(":")
        grouped.setdefault(name, set()).add(wanted)
    return tuple((name, tuple(sorted(v))) for name, v in sorted(grouped.items()))


def search_query(
    q: str,
    category: str | None,
    brand: list[str],
    attr: list[str],
    min_price: int | None,
    max_price: int | None,
    sort: SortOrder,
    cursor: str | None,
    limit: int,
    facets: bool,
) -> SearchQuery:
    if min_price is not None and max_price is not None and min_price > max_price:
        raise DomainError(
            ErrorCode.INVALID_ARGUMENT,
            f"min_price {min_price} is above max_price {max_price}",
        )
    return SearchQuery(
        text=q.strip(),
        category=category,
        brands=tuple(sorted(set(brand))),
        attributes=attribute_filters(attr),
        min_price=min_price,
        max_price=max_price,
        sort=sort,
        cursor=cursor,
        limit=limit,
        facets=facets,
    )


def result_json(result: SearchResult, currency: str) -> dict[str, Any]:
    return {
        "items": [
            {
                "id": hit.id,
                "title": hit.title,
                "brand": hit.brand,
                "category": hit.category,
                "price": None if hit.price is None else {"amount": hit.price, "currency": currency},
                "score": hit.score,
            }
            for hit in result.hits
        ],
        "total": result.total,
        "facets": {
            name: [{"value": f.value, "count": f.count} for f in values]
            for name, values in result.facets.items()
        },
        "next_cursor": result.next_cursor,
    }


@router.get("/search", response_model=SearchOut)
async def search(
    shop: ShopDep,
    q: Annotated[str, Query(max_length=200, description="words; typos are tolerated")] = "",
    category: Annotated[
        str | None, Query(min_length=1, max_length=200, pattern=CATEGORY_PATTERN)
    ] = None,
    brand: Annotated[
        list[str], Query(max_length=MAX_FILTER_VALUES, description="any of these brands")
    ] = [],  # noqa: B006 - FastAPI copies query defaults per request
    attr: Annotated[
        list[str],
        Query(
            max_length=MAX_FILTER_VALUES,
            description="name:value, e.g. color:red; values of one name are OR-ed",
        ),
    ] = [],  # noqa: B006
    min_price: Annotated[int | None, Query(ge=0, le=INT64_MAX, description="minor units")] = None,
    max_price: Annotated[int | None, Query(ge=0, le=INT64_MAX, description="minor units")] = None,
    sort: SortOrder = SortOrder.RELEVANCE,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    facets: bool = True,
) -> Response:
    for value in attr:
        name, sep, wanted = value.partition(":")
        if not sep or not name or not wanted:
            raise DomainError(
                ErrorCode.INVALID_ARGUMENT, f"attr {value!r} must look like name:value"
            )
    for value in brand:
        if not value.strip() or len(value) > 100:
            raise DomainError(ErrorCode.INVALID_ARGUMENT, "brand must be 1 to 100 characters")
    query = search_query(
        q, category, brand, attr, min_price, max_price, sort, cursor, limit, facets
    )
    return json(result_json(await shop.search(query), shop.currency))
