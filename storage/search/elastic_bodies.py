"""Elasticsearch request bodies and response parsers: pure functions, no I/O.

The adapter (``storage.search.elastic``) sends exactly what these build, so tests can
assert the bodies as literals and parse recorded responses without a server.

Modelling choices:

- Attributes are "name=value" keyword strings (``attributes``), not a ``nested`` field.
  One ``terms`` filter per attribute name gives OR within a name and AND across names,
  and one ``terms`` aggregation counts every pair in a single pass; the pairs are split
  and grouped by name when parsed. Nested documents would multiply the Lucene document
  count by the number of attributes (6-8 here) and need a nested aggregation per
  request for the same answer. The cost: attribute counts are the top
  ``ATTRIBUTE_FACET_TERMS`` pairs across all names, enough for any real query here.
  Attribute values are also indexed as English text (``attribute_values``) for matching.
- Category filters use a ``path_hierarchy`` sub-field: "home/kitchen/kettles" is indexed
  as "home", "home/kitchen", "home/kitchen/kettles", so a ``term`` on "home/kitchen"
  matches by whole segment and never matches "home/kitchenware".
- Text: every query word must match (like the Tantivy backend). Per word, one
  ``multi_match`` with ``fuzziness: AUTO:4,8`` (1 edit from 4 characters, 2 from 8) and
  one exact ``multi_match`` with a higher boost: an exact match scores in both, a typo
  only in the first, so exact beats fuzzy.
- Every sort ends with ``id`` ascending, so it is a total order and ``search_after`` (the
  cursor) neither skips nor repeats.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from storage.errors import StoreIntegrityError, StoreUnavailable
from storage.records import (
    FacetValue,
    SearchDoc,
    SearchHit,
    SearchQuery,
    SearchResult,
    SortOrder,
)
from storage.search.documents import attribute_term, split_attribute_term
from storage.search.query import (
    ATTRIBUTE_FACET_TERMS,
    MAX_QUERY_TERMS,
    attribute_filters,
    category_path,
)

TEXT_FIELDS = (
    "title^3",
    "brand.text^2",
    "category.text^1.5",
    "attribute_values^1.5",
    "description",
)
FUZZINESS = "AUTO:4,8"
EXACT_BOOST = 2.0
FUZZY_BOOST = 0.5
HIT_SOURCE = ["id", "title", "brand", "category", "price"]
# Split like Tantivy's "simple" tokenizer (runs of letters and digits), so both backends
# see the same words; Elasticsearch analyses each one further (stems, stop words).
_WORD = re.compile(r"[^\W_]+")


def index_body(*, shards: int = 1, replicas: int = 1) -> dict[str, Any]:
    """Settings and mapping for ``PUT /<index>``.

    One shard by default: a catalog of a few million products fits one, and facet counts
    are then exact (terms aggregations over several shards are approximate).
    """
    return {
        "settings": {
            "number_of_shards": shards,
            "number_of_replicas": replicas,
            "analysis": {
                "filter": {
                    "english_possessive": {"type": "stemmer", "language": "possessive_english"},
                    "english_stop": {"type": "stop", "stopwords": "_english_"},
                    "english_stemmer": {"type": "stemmer", "language": "english"},
                },
                "tokenizer": {
                    "category_path": {"type": "path_hierarchy", "delimiter": "/"},
                },
                "analyzer": {
                    "product_text": {
                        "type": "custom",
                        "tokenizer": "standard",
                        "filter": [
                            "english_possessive",
                            "lowercase",
                            "asciifolding",
                            "english_stop",
                            "english_stemmer",
                        ],
                    },
                    "category_path": {"type": "custom", "tokenizer": "category_path"},
                },
            },
        },
        "mappings": {
            "dynamic": "strict",
            "properties": {
                "id": {"type": "keyword"},
                "title": {"type": "text", "analyzer": "product_text"},
                "description": {"type": "text", "analyzer": "product_text"},
                "brand": {
                    "type": "keyword",
                    "fields": {"text": {"type": "text", "analyzer": "product_text"}},
                },
                "category": {
                    "type": "keyword",
                    "fields": {
                        # Indexed as every prefix; searched as one exact term.
                        "path": {
                            "type": "text",
                            "analyzer": "category_path",
                            "search_analyzer": "keyword",
                        },
                        "text": {"type": "text", "analyzer": "product_text"},
                    },
                },
                "attributes": {"type": "keyword"},
                "attribute_values": {"type": "text", "analyzer": "product_text"},
                "price": {"type": "long"},
                "created_at": {"type": "date"},
                "merchant_id": {"type": "keyword"},
                "skus": {"type": "keyword"},
            },
        },
    }


def source_of(doc: SearchDoc) -> dict[str, Any]:
    """The ``_source`` indexed for ``doc``."""
    return {
        "id": doc.id,
        "title": doc.title,
        "description": doc.description,
        # Missing rather than "": an empty keyword would show up as a facet value.
        "brand": doc.brand or None,
        "category": doc.category or None,
        "attributes": [attribute_term(name, value) for name, value in doc.attributes],
        "attribute_values": sorted({value for _, value in doc.attributes}),
        "price": doc.price,
        "created_at": doc.created_at,
        "merchant_id": doc.merchant_id,
        "skus": list(doc.skus),
    }


def bulk_upsert_body(index: str, docs: list[SearchDoc]) -> bytes:
    """NDJSON for ``POST /_bulk``: one ``index`` action (create or replace) per doc."""
    lines = []
    for doc in docs:
        lines.append(orjson.dumps({"index": {"_index": index, "_id": doc.id}}))
        lines.append(orjson.dumps(source_of(doc)))
    return b"\n".join(lines) + b"\n"


def bulk_delete_body(index: str, product_ids: list[str]) -> bytes:
    lines = [orjson.dumps({"delete": {"_index": index, "_id": pid}}) for pid in product_ids]
    return b"\n".join(lines) + b"\n"


def query_words(text: str) -> list[str]:
    """Distinct words of ``text`` (case-insensitive), at most ``MAX_QUERY_TERMS``."""
    seen: dict[str, str] = {}
    for word in _WORD.findall(text):
        seen.setdefault(word.casefold(), word.casefold())
    return list(seen.values())[:MAX_QUERY_TERMS]


def _word_clause(word: str) -> dict[str, Any]:
    return {
        "bool": {
            "should": [
                {
                    "multi_match": {
                        "query": word,
                        "fields": list(TEXT_FIELDS),
                        "boost": EXACT_BOOST,
                        "zero_terms_query": "all",
                    }
                },
                {
                    "multi_match": {
                        "query": word,
                        "fields": list(TEXT_FIELDS),
                        "fuzziness": FUZZINESS,
                        "boost": FUZZY_BOOST,
                        "zero_terms_query": "all",
                    }
                },
            ]
        }
    }


def filters(query: SearchQuery) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if query.category is not None:
        out.append({"term": {"category.path": category_path(query.category)}})
    if query.brands:
        out.append({"terms": {"brand": sorted(set(query.brands))}})
    for name, values in attribute_filters(query):
        out.append({"terms": {"attributes": [attribute_term(name, v) for v in values]}})
    if query.min_price is not None or query.max_price is not None:
        bounds: dict[str, int] = {}
        if query.min_price is not None:
            bounds["gte"] = query.min_price
        if query.max_price is not None:
            bounds["lte"] = query.max_price
        out.append({"range": {"price": bounds}})
    return out


def sort_clause(query: SearchQuery) -> list[Any]:
    """The total order of a query's hits; always ends with the id."""
    tiebreak = {"id": "asc"}
    if query.sort is SortOrder.PRICE_ASC:
        return [{"price": {"order": "asc", "missing": "_last"}}, tiebreak]
    if query.sort is SortOrder.PRICE_DESC:
        return [{"price": {"order": "desc", "missing": "_last"}}, tiebreak]
    if query.sort is SortOrder.NEWEST:
        return [{"created_at": {"order": "desc"}}, tiebreak]
    if query_words(query.text):
        return [{"_score": "desc"}, tiebreak]
    # Browsing: every score would be equal, so skip scoring and list by id.
    return [tiebreak]


def search_body(
    query: SearchQuery,
    *,
    search_after: list[Any] | None = None,
    facet_values: int = 100,
) -> dict[str, Any]:
    """``POST /<index>/_search`` for ``query``. One hit more than the page is asked for:
    it says whether there is a next page and is never returned."""
    words = query_words(query.text)
    boolean: dict[str, Any] = {}
    if words:
        boolean["must"] = [_word_clause(word) for word in words]
    filter_clauses = filters(query)
    if filter_clauses:
        boolean["filter"] = filter_clauses
    body: dict[str, Any] = {
        "size": query.limit + 1,
        "track_total_hits": True,
        "_source": list(HIT_SOURCE),
        "query": {"bool": boolean} if boolean else {"match_all": {}},
        "sort": sort_clause(query),
    }
    if search_after is not None:
        body["search_after"] = search_after
    if query.facets:
        order = [{"_count": "desc"}, {"_key": "asc"}]
        body["aggs"] = {
            "brand": {"terms": {"field": "brand", "size": facet_values, "order": order}},
            "category": {"terms": {"field": "category", "size": facet_values, "order": order}},
            "attributes": {
                "terms": {"field": "attributes", "size": ATTRIBUTE_FACET_TERMS, "order": order}
            },
        }
    return body


def check_search_after(query: SearchQuery, position: Any) -> list[Any]:
    """A cursor's ``search_after`` values, checked against the sort they must fit."""
    expected = len(sort_clause(query))
    if (
        not isinstance(position, list)
        or len(position) != expected
        or not all(isinstance(v, str | int | float) and not isinstance(v, bool) for v in position)
    ):
        raise ValueError("invalid cursor")
    return position


def _facet_list(buckets: list[dict[str, Any]], limit: int) -> list[FacetValue]:
    values = [FacetValue(str(b["key"]), int(b["doc_count"])) for b in buckets]
    values.sort(key=lambda v: (-v.count, v.value))
    return values[:limit]


def parse_facets(
    aggregations: dict[str, Any], facet_values: int = 100
) -> dict[str, list[FacetValue]]:
    facets = {
        "brand": _facet_list(aggregations["brand"]["buckets"], facet_values),
        "category": _facet_list(aggregations["category"]["buckets"], facet_values),
    }
    by_name: dict[str, list[dict[str, Any]]] = {}
    for bucket in aggregations["attributes"]["buckets"]:
        name, value = split_attribute_term(str(bucket["key"]))
        by_name.setdefault(name, []).append({"key": value, "doc_count": bucket["doc_count"]})
    for name in sorted(by_name):
        facets[f"attr.{name}"] = _facet_list(by_name[name], facet_values)
    return facets


def parse_search(
    response: dict[str, Any], limit: int, facet_values: int = 100
) -> tuple[SearchResult, list[Any] | None]:
    """The result of a ``search_body`` response, and the ``search_after`` values of the
    next page (None on the last page). The caller turns those into a cursor."""
    raw_hits = response["hits"]["hits"]
    page = raw_hits[:limit]
    hits = []
    for hit in page:
        source = hit.get("_source") or {}
        price = source.get("price")
        hits.append(
            SearchHit(
                id=str(source.get("id", hit["_id"])),
                # null when sorting by a field: the score was not computed.
                score=float(hit.get("_score") or 0.0),
                title=str(source.get("title", "")),
                brand=str(source.get("brand", "")),
                category=str(source.get("category", "")),
                price=None if price is None else int(price),
            )
        )
    total = response["hits"]["total"]
    aggregations = response.get("aggregations")
    facets = {} if aggregations is None else parse_facets(aggregations, facet_values)
    following = list(page[-1]["sort"]) if len(raw_hits) > limit and page else None
    result = SearchResult(
        hits=hits,
        total=int(total["value"] if isinstance(total, dict) else total),
        facets=facets,
        next_cursor=None,
    )
    return result, following


# Per-item statuses that mean "try again later", not "this document is wrong".
_RETRYABLE_ITEM_STATUS = frozenset({429, 502, 503, 504})


def check_bulk(response: dict[str, Any]) -> int:
    """How many actions the bulk response reports as applied; raises if any was refused.

    A delete of a missing document (404 "not_found") is not an error. Rejections for
    load (429, 5xx) raise StoreUnavailable, since a retry can succeed; any other refusal
    (mapping conflict, bad value) raises StoreIntegrityError naming the documents.
    """
    applied = 0
    retryable: list[str] = []
    refused: list[str] = []
    for item in response.get("items", []):
        action, outcome = next(iter(item.items()))
        error = outcome.get("error")
        if error is None:
            applied += outcome.get("result") != "not_found"
            continue
        reason = error.get("reason", "") if isinstance(error, dict) else str(error)
        kind = error.get("type", "error") if isinstance(error, dict) else "error"
        described = f"{action} {outcome.get('_id')}: {kind}: {reason}"
        if int(outcome.get("status", 0)) in _RETRYABLE_ITEM_STATUS:
            retryable.append(described)
        else:
            refused.append(described)
    if refused:
        raise StoreIntegrityError(
            f"elasticsearch refused {len(refused)} bulk action(s): " + "; ".join(refused[:5])
        )
    if retryable:
        raise StoreUnavailable(
            f"elasticsearch rejected {len(retryable)} bulk action(s) for load: "
            + "; ".join(retryable[:5])
        )
    return applied
