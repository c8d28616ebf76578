"""``ElasticSearchIndex`` against a recording fake at the client's node seam.

The client is a real ``AsyncElasticsearch``; only its HTTP node is replaced, so what is
asserted is what would go on the wire: method, path, headers and the exact body bytes.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import orjson
import pytest
from elastic_transport import (
    ApiResponseMeta,
    BaseAsyncNode,
    ConnectionError,
    ConnectionTimeout,
    HttpHeaders,
)
from elastic_transport._node._base import NodeApiResponse
from elasticsearch import AsyncElasticsearch

from storage.errors import StoreIntegrityError, StoreUnavailable
from storage.records import SearchQuery, SortOrder
from storage.search import elastic
from storage.search.cursor import encode_cursor
from storage.search.elastic import ElasticSearchIndex
from storage.search.elastic_bodies import (
    bulk_delete_body,
    bulk_upsert_body,
    index_body,
    search_body,
)
from tests.search.corpus import hand
from tests.search.test_elastic_bodies import recorded

JSON8 = "application/vnd.elasticsearch+json; compatible-with=8"
NDJSON8 = "application/vnd.elasticsearch+x-ndjson; compatible-with=8"
URL = "http://es.test:9200"


@dataclass
class Sent:
    method: str
    target: str
    body: bytes | None
    headers: dict[str, str]

    def json(self) -> Any:
        assert self.body is not None
        return orjson.loads(self.body)


@dataclass
class Script:
    """Canned answers, in order; each is (status, recorded file or body) or an exception."""

    answers: list[tuple[int, Any] | Exception] = field(default_factory=list)
    sent: list[Sent] = field(default_factory=list)
    product: str = "Elasticsearch"  # the X-Elastic-Product header of every answer

    def answer(self, status: int, body: Any = None) -> Script:
        if isinstance(body, str) and body.endswith(".json"):
            body = recorded(body)
        self.answers.append((status, body))
        return self

    def fail(self, error: Exception) -> Script:
        self.answers.append(error)
        return self

    def calls(self) -> list[tuple[str, str]]:
        return [(s.method, s.target) for s in self.sent]


class RecordingNode(BaseAsyncNode):
    script: ClassVar[Script]

    async def perform_request(  # type: ignore[override]
        self,
        method: str,
        target: str,
        body: bytes | None = None,
        headers: HttpHeaders | None = None,
        request_timeout: Any = None,
    ) -> NodeApiResponse:
        script = type(self).script
        script.sent.append(Sent(method, target, body, dict(headers or {})))
        if not script.answers:
            raise AssertionError(f"unexpected request {method} {target}")
        answer = script.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        status, payload = answer
        meta = ApiResponseMeta(
            status=status,
            http_version="1.1",
            headers=HttpHeaders(
                {
                    "content-type": "application/vnd.elasticsearch+json;compatible-with=8",
                    "x-elastic-product": script.product,
                }
            ),
            duration=0.001,
            node=self.config,
        )
        raw = b"" if payload is None or method == "HEAD" else json.dumps(payload).encode()
        return NodeApiResponse(meta, raw)

    async def close(self) -> None:  # type: ignore[override]
        return None


@pytest.fixture
def script() -> Iterator[Script]:
    RecordingNode.script = Script()
    yield RecordingNode.script
    assert not RecordingNode.script.answers, "some canned answers were never asked for"


@pytest.fixture
async def index(script: Script) -> AsyncIterator[ElasticSearchIndex]:
    client = AsyncElasticsearch(URL, node_class=RecordingNode, max_retries=0)
    adapter = ElasticSearchIndex(URL, client=client)
    yield adapter
    await adapter.close()
    await client.close()


def only(script: Script) -> Sent:
    (sent,) = script.sent
    return sent


# --------------------------------------------------------------------------- lifecycle


async def test_nothing_connects_before_first_use(script: Script) -> None:
    adapter = ElasticSearchIndex(URL, client_options={"node_class": RecordingNode})
    assert script.sent == []
    script.answer(200, "count.json")
    assert await adapter.count() == 2212
    assert script.calls() == [("GET", "/feira-products/_count")]
    await adapter.close()
    with pytest.raises(StoreUnavailable, match="closed"):
        await adapter.count()


async def test_ensure_index_creates_it_with_the_mapping(
    index: ElasticSearchIndex, script: Script
) -> None:
    script.answer(404).answer(200, "index_created.json")
    await index.ensure_index()
    head, put = script.sent
    assert (head.method, head.target, head.body) == ("HEAD", "/feira-products", None)
    assert (put.method, put.target) == ("PUT", "/feira-products")
    assert put.json() == index_body(shards=1, replicas=1)
    assert put.headers["content-type"] == JSON8
    assert put.headers["accept"] == JSON8


async def test_ensure_index_leaves_an_existing_index(
    index: ElasticSearchIndex, script: Script
) -> None:
    script.answer(200)
    await index.ensure_index()
    assert script.calls() == [("HEAD", "/feira-products")]


async def test_ensure_index_accepts_losing_a_creation_race(
    index: ElasticSearchIndex, script: Script
) -> None:
    script.answer(404).answer(400, "index_exists.json")
    await index.ensure_index()
    assert script.calls() == [("HEAD", "/feira-products"), ("PUT", "/feira-products")]


async def test_clear_recreates_the_index(index: ElasticSearchIndex, script: Script) -> None:
    script.answer(200, "acknowledged.json").answer(200, "index_created.json")
    await index.clear()
    assert script.calls() == [("DELETE", "/feira-products"), ("PUT", "/feira-products")]
    assert script.sent[1].json() == index_body()


async def test_refresh_and_count(index: ElasticSearchIndex, script: Script) -> None:
    script.answer(200, "refresh.json").answer(200, "count.json")
    await index.refresh()
    assert await index.count() == 2212
    assert script.calls() == [
        ("POST", "/feira-products/_refresh"),
        ("GET", "/feira-products/_count"),
    ]


# --------------------------------------------------------------------------- writes


async def test_upsert_sends_one_bulk_of_index_actions(
    index: ElasticSearchIndex, script: Script
) -> None:
    docs = [hand("p-1", "Oak Settle"), hand("p-2", "Mystery Box", price=None)]
    script.answer(200, {"errors": False, "took": 3, "items": []})
    assert await index.upsert(docs) == 2
    sent = only(script)
    assert (sent.method, sent.target) == ("POST", "/_bulk")
    assert sent.body == bulk_upsert_body("feira-products", docs)
    assert sent.headers["content-type"] == NDJSON8
    assert sent.headers["accept"] == JSON8


async def test_large_upserts_are_split(
    index: ElasticSearchIndex, script: Script, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(elastic, "BULK_DOCS", 2)
    docs = [hand(f"p-{n}", "Stool") for n in range(5)]
    for _ in range(3):
        script.answer(200, {"errors": False, "took": 1, "items": []})
    assert await index.upsert(docs) == 5
    assert [s.body for s in script.sent] == [
        bulk_upsert_body("feira-products", docs[0:2]),
        bulk_upsert_body("feira-products", docs[2:4]),
        bulk_upsert_body("feira-products", docs[4:5]),
    ]


async def test_a_refused_document_is_an_integrity_error(
    index: ElasticSearchIndex, script: Script
) -> None:
    script.answer(200, "bulk_one_error.json")
    with pytest.raises(StoreIntegrityError, match="p-0000002"):
        await index.upsert([hand("p-0000001", "A"), hand("p-0000002", "B"), hand("p-3", "C")])


async def test_delete_sends_delete_actions(index: ElasticSearchIndex, script: Script) -> None:
    script.answer(200, "bulk_deletes.json")
    assert await index.delete(["p-0000001", "p-9999999", "p-0000001"]) == 2
    sent = only(script)
    assert sent.body == bulk_delete_body("feira-products", ["p-0000001", "p-9999999"])
    assert sent.headers["content-type"] == NDJSON8


async def test_refused_documents_are_not_sent(index: ElasticSearchIndex, script: Script) -> None:
    with pytest.raises(StoreIntegrityError, match="price"):
        await index.upsert([hand("p-1", "Fine"), hand("p-2", "Negative", price=-5)])
    assert script.sent == []


async def test_empty_writes_send_nothing(index: ElasticSearchIndex, script: Script) -> None:
    assert await index.upsert([]) == 0
    assert await index.delete([]) == 0
    assert script.sent == []


# --------------------------------------------------------------------------- search


async def test_search_sends_the_body_and_pages_with_search_after(
    index: ElasticSearchIndex, script: Script
) -> None:
    query = SearchQuery(category="home", sort=SortOrder.PRICE_ASC, limit=2, facets=False)
    script.answer(200, "search_price_asc_page.json").answer(200, "search_last_page.json")

    first = await index.search(query)
    assert [h.id for h in first.hits] == ["p-0000753", "p-0000977"]
    assert first.total == 2212
    assert first.next_cursor is not None

    second = await index.search(replace(query, cursor=first.next_cursor))
    assert [h.id for h in second.hits] == ["h-noprice"]
    assert second.next_cursor is None

    one, two = script.sent
    assert (one.method, one.target) == ("POST", "/feira-products/_search")
    assert one.json() == search_body(query)
    assert two.json() == search_body(query, search_after=[2599, "p-0000977"])
    assert one.headers["content-type"] == JSON8


async def test_search_with_facets(index: ElasticSearchIndex, script: Script) -> None:
    query = SearchQuery(text="kettle", limit=2)
    script.answer(200, "search_relevance_facets.json")
    result = await index.search(query)
    assert only(script).json() == search_body(query)
    assert [h.id for h in result.hits] == ["p-0000035", "p-0000064"]
    assert set(result.facets) == {
        "brand",
        "category",
        "attr.color",
        "attr.material",
        "attr.size",
        "attr.wattage",
    }


async def test_bad_input_never_reaches_the_server(
    index: ElasticSearchIndex, script: Script
) -> None:
    for query in (
        SearchQuery(limit=0),
        SearchQuery(min_price=5, max_price=1),
        SearchQuery(cursor="nonsense"),
    ):
        with pytest.raises(ValueError):  # noqa: PT011 - each has its own message
            await index.search(query)
    assert script.sent == []


async def test_a_cursor_from_another_backend_is_refused(
    index: ElasticSearchIndex, script: Script
) -> None:
    query = SearchQuery(sort=SortOrder.PRICE_ASC)
    cursor = encode_cursor("tantivy", query, [1, 2, 3, 4])
    with pytest.raises(ValueError, match="different query"):
        await index.search(replace(query, cursor=cursor))
    assert script.sent == []


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "error",
    [ConnectionError("connection refused"), ConnectionTimeout("read timed out")],
)
async def test_transport_failures_are_store_unavailable(
    index: ElasticSearchIndex, script: Script, error: Exception
) -> None:
    script.fail(error)
    with pytest.raises(StoreUnavailable, match="elasticsearch"):
        await index.search(SearchQuery())


@pytest.mark.parametrize("status", [429, 502, 503, 504])
async def test_overload_is_store_unavailable(
    index: ElasticSearchIndex, script: Script, status: int
) -> None:
    script.answer(status, {"error": {"type": "x", "reason": "busy"}, "status": status})
    with pytest.raises(StoreUnavailable, match=str(status)):
        await index.refresh()


async def test_a_missing_index_is_store_unavailable(
    index: ElasticSearchIndex, script: Script
) -> None:
    script.answer(404, "index_not_found.json")
    with pytest.raises(StoreUnavailable, match="ensure_index"):
        await index.search(SearchQuery())


async def test_a_refused_request_is_an_integrity_error(
    index: ElasticSearchIndex, script: Script
) -> None:
    script.answer(400, "search_bad_request.json")
    with pytest.raises(StoreIntegrityError, match="search_phase_execution_exception"):
        await index.search(SearchQuery())


async def test_a_failed_creation_is_an_integrity_error(
    index: ElasticSearchIndex, script: Script
) -> None:
    script.answer(404).answer(400, "search_bad_request.json")
    with pytest.raises(StoreIntegrityError, match="PUT /feira-products"):
        await index.ensure_index()


async def test_an_answer_of_the_wrong_shape_is_store_unavailable(
    index: ElasticSearchIndex, script: Script
) -> None:
    script.answer(200, {"unexpected": True}).answer(200, ["not", "a", "search"])
    with pytest.raises(StoreUnavailable, match="unexpected response"):
        await index.count()
    with pytest.raises(StoreUnavailable, match="unexpected response"):
        await index.search(SearchQuery())


async def test_a_server_that_is_not_elasticsearch_is_store_unavailable(
    index: ElasticSearchIndex, script: Script
) -> None:
    script.product = "SomethingElse"
    script.answer(200, "count.json")
    with pytest.raises(StoreUnavailable, match="not Elasticsearch"):
        await index.count()


def test_only_known_compatibility_modes() -> None:
    with pytest.raises(ValueError, match="compatible_with"):
        ElasticSearchIndex(URL, compatible_with=7)


async def test_compatible_with_9_sets_those_headers(script: Script) -> None:
    client = AsyncElasticsearch(URL, node_class=RecordingNode, max_retries=0)
    adapter = ElasticSearchIndex(URL, "other", client=client, compatible_with=9)
    script.answer(200, "refresh.json")
    await adapter.refresh()
    await client.close()
    sent = only(script)
    assert sent.target == "/other/_refresh"
    assert sent.headers["accept"] == JSON8.replace("8", "9")
