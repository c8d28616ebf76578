"""The CatalogStore contract: every case runs on every backend (see conftest.py).

The rules under test are stated in storage/catalog_docs.py.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage.catalog_docs import MAX_CHANGES
from storage.cursors import encode_cursor
from storage.demo import generate
from storage.errors import StoreIntegrityError, StoreUnavailable
from storage.interfaces import CatalogStore
from storage.records import ProductDoc
from tests.catalog.conftest import CHUNK, OpenCatalog
from tests.catalog.products import doc


async def all_pages(store: CatalogStore, category: str | None, limit: int) -> tuple[list[str], int]:
    ids: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        page, cursor = await store.list_products(category=category, cursor=cursor, limit=limit)
        pages += 1
        ids.extend(p["id"] for p in page)
        if cursor is None:
            return ids, pages


async def merchant_pages(
    store: CatalogStore, merchant: str, status: str | None, limit: int
) -> list[str]:
    ids: list[str] = []
    cursor: str | None = None
    while True:
        page, cursor = await store.list_merchant_products(
            merchant, status=status, cursor=cursor, limit=limit
        )
        ids.extend(p["id"] for p in page)
        if cursor is None:
            return ids


async def owner(store: CatalogStore, sku: str) -> str | None:
    found = await store.product_for_sku(sku)
    return None if found is None else str(found["id"])


async def feed(store: CatalogStore, after: int = 0) -> list[tuple[int, str]]:
    return [(seq, d["id"]) for seq, d in await store.changes_since(after, MAX_CHANGES)]


# --- documents ------------------------------------------------------------------------


async def test_round_trip(catalog: CatalogStore) -> None:
    first = doc("p-1", skus=("A-1", "A-2"))
    second = doc("p-2", status="draft")
    assert await catalog.put_products([first, second]) == 2

    assert await catalog.get_product("p-1") == first
    assert await catalog.get_product("missing") is None
    assert await catalog.get_products(["p-2", "missing", "p-1", "p-2"]) == {
        "p-1": first,
        "p-2": second,
    }
    assert await catalog.get_products([]) == {}
    assert await catalog.product_for_sku("A-2") == first
    assert await catalog.product_for_sku("nope") is None
    assert await catalog.count_products() == 2


async def test_documents_come_back_exactly(catalog: CatalogStore) -> None:
    rich = doc("p-rich", skus=())
    rich.update(
        {
            "title": "Kaffeemühle «Größe» ☕",
            "variants": [],
            "attributes": {"zeta": "1", "alpha": {"nested": [1, 2.5, True, None, "x"]}},
            "rating": 4.25,
            "tags": [],
            "seq": 99,  # the document's own field, not the store's
            "category_path": "not the store's either",
        }
    )
    demo = [item.product for item in generate(60)]
    await catalog.put_products([rich, *demo])

    assert await catalog.get_product("p-rich") == rich
    found = await catalog.get_products([d["id"] for d in demo])
    assert found == {d["id"]: d for d in demo}
    # Key order survives too, at every level.
    assert list(found[demo[0]["id"]]) == list(demo[0])
    assert [d for _, d in await catalog.changes_since(0, 100)] == [rich, *demo]


async def test_get_product_returns_every_status(catalog: CatalogStore) -> None:
    await catalog.put_products(
        [doc("p-d", status="draft"), doc("p-a", status="archived"), doc("p-p")]
    )
    for product_id in ("p-d", "p-a", "p-p"):
        found = await catalog.get_product(product_id)
        assert found is not None
        assert found["id"] == product_id
    assert await catalog.count_products() == 3


async def test_put_streams_any_iterable_across_chunks(catalog: CatalogStore) -> None:
    count = 5 * CHUNK + 3
    generated: Iterator[ProductDoc] = (doc(f"p-{i:05d}") for i in range(count))
    assert await catalog.put_products(generated) == count
    assert await catalog.count_products() == count
    assert await catalog.put_products([]) == 0
    assert await catalog.last_seq() == count


def _without(key: str) -> ProductDoc:
    bad = doc("p-bad")
    del bad[key]
    return bad


def _with(**changes: Any) -> ProductDoc:
    bad = doc("p-bad")
    bad.update(changes)
    return bad


INVALID = {
    "no id": (_without("id"), "'id'"),
    "empty id": (_with(id=""), "'id'"),
    "no category": (_without("category"), "category"),
    "no status": (_without("status"), "status"),
    "unknown status": (_with(status="deleted"), "status"),
    "no merchant": (_without("merchant_id"), "merchant_id"),
    "no updated_at": (_without("updated_at"), "updated_at"),
    "variants not a list": (_with(variants={"sku": "X"}), "variants"),
    "variant without sku": (_with(variants=[{"options": {}}]), "sku"),
    "variant not an object": (_with(variants=["X-1"]), "sku"),
    "sku twice": (_with(variants=[{"sku": "X-1"}, {"sku": "X-1"}]), "twice"),
    "reserved key": (_with(_seq=5), "reserved"),
    "not JSON": (_with(attributes={"when": object()}), "JSON"),
}


@pytest.mark.parametrize(("bad", "message"), INVALID.values(), ids=INVALID.keys())
async def test_invalid_document_fails_whole_call(
    catalog: CatalogStore, bad: ProductDoc, message: str
) -> None:
    await catalog.put_products([doc("p-old", title="Before")])
    before = await catalog.last_seq()
    # The bad doc comes after more than one internal chunk: those must not be written.
    docs = [doc(f"p-{i:05d}") for i in range(2 * CHUNK)] + [doc("p-old", title="After"), bad]
    with pytest.raises(StoreIntegrityError, match=message):
        await catalog.put_products(docs)

    assert await catalog.count_products() == 1
    assert await catalog.get_product("p-old") == doc("p-old", title="Before")
    assert await catalog.product_for_sku("p-00001-1") is None
    assert await catalog.last_seq() == before
    assert await feed(catalog, before) == []


async def test_a_product_must_be_an_object(catalog: CatalogStore) -> None:
    with pytest.raises(StoreIntegrityError, match="object"):
        await catalog.put_products(["p-1"])  # type: ignore[list-item]


async def test_same_id_twice_in_one_call_keeps_the_later(catalog: CatalogStore) -> None:
    first, second = doc("p-1", skus=("A-1",)), doc("p-1", skus=("A-2",), title="Later")
    assert await catalog.put_products([first, doc("p-2"), second]) == 3

    assert await catalog.get_product("p-1") == second
    assert await owner(catalog, "A-1") is None
    assert await owner(catalog, "A-2") == "p-1"
    assert await catalog.count_products() == 2
    assert [pid for _, pid in await feed(catalog)] == ["p-2", "p-1"]


# --- SKUs -----------------------------------------------------------------------------


async def test_dropped_variant_stops_resolving(catalog: CatalogStore) -> None:
    await catalog.put_products([doc("p-1", skus=("A-1", "A-2"))])
    updated = doc("p-1", skus=("A-1", "A-3"), title="Renamed")
    assert await catalog.put_products([updated]) == 1

    assert await catalog.get_product("p-1") == updated
    assert await catalog.product_for_sku("A-1") == updated
    assert await catalog.product_for_sku("A-2") is None
    assert await catalog.product_for_sku("A-3") == updated
    assert await catalog.count_products() == 1


async def test_sku_kept_by_another_product_is_refused(catalog: CatalogStore) -> None:
    await catalog.put_products([doc("p-2", skus=("B-1",))])
    before = await catalog.last_seq()
    with pytest.raises(StoreIntegrityError, match=r"'B-1'.*'p-2'"):
        await catalog.put_products([doc("p-3"), doc("p-1", skus=("A-1", "B-1"))])

    assert await owner(catalog, "B-1") == "p-2"
    assert await catalog.get_product("p-1") is None
    assert await catalog.get_product("p-3") is None
    assert await owner(catalog, "A-1") is None
    assert await catalog.last_seq() == before


async def test_two_documents_of_one_call_claiming_a_sku_are_refused(
    catalog: CatalogStore,
) -> None:
    # Far apart, so the two claims land in different internal chunks.
    docs = [doc("p-a", skus=("X-1",))] + [doc(f"p-{i:05d}") for i in range(2 * CHUNK)]
    docs.append(doc("p-b", skus=("X-1",)))
    with pytest.raises(StoreIntegrityError, match="'X-1'"):
        await catalog.put_products(docs)
    assert await catalog.count_products() == 0
    assert await owner(catalog, "X-1") is None


@pytest.mark.parametrize("giver_first", [True, False])
async def test_sku_moves_when_its_holder_is_rewritten_without_it(
    catalog: CatalogStore, giver_first: bool
) -> None:
    await catalog.put_products([doc("p-2", skus=("B-1", "B-2"))])
    giver = doc("p-2", skus=("B-2",))
    taker = doc("p-1", skus=("A-1", "B-1"))
    fillers = [doc(f"p-{i:05d}") for i in range(2 * CHUNK)]  # across internal chunks
    docs = [giver, *fillers, taker] if giver_first else [taker, *fillers, giver]
    await catalog.put_products(docs)

    assert await owner(catalog, "B-1") == "p-1"
    assert await owner(catalog, "B-2") == "p-2"
    assert await catalog.get_product("p-2") == giver


async def test_skus_can_swap_in_one_call(catalog: CatalogStore) -> None:
    await catalog.put_products([doc("p-1", skus=("S-1",)), doc("p-2", skus=("S-2",))])
    await catalog.put_products([doc("p-1", skus=("S-2",)), doc("p-2", skus=("S-1",))])
    assert await owner(catalog, "S-1") == "p-2"
    assert await owner(catalog, "S-2") == "p-1"


async def test_sku_moves_after_its_holder_gave_it_up(catalog: CatalogStore) -> None:
    await catalog.put_products([doc("p-2", skus=("B-1",))])
    await catalog.put_products([doc("p-2", skus=())])
    await catalog.put_products([doc("p-1", skus=("B-1",))])
    assert await owner(catalog, "B-1") == "p-1"


async def test_sku_of_a_rewrite_claiming_a_kept_sku_is_refused(catalog: CatalogStore) -> None:
    # The holder is in the call but keeps the SKU: still two products would list it.
    await catalog.put_products([doc("p-2", skus=("B-1",))])
    with pytest.raises(StoreIntegrityError, match="'B-1'"):
        await catalog.put_products([doc("p-1", skus=("B-1",)), doc("p-2", skus=("B-1",))])
    assert await owner(catalog, "B-1") == "p-2"
    assert await catalog.get_product("p-1") is None


async def test_products_without_variants(catalog: CatalogStore) -> None:
    bare = doc("p-1", skus=())
    del bare["variants"]
    await catalog.put_products([bare, doc("p-2", skus=()), doc("p-3", skus=())])
    assert await catalog.get_product("p-1") == bare
    assert await catalog.count_products() == 3


# --- listing published products -------------------------------------------------------


async def test_pagination_covers_every_published_item_once(catalog: CatalogStore) -> None:
    statuses = ("published", "published", "draft", "published", "archived")
    docs = [doc(f"p-{i:04d}", status=statuses[i % len(statuses)]) for i in range(253)]
    # Inserted out of order: listing order must come from the ids, not insertion.
    await catalog.put_products(reversed(docs))
    expected = sorted(d["id"] for d in docs if d["status"] == "published")

    ids, pages = await all_pages(catalog, None, 7)
    assert ids == expected
    assert pages == -(-len(expected) // 7)


async def test_exact_multiple_of_limit_has_no_empty_last_page(catalog: CatalogStore) -> None:
    await catalog.put_products(doc(f"p-{i}") for i in range(10))
    page, cursor = await catalog.list_products(category=None, cursor=None, limit=5)
    assert cursor is not None
    page, cursor = await catalog.list_products(category=None, cursor=cursor, limit=5)
    assert len(page) == 5
    assert cursor is None


async def test_empty_catalog_lists_nothing(catalog: CatalogStore) -> None:
    assert await catalog.list_products(category=None, cursor=None, limit=10) == ([], None)


async def test_category_matches_by_path_segment(catalog: CatalogStore) -> None:
    categories = {
        "p-1": "home",
        "p-2": "home/kitchen",
        "p-3": "home/kitchen/kettles",
        "p-4": "homeware",
        "p-5": "homeware/mugs",
        "p-6": "garden/home",
        "p-7": "home/kitchenware",
    }
    await catalog.put_products(doc(pid, category=c) for pid, c in categories.items())

    assert (await all_pages(catalog, "home", 2))[0] == ["p-1", "p-2", "p-3", "p-7"]
    assert (await all_pages(catalog, "home/kitchen", 2))[0] == ["p-2", "p-3"]
    assert (await all_pages(catalog, "/home/kitchen/", 2))[0] == ["p-2", "p-3"]
    assert (await all_pages(catalog, "home/kitchen/kettles", 2))[0] == ["p-3"]
    assert (await all_pages(catalog, "homeware", 2))[0] == ["p-4", "p-5"]
    assert (await all_pages(catalog, "hom", 2))[0] == []


async def test_category_wildcards_are_literal(catalog: CatalogStore) -> None:
    categories = {
        "p-1": "a_b",
        "p-2": "a_b/c",
        "p-3": "axb",
        "p-4": "axb/c",
        "p-5": "a%b/x",
        "p-6": "aXYZb/x",
        "p-7": "a\\b/x",
        "p-8": "a\\\\b/x",
        "p-9": "a.b/x",
    }
    await catalog.put_products(doc(pid, category=c) for pid, c in categories.items())

    assert (await all_pages(catalog, "a_b", 10))[0] == ["p-1", "p-2"]
    assert (await all_pages(catalog, "a%b", 10))[0] == ["p-5"]
    assert (await all_pages(catalog, "a\\b", 10))[0] == ["p-7"]
    assert (await all_pages(catalog, "a.b", 10))[0] == ["p-9"]


async def test_drafts_and_archived_are_hidden_from_listing(catalog: CatalogStore) -> None:
    await catalog.put_products(
        [doc("p-1", "home"), doc("p-2", "home", "draft"), doc("p-3", "home", "archived")]
    )
    assert (await all_pages(catalog, "home", 10))[0] == ["p-1"]
    assert (await all_pages(catalog, None, 10))[0] == ["p-1"]


async def test_a_product_moves_with_its_category(catalog: CatalogStore) -> None:
    await catalog.put_products([doc("p-1", "home/kitchen")])
    await catalog.put_products([doc("p-1", "garden/tools")])
    assert (await all_pages(catalog, "home", 10))[0] == []
    assert (await all_pages(catalog, "garden", 10))[0] == ["p-1"]


MALFORMED_CURSORS = [
    "",
    "not a cursor!",
    "cC0x=",  # padding is never emitted
    "a",  # impossible base64 length
    base64.urlsafe_b64encode(b"\xff\xfe").decode().rstrip("="),  # not UTF-8
    "+/+/",  # standard alphabet, not url-safe
]


@pytest.mark.parametrize("cursor", MALFORMED_CURSORS)
async def test_malformed_cursor_is_rejected(catalog: CatalogStore, cursor: str) -> None:
    with pytest.raises(ValueError, match="cursor"):
        await catalog.list_products(category=None, cursor=cursor, limit=10)
    with pytest.raises(ValueError, match="cursor"):
        await catalog.list_merchant_products("m-001", status=None, cursor=cursor, limit=10)


async def test_cursor_is_url_safe_and_resumes_after_id(catalog: CatalogStore) -> None:
    await catalog.put_products(doc(f"p-{i}") for i in range(5))
    page, _ = await catalog.list_products(category=None, cursor=encode_cursor("p-2"), limit=10)
    assert [p["id"] for p in page] == ["p-3", "p-4"]


@pytest.mark.parametrize("limit", [0, -1, 101])
async def test_limit_bounds(catalog: CatalogStore, limit: int) -> None:
    with pytest.raises(ValueError, match="limit"):
        await catalog.list_products(category=None, cursor=None, limit=limit)
    with pytest.raises(ValueError, match="limit"):
        await catalog.list_merchant_products("m-001", status=None, cursor=None, limit=limit)


@pytest.mark.parametrize("category", ["", "/", "//"])
async def test_empty_category_is_rejected(catalog: CatalogStore, category: str) -> None:
    with pytest.raises(ValueError, match="category"):
        await catalog.list_products(category=category, cursor=None, limit=10)


# --- listing one merchant's products --------------------------------------------------


async def test_merchant_listing_shows_only_that_merchant(catalog: CatalogStore) -> None:
    statuses = ("published", "draft", "archived")
    docs = [doc(f"p-{i:03d}", status=statuses[i % 3], merchant=f"m-{i % 4}") for i in range(120)]
    await catalog.put_products(reversed(docs))

    for merchant in ("m-0", "m-1", "m-2", "m-3"):
        mine = [d for d in docs if d["merchant_id"] == merchant]
        assert await merchant_pages(catalog, merchant, None, 7) == [d["id"] for d in mine]
        for status in statuses:
            expected = [d["id"] for d in mine if d["status"] == status]
            assert await merchant_pages(catalog, merchant, status, 4) == expected
    assert await catalog.list_merchant_products("m-9", status=None, cursor=None, limit=10) == (
        [],
        None,
    )


async def test_merchant_listing_returns_whole_documents(catalog: CatalogStore) -> None:
    draft = doc("p-1", status="draft", merchant="m-7")
    await catalog.put_products([draft])
    page, cursor = await catalog.list_merchant_products("m-7", status=None, cursor=None, limit=1)
    assert (page, cursor) == ([draft], None)


@pytest.mark.parametrize("status", ["", "deleted", "Published"])
async def test_merchant_listing_refuses_unknown_status(catalog: CatalogStore, status: str) -> None:
    with pytest.raises(ValueError, match="status"):
        await catalog.list_merchant_products("m-001", status=status, cursor=None, limit=10)


async def test_merchant_listing_needs_a_merchant(catalog: CatalogStore) -> None:
    with pytest.raises(ValueError, match="merchant_id"):
        await catalog.list_merchant_products("", status=None, cursor=None, limit=10)


# --- change feed ----------------------------------------------------------------------


async def test_empty_catalog_has_no_changes(catalog: CatalogStore) -> None:
    assert await catalog.last_seq() == 0
    assert await catalog.changes_since(0, 10) == []


async def test_every_write_takes_the_next_number(catalog: CatalogStore) -> None:
    await catalog.put_products(
        [doc("p-b"), doc("p-a", status="draft"), doc("p-c", status="archived")]
    )
    first = await feed(catalog)
    assert [pid for _, pid in first] == ["p-b", "p-a", "p-c"]  # write order, not id order
    seqs = [seq for seq, _ in first]
    assert seqs == sorted(set(seqs))
    assert await catalog.last_seq() == seqs[-1]

    await catalog.put_products([doc("p-d")])
    second = await feed(catalog, seqs[-1])
    assert [pid for _, pid in second] == ["p-d"]
    assert second[0][0] > seqs[-1]
    assert await catalog.last_seq() == second[0][0]
    assert await catalog.changes_since(await catalog.last_seq(), 10) == []


async def test_a_rewritten_product_appears_once_at_its_newest_number(
    catalog: CatalogStore,
) -> None:
    await catalog.put_products([doc("p-1"), doc("p-2"), doc("p-3")])
    before = await catalog.last_seq()
    updated = doc("p-1", status="archived", title="Gone")
    await catalog.put_products([updated])

    changes = await catalog.changes_since(0, 10)
    assert [d["id"] for _, d in changes] == ["p-2", "p-3", "p-1"]
    assert changes[-1] == (await catalog.last_seq(), updated)
    assert changes[-1][0] > before
    assert await feed(catalog, before) == [(changes[-1][0], "p-1")]


async def test_changes_page_by_the_last_number(catalog: CatalogStore) -> None:
    await catalog.put_products(doc(f"p-{i:03d}") for i in range(25))
    await catalog.put_products([doc("p-007", title="Again")])

    seen: list[tuple[int, str]] = []
    after = 0
    while page := await catalog.changes_since(after, 4):
        assert len(page) <= 4
        seen.extend((seq, d["id"]) for seq, d in page)
        after = page[-1][0]
    assert seen == await feed(catalog)
    assert len(seen) == 25
    assert [pid for _, pid in seen[-2:]] == ["p-024", "p-007"]
    assert after == await catalog.last_seq()


@pytest.mark.parametrize(("after_seq", "limit"), [(-1, 10), (0, 0), (0, -5), (0, 10_001)])
async def test_change_feed_arguments(catalog: CatalogStore, after_seq: int, limit: int) -> None:
    with pytest.raises(ValueError, match="after_seq" if after_seq < 0 else "limit"):
        await catalog.changes_since(after_seq, limit)


async def test_change_feed_takes_the_largest_limit(catalog: CatalogStore) -> None:
    assert await catalog.changes_since(0, MAX_CHANGES) == []


# --- lifecycle ------------------------------------------------------------------------


async def test_closed_store_refuses_work(catalog: CatalogStore) -> None:
    await catalog.put_products([doc("p-1")])
    await catalog.close()
    await catalog.close()  # idempotent
    with pytest.raises(StoreUnavailable, match="closed"):
        await catalog.get_product("p-1")
    with pytest.raises(StoreUnavailable, match="closed"):
        await catalog.put_products([doc("p-2")])


# --- a model of the whole contract ----------------------------------------------------

_IDS = ("p-1", "p-2", "p-3", "p-4")
_SKUS = ("S-1", "S-2", "S-3", "S-4", "S-5")
_doc_specs = st.tuples(
    st.sampled_from(_IDS),
    st.sampled_from(("draft", "published", "archived")),
    st.lists(st.sampled_from(_SKUS), max_size=2, unique=True),
)
_calls = st.lists(st.lists(_doc_specs, min_size=1, max_size=4), min_size=1, max_size=6)


class Model:
    """The contract in plain Python: documents by id, in the order of their last write."""

    def __init__(self) -> None:
        self.docs: dict[str, ProductDoc] = {}

    def put(self, docs: list[ProductDoc]) -> bool:
        final: dict[str, ProductDoc] = {}
        for d in docs:
            final.pop(d["id"], None)
            final[d["id"]] = d
        after = {pid: d for pid, d in self.docs.items() if pid not in final} | final
        skus = [v["sku"] for d in after.values() for v in d["variants"]]
        if len(skus) != len(set(skus)):
            return False
        for pid in final:
            self.docs.pop(pid, None)
        self.docs.update(final)
        return True

    def owner(self, sku: str) -> str | None:
        for pid, d in self.docs.items():
            if any(v["sku"] == sku for v in d["variants"]):
                return pid
        return None


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(calls=_calls)
async def test_random_writes_match_the_model(
    open_catalog: OpenCatalog, calls: list[list[tuple[str, str, list[str]]]]
) -> None:
    model = Model()
    async with open_catalog() as store:
        last = 0
        for number, call in enumerate(calls):
            docs = [
                doc(pid, status=status, skus=tuple(skus), title=f"call {number}")
                for pid, status, skus in call
            ]
            accepted = model.put(docs)
            if accepted:
                assert await store.put_products(docs) == len(docs)
            else:
                with pytest.raises(StoreIntegrityError, match="SKU"):
                    await store.put_products(docs)
            newest = await store.last_seq()
            assert newest > last if accepted else newest == last
            last = newest

        changes = await store.changes_since(0, MAX_CHANGES)
        assert [d for _, d in changes] == list(model.docs.values())
        seqs = [seq for seq, _ in changes]
        assert seqs == sorted(set(seqs))
        assert seqs[-1:] == ([last] if model.docs else [])
        for sku in _SKUS:
            assert await owner(store, sku) == model.owner(sku)
        published = sorted(pid for pid, d in model.docs.items() if d["status"] == "published")
        assert (await all_pages(store, "home", 2))[0] == published
        assert await store.count_products() == len(model.docs)
