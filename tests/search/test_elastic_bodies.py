"""The exact Elasticsearch bodies, and parsing of recorded Elasticsearch 8 responses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from storage.errors import StoreIntegrityError, StoreUnavailable
from storage.records import FacetValue, SearchHit, SearchQuery, SortOrder
from storage.search.elastic_bodies import (
    bulk_delete_body,
    bulk_upsert_body,
    check_bulk,
    check_search_after,
    index_body,
    parse_search,
    query_words,
    search_body,
    sort_clause,
)
from tests.search.corpus import hand

RECORDED = Path(__file__).parent / "recorded"


def recorded(name: str) -> Any:
    return json.loads((RECORDED / name).read_text())


FIELDS = ["title^3", "brand.text^2", "category.text^1.5", "attribute_values^1.5", "description"]


def word(text: str) -> dict[str, Any]:
    return {
        "bool": {
            "should": [
                {
                    "multi_match": {
                        "query": text,
                        "fields": FIELDS,
                        "boost": 2.0,
                        "zero_terms_query": "all",
                    }
                },
                {
                    "multi_match": {
                        "query": text,
                        "fields": FIELDS,
                        "fuzziness": "AUTO:4,8",
                        "boost": 0.5,
                        "zero_terms_query": "all",
                    }
                },
            ]
        }
    }


FACET_AGGS = {
    "brand": {
        "terms": {
            "field": "brand",
            "size": 100,
            "order": [{"_count": "desc"}, {"_key": "asc"}],
        }
    },
    "category": {
        "terms": {
            "field": "category",
            "size": 100,
            "order": [{"_count": "desc"}, {"_key": "asc"}],
        }
    },
    "attributes": {
        "terms": {
            "field": "attributes",
            "size": 10_000,
            "order": [{"_count": "desc"}, {"_key": "asc"}],
        }
    },
}


# --------------------------------------------------------------------------- index


def test_index_settings_and_mapping() -> None:
    assert index_body(shards=1, replicas=0) == {
        "settings": {
            "number_of_shards": 1,
            "number_of_replicas": 0,
            "analysis": {
                "filter": {
                    "english_possessive": {"type": "stemmer", "language": "possessive_english"},
                    "english_stop": {"type": "stop", "stopwords": "_english_"},
                    "english_stemmer": {"type": "stemmer", "language": "english"},
                },
                "tokenizer": {"category_path": {"type": "path_hierarchy", "delimiter": "/"}},
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


# --------------------------------------------------------------------------- search


def test_search_body_for_a_rich_query() -> None:
    query = SearchQuery(
        text="Red  Kettel, red!",
        category="/home/kitchen/",
        brands=("Zephyr", "Acme", "Acme"),
        attributes=(("material", ("steel", "glass")), ("color", ("red",)), ("material", ("oak",))),
        min_price=1_000,
        max_price=5_000,
        limit=20,
    )
    assert search_body(query) == {
        "size": 21,
        "track_total_hits": True,
        "_source": ["id", "title", "brand", "category", "price"],
        "query": {
            "bool": {
                "must": [word("red"), word("kettel")],
                "filter": [
                    {"term": {"category.path": "home/kitchen"}},
                    {"terms": {"brand": ["Acme", "Zephyr"]}},
                    {"terms": {"attributes": ["color=red"]}},
                    {"terms": {"attributes": ["material=glass", "material=oak", "material=steel"]}},
                    {"range": {"price": {"gte": 1_000, "lte": 5_000}}},
                ],
            }
        },
        "sort": [{"_score": "desc"}, {"id": "asc"}],
        "aggs": FACET_AGGS,
    }


def test_search_body_for_a_cursor_page() -> None:
    query = SearchQuery(
        category="home", sort=SortOrder.PRICE_ASC, limit=2, facets=False, cursor="opaque"
    )
    assert search_body(query, search_after=[2599, "p-0000977"]) == {
        "size": 3,
        "track_total_hits": True,
        "_source": ["id", "title", "brand", "category", "price"],
        "query": {"bool": {"filter": [{"term": {"category.path": "home"}}]}},
        "sort": [{"price": {"order": "asc", "missing": "_last"}}, {"id": "asc"}],
        "search_after": [2599, "p-0000977"],
    }


def test_browsing_everything_matches_all_in_id_order() -> None:
    assert search_body(SearchQuery(limit=5, max_price=100, facets=False)) == {
        "size": 6,
        "track_total_hits": True,
        "_source": ["id", "title", "brand", "category", "price"],
        "query": {"bool": {"filter": [{"range": {"price": {"lte": 100}}}]}},
        "sort": [{"id": "asc"}],
    }
    assert search_body(SearchQuery(facets=False))["query"] == {"match_all": {}}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (SearchQuery(text="kettle"), [{"_score": "desc"}, {"id": "asc"}]),
        (SearchQuery(text="  "), [{"id": "asc"}]),
        (SearchQuery(), [{"id": "asc"}]),
        (
            SearchQuery(text="kettle", sort=SortOrder.PRICE_ASC),
            [{"price": {"order": "asc", "missing": "_last"}}, {"id": "asc"}],
        ),
        (
            SearchQuery(sort=SortOrder.PRICE_DESC),
            [{"price": {"order": "desc", "missing": "_last"}}, {"id": "asc"}],
        ),
        (SearchQuery(sort=SortOrder.NEWEST), [{"created_at": {"order": "desc"}}, {"id": "asc"}]),
    ],
)
def test_every_sort_ends_with_the_id(query: SearchQuery, expected: list[Any]) -> None:
    assert sort_clause(query) == expected


def test_query_words_are_split_like_tantivy() -> None:
    assert query_words("Bluetooth + WIRED head-phones bluetooth") == [
        "bluetooth",
        "wired",
        "head",
        "phones",
    ]
    assert query_words(" ".join(f"w{n}" for n in range(20))) == [f"w{n}" for n in range(12)]


@pytest.mark.parametrize(
    "position",
    [None, [], [1], [1, "a", 3], {"a": 1}, [True, "p-1"], [[1], "p-1"], "p-1"],
)
def test_a_search_after_that_does_not_fit_the_sort_is_refused(position: Any) -> None:
    with pytest.raises(ValueError, match="cursor"):
        check_search_after(SearchQuery(sort=SortOrder.PRICE_ASC), position)


def test_a_search_after_that_fits_is_kept() -> None:
    assert check_search_after(SearchQuery(sort=SortOrder.NEWEST), [1, "p"]) == [1, "p"]
    assert check_search_after(SearchQuery(), ["p"]) == ["p"]


# --------------------------------------------------------------------------- bulk


def test_bulk_upsert_lines() -> None:
    docs = [
        hand(
            "p-1",
            "Oak Settle",
            attributes=(("color", "red"), ("material", "oak"), ("size", "red")),
            description="A bench.",
        ),
        hand("p-2", "Mystery Box", price=None, category="toys/outdoor"),
    ]
    lines = bulk_upsert_body("feira-products", docs).decode().split("\n")
    assert lines == [
        '{"index":{"_index":"feira-products","_id":"p-1"}}',
        '{"id":"p-1","title":"Oak Settle","description":"A bench.","brand":"Handmade",'
        '"category":"home/furniture/benches",'
        '"attributes":["color=red","material=oak","size=red"],'
        '"attribute_values":["oak","red"],"price":5000,'
        '"created_at":"2022-06-01T12:00:00Z","merchant_id":"m-900","skus":["SKU-p-1"]}',
        '{"index":{"_index":"feira-products","_id":"p-2"}}',
        '{"id":"p-2","title":"Mystery Box","description":"","brand":"Handmade",'
        '"category":"toys/outdoor","attributes":[],"attribute_values":[],"price":null,'
        '"created_at":"2022-06-01T12:00:00Z","merchant_id":"m-900","skus":["SKU-p-2"]}',
        "",
    ]


def test_bulk_delete_lines() -> None:
    assert bulk_delete_body("idx", ["p-1", 'p-"2"']) == (
        b'{"delete":{"_index":"idx","_id":"p-1"}}\n{"delete":{"_index":"idx","_id":"p-\\"2\\""}}\n'
    )
    for line in bulk_delete_body("idx", ["a", "b"]).splitlines():
        assert set(orjson.loads(line)) == {"delete"}


def test_a_bulk_item_error_names_the_refused_document() -> None:
    with pytest.raises(StoreIntegrityError, match="p-0000002: document_parsing_exception"):
        check_bulk(recorded("bulk_one_error.json"))


def test_a_bulk_rejected_for_load_is_retryable() -> None:
    with pytest.raises(StoreUnavailable, match="es_rejected_execution_exception"):
        check_bulk(recorded("bulk_rejected.json"))


def test_deleting_a_missing_document_is_not_an_error() -> None:
    assert check_bulk(recorded("bulk_deletes.json")) == 1


# --------------------------------------------------------------------------- responses


def test_parse_a_relevance_page_with_facets() -> None:
    result, following = parse_search(recorded("search_relevance_facets.json"), limit=2)
    assert result.hits == [
        SearchHit(
            "p-0000035",
            9.171427,
            "Smart Pellucid Electric Kettle",
            "Pellucid",
            "home/kitchen/kettles",
            12599,
        ),
        SearchHit(
            "p-0000064",
            9.171427,
            "Handcrafted Marlow Electric Kettle",
            "Marlow",
            "home/kitchen/kettles",
            7499,
        ),
    ]
    assert result.total == 3
    assert following == [9.171427, "p-0000064"]
    assert result.next_cursor is None  # the adapter makes the cursor
    assert result.facets == {
        "brand": [FacetValue("Handmade", 1), FacetValue("Marlow", 1), FacetValue("Pellucid", 1)],
        "category": [FacetValue("home/kitchen/kettles", 2), FacetValue("toys/outdoor", 1)],
        "attr.color": [FacetValue("black", 1), FacetValue("red", 1)],
        "attr.material": [FacetValue("glass", 2)],
        "attr.size": [FacetValue("1.7 l", 2)],
        "attr.wattage": [FacetValue("2200 W", 1)],
    }


def test_parse_the_whole_result_when_it_fits_the_page() -> None:
    result, following = parse_search(recorded("search_relevance_facets.json"), limit=3)
    assert following is None
    assert [h.id for h in result.hits] == ["p-0000035", "p-0000064", "h-noprice"]
    assert result.hits[-1].price is None


def test_parse_a_field_sorted_page() -> None:
    result, following = parse_search(recorded("search_price_asc_page.json"), limit=2)
    assert [(h.id, h.price, h.score) for h in result.hits] == [
        ("p-0000753", 2199, 0.0),
        ("p-0000977", 2599, 0.0),
    ]
    assert (result.total, result.facets, following) == (2212, {}, [2599, "p-0000977"])


def test_parse_the_last_page() -> None:
    result, following = parse_search(recorded("search_last_page.json"), limit=2)
    assert [h.id for h in result.hits] == ["h-noprice"]
    assert following is None


def test_facet_lists_are_cut_to_the_requested_length() -> None:
    result, _ = parse_search(recorded("search_relevance_facets.json"), limit=3, facet_values=1)
    assert result.facets["brand"] == [FacetValue("Handmade", 1)]
    assert result.facets["attr.color"] == [FacetValue("black", 1)]
