"""Structured JSON logs, and the request ids that follow a request into the shard actors.

One JSON object per line (``ts``, ``level``, ``logger``, ``message``, ``request_id`` /
``request_ids``, the process's identity, ``exc`` for a traceback), installed by
:func:`install_json_logs` on the ``feira`` logger of every BFF replica and actor shell.

The request id of the HTTP request being served lives in :data:`REQUEST_ID` (set by
``api.request_context.RequestContext``). The shard client gathers the ids of the
operations it sends in one call and hands them to the shard, which binds them with
:func:`request_scope` while it runs the batch: a line logged inside the batch carries
``request_ids`` (and ``request_id`` when the batch served one request).

Standard library only: the domain, the API and the shells all import this module.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import orjson

REQUEST_ID: ContextVar[str | None] = ContextVar("feira_request_id", default=None)
BATCH_REQUEST_IDS: ContextVar[tuple[str, ...]] = ContextVar("feira_batch_request_ids", default=())

# The root of Feira's loggers (feira.carts, feira.api, feira.waf.audit, ...).
FEIRA_LOGGER = "feira"
LEVEL_ENV = "FEIRA_LOG_LEVEL"
DEFAULT_LEVEL = "INFO"
# A batch's ids in one line: enough to find the requests, bounded for a huge batch.
MAX_IDS_PER_LINE = 64


def current_request_id() -> str | None:
    return REQUEST_ID.get()


def batch_request_ids() -> tuple[str, ...]:
    return BATCH_REQUEST_IDS.get()


def distinct_ids(ids: Iterable[str | None]) -> tuple[str, ...]:
    """The ids, once each, in order, without the empty ones."""
    return tuple(dict.fromkeys(i for i in ids if i))


@contextmanager
def request_scope(ids: Iterable[str | None]) -> Iterator[tuple[str, ...]]:
    """Bind the request ids of a batch for what runs inside: ``request_ids`` on every line
    logged, and ``request_id`` too when the batch served one request."""
    batch = distinct_ids(ids)
    batch_token = BATCH_REQUEST_IDS.set(batch)
    one_token = REQUEST_ID.set(batch[0] if len(batch) == 1 else None)
    try:
        yield batch
    finally:
        REQUEST_ID.reset(one_token)
        BATCH_REQUEST_IDS.reset(batch_token)


class RequestContextFilter(logging.Filter):
    """Stamps ``request_id`` and ``request_ids`` on each record when it is logged (in the
    context of the code that logs it), for any formatter."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = REQUEST_ID.get()
        if not hasattr(record, "request_ids"):
            record.request_ids = BATCH_REQUEST_IDS.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record. ``identity`` (replica or actor, node...) is on every
    line; a record's ``extra`` fields that are plain values are kept too."""

    _STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {
        "message",
        "asctime",
        "request_id",
        "request_ids",
    }

    def __init__(self, identity: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self.identity = dict(identity or {})

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or REQUEST_ID.get()
        if request_id:
            entry["request_id"] = request_id
        ids = getattr(record, "request_ids", None)
        if ids is None:
            ids = BATCH_REQUEST_IDS.get()
        if ids:
            entry["request_ids"] = list(ids[:MAX_IDS_PER_LINE])
            if len(ids) > MAX_IDS_PER_LINE:
                entry["request_ids_omitted"] = len(ids) - MAX_IDS_PER_LINE
        entry.update(self.identity)
        for key, value in record.__dict__.items():
            if key not in self._STANDARD and key not in entry and _plain(value):
                entry[key] = value
        # exc_text first: a redacting filter (api.card_guard) may have rewritten it.
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return orjson.dumps(entry, default=str).decode()


def install_json_logs(
    identity: Mapping[str, str], *, stream: Any = None, level: str | None = None
) -> logging.Handler:
    """JSON lines for every ``feira.*`` logger of this process, to stderr (which Ray keeps
    in the worker's log file). Replaces a handler installed before, so calling it again
    is harmless; the level is ``level``, else ``FEIRA_LOG_LEVEL``, else INFO. Records no
    longer propagate to the root logger, so Ray's plain-text handler does not print them
    a second time."""
    logger = logging.getLogger(FEIRA_LOGGER)
    for old in [h for h in logger.handlers if getattr(h, "feira_json", False)]:
        logger.removeHandler(old)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.feira_json = True  # type: ignore[attr-defined]
    handler.setFormatter(JsonFormatter(identity))
    handler.addFilter(RequestContextFilter())
    logger.addHandler(handler)
    chosen = (level or os.environ.get(LEVEL_ENV) or DEFAULT_LEVEL).upper()
    logger.setLevel(chosen if chosen in logging.getLevelNamesMapping() else DEFAULT_LEVEL)
    logger.propagate = False
    return handler


def uninstall_json_logs(handler: logging.Handler) -> None:
    """Undo :func:`install_json_logs` (tests)."""
    logger = logging.getLogger(FEIRA_LOGGER)
    logger.removeHandler(handler)
    logger.propagate = True
    logger.setLevel(logging.NOTSET)


def _iso(created: float) -> str:
    seconds = int(created)
    millis = int((created - seconds) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def _plain(value: object) -> bool:
    return value is None or isinstance(value, str | int | float | bool)
