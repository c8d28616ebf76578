"""One set of behaviours every ``SearchIndex`` backend must show.

Runs on Tantivy always and on Elasticsearch when ``FEIRA_ELASTICSEARCH_URL`` is set.
Expected results come from a brute-force reference over the same ``SearchDoc``s
(``tests.search.corpus``), never from the backend under test.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage.interfaces import SearchIndex
from storage.records import SearchHit, SearchQuery, SortOrder
from storage.search.documents import search_doc
from tests.search.conftest import Loaded, every_id, every_page
from tests.search.corpus import (
    HAND_DOCS,
    browse,
    demo_docs,
    demo_products,
    facets,
    hand,
    passes_filters,
)

SORTS = list(SortOrder)
FIELD_SORTS = [SortOrder.PRICE_ASC, SortOrder.PRICE_DESC, SortOrder.NEWEST]


def words_of(loaded: Loaded, product_id: str) -> str:
    doc = loaded.by_id(product_id)
    values = " ".join(value for _, value in doc.attributes)
    return f"{doc.title} {doc.brand} {doc.category} {values} {doc.description}".lower()


def assert_relevance_order(hits: list[SearchHit]) -> None:
    for before, after in itertools.pairwise(hits):
        assert before.score > after.score or (
            before.score == after.score and before.id < after.id
        ), f"{before} then {after}"


# --------------------------------------------------------------------------- text


@pytest.mark.parametrize(
    ("typo", "category"),
    [
        ("hedphones", "electronics/audio/headphones"),
        ("kettel", "home/kitchen/kettles"),
        ("keybaord", "electronics/computers/keyboards"),
    ],
)
async def test_a_typo_finds_the_product(loaded: Loaded, typo: str, category: str) -> None:
    result = await loaded.index.search(SearchQuery(text=typo, limit=10))
    assert result.hits, typo
    assert all(hit.category == category for hit in result.hits), result.hits
    wanted = [d.id for d in loaded.docs if d.category == category]
    assert result.total >= len(wanted)


async def test_exact_matches_rank_above_typo_matches(loaded: Loaded) -> None:
    ids = await every_id(loaded.index, SearchQuery(text="kettle", limit=50))
    exact = {d.id for d in loaded.docs if re.search(r"\bkettles?\b", words_of(loaded, d.id))}
    assert exact, "the corpus must hold kettles"
    # "settle" is one edit from "kettle" and only matches through the typo clause.
    assert "h-settle" in ids
    assert set(ids[: len(exact)]) == exact
    assert ids.index("h-settle") >= len(exact)


async def test_every_word_must_match(loaded: Loaded) -> None:
    # Grills are "enamelled steel": they match "enamel" but not "jug".
    assert len(await every_id(loaded.index, SearchQuery(text="enamel", limit=50))) > 1
    assert await every_id(loaded.index, SearchQuery(text="enamel jug")) == ["h-kitchenware"]


async def test_relevance_pages_are_ordered_by_score_then_id(loaded: Loaded) -> None:
    pages = await every_page(loaded.index, SearchQuery(text="steel", limit=7, facets=False))
    hits = [hit for page in pages for hit in page.hits]
    assert len(hits) == pages[0].total > 20
    assert len({hit.id for hit in hits}) == len(hits)
    assert_relevance_order(hits)
    # Whatever the page size, the same order.
    whole = await every_id(loaded.index, SearchQuery(text="steel", limit=100, facets=False))
    assert whole == [hit.id for hit in hits]


async def test_typo_only_pages_are_in_id_order(loaded: Loaded) -> None:
    pages = await every_page(loaded.index, SearchQuery(text="hedphones", limit=4, facets=False))
    hits = [hit for page in pages for hit in page.hits]
    assert len(hits) == pages[0].total > 4
    assert [h.id for h in hits] == sorted(h.id for h in hits)
    assert len({h.score for h in hits}) == 1


async def test_text_with_filters(loaded: Loaded) -> None:
    query = SearchQuery(text="kettle", min_price=3_000, max_price=8_000, limit=100)
    result = await loaded.index.search(query)
    assert result.hits
    for hit in result.hits:
        assert hit.price is not None
        assert 3_000 <= hit.price <= 8_000
        # "settle" is the typo match (see the test above).
        assert re.search(r"\b[ks]ettle", words_of(loaded, hit.id))


# --------------------------------------------------------------------------- filters


FILTERS = [
    pytest.param(SearchQuery(category="home/kitchen"), id="category-prefix"),
    pytest.param(SearchQuery(category="home/kitchen/kettles"), id="category-leaf"),
    pytest.param(SearchQuery(category="/home/"), id="category-slashes"),
    pytest.param(SearchQuery(category="home/kitchenware"), id="category-not-a-prefix"),
    pytest.param(SearchQuery(brands=("Acme",)), id="brand"),
    pytest.param(SearchQuery(brands=("Acme", "Zephyr", "Nope")), id="brands-or"),
    pytest.param(SearchQuery(attributes=(("color", ("red",)),)), id="attribute"),
    pytest.param(SearchQuery(attributes=(("color", ("red", "blue")),)), id="attribute-or"),
    pytest.param(
        SearchQuery(attributes=(("color", ("red", "blue")), ("material", ("plastic",)))),
        id="attributes-and",
    ),
    pytest.param(SearchQuery(min_price=4_299, max_price=4_299), id="price-exact"),
    pytest.param(SearchQuery(min_price=10_000), id="price-min"),
    pytest.param(SearchQuery(max_price=1_999), id="price-max"),
    pytest.param(
        SearchQuery(
            category="home",
            brands=("Acme", "Nordvik", "Kestrel", "Umber"),
            attributes=(("color", ("black", "white", "grey")),),
            min_price=2_000,
            max_price=40_000,
        ),
        id="combined",
    ),
]


@pytest.mark.parametrize("query", FILTERS)
async def test_filters_match_the_reference(loaded: Loaded, query: SearchQuery) -> None:
    query = replace(query, limit=100)
    ids = await every_id(loaded.index, query)
    assert ids == browse(loaded.docs, query)


async def test_category_matches_whole_segments_only(loaded: Loaded) -> None:
    ids = await every_id(loaded.index, SearchQuery(category="home/kitchen", limit=100))
    assert "h-kitchenware" not in ids
    assert await every_id(loaded.index, SearchQuery(category="home/kitchenware")) == [
        "h-kitchenware"
    ]


async def test_empty_text_with_filters_browses(loaded: Loaded) -> None:
    query = SearchQuery(category="garden", limit=100)
    pages = await every_page(loaded.index, query)
    ids = [hit.id for page in pages for hit in page.hits]
    assert ids == browse(loaded.docs, query) == sorted(ids)
    assert pages[0].total == len(ids)


async def test_no_match_is_an_empty_last_page(loaded: Loaded) -> None:
    result = await loaded.index.search(SearchQuery(text="zzzzzzzzqqqq", category="home"))
    assert result.hits == []
    assert result.total == 0
    assert result.next_cursor is None


# --------------------------------------------------------------------------- facets


FACET_QUERIES = [
    pytest.param(SearchQuery(), id="everything"),
    pytest.param(SearchQuery(category="electronics"), id="category"),
    pytest.param(
        SearchQuery(brands=("Acme", "Orbit"), attributes=(("color", ("black", "red")),)),
        id="filters",
    ),
]


@pytest.mark.parametrize("query", FACET_QUERIES)
async def test_facet_counts_match_a_brute_force_count(loaded: Loaded, query: SearchQuery) -> None:
    result = await loaded.index.search(replace(query, limit=5))
    matching = [doc for doc in loaded.docs if passes_filters(doc, query)]
    assert result.total == len(matching)
    assert result.facets == facets(matching)


async def test_text_facets_count_exactly_the_matching_products(loaded: Loaded) -> None:
    query = SearchQuery(text="shoe", limit=100, category="fashion")
    pages = await every_page(loaded.index, query)
    ids = {hit.id for page in pages for hit in page.hits}
    assert ids
    assert pages[0].facets == facets(d for d in loaded.docs if d.id in ids)
    assert all(page.facets == pages[0].facets for page in pages)


async def test_facets_can_be_left_out(loaded: Loaded) -> None:
    assert (await loaded.index.search(SearchQuery(facets=False))).facets == {}


# --------------------------------------------------------------------------- sort, paging


@pytest.mark.parametrize("sort", SORTS)
async def test_each_sort_order_with_its_id_tiebreak(loaded: Loaded, sort: SortOrder) -> None:
    query = SearchQuery(sort=sort, limit=100, facets=False)
    ids = await every_id(loaded.index, query)
    assert ids == browse(loaded.docs, query)
    tied = [i for i in ids if i.startswith("h-tie-")]
    assert tied == ["h-tie-1", "h-tie-2", "h-tie-3"]


async def test_products_without_a_price_sort_last(loaded: Loaded) -> None:
    for sort in (SortOrder.PRICE_ASC, SortOrder.PRICE_DESC):
        ids = await every_id(loaded.index, SearchQuery(sort=sort, limit=100, facets=False))
        assert ids[-1] == "h-noprice"


@pytest.mark.parametrize("sort", SORTS)
@pytest.mark.parametrize("limit", [1, 7, 100])
async def test_paging_returns_each_product_once_in_order(
    loaded: Loaded, sort: SortOrder, limit: int
) -> None:
    query = SearchQuery(category="home", sort=sort, limit=limit, facets=False)
    pages = await every_page(loaded.index, query)
    ids = [hit.id for page in pages for hit in page.hits]
    assert ids == browse(loaded.docs, query)
    assert all(len(page.hits) == limit for page in pages[:-1])
    assert all(page.total == len(ids) for page in pages)


@pytest.mark.parametrize("sort", SORTS)
async def test_text_paging_returns_each_product_once(loaded: Loaded, sort: SortOrder) -> None:
    query = SearchQuery(text="black", sort=sort, limit=9, facets=False)
    pages = await every_page(loaded.index, query)
    ids = [hit.id for page in pages for hit in page.hits]
    assert len(ids) == len(set(ids)) == pages[0].total > 9
    if sort is not SortOrder.RELEVANCE:
        expected = browse([loaded.by_id(i) for i in ids], replace(query, text=""))
        assert ids == expected


async def test_the_page_size_may_change_between_pages(loaded: Loaded) -> None:
    query = SearchQuery(sort=SortOrder.PRICE_ASC, limit=5, facets=False)
    first = await loaded.index.search(query)
    second = await loaded.index.search(replace(query, limit=11, cursor=first.next_cursor))
    expected = browse(loaded.docs, query)
    assert [h.id for h in first.hits + second.hits] == expected[:16]


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "cursor", ["garbage", "", "a" * 600, "eyJ2IjoxfQ", "!!!", "d6c5pkczeyJ2IjoxLCJiIjoi"]
)
async def test_a_bad_cursor_is_a_value_error(loaded: Loaded, cursor: str) -> None:
    with pytest.raises(ValueError, match="cursor"):
        await loaded.index.search(SearchQuery(cursor=cursor))


async def test_a_damaged_cursor_is_a_value_error(loaded: Loaded) -> None:
    cursor = (await loaded.index.search(SearchQuery(limit=2))).next_cursor
    assert cursor is not None
    damaged = cursor[:-3] + ("A" if cursor[-3] != "A" else "B") + cursor[-2:]
    with pytest.raises(ValueError, match="cursor"):
        await loaded.index.search(SearchQuery(limit=2, cursor=damaged))


@pytest.mark.parametrize(
    "other",
    [
        SearchQuery(text="kettle"),
        SearchQuery(category="garden"),
        SearchQuery(brands=("Acme",)),
        SearchQuery(attributes=(("color", ("red",)),)),
        SearchQuery(min_price=1),
        SearchQuery(max_price=10_000_000),
        SearchQuery(sort=SortOrder.PRICE_DESC),
        SearchQuery(sort=SortOrder.NEWEST),
    ],
)
async def test_a_cursor_from_another_query_is_a_value_error(
    loaded: Loaded, other: SearchQuery
) -> None:
    cursor = (await loaded.index.search(SearchQuery(sort=SortOrder.PRICE_ASC))).next_cursor
    assert cursor is not None
    with pytest.raises(ValueError, match="different query"):
        await loaded.index.search(replace(other, cursor=cursor))


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (SearchQuery(limit=0), "limit"),
        (SearchQuery(limit=101), "limit"),
        (SearchQuery(min_price=10, max_price=9), "min_price"),
        (SearchQuery(min_price=-1), "min_price"),
        (SearchQuery(category="/"), "category"),
    ],
)
async def test_invalid_queries_are_value_errors(
    loaded: Loaded, query: SearchQuery, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        await loaded.index.search(query)


# --------------------------------------------------------------------------- writes


async def test_upsert_replaces_by_id(empty: SearchIndex) -> None:
    await empty.upsert([hand("w-1", "Alpha Widget", price=100)])
    await empty.refresh()
    assert [h.id for h in (await empty.search(SearchQuery(text="alpha"))).hits] == ["w-1"]

    await empty.upsert([hand("w-1", "Beta Gadget", price=200, brand="Other")])
    await empty.refresh()
    assert (await empty.search(SearchQuery(text="alpha"))).total == 0
    (hit,) = (await empty.search(SearchQuery(text="beta"))).hits
    assert (hit.id, hit.title, hit.brand, hit.price) == ("w-1", "Beta Gadget", "Other", 200)
    assert (await empty.search(SearchQuery(brands=("Handmade",)))).total == 0
    assert await empty.count() == 1


async def test_upserting_one_id_twice_in_a_batch_keeps_the_last(empty: SearchIndex) -> None:
    await empty.upsert([hand("w-1", "First Lamp"), hand("w-1", "Second Lamp")])
    await empty.refresh()
    assert [h.title for h in (await empty.search(SearchQuery(text="lamp"))).hits] == ["Second Lamp"]


async def test_delete_removes(empty: SearchIndex) -> None:
    await empty.upsert([hand("w-1", "Alpha Widget"), hand("w-2", "Alpha Gizmo")])
    await empty.refresh()
    assert await empty.delete(["w-1", "w-1", "not-there"]) == 2
    await empty.refresh()
    assert [h.id for h in (await empty.search(SearchQuery(text="alpha"))).hits] == ["w-2"]
    assert await empty.count() == 1


async def test_clear_drops_everything(empty: SearchIndex) -> None:
    await empty.upsert(demo_docs(50))
    await empty.refresh()
    assert await empty.count() > 0
    await empty.clear()
    await empty.refresh()
    assert await empty.count() == 0
    assert (await empty.search(SearchQuery())).total == 0


async def test_only_published_products_are_indexed(empty: SearchIndex) -> None:
    products = demo_products(200)
    drafts = {p["id"] for p, _ in products if p["status"] != "published"}
    assert drafts, "the demo catalog has drafts"
    docs = [search_doc(p, prices) for p, prices in products]
    await empty.upsert([doc for doc in docs if doc is not None])
    await empty.refresh()
    ids = await every_id(empty, SearchQuery(limit=100))
    assert ids == sorted(p["id"] for p, _ in products if p["status"] == "published")
    assert drafts.isdisjoint(ids)


async def test_empty_writes_are_no_ops(empty: SearchIndex) -> None:
    assert await empty.upsert([]) == 0
    assert await empty.delete([]) == 0
    await empty.refresh()
    assert await empty.count() == 0


async def test_ensure_index_twice_keeps_the_documents(empty: SearchIndex) -> None:
    await empty.upsert([hand("w-1", "Alpha Widget")])
    await empty.refresh()
    await empty.ensure_index()
    assert await empty.count() == 1


# --------------------------------------------------------------------------- property


_CATEGORIES = sorted(
    {d.category.rsplit("/", n)[0] for d in (*demo_docs(600), *HAND_DOCS) for n in (0, 1, 2)}
)
_BRANDS = ["Acme", "Nordvik", "Kestrel", "Orbit", "Zephyr", "Handmade", "Absent"]
_ATTRIBUTES = {
    "color": ["black", "white", "red", "blue", "teal", "green"],
    "material": ["oak", "steel", "cotton", "plastic", "leather"],
    "connectivity": ["bluetooth", "wired"],
}

queries = st.builds(
    SearchQuery,
    category=st.none() | st.sampled_from(_CATEGORIES),
    brands=st.lists(st.sampled_from(_BRANDS), max_size=3, unique=True).map(tuple),
    attributes=st.lists(
        st.sampled_from(sorted(_ATTRIBUTES)).flatmap(
            lambda name: st.tuples(
                st.just(name),
                st.lists(st.sampled_from(_ATTRIBUTES[name]), min_size=1, max_size=2).map(tuple),
            )
        ),
        max_size=2,
    ).map(tuple),
    min_price=st.none() | st.integers(0, 60_000),
    max_price=st.none() | st.integers(0, 100_000),
    sort=st.sampled_from(SORTS),
    limit=st.integers(1, 40),
    facets=st.booleans(),
).filter(lambda q: q.min_price is None or q.max_price is None or q.min_price <= q.max_price)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(query=queries)
async def test_filters_sort_and_pages_match_the_reference(
    loaded: Loaded, query: SearchQuery
) -> None:
    pages = await every_page(loaded.index, query)
    ids = [hit.id for page in pages for hit in page.hits]
    expected = browse(loaded.docs, query)
    assert ids == expected
    assert pages[0].total == len(expected)
    if query.facets:
        assert pages[0].facets == facets(loaded.by_id(i) for i in expected)


def test_reference_corpus_has_what_the_cases_need() -> None:
    docs = demo_docs(600)
    assert any(d.category == "electronics/audio/headphones" for d in docs)
    assert any(d.price == 4_299 for d in docs) or any(d.price == 4_299 for d in HAND_DOCS)


_WORDS = ["kettle", "kettel", "steel", "black", "oak", "chair", "hedphones", "cotton shirt"]


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(query=queries, text=st.sampled_from(_WORDS))
async def test_text_with_filters_and_sort_is_the_filtered_text_match(
    loaded: Loaded, query: SearchQuery, text: str
) -> None:
    matched = set(await every_id(loaded.index, SearchQuery(text=text, limit=100)))
    query = replace(query, text=text)
    pages = await every_page(loaded.index, query)
    hits = [hit for page in pages for hit in page.hits]
    ids = [hit.id for hit in hits]
    expected = {i for i in matched if passes_filters(loaded.by_id(i), query)}
    assert len(ids) == len(set(ids)) == pages[0].total
    assert set(ids) == expected
    if query.sort is SortOrder.RELEVANCE:
        assert_relevance_order(hits)
    else:
        assert ids == browse([loaded.by_id(i) for i in ids], replace(query, text=""))
