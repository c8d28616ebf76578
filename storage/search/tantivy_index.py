"""Embedded product search on Tantivy: the ``SearchIndex`` used when no Elasticsearch
URL is configured.

How it answers each part of a query:

- Text: every query word must match (AND) in some text field (title, brand, tags =
  category words and attribute values, description). Per word, an exact term scores with
  BM25 and per-field boosts; a fuzzy term (edit distance 1 from 4 characters, 2 from 8,
  as in Elasticsearch's ``AUTO:4,8``) adds a small constant. Every document matching a
  word exactly also matches it fuzzily, so it always outscores one that only matches a
  typo of it.
- Filters are exact terms on raw fields (category path prefixes, brand, "name=value"
  attributes) and a fast-field range on price; they do not score.
- Facets are one aggregation pass over the same query (terms on fast fields).
- Order: every order is total (ties go to the product id, ascending).
  Field orders (price, newest, and browsing without text) sort on one string fast field
  holding "primary|id". Their cursor is a true ``search_after``: the last hit's primary
  and the first 16 bytes of its id as two integers, turned into fast-field range filters
  for the next page (Tantivy has no range queries over strings, and its offsets on a
  string order cost ~15 us per skipped hit and segment, so an offset is only used among
  ids sharing those 16 bytes).
  Relevance cannot be ranged over, so its cursor is an offset: a page is cut from the top
  ``offset + limit`` hits, widened until the tie group at the page's end is whole, and
  re-sorted by (score desc, id asc). When the best hit matches only through typos, every
  hit has the same score; such a query is listed in id order like browsing, with a
  ``search_after`` cursor. Deep relevance pages cost in proportion to their depth,
  field-sorted pages the same at any depth. Pages never skip or repeat a product while
  the index does not change between them; if it does, a relevance walk shifts by the
  hits inserted or removed before its position.

Writes queue in one ``IndexWriter`` and are committed, and made visible, by
``refresh``. Only one process may write an index directory (Tantivy's lock); any number
may read it, and they see a new commit within about a second (Tantivy watches the
index's meta file) or at once after their own ``refresh``.

Tantivy releases the GIL while it searches and aggregates (a Python thread spinning
beside an aggregation over a million documents keeps its full speed), so calls run on
worker threads and the event loop stays free: searches on a small pool, facet
aggregations on a second one beside them, writes on one thread (which also serialises
them). The writer indexes on its own Rust threads.
"""

from __future__ import annotations

import asyncio
import os
import struct
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, cast

import orjson
import tantivy

from storage.errors import StoreIntegrityError, StoreUnavailable
from storage.records import (
    FacetValue,
    SearchDoc,
    SearchHit,
    SearchQuery,
    SearchResult,
    SortOrder,
)
from storage.search.cursor import decode_cursor, encode_cursor
from storage.search.documents import attribute_term, check_search_doc, split_attribute_term
from storage.search.keys import id_words, primaries, sort_key
from storage.search.query import (
    ATTRIBUTE_FACET_TERMS,
    MAX_QUERY_TERMS,
    attribute_filters,
    category_path,
    category_prefixes,
    validate,
)

T = TypeVar("T")

BACKEND = "tantivy"
ANALYZER = "feira_en"
# (field, BM25 boost of an exact match). Titles say what a product is; brand next.
TEXT_FIELDS: tuple[tuple[str, float], ...] = (
    ("title", 3.0),
    ("brand_text", 2.0),
    ("tags", 1.5),
    ("description", 1.0),
)
# Below any exact match's BM25 contribution in practice, and only ever added on top of
# it for exact matches (see the module docstring), so it decides nothing between them.
FUZZY_SCORE = 0.1
# Terms-aggregation size: bigger than any field's distinct values in one query keeps the
# counts exact (one node, so no shard-level truncation); the lists are cut afterwards.
FACET_TERMS = 1_000
# A relevance page asks for at least this many hits, and grows the window by this factor
# until the tie group at its end is whole. Each try evaluates the whole query again,
# while a wider window costs little: so start wide and grow fast.
_TIE_WINDOW = 2_048
_TIE_GROWTH = 16
_ULPS = 1 + 1e-6


def fuzzy_distance(term: str) -> int:
    """Edits allowed for a query term: 0 below 4 characters, 1 below 8, else 2."""
    if len(term) >= 8:
        return 2
    return 1 if len(term) >= 4 else 0


def _f32(value: float) -> float:
    return float(struct.unpack("f", struct.pack("f", value))[0])


def typo_score(terms: Sequence[str]) -> float | None:
    """The score of a hit that matches every term only by a typo, or None when some
    term has no fuzzy clause (too short to allow an edit).

    Each such term adds exactly ``FUZZY_SCORE`` (summed in f32, as Tantivy does); an
    exact match adds BM25 on top, so no hit scores less, and a best hit scoring this
    (within a few f32 ulps, for the order of the additions) means every hit does.
    """
    if not terms or any(fuzzy_distance(term) == 0 for term in terms):
        return None
    total = 0.0
    for _ in terms:
        total = _f32(total + _f32(FUZZY_SCORE))
    return total


def analyzer() -> tantivy.TextAnalyzer:
    """English product text: words, lower case, accents folded, stop words dropped,
    Porter stems ("kettles" and "kettle" are one term)."""
    return (
        tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple())
        .filter(tantivy.Filter.remove_long(40))
        .filter(tantivy.Filter.lowercase())
        .filter(tantivy.Filter.ascii_fold())
        .filter(tantivy.Filter.stopword("english"))
        .filter(tantivy.Filter.stemmer("english"))
        .build()
    )


@dataclass(frozen=True, slots=True)
class _FieldOrder:
    key: str  # string fast field: the total order
    primary: str  # u64 fast field: its non-strict numeric prefix


_BROWSE = _FieldOrder("id", "id_hi")
_FIELD_ORDERS = {
    SortOrder.PRICE_ASC: _FieldOrder("sk_price_asc", "sp_price_asc"),
    SortOrder.PRICE_DESC: _FieldOrder("sk_price_desc", "sp_price_desc"),
    SortOrder.NEWEST: _FieldOrder("sk_newest", "sp_newest"),
}


def build_schema() -> tantivy.Schema:
    b = tantivy.SchemaBuilder()
    # Raw, exact fields: ids, filters and facets. "basic" postings: no scores needed.
    b.add_text_field("id", stored=True, fast=True, tokenizer_name="raw", index_option="basic")
    b.add_unsigned_field("id_hi", fast=True)
    b.add_unsigned_field("id_lo", fast=True)
    b.add_text_field("brand", stored=True, fast=True, tokenizer_name="raw", index_option="basic")
    b.add_text_field("category", stored=True, fast=True, tokenizer_name="raw", index_option="basic")
    b.add_text_field("category_path", tokenizer_name="raw", index_option="basic")
    b.add_text_field("attr", fast=True, tokenizer_name="raw", index_option="basic")
    b.add_integer_field("price", fast=True)
    # Analysed text: frequencies for BM25, no positions (no phrase queries).
    b.add_text_field("title", stored=True, tokenizer_name=ANALYZER, index_option="freq")
    for name in ("brand_text", "tags", "description"):
        b.add_text_field(name, tokenizer_name=ANALYZER, index_option="freq")
    for order in _FIELD_ORDERS.values():
        b.add_text_field(order.key, fast=True, tokenizer_name="raw", index_option="basic")
        b.add_unsigned_field(order.primary, fast=True)
    return b.build()


def document_json(doc: SearchDoc) -> str:
    """The Tantivy document of ``doc`` as JSON (one ``add_json`` call per product)."""
    hi, lo = id_words(doc.id)
    body: dict[str, Any] = {
        "id": doc.id,
        "id_hi": hi,
        "id_lo": lo,
        "title": doc.title,
        "brand_text": doc.brand,
        # Category words ("home kitchen kettles") and attribute values, searchable text.
        "tags": [doc.category.replace("/", " "), *(value for _, value in doc.attributes)],
        "description": doc.description,
        "category_path": category_prefixes(doc.category),
        "attr": [attribute_term(name, value) for name, value in doc.attributes],
    }
    if doc.brand:
        body["brand"] = doc.brand
    if doc.category:
        body["category"] = doc.category
    if doc.price is not None:
        body["price"] = doc.price
    for name, primary in primaries(doc).items():
        order = _FIELD_ORDERS[SortOrder(name)]
        body[order.primary] = primary
        body[order.key] = sort_key(primary, doc.id)
    return orjson.dumps(body).decode()


def _store_error(action: str, error: Exception) -> Exception:
    """Tantivy raises OSError for I/O and ValueError for everything else it refuses."""
    if isinstance(error, OSError):
        return StoreUnavailable(f"tantivy {action}: {error}")
    message = str(error)
    if "LockBusy" in message:
        return StoreUnavailable(f"tantivy {action}: index is locked by another writer")
    return StoreIntegrityError(f"tantivy {action}: {message}")


class _Counted(Protocol):
    @property
    def hits(self) -> list[tuple[Any, tantivy.DocAddress]]: ...

    @property
    def count(self) -> int: ...


def _counted(result: tantivy.SearchResult) -> _Counted:
    # The stub leaves out ``count``, which the runtime object has (with count=True).
    return cast(_Counted, result)


@dataclass(frozen=True, slots=True)
class _Offset:
    """Relevance pages: how many hits the earlier pages showed."""

    offset: int


@dataclass(frozen=True, slots=True)
class _After:
    """Field-sorted pages: the last hit shown, as (primary, id words), and how many
    shown hits share all three (ids alike in their first 16 bytes; almost always 1)."""

    primary: int
    hi: int
    lo: int
    seen: int


_U64 = 2**64


@dataclass(frozen=True, slots=True)
class _Pools:
    search: ThreadPoolExecutor
    facets: ThreadPoolExecutor
    write: ThreadPoolExecutor


@dataclass(frozen=True, slots=True)
class _Page:
    hits: list[SearchHit]
    total: int
    following: _Offset | _After | None


def _resume(raw: Any) -> _Offset | _After:
    """The position inside a decoded cursor, checked; ValueError when it is not one.
    Positions are short lists, to keep cursors short: [offset] or [k, h, l, seen]."""
    if (
        not isinstance(raw, list)
        or len(raw) not in (1, 4)
        or not all(type(v) is int and 0 <= v < _U64 for v in raw)
    ):
        raise ValueError("invalid cursor")
    if len(raw) == 1:
        return _Offset(raw[0])
    return _After(*raw)


def _cursor_position(position: _Offset | _After) -> list[int]:
    if isinstance(position, _Offset):
        return [position.offset]
    return [position.primary, position.hi, position.lo, position.seen]


class TantivySearchIndex:
    """``SearchIndex`` over a Tantivy index directory. Nothing is opened until first use."""

    def __init__(
        self,
        path: str,
        *,
        writer_heap_bytes: int = 128_000_000,
        writer_threads: int = 0,
        search_threads: int = 2,
        facet_values: int = 100,
    ) -> None:
        if writer_heap_bytes < 15_000_000:
            raise ValueError("writer_heap_bytes must be at least 15 MB")
        if search_threads < 1 or facet_values < 1:
            raise ValueError("search_threads and facet_values must be >= 1")
        self.path = path
        self._heap = writer_heap_bytes
        self._writer_threads = writer_threads
        self._search_threads = search_threads
        self._facet_values = facet_values
        # Pools are made on the event loop, the index opened on a worker: separate locks,
        # so a slow first open never blocks the loop.
        self._lock = threading.Lock()
        self._open_lock = threading.Lock()
        self._index: tantivy.Index | None = None
        self._schema: tantivy.Schema | None = None
        self._analyzer: tantivy.TextAnalyzer | None = None
        self._writer: tantivy.IndexWriter | None = None
        self._dirty = False
        self._pools_made: _Pools | None = None
        self._closed = False

    # --- plumbing ----------------------------------------------------------------------

    def _pools(self) -> _Pools:
        with self._lock:
            if self._closed:
                raise StoreUnavailable(f"search index at {self.path} is closed")
            if self._pools_made is None:
                self._pools_made = _Pools(
                    search=ThreadPoolExecutor(self._search_threads, "tantivy-search"),
                    facets=ThreadPoolExecutor(self._search_threads, "tantivy-facets"),
                    write=ThreadPoolExecutor(1, "tantivy-write"),
                )
            return self._pools_made

    async def _on(self, pool: ThreadPoolExecutor, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(pool, fn)

    async def _read(self, fn: Callable[[], T]) -> T:
        return await self._on(self._pools().search, fn)

    async def _write(self, fn: Callable[[], T]) -> T:
        return await self._on(self._pools().write, fn)

    def _text_analyzer(self) -> tantivy.TextAnalyzer:
        # Building one touches no file, so the event loop may do it (and analyse with it).
        if self._analyzer is None:
            self._analyzer = analyzer()
        return self._analyzer

    def _open(self) -> tantivy.Index:
        with self._open_lock:
            if self._index is not None:
                return self._index
            schema = build_schema()
            try:
                os.makedirs(self.path, exist_ok=True)
                index = tantivy.Index(schema, path=self.path, reuse=True)
                index.register_tokenizer(ANALYZER, self._text_analyzer())
                # Commits are only made by ``refresh``, which also reloads at once; other
                # processes' readers (Serve replicas beside the one indexer) pick a commit
                # up by themselves within about a second, or at their own ``refresh``.
                index.config_reader("OnCommit")
                index.reload()
            except (OSError, ValueError) as error:
                raise _store_error(f"open {self.path}", error) from error
            self._schema, self._index = schema, index
            return index

    def _writer_of(self, index: tantivy.Index) -> tantivy.IndexWriter:
        if self._writer is None:
            try:
                self._writer = index.writer(self._heap, self._writer_threads)
            except (OSError, ValueError) as error:
                raise _store_error("open writer", error) from error
        return self._writer

    # --- writes ------------------------------------------------------------------------

    async def ensure_index(self) -> None:
        await self._write(self._open)

    async def upsert(self, docs: Sequence[SearchDoc]) -> int:
        if not docs:
            return 0
        for doc in docs:
            check_search_doc(doc)
        bodies = [(doc.id, document_json(doc)) for doc in docs]

        def run() -> int:
            writer = self._writer_of(self._open())
            try:
                for product_id, body in bodies:
                    # Replace: the delete applies to every earlier add of this id,
                    # including one queued in this same batch.
                    writer.delete_documents_by_term("id", product_id)
                    writer.add_json(body)
            except (OSError, ValueError) as error:
                raise _store_error("upsert", error) from error
            finally:
                self._dirty = True
            return len(bodies)

        return await self._write(run)

    async def delete(self, product_ids: Sequence[str]) -> int:
        """Queue deletes; returns how many distinct ids were submitted (ids that are
        not in the index are no-ops)."""
        unique = list(dict.fromkeys(product_ids))
        if not unique:
            return 0

        def run() -> int:
            writer = self._writer_of(self._open())
            try:
                for product_id in unique:
                    writer.delete_documents_by_term("id", product_id)
            except (OSError, ValueError) as error:
                raise _store_error("delete", error) from error
            finally:
                self._dirty = True
            return len(unique)

        return await self._write(run)

    async def refresh(self) -> None:
        def run() -> None:
            index = self._open()
            try:
                if self._writer is not None and self._dirty:
                    self._writer.commit()
                    self._dirty = False
                index.reload()
            except (OSError, ValueError) as error:
                raise _store_error("commit", error) from error

        await self._write(run)

    async def clear(self) -> None:
        """Drop every document at once (committed and visible; pending writes too)."""

        def run() -> None:
            index = self._open()
            writer = self._writer_of(index)
            try:
                # delete_all_documents only drops flushed segments: commit what is still
                # in the writer's memory first, or it would survive the clear.
                writer.commit()
                writer.delete_all_documents()
                writer.commit()
                self._dirty = False
                index.reload()
            except (OSError, ValueError) as error:
                raise _store_error("clear", error) from error

        await self._write(run)

    async def count(self) -> int:
        return await self._read(lambda: self._open().searcher().num_docs)

    async def close(self) -> None:
        """Commit pending writes, let merges finish, stop the threads."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            pools = self._pools_made
        if pools is None:
            return

        def finish() -> None:
            writer, self._writer = self._writer, None
            if writer is None:
                return
            try:
                if self._dirty:
                    writer.commit()
                    self._dirty = False
                writer.wait_merging_threads()
            except (OSError, ValueError) as error:
                raise _store_error("close", error) from error

        try:
            await self._on(pools.write, finish)
        finally:
            for pool in (pools.search, pools.facets, pools.write):
                pool.shutdown(wait=True)

    # --- search ------------------------------------------------------------------------

    async def search(self, query: SearchQuery) -> SearchResult:
        validate(query)
        terms = self._terms(query.text)
        # Checked here, not on a worker: a bad cursor is the caller's ValueError.
        position = None
        if query.cursor is not None:
            position = _resume(decode_cursor(BACKEND, query, query.cursor))
            ranked = bool(terms) and query.sort is SortOrder.RELEVANCE
            if isinstance(position, _Offset) and not ranked:
                raise ValueError("invalid cursor")
        pools = self._pools()

        def run() -> SearchResult:
            try:
                return self._search(query, terms, position, pools.facets)
            except (OSError, ValueError) as error:
                raise _store_error("search", error) from error

        return await self._on(pools.search, run)

    def _search(
        self,
        query: SearchQuery,
        terms: list[str],
        position: _Offset | _After | None,
        facet_pool: ThreadPoolExecutor,
    ) -> SearchResult:
        searcher = self._open().searcher()
        matching = self._query(terms, query)
        # Facets and hits are two passes over the same matches: run them side by side
        # (Tantivy releases the GIL), on the same searcher so they agree.
        counting: Future[tuple[dict[str, list[FacetValue]], int]] | None = None
        if query.facets:
            counting = facet_pool.submit(self._facets, searcher, matching)

        def total() -> int:
            if counting is not None:
                return counting.result()[1]
            return _counted(searcher.search(matching, limit=1, count=True)).count

        page: _Page
        if terms and query.sort is SortOrder.RELEVANCE and not isinstance(position, _After):
            start = 0 if position is None else position.offset
            page = self._relevance_page(
                searcher, matching, start, query.limit, typo_score(terms), total
            )
        else:
            # A relevance cursor that is an _After came from a page where every hit tied
            # (see _relevance_page): those continue in id order, with that one score.
            order = _FIELD_ORDERS.get(query.sort, _BROWSE)
            tied = typo_score(terms) if query.sort is SortOrder.RELEVANCE else None
            after = position if isinstance(position, _After) else None
            page = self._field_page(
                searcher, matching, order, after, query.limit, total, tied or 0.0
            )
        facets = {} if counting is None else counting.result()[0]
        next_cursor = (
            None
            if page.following is None
            else encode_cursor(BACKEND, query, _cursor_position(page.following))
        )
        return SearchResult(
            hits=page.hits, total=page.total, facets=facets, next_cursor=next_cursor
        )

    def _terms(self, text: str) -> list[str]:
        if not text.strip():
            return []
        return list(dict.fromkeys(self._text_analyzer().analyze(text)))[:MAX_QUERY_TERMS]

    def _query(self, terms: list[str], query: SearchQuery) -> tantivy.Query:
        schema = self._schema
        assert schema is not None
        Q, Occur = tantivy.Query, tantivy.Occur
        clauses: list[tuple[tantivy.Occur, tantivy.Query]] = []
        for term in terms:
            parts = [
                Q.boost_query(Q.term_query(schema, field, term), boost)
                for field, boost in TEXT_FIELDS
            ]
            distance = fuzzy_distance(term)
            if distance:
                fuzzy = Q.disjunction_max_query(
                    [Q.fuzzy_term_query(schema, field, term, distance) for field, _ in TEXT_FIELDS]
                )
                parts.append(Q.const_score_query(fuzzy, FUZZY_SCORE))
            clauses.append((Occur.Must, Q.boolean_query([(Occur.Should, p) for p in parts])))
        filters: list[tantivy.Query] = []
        if query.category is not None:
            filters.append(Q.term_query(schema, "category_path", category_path(query.category)))
        if query.brands:
            filters.append(Q.term_set_query(schema, "brand", sorted(set(query.brands))))
        for name, values in attribute_filters(query):
            wanted = [attribute_term(name, value) for value in values]
            filters.append(Q.term_set_query(schema, "attr", wanted))
        if query.min_price is not None or query.max_price is not None:
            filters.append(
                Q.range_query(
                    schema,
                    "price",
                    tantivy.FieldType.Integer,
                    lower_bound=query.min_price,
                    upper_bound=query.max_price,
                )
            )
        # Filters decide membership only: a zero constant keeps them out of the score.
        clauses.extend((Occur.Must, Q.const_score_query(f, 0.0)) for f in filters)
        if not clauses:
            return Q.all_query()
        return Q.boolean_query(clauses)

    def _facets(
        self, searcher: tantivy.Searcher, matching: tantivy.Query
    ) -> tuple[dict[str, list[FacetValue]], int]:
        spec = {
            "brand": {"terms": {"field": "brand", "size": FACET_TERMS}},
            "category": {"terms": {"field": "category", "size": FACET_TERMS}},
            "attr": {"terms": {"field": "attr", "size": ATTRIBUTE_FACET_TERMS}},
            # Every document has exactly one id_hi: this counts the matches in the same pass.
            "total": {"value_count": {"field": "id_hi"}},
        }
        result = searcher.aggregate(matching, spec)
        facets = {
            "brand": self._facet_list(result["brand"]["buckets"]),
            "category": self._facet_list(result["category"]["buckets"]),
        }
        by_name: dict[str, list[dict[str, Any]]] = {}
        for bucket in result["attr"]["buckets"]:
            name, value = split_attribute_term(str(bucket["key"]))
            by_name.setdefault(name, []).append({"key": value, "doc_count": bucket["doc_count"]})
        for name in sorted(by_name):
            facets[f"attr.{name}"] = self._facet_list(by_name[name])
        return facets, int(result["total"]["value"])

    def _facet_list(self, buckets: list[dict[str, Any]]) -> list[FacetValue]:
        values = [FacetValue(str(b["key"]), int(b["doc_count"])) for b in buckets]
        values.sort(key=lambda v: (-v.count, v.value))
        return values[: self._facet_values]

    def _after(self, order: _FieldOrder, after: _After) -> tantivy.Query:
        """Hits at or after ``after`` in (primary, id) order, those tied with it on all
        of (primary, id_hi, id_lo) included: the caller skips the ``seen`` of them.

        (primary > k) or (primary = k and id_hi > h) or (primary = k, id_hi = h and
        id_lo >= l): an exact search_after on the first 16 bytes of the id, built from
        fast-field ranges (Tantivy cannot range over strings).
        """
        schema = self._schema
        assert schema is not None
        Q, Occur, u64 = tantivy.Query, tantivy.Occur, tantivy.FieldType.Unsigned

        def between(field: str, low: int, high: int | None = None) -> tantivy.Query:
            return Q.range_query(schema, field, u64, lower_bound=low, upper_bound=high)

        def both(*parts: tantivy.Query) -> tantivy.Query:
            return Q.boolean_query([(Occur.Must, part) for part in parts])

        k, h = after.primary, after.hi
        same_hi = both(between("id_hi", h, h), between("id_lo", after.lo))
        later_hi = [between("id_hi", h + 1)] if h + 1 < _U64 else []
        if order.primary == "id_hi":  # browsing: the primary is id_hi itself
            options = [*later_hi, same_hi]
        else:
            same_primary = between(order.primary, k, k)
            options = [
                between(order.primary, k + 1),
                *(both(same_primary, q) for q in later_hi),
                both(same_primary, same_hi),
            ]
        return Q.boolean_query([(Occur.Should, option) for option in options])

    def _field_page(
        self,
        searcher: tantivy.Searcher,
        matching: tantivy.Query,
        order: _FieldOrder,
        after: _After | None,
        limit: int,
        total_of: Callable[[], int],
        score: float = 0.0,
    ) -> _Page:
        Q, Occur = tantivy.Query, tantivy.Occur
        if after is None:
            narrowed, skip = matching, 0
        else:
            narrowed = Q.boolean_query(
                [(Occur.Must, matching), (Occur.Must, self._after(order, after))]
            )
            # Offsets on a string order cost ~15 us per skipped hit and segment, so
            # they are kept to the few hits sharing a 16-byte id prefix.
            skip = after.seen
        found = _counted(
            searcher.search(
                narrowed,
                limit=limit,
                count=True,
                order_by_field=order.key,
                order=tantivy.Order.Asc,
                offset=skip,
            )
        )
        keys = [str(key) for key, _ in found.hits]
        hits = self._hits(searcher, [a for _, a in found.hits], [score] * len(keys))
        # After a cursor, found.count counts only what is left.
        total = found.count if after is None else total_of()
        if not hits or found.count - skip - len(hits) <= 0:
            return _Page(hits, total, None)
        # The next page starts after the last hit: its primary is the key's number part
        # (browsing: the key is the id and the primary its first word).
        marks = [self._mark(order, key, hit.id) for key, hit in zip(keys, hits, strict=True)]
        last = marks[-1]
        run = 0
        for mark in reversed(marks):
            if mark != last:
                break
            run += 1
        if after is not None and run == len(marks) and last == (after.primary, after.hi, after.lo):
            run += after.seen
        return _Page(hits, total, _After(*last, seen=run))

    @staticmethod
    def _mark(order: _FieldOrder, key: str, product_id: str) -> tuple[int, int, int]:
        hi, lo = id_words(product_id)
        primary = hi if order.primary == "id_hi" else int(key.split("|", 1)[0])
        return primary, hi, lo

    def _relevance_page(
        self,
        searcher: tantivy.Searcher,
        matching: tantivy.Query,
        start: int,
        limit: int,
        tied: float | None,
        total_of: Callable[[], int],
    ) -> _Page:
        end = start + limit
        window = max(end + 1, _TIE_WINDOW)
        while True:
            found = _counted(searcher.search(matching, limit=window, count=True))
            ranked = found.hits
            if start == 0 and tied is not None and ranked and ranked[0][0] <= tied * _ULPS:
                # The best hit only matched typos, so every hit did, all with one score:
                # relevance order is id order, which Tantivy sorts without the tie work.
                # Its cursor is an _After, so the later pages continue in id order.
                return self._field_page(searcher, matching, _BROWSE, None, limit, total_of, tied)
            if len(ranked) <= start:
                return _Page([], found.count, None)
            last = min(end, len(ranked)) - 1
            # Complete once fewer hits came back than asked (all of them), or the window
            # reaches past the tie group of the page's last hit: Tantivy's top-N holds
            # every hit scoring more than its last one, so that group is then whole.
            if len(ranked) < window or ranked[-1][0] < ranked[last][0]:
                break
            window = min(window * _TIE_GROWTH, found.count + 1)
        lo = start
        while lo > 0 and ranked[lo - 1][0] == ranked[start][0]:
            lo -= 1
        hi = last
        while hi + 1 < len(ranked) and ranked[hi + 1][0] == ranked[last][0]:
            hi += 1
        group = ranked[lo : hi + 1]
        ordered = self._by_score_then_id(searcher, group)[start - lo : last - lo + 1]
        hits = self._hits(searcher, [a for _, a in ordered], [s for s, _ in ordered])
        following = None if end >= found.count else _Offset(end)
        return _Page(hits, found.count, following)

    def _by_score_then_id(
        self, searcher: tantivy.Searcher, group: list[tuple[Any, tantivy.DocAddress]]
    ) -> list[tuple[float, tantivy.DocAddress]]:
        addresses = [address for _, address in group]
        his = searcher.fast_field_values("id_hi", addresses)
        los = searcher.fast_field_values("id_lo", addresses)
        words = list(zip(his, los, strict=True))
        # Ids sharing their first 16 bytes: only then is the stored id read.
        shared = {w for w, n in Counter(words).items() if n > 1}
        keyed = [
            (
                -float(score),
                word,
                searcher.doc(address).get_first("id") if word in shared else "",
                index,
            )
            for index, ((score, address), word) in enumerate(zip(group, words, strict=True))
        ]
        keyed.sort()
        return [(float(group[k[3]][0]), group[k[3]][1]) for k in keyed]

    def _hits(
        self,
        searcher: tantivy.Searcher,
        addresses: list[tantivy.DocAddress],
        scores: list[float],
    ) -> list[SearchHit]:
        if not addresses:
            return []
        prices = searcher.fast_field_values("price", addresses)
        hits = []
        for address, score, price in zip(addresses, scores, prices, strict=True):
            stored = searcher.doc(address)
            hits.append(
                SearchHit(
                    id=str(stored.get_first("id")),
                    score=score,
                    title=str(stored.get_first("title") or ""),
                    brand=str(stored.get_first("brand") or ""),
                    category=str(stored.get_first("category") or ""),
                    price=None if price is None else int(price),
                )
            )
        return hits
