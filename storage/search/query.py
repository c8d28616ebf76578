"""Checks and canonical forms of a ``SearchQuery`` that both backends share."""

from __future__ import annotations

from storage.records import SearchQuery

MAX_LIMIT = 100
MAX_TEXT_CHARS = 500
MAX_FILTER_VALUES = 100
# Words of a query beyond this are ignored: each costs a (fuzzy) clause per text field.
MAX_QUERY_TERMS = 12
# Attribute facets count "name=value" pairs with one terms aggregation of this size,
# then group them by name: well above the distinct pairs any one query here matches.
ATTRIBUTE_FACET_TERMS = 10_000


def validate(query: SearchQuery) -> None:
    """Raise ValueError (the API answers 400) for a query no backend should run."""
    if not 1 <= query.limit <= MAX_LIMIT:
        raise ValueError(f"limit must be between 1 and {MAX_LIMIT}, got {query.limit}")
    if len(query.text) > MAX_TEXT_CHARS:
        raise ValueError(f"text must be at most {MAX_TEXT_CHARS} characters")
    for name, bound in (("min_price", query.min_price), ("max_price", query.max_price)):
        if bound is not None and bound < 0:
            raise ValueError(f"{name} must be >= 0, got {bound}")
    if (
        query.min_price is not None
        and query.max_price is not None
        and query.min_price > query.max_price
    ):
        raise ValueError(f"min_price {query.min_price} is above max_price {query.max_price}")
    if query.category is not None and not query.category.strip("/"):
        raise ValueError("category must name at least one path segment")
    if len(query.brands) > MAX_FILTER_VALUES:
        raise ValueError(f"at most {MAX_FILTER_VALUES} brands")
    if sum(len(values) for _, values in query.attributes) > MAX_FILTER_VALUES:
        raise ValueError(f"at most {MAX_FILTER_VALUES} attribute values")
    for name, values in query.attributes:
        if not name or not values:
            raise ValueError(f"attribute filter {name!r} needs a name and at least one value")


def category_path(category: str) -> str:
    """``"/home/kitchen/"`` -> ``"home/kitchen"``: the form a category filter matches."""
    return "/".join(part for part in category.split("/") if part)


def category_prefixes(category: str) -> list[str]:
    """``"a/b/c"`` -> ``["a", "a/b", "a/b/c"]``: a filter on any of them matches."""
    parts = [part for part in category.split("/") if part]
    return ["/".join(parts[: n + 1]) for n in range(len(parts))]


def attribute_filters(query: SearchQuery) -> list[tuple[str, list[str]]]:
    """Attribute filters merged by name (values OR-ed), names and values sorted."""
    merged: dict[str, set[str]] = {}
    for name, values in query.attributes:
        merged.setdefault(name, set()).update(values)
    return [(name, sorted(values)) for name, values in sorted(merged.items())]


def normalised_text(text: str) -> str:
    """Whitespace-collapsed, case-folded: both analysers ignore case and spacing."""
    return " ".join(text.split()).casefold()
