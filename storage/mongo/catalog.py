"""Catalog adapter on MongoDB: one document per product, in the ``products`` collection.

A stored product is the caller's document plus the store's own top-level fields
(``storage.catalog_docs.RESERVED_KEYS``), never returned:

- ``_id``: the product id;
- ``_seq``: the change sequence number of its latest write (unique index);
- ``_category_path``: every prefix of the category at a segment boundary
  ("home", "home/kitchen", "home/kitchen/kettles"), multikey-indexed with status and id,
  so a category filter is one equality match that never matches "home/kitchenware";
- ``_skus``: its variants' SKUs, unique across products (absent when it has none, so the
  unique index, partial on ``$exists``, holds no empty keys).

Change sequence. ``counters`` holds ``{_id: "products", seq, pending}``. A writer reserves
a block of numbers per chunk with a compare-and-set on ``seq`` that also records the block
in ``pending``, writes the chunk, then removes the block. Readers of the change feed only
go up to the number before the oldest pending block, so a block that commits after a later
one (writers in other processes) is never skipped by a follower. A block whose write
ended with its outcome unknown (network error, cancellation) stays pending until its lease
runs out, then is ignored: followers wait, they do not skip.

There are no multi-document transactions (they need a replica set): every document of a
call is validated, and SKU ownership checked, before anything is written, so a refused call
writes nothing. A write that fails at the server part way (connection lost, or a concurrent
writer taking a SKU between the check and the write) can leave part of the call written.
Unlike the SQLite adapter, ``put_products`` holds its whole call in memory: callers stream
large loads in batches (``seed_stores`` does).
"""

from __future__ import annotations

import asyncio
import inspect
import random
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import suppress
from typing import Any

import orjson
from motor.motor_asyncio import AsyncIOMotorClient
from pymongo import ReplaceOne
from pymongo.errors import BulkWriteError, DuplicateKeyError

from storage.catalog_docs import (
    RESERVED_KEYS,
    ProductRow,
    check_category,
    check_changes,
    check_merchant,
    page_after,
    prepare,
    sku_taken,
)
from storage.cursors import encode_cursor
from storage.errors import StoreIntegrityError, StoreUnavailable
from storage.mongo.errors import map_mongo_errors
from storage.records import ProductDoc

DEFAULT_DATABASE = "feira"
PRODUCTS = "products"
COUNTERS = "counters"
COUNTER_ID = "products"

# Documents per bulk write (and per block of sequence numbers), and ids or SKUs per $in.
WRITE_CHUNK = 1000
IN_CHUNK = 1000
# How long a reserved block holds the change feed back if its writer never clears it.
# Longer than any one bulk write may take (the client's timeoutMS bounds each operation).
PENDING_LEASE_S = 60.0
RESERVE_ATTEMPTS = 50

CLIENT_OPTIONS: dict[str, Any] = {
    "serverSelectionTimeoutMS": 5_000,
    "connectTimeoutMS": 5_000,
    "timeoutMS": 30_000,
}

# (keys, options) of every index the products collection needs besides _id.
INDEXES: tuple[tuple[list[tuple[str, int]], dict[str, Any]], ...] = (
    ([("status", 1), ("_id", 1)], {"name": "status_id"}),
    ([("_category_path", 1), ("status", 1), ("_id", 1)], {"name": "category_status_id"}),
    ([("merchant_id", 1), ("_id", 1)], {"name": "merchant_id"}),
    (
        [("_skus", 1)],
        {
            "name": "skus_unique",
            "unique": True,
            "partialFilterExpression": {"_skus": {"$exists": True}},
        },
    ),
    ([("_seq", 1)], {"name": "seq_unique", "unique": True}),
)

_HIDDEN = dict.fromkeys(RESERVED_KEYS, 0)
_HIDDEN_BUT_SEQ = {key: 0 for key in RESERVED_KEYS if key != "_seq"}

ClientFactory = Callable[[str], Any]


def default_client(url: str) -> Any:
    return AsyncIOMotorClient(url, **CLIENT_OPTIONS)


def category_path(category: str) -> list[str]:
    """Every prefix of ``category`` that a by-segment filter matches, itself included."""
    path = [category[:index] for index, char in enumerate(category) if char == "/"]
    path.append(category)
    return path


def _stored(row: ProductRow, seq: int) -> dict[str, Any]:
    # From the validated JSON: the store keeps exactly what SQLite would return.
    stored: dict[str, Any] = orjson.loads(row.json)
    stored["_id"] = row.id
    stored["_seq"] = seq
    stored["_category_path"] = category_path(row.category)
    if row.skus:
        stored["_skus"] = row.skus
    return stored


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[start : start + size] for start in range(0, len(items), size)]


class MongoCatalogStore:
    """CatalogStore on MongoDB. Get-by-id returns drafts too (the caller decides
    visibility); only ``list_products`` filters to published."""

    def __init__(
        self,
        url: str,
        database: str = DEFAULT_DATABASE,
        *,
        client_factory: ClientFactory | None = None,
    ) -> None:
        self._url = url
        self._database = database
        self._client_factory = client_factory or default_client
        self._client: Any = None
        self._products: Any = None
        self._counters: Any = None
        self._closed = False
        # Setup (client, indexes) happens once, on first use; asyncio.Lock binds to a
        # loop on first contended use, not here.
        self._setup_lock = asyncio.Lock()
        # One writer at a time per store: blocks are reserved and written in order.
        self._write_lock = asyncio.Lock()

    # --- reads ------------------------------------------------------------------------

    async def get_product(self, product_id: str) -> ProductDoc | None:
        products = await self._collection()
        with map_mongo_errors("catalog store"):
            found: ProductDoc | None = await products.find_one({"_id": product_id}, _HIDDEN)
        return found

    async def get_products(self, product_ids: Sequence[str]) -> dict[str, ProductDoc]:
        unique = list(dict.fromkeys(product_ids))
        if not unique:
            return {}
        products = await self._collection()
        found: dict[str, ProductDoc] = {}
        with map_mongo_errors("catalog store"):
            for chunk in _chunks(unique, IN_CHUNK):
                async for doc in products.find({"_id": {"$in": chunk}}, _HIDDEN):
                    found[doc["id"]] = doc
        return found

    async def product_for_sku(self, sku: str) -> ProductDoc | None:
        products = await self._collection()
        with map_mongo_errors("catalog store"):
            # $exists restates the partial index's filter, so the planner may use it.
            found: ProductDoc | None = await products.find_one(
                {"_skus": {"$eq": sku, "$exists": True}}, _HIDDEN
            )
        return found

    async def list_products(
        self, *, category: str | None, cursor: str | None, limit: int
    ) -> tuple[list[ProductDoc], str | None]:
        after = page_after(cursor, limit)
        category = check_category(category)
        query: dict[str, Any] = {"status": "published", "_id": {"$gt": after}}
        if category is not None:
            query["_category_path"] = category
        return await self._page(query, limit)

    async def list_merchant_products(
        self, merchant_id: str, *, status: str | None, cursor: str | None, limit: int
    ) -> tuple[list[ProductDoc], str | None]:
        check_merchant(merchant_id, status)
        after = page_after(cursor, limit)
        query: dict[str, Any] = {"merchant_id": merchant_id, "_id": {"$gt": after}}
        if status is not None:
            query["status"] = status
        return await self._page(query, limit)

    async def changes_since(self, after_seq: int, limit: int) -> list[tuple[int, ProductDoc]]:
        check_changes(after_seq, limit)
        products = await self._collection()
        with map_mongo_errors("catalog store"):
            ceiling = await self._ceiling()
            if ceiling <= after_seq:
                return []
            found = (
                await products.find({"_seq": {"$gt": after_seq, "$lte": ceiling}}, _HIDDEN_BUT_SEQ)
                .sort("_seq", 1)
                .limit(limit)
                .to_list(None)
            )
        return [(int(doc.pop("_seq")), doc) for doc in found]

    async def last_seq(self) -> int:
        """The newest sequence number of a completed write (so ``changes_since`` of
        anything below it is not empty); numbers reserved by failed writes are skipped."""
        products = await self._collection()
        with map_mongo_errors("catalog store"):
            ceiling = await self._ceiling()
            if ceiling == 0:
                return 0
            newest = await products.find_one(
                {"_seq": {"$lte": ceiling}}, {"_id": 0, "_seq": 1}, sort=[("_seq", -1)]
            )
        return 0 if newest is None else int(newest["_seq"])

    async def count_products(self) -> int:
        """All stored products, drafts included."""
        products = await self._collection()
        with map_mongo_errors("catalog store"):
            return int(await products.count_documents({}))

    # --- writes -----------------------------------------------------------------------

    async def put_products(self, docs: Iterable[ProductDoc]) -> int:
        # Everything is validated before anything is written (no transactions here).
        rows = [prepare(doc) for doc in docs]
        if not rows:
            return 0
        final: dict[str, ProductRow] = {}
        for row in rows:
            # The same id twice: the later document wins, and is written once.
            final.pop(row.id, None)
            final[row.id] = row
        products = await self._collection()
        async with self._write_lock:
            with map_mongo_errors("catalog store"):
                givers = await self._check_skus(products, final)
                for holder, keep in givers.items():
                    # Give the moving SKUs up first, so no write trips the unique index.
                    change = {"$set": {"_skus": keep}} if keep else {"$unset": {"_skus": ""}}
                    await products.update_one({"_id": holder}, change)
                for chunk in _chunks(list(final.values()), WRITE_CHUNK):
                    await self._write_chunk(products, chunk)
        return len(rows)

    async def _check_skus(
        self, products: Any, final: dict[str, ProductRow]
    ) -> dict[str, list[str]]:
        """Refuse the call if afterwards a SKU would belong to two products. Returns the
        stored products of the call that give SKUs to others, with the SKUs they keep
        until rewritten."""
        claimed: dict[str, str] = {}
        for row in final.values():
            for sku in row.skus:
                other = claimed.setdefault(sku, row.id)
                if other != row.id:
                    raise sku_taken(sku, row.id, other)
        givers: dict[str, list[str]] = {}
        for chunk in _chunks(list(claimed), IN_CHUNK):
            query = {"_skus": {"$in": chunk, "$exists": True}}
            async for held in products.find(query, {"_skus": 1}):
                holder = held["_id"]
                for sku in held["_skus"]:
                    claimant = claimed.get(sku)
                    if claimant is None or claimant == holder:
                        continue
                    if holder not in final:
                        raise sku_taken(sku, claimant, holder)
                    # The holder is rewritten by this call without the SKU.
                    givers[holder] = [s for s in held["_skus"] if claimed.get(s) in (None, holder)]
        return givers

    async def _write_chunk(self, products: Any, chunk: list[ProductRow]) -> None:
        first, token = await self._reserve(len(chunk))
        writes = [
            ReplaceOne({"_id": row.id}, _stored(row, seq), upsert=True)
            for seq, row in enumerate(chunk, first)
        ]
        try:
            await products.bulk_write(writes, ordered=False)
        except BulkWriteError:
            # The server answered for every document: nothing is in flight any more.
            await self._release(token)
            raise
        except OverflowError as exc:
            # An integer beyond int64 (JSON allows it, BSON does not), found while
            # encoding, before this chunk was sent.
            await self._release(token)
            raise StoreIntegrityError(f"catalog store: {exc}") from exc
        # Any other failure leaves the outcome unknown: the block stays pending until its
        # lease runs out, so a follower cannot move past writes that may still land.
        await self._release(token)

    async def _reserve(self, count: int) -> tuple[int, str]:
        """Reserve ``count`` sequence numbers; returns the first and the block's token."""
        counters = self._counters
        for attempt in range(RESERVE_ATTEMPTS):
            current = await counters.find_one({"_id": COUNTER_ID})
            if current is None:
                # Another writer may create it first; either way it exists now.
                with suppress(DuplicateKeyError):
                    await counters.insert_one({"_id": COUNTER_ID, "seq": 0, "pending": []})
                continue
            last = int(current["seq"])
            now = time.time()
            token = secrets.token_hex(8)
            block = {"token": token, "first": last + 1, "until": now + PENDING_LEASE_S}
            done = await counters.update_one(
                {"_id": COUNTER_ID, "seq": last},
                {"$inc": {"seq": count}, "$push": {"pending": block}},
            )
            if done.modified_count == 1:
                if any(entry["until"] < now for entry in current.get("pending", [])):
                    await counters.update_one(
                        {"_id": COUNTER_ID}, {"$pull": {"pending": {"until": {"$lt": now}}}}
                    )
                return last + 1, token
            # Another process reserved in between: read again, after a short random pause.
            await asyncio.sleep(random.uniform(0, min(0.1, 0.002 * 2**attempt)))
        raise StoreUnavailable("catalog store: the change counter stayed contended; retry")

    async def _release(self, token: str) -> None:
        await self._counters.update_one(
            {"_id": COUNTER_ID}, {"$pull": {"pending": {"token": token}}}
        )

    async def _ceiling(self) -> int:
        """The highest sequence number below every block still being written."""
        current = await self._counters.find_one({"_id": COUNTER_ID})
        if current is None:
            return 0
        now = time.time()
        live = [entry["first"] for entry in current.get("pending", []) if entry["until"] >= now]
        return min(live) - 1 if live else int(current["seq"])

    # --- plumbing ---------------------------------------------------------------------

    async def _page(self, query: dict[str, Any], limit: int) -> tuple[list[ProductDoc], str | None]:
        products = await self._collection()
        with map_mongo_errors("catalog store"):
            # One extra document says whether another page exists.
            found = (
                await products.find(query, _HIDDEN).sort("_id", 1).limit(limit + 1).to_list(None)
            )
        page: list[ProductDoc] = found[:limit]
        next_cursor = encode_cursor(page[-1]["id"]) if len(found) > limit else None
        return page, next_cursor

    async def _collection(self) -> Any:
        """The products collection, once the client exists and the indexes are built."""
        if self._closed:
            raise StoreUnavailable("catalog store is closed")
        if self._products is not None:
            return self._products
        async with self._setup_lock:
            if self._closed:
                raise StoreUnavailable("catalog store is closed")
            if self._products is None:
                with map_mongo_errors("catalog store"):
                    if self._client is None:
                        self._client = self._client_factory(self._url)
                    database = self._client[self._database]
                    products = database[PRODUCTS]
                    for keys, options in INDEXES:
                        await products.create_index(keys, **options)
                self._counters = database[COUNTERS]
                self._products = products
        return self._products

    async def close(self) -> None:
        """Close the client; later calls raise StoreUnavailable. Idempotent."""
        self._closed = True
        client, self._client = self._client, None
        self._products = self._counters = None
        if client is not None:
            closing = client.close()
            if inspect.isawaitable(closing):
                await closing
