"""Per-request metrics: latency, status and problem code, with low-cardinality labels.

:class:`RequestMetrics` is an ASGI layer just inside :class:`api.request_context.RequestContext`,
so it times everything Feira does with a request, refusals by the rate limit, the WAF and
the route table included. It reports each finished request to a :class:`RequestSink`
(``deployments.metrics.RayRequestMetrics`` in a replica; :class:`InMemoryRequestSink` in
tests) with:

* ``route``: the route *template* of the request's row in ``api.access.TABLE``
  (``/v1/carts/{cart_id}``), never the raw path; a request that matches no row (or only
  with another method) is :data:`UNMATCHED`;
* ``method``: one of :data:`METHODS`, else ``OTHER`` (a client may send any token);
* ``status``: the HTTP status sent; 500 (code ``unhandled``) when the app failed before
  answering, 499 (code ``cancelled``) when the request was cancelled before an answer;
* ``code``: for an error (status >= 400), the problem's ``code`` member. Every Feira error
  is ``application/problem+json`` built in one place (``api/problems.py``), so the code is
  read from the answer's (small) body as it goes out, for error answers only, rather than
  asking every place that refuses to report it; a body that is not a problem, too big or
  without a sane code is :data:`UNKNOWN_CODE`. None for a success.

Recording must be cheap: the route lookup is the one the access table already does, and a
successful answer costs two ``perf_counter`` calls and the sink.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.access import TABLE, RouteTable, route_path

UNMATCHED = "unmatched"
UNKNOWN_CODE = "unknown"
UNHANDLED_CODE = "unhandled"
CANCELLED_CODE = "cancelled"
# nginx's "client closed request": the request ended before any answer was sent.
CLIENT_CLOSED = 499
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD = "OTHER"
# Problem bodies are a few hundred bytes; a bigger error body is not read for its code.
MAX_PROBLEM_BYTES = 16 * 1024
_SAFE_CODE = re.compile(r"[a-z][a-z0-9_]{0,63}")
_PROBLEM = b"application/problem+json"


class RequestSink(Protocol):
    def request_done(
        self, route: str, method: str, status: int, code: str | None, seconds: float
    ) -> None:
        """One request answered. Must be cheap and must not raise."""


def status_class(status: int) -> str:
    return f"{status // 100}xx" if 100 <= status < 600 else "other"


def route_label(table: RouteTable, method: str, path: str) -> str:
    rule, _ = table.find(method, path)
    return rule.path if rule is not None else UNMATCHED


def method_label(method: str) -> str:
    return method if method in METHODS else OTHER_METHOD


def problem_code(body: bytes) -> str:
    """The ``code`` of a problem+json body; :data:`UNKNOWN_CODE` if there is none."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return UNKNOWN_CODE
    code = document.get("code") if isinstance(document, dict) else None
    return code if isinstance(code, str) and _SAFE_CODE.fullmatch(code) else UNKNOWN_CODE


class RequestMetrics:
    def __init__(self, app: ASGIApp, sink: RequestSink, table: RouteTable = TABLE) -> None:
        self.app = app
        self.sink = sink
        self.table = table

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 0
        problem: bytearray | None = None  # the error body, while it is being sent
        complete = False

        async def observed(message: Message) -> None:
            nonlocal status, problem, complete
            kind = message["type"]
            if kind == "http.response.start":
                status = int(message["status"])
                if status >= 400 and _is_problem(message.get("headers", ())):
                    problem = bytearray()
            elif kind == "http.response.body" and problem is not None and not complete:
                problem += message.get("body", b"")
                if len(problem) > MAX_PROBLEM_BYTES:
                    problem, complete = None, True
                elif not message.get("more_body", False):
                    complete = True
            await send(message)

        try:
            await self.app(scope, receive, observed)
        except asyncio.CancelledError:
            # The client went away (or the server is stopping) before the answer.
            if status == 0:
                self._done(scope, CLIENT_CLOSED, CANCELLED_CODE, start)
            else:
                self._done(scope, status, _code(status, problem, complete), start)
            raise
        except Exception:
            if status == 0:
                self._done(scope, 500, UNHANDLED_CODE, start)
            else:
                self._done(scope, status, _code(status, problem, complete), start)
            raise
        self._done(scope, status or 500, _code(status or 500, problem, complete), start)

    def _done(self, scope: Scope, status: int, code: str | None, start: float) -> None:
        seconds = time.perf_counter() - start
        method: str = scope["method"]
        route = route_label(self.table, method, route_path(scope))
        self.sink.request_done(route, method_label(method), status, code, seconds)


def _is_problem(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name.lower() == b"content-type":
            return value.split(b";", 1)[0].strip().lower() == _PROBLEM
    return False


def _code(status: int, problem: bytearray | None, complete: bool) -> str | None:
    if status < 400:
        return None
    if problem is None or not complete:
        return UNKNOWN_CODE
    return problem_code(bytes(problem))


@dataclass(frozen=True, slots=True)
class Observed:
    route: str
    method: str
    status: int
    code: str | None
    seconds: float


@dataclass
class InMemoryRequestSink:
    """Every request kept in memory, for tests."""

    requests: list[Observed] = field(default_factory=list)

    def request_done(
        self, route: str, method: str, status: int, code: str | None, seconds: float
    ) -> None:
        self.requests.append(Observed(route, method, status, code, seconds))

    @property
    def errors(self) -> Counter[str]:
        return Counter(r.code for r in self.requests if r.code is not None)

    @property
    def routes(self) -> set[str]:
        return {r.route for r in self.requests}
