"""PCI guard: no card number gets into Feira's requests or logs.

:class:`CardDataGuard` is pure ASGI middleware, outermost, in front of the fast path and
FastAPI. It looks at the URL path, the query string and the body of every HTTP request and
answers ``422 card_data_forbidden`` (problem+json, naming the fields but never echoing the
number) when any of them holds a card number (``actors.domain.card_data``); the app is
then not called, or for a streamed body, never sees the offending line.

Bodies:

- NDJSON (``application/x-ndjson``, ``application/jsonl``, ``application/json-seq``) is
  checked line by line as it streams: each complete line is checked before it is passed on,
  so memory stays at one line. A line holding a card number cuts the body there: the app
  sees the body end before that line, its answer is dropped, and the client gets the 422
  (with the line number). Lines before it did reach the app (the merchant import keeps good
  lines, so they may have been imported). A single line over ``max_body_bytes`` is 413.
- Every other body (JSON, forms, text, anything) is buffered up to ``max_body_bytes``
  (1 MiB), checked whole, then replayed to the app in its original chunks, byte-identical.
  A larger body is refused with 413 ``payload_too_large``: no Feira route except the NDJSON
  import takes more than 64 KiB, and an unchecked pass-through would be a hole.
  JSON is parsed and walked (keys, strings, numbers); forms are decoded; a body that does
  not parse is searched as text.

:class:`RedactCardNumbers` is a logging filter that rewrites records with every card number
replaced; :func:`install_log_redaction` puts it on the handlers that matter and on the log
record factory, so records are redacted wherever they go.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator
from functools import partial
from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from actors.domain.card_data import (
    child_path,
    contains_card_number,
    find_card_numbers,
    redact,
)
from actors.domain.errors import ErrorCode
from api.problems import problem

log = logging.getLogger("feira.api.card_guard")

MAX_BODY_BYTES = 1024 * 1024
NDJSON_TYPES = frozenset({"application/x-ndjson", "application/jsonl", "application/json-seq"})
FORM_TYPE = "application/x-www-form-urlencoded"
REFUSAL = "card numbers must never be sent to Feira; pay with the payment provider's token instead"


def _is_json(content_type: str) -> bool:
    return content_type in ("", "application/json") or content_type.endswith("+json")


def _pairs(pairs: Iterable[tuple[str, str]], root: str) -> list[str]:
    found: dict[str, None] = {}
    for key, value in pairs:
        if contains_card_number(key) or contains_card_number(value):
            found[child_path(root, key)] = None
    return list(found)


def scan_body(content_type: str, body: bytes, root: str = "$") -> list[str]:
    """Where in ``body`` card numbers are (paths; empty when there are none)."""
    if not body:
        return []
    if _is_json(content_type) or content_type in NDJSON_TYPES:
        try:
            return find_card_numbers(orjson.loads(body), root)
        except orjson.JSONDecodeError:
            pass  # not JSON after all: search it as text below
    text = body.decode("utf-8", "replace")
    if content_type == FORM_TYPE:
        found = _pairs(parse_qsl(text, keep_blank_values=True), root)
        if found:
            return found
    return [root] if contains_card_number(text) else []


# Headers that proxies and tracers set, never a client's data: Ray's HAProxy ingress, for
# one, adds a random numeric x-request-id that can pass a Luhn check by chance.
INFRASTRUCTURE_HEADERS = frozenset(
    {
        "host", "content-length", "x-request-id", "traceparent", "tracestate", "via",
        "forwarded", "x-real-ip", "x-amzn-trace-id", "x-cloud-trace-context", "b3",
    }
)
INFRASTRUCTURE_PREFIXES = ("x-forwarded-", "x-b3-")


def _client_header(name: str) -> bool:
    return name not in INFRASTRUCTURE_HEADERS and not name.startswith(INFRASTRUCTURE_PREFIXES)


def scan_target(scope: Scope) -> list[str]:
    """Card numbers in the URL path, the query string or a header value (an
    Idempotency-Key, for one, is stored)."""
    found: list[str] = []
    if contains_card_number(scope.get("path", "")):
        found.append("path")
    for raw_name, value in scope.get("headers", ()):
        name = raw_name.decode("latin-1").lower()
        if _client_header(name) and contains_card_number(value.decode("latin-1")):
            found.append(f"header:{name}")
    query = scope.get("query_string", b"").decode("latin-1")
    if query:
        found += _pairs(parse_qsl(query, keep_blank_values=True), "query")
        if not found and contains_card_number(query):
            found.append("query")
    return found


def _content_type(headers: Headers) -> str:
    return headers.get("content-type", "").split(";")[0].strip().lower()


def _has_body(headers: Headers) -> bool:
    length = headers.get("content-length")
    if length is not None:
        return length.strip() != "0"
    return "transfer-encoding" in headers


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


def _split_lines(data: bytes) -> Iterator[bytes]:
    """Lines of ``data`` with their newlines, so joining them gives ``data`` back."""
    start = 0
    while start < len(data):
        end = data.find(b"\n", start)
        end = len(data) if end < 0 else end + 1
        yield data[start:end]
        start = end


class CardDataGuard:
    """Refuse any request that carries a card number (see the module docstring)."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        where = scan_target(scope)
        if where:
            await self._refuse(scope, send, where)
            return
        headers = Headers(scope=scope)
        if not _has_body(headers):
            await self.app(scope, receive, send)
            return
        content_type = _content_type(headers)
        if content_type in NDJSON_TYPES:
            await self._streamed(scope, receive, send, content_type)
            return
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            await self._too_large(scope, send)
            return
        await self._buffered(scope, receive, send, content_type)

    async def _refuse(self, scope: Scope, send: Send, where: list[str], **extra: Any) -> None:
        path = redact(scope.get("path", ""))
        log.warning("refused a request to %s carrying a card number in %s", path, where)
        response = problem(
            422, ErrorCode.CARD_DATA_FORBIDDEN.value, REFUSAL, path, fields=where, **extra
        )
        await response(scope, _no_receive, send)

    async def _too_large(self, scope: Scope, send: Send) -> Response:
        response = problem(
            413,
            "payload_too_large",
            f"request bodies are limited to {self.max_body_bytes} bytes",
            redact(scope.get("path", "")),
        )
        await response(scope, _no_receive, send)
        return response

    async def _buffered(
        self, scope: Scope, receive: Receive, send: Send, content_type: str
    ) -> None:
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before sending its body
            size += len(message.get("body", b""))
            if size > self.max_body_bytes:
                await self._too_large(scope, send)
                return
            messages.append(message)
            if not message.get("more_body", False):
                break
        where = scan_body(content_type, b"".join(m.get("body", b"") for m in messages))
        if where:
            await self._refuse(scope, send, where)
            return
        replay = iter(messages)

        async def replaying() -> Message:
            message = next(replay, None)
            return message if message is not None else await receive()

        await self.app(scope, replaying, send)

    async def _streamed(
        self, scope: Scope, receive: Receive, send: Send, content_type: str
    ) -> None:
        pending = b""  # a partial line: not checked, not passed on yet
        line_number = 0
        body_done = False
        refusal: Callable[[], Awaitable[object]] | None = None
        started = False

        def cut(make: Callable[[], Awaitable[object]]) -> None:
            nonlocal refusal, body_done
            refusal, body_done = make, True

        async def checked() -> Message:
            nonlocal pending, line_number, body_done
            if body_done:
                # After a cut the client is, for the app, gone; otherwise wait as usual.
                return {"type": "http.disconnect"} if refusal else await receive()
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    return message
                more = bool(message.get("more_body", False))
                data = pending + message.get("body", b"")
                if more:
                    split = data.rfind(b"\n") + 1
                    complete, pending = data[:split], data[split:]
                else:
                    complete, pending = data, b""
                passed: list[bytes] = []
                for line in _split_lines(complete):
                    line_number += 1
                    where = scan_body(content_type, line.strip(), f"line {line_number}")
                    if where:
                        cut(partial(self._refuse, scope, send, where, line=line_number))
                        return {"type": "http.request", "body": b"".join(passed)}
                    passed.append(line)
                if len(pending) > self.max_body_bytes:
                    cut(partial(self._too_large, scope, send))
                    return {"type": "http.request", "body": b"".join(passed)}
                if passed or not more:
                    body_done = not more
                    return {"type": "http.request", "body": b"".join(passed), "more_body": more}

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refusal is not None and not started:
                return  # the app's answer to a cut body is dropped; ours goes out instead
            started = True
            await send(message)

        try:
            await self.app(scope, checked, guarded_send)
        except Exception:
            if refusal is None or started:
                raise
            log.info("the app failed on a cut request body", exc_info=True)
        if refusal is not None and not started:
            await refusal()


# ---------------------------------------------------------------------------- logs


def redact_record(record: logging.LogRecord) -> None:
    """Rewrite ``record`` in place so that no card number is left in what it will print."""
    try:
        message = record.getMessage()
    except (TypeError, ValueError, KeyError):  # a broken format string: redact what there is
        message = f"{record.msg} {record.args}"
    clean = redact(message)
    if clean != message:
        record.msg, record.args = clean, None
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


class RedactCardNumbers(logging.Filter):
    """A filter for handlers or loggers: lets every record through, redacted."""

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record)
        return True


DEFAULT_LOGGERS = ("feira", "ray.serve", "uvicorn", "uvicorn.access", "uvicorn.error")


def install_log_redaction(
    loggers: Iterable[str] = DEFAULT_LOGGERS, *, record_factory: bool = True
) -> Callable[[], None]:
    """Redact card numbers from logs; returns a function that undoes it (for tests).

    The filter goes on the root logger's handlers, on the named loggers and on their
    handlers (a logger's own filters do not see records propagated from its children; its
    handlers do). With ``record_factory``, every record is also redacted when created, which
    covers handlers added later (Ray and uvicorn add their own). Calling it again is harmless.
    """
    flt = RedactCardNumbers()
    targets: list[logging.Filterer] = list(logging.getLogger().handlers)
    for name in loggers:
        logger = logging.getLogger(name)
        targets.append(logger)
        targets.extend(logger.handlers)
    added: list[logging.Filterer] = []
    for target in targets:
        if not any(isinstance(f, RedactCardNumbers) for f in target.filters):
            target.addFilter(flt)
            added.append(target)

    previous = logging.getLogRecordFactory()
    installed = record_factory and not getattr(previous, "redacts_card_numbers", False)
    if installed:

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            redact_record(record)
            return record

        factory.redacts_card_numbers = True  # type: ignore[attr-defined]
        logging.setLogRecordFactory(factory)

    def uninstall() -> None:
        for target in added:
            target.removeFilter(flt)
        if installed:
            logging.setLogRecordFactory(previous)

    return uninstall
