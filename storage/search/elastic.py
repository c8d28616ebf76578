"""Product search on Elasticsearch: the production ``SearchIndex``.

Sends exactly the bodies ``storage.search.elastic_bodies`` builds, through
``AsyncElasticsearch.perform_request``, and maps every driver error to the project's
own: transport failures, timeouts and overload (429, 502-504) to StoreUnavailable, a
request the server refuses to StoreIntegrityError.

Client and server versions: the ``elasticsearch`` 9.x client marks every request
``compatible-with=9``, which 8.x servers refuse ("Invalid media-type value"). This
adapter sets the Accept and Content-Type headers itself to ``compatible-with=8``
(``compatible_with``), which 8.x servers accept and 9.x servers answer in their 8.x
REST-compatible form, so the same client works against both; the bodies use nothing
that differs between the two. A ``compatible_with=9`` setting drops 8.x support.

Writes (``_bulk``) are not refreshed by themselves: ``refresh`` makes them searchable,
like the Tantivy backend. ``clear`` deletes and recreates the index at once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, TypeVar

from elastic_transport import ConnectionError as TransportConnectionError
from elastic_transport import ConnectionTimeout, TransportError
from elasticsearch import ApiError, AsyncElasticsearch, UnsupportedProductError

from storage.errors import StoreIntegrityError, StoreUnavailable
from storage.records import SearchDoc, SearchQuery, SearchResult
from storage.search.cursor import decode_cursor, encode_cursor
from storage.search.documents import check_search_doc
from storage.search.elastic_bodies import (
    bulk_delete_body,
    bulk_upsert_body,
    check_bulk,
    check_search_after,
    index_body,
    parse_search,
    search_body,
)
from storage.search.query import validate

T = TypeVar("T")

BACKEND = "elasticsearch"
# Bulk requests are split so none grows past a few MB.
BULK_DOCS = 1_000
_RETRYABLE_STATUS = frozenset({408, 429, 502, 503, 504})


def _media(kind: str, major: int) -> str:
    return f"application/vnd.elasticsearch+{kind}; compatible-with={major}"


class ElasticSearchIndex:
    """``SearchIndex`` on one Elasticsearch index. Nothing connects until first use.

    ``client`` injects a ready ``AsyncElasticsearch`` (tests pass one with a fake node
    class); it is then not closed by ``close``. ``client_options`` go to the client this
    adapter builds otherwise (``basic_auth``, ``ca_certs``, ...).
    """

    def __init__(
        self,
        url: str,
        index: str = "feira-products",
        *,
        client: AsyncElasticsearch | None = None,
        client_options: Mapping[str, Any] | None = None,
        compatible_with: int = 8,
        request_timeout: float = 10.0,
        shards: int = 1,
        replicas: int = 1,
        facet_values: int = 100,
    ) -> None:
        if compatible_with not in (8, 9):
            raise ValueError(f"compatible_with must be 8 or 9, got {compatible_with}")
        self.url = url
        self.index = index
        self._client = client
        self._owns_client = client is None
        self._closed = False
        self._client_options = dict(client_options or {})
        self._timeout = request_timeout
        self._shards = shards
        self._replicas = replicas
        self._facet_values = facet_values
        self._json = {
            "accept": _media("json", compatible_with),
            "content-type": _media("json", compatible_with),
        }
        self._ndjson = {
            "accept": _media("json", compatible_with),
            "content-type": _media("x-ndjson", compatible_with),
        }

    # --- plumbing ----------------------------------------------------------------------

    def _connection(self) -> AsyncElasticsearch:
        if self._closed:
            raise StoreUnavailable(f"search index {self.index} at {self.url} is closed")
        if self._client is None:
            self._client = AsyncElasticsearch(
                self.url, request_timeout=self._timeout, **self._client_options
            )
        return self._client

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, Any] | None = None,
        ndjson: bool = False,
        allow: frozenset[int] = frozenset(),
    ) -> tuple[int, Any]:
        """One request; returns (status, body). Statuses in ``allow`` are answers, not
        errors (a 404 from ``HEAD /<index>`` says the index does not exist)."""
        client = self._connection()
        try:
            response = await client.perform_request(
                method,
                path,
                params=params,
                headers=self._ndjson if ndjson else self._json,
                body=body,
            )
        except UnsupportedProductError as error:
            raise StoreUnavailable(f"{self.url} is not Elasticsearch") from error
        except ApiError as error:
            if error.meta.status in allow:
                return error.meta.status, error.body
            raise self._api_error(method, path, error) from error
        except (TransportConnectionError, ConnectionTimeout) as error:
            raise StoreUnavailable(f"elasticsearch {self.url}: {error}") from error
        except TransportError as error:
            raise StoreUnavailable(f"elasticsearch {method} {path}: {error}") from error
        return response.meta.status, response.body

    def _answer(self, read: Callable[[Any], T], body: Any) -> T:
        """``read(body)``; a body not shaped like Elasticsearch's answer (a proxy's error
        page, a wrong server) is StoreUnavailable rather than a crash."""
        try:
            return read(body)
        except (KeyError, TypeError, AttributeError, ValueError) as error:
            raise StoreUnavailable(
                f"elasticsearch {self.url}: unexpected response: {str(body)[:200]}"
            ) from error

    def _api_error(self, method: str, path: str, error: ApiError) -> Exception:
        status = error.meta.status
        what = f"elasticsearch {method} {path} -> {status}: {error.message}"
        if status in _RETRYABLE_STATUS or status >= 500:
            return StoreUnavailable(what)
        if status in (401, 403):
            return StoreUnavailable(f"{what} (check the credentials)")
        if status == 404:
            return StoreUnavailable(f"{what} (run ensure_index first)")
        return StoreIntegrityError(what)

    # --- SearchIndex -------------------------------------------------------------------

    async def ensure_index(self) -> None:
        status, _ = await self._call("HEAD", f"/{self.index}", allow=frozenset({404}))
        if status == 200:
            return
        await self._create()

    async def _create(self) -> None:
        status, body = await self._call(
            "PUT",
            f"/{self.index}",
            body=index_body(shards=self._shards, replicas=self._replicas),
            allow=frozenset({400}),
        )
        if status == 400:
            # Another process created it between our HEAD and PUT: that is success.
            kind = body.get("error", {}).get("type") if isinstance(body, dict) else None
            if kind != "resource_already_exists_exception":
                raise StoreIntegrityError(f"elasticsearch PUT /{self.index} -> 400: {body}")

    async def upsert(self, docs: Sequence[SearchDoc]) -> int:
        for doc in docs:
            check_search_doc(doc)
        for start in range(0, len(docs), BULK_DOCS):
            chunk = list(docs[start : start + BULK_DOCS])
            _, body = await self._call(
                "POST", "/_bulk", body=bulk_upsert_body(self.index, chunk), ndjson=True
            )
            self._answer(check_bulk, body)
        return len(docs)

    async def delete(self, product_ids: Sequence[str]) -> int:
        """Returns how many distinct ids were submitted (missing ones are no-ops)."""
        unique = list(dict.fromkeys(product_ids))
        for start in range(0, len(unique), BULK_DOCS):
            chunk = unique[start : start + BULK_DOCS]
            _, body = await self._call(
                "POST", "/_bulk", body=bulk_delete_body(self.index, chunk), ndjson=True
            )
            self._answer(check_bulk, body)
        return len(unique)

    async def refresh(self) -> None:
        await self._call("POST", f"/{self.index}/_refresh")

    async def search(self, query: SearchQuery) -> SearchResult:
        validate(query)
        after = None
        if query.cursor is not None:
            after = check_search_after(query, decode_cursor(BACKEND, query, query.cursor))
        body = search_body(query, search_after=after, facet_values=self._facet_values)
        _, response = await self._call("POST", f"/{self.index}/_search", body=body)
        result, following = self._answer(
            lambda r: parse_search(r, query.limit, self._facet_values), response
        )
        if following is None:
            return result
        return replace(result, next_cursor=encode_cursor(BACKEND, query, following))

    async def count(self) -> int:
        _, body = await self._call("GET", f"/{self.index}/_count")
        return self._answer(lambda b: int(b["count"]), body)

    async def clear(self) -> None:
        await self._call("DELETE", f"/{self.index}", allow=frozenset({404}))
        await self._create()

    async def drop(self) -> None:
        """Delete the whole index, mapping included (test teardown, decommissioning)."""
        await self._call("DELETE", f"/{self.index}", allow=frozenset({404}))

    async def close(self) -> None:
        self._closed = True
        client, self._client = self._client, None
        if client is not None and self._owns_client:
            await client.close()
