"""JSON log lines, and request ids that follow operations into (in-process) shard calls."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import orjson
import pytest

from actors.cart_service import CartService
from actors.domain.cart import CartLimits
from actors.kinds import ShardKind
from actors.protocol import Op, Reply
from actors.router import ShardRouter
from actors.shop import new_cart_id
from feira.logs import (
    BATCH_REQUEST_IDS,
    REQUEST_ID,
    JsonFormatter,
    RequestContextFilter,
    batch_request_ids,
    install_json_logs,
    request_scope,
    uninstall_json_logs,
)
from storage.errors import StoreUnavailable


class Capture(logging.Handler):
    """Keeps records, stamped by the filter when they are logged (as a real handler)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.addFilter(RequestContextFilter())

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def captured() -> Iterator[Capture]:
    handler = Capture()
    logger = logging.getLogger("feira")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


class Checkpoints:
    """A cart checkpoint store that knows one malformed cart and can be made to fail."""

    def __init__(self) -> None:
        self.fail = False

    async def save_many(self, snapshots: Sequence[Any], ttl_s: int) -> None:
        if self.fail:
            raise StoreUnavailable("down")

    async def load(self, cart_id: str) -> Any:
        return {"id": cart_id, "garbage": True} if cart_id.startswith("bad") else None

    async def delete(self, cart_id: str) -> None:
        pass

    async def close(self) -> None:
        pass


def _router(service: CartService) -> ShardRouter:
    return ShardRouter(
        {ShardKind.CART: [service.apply]}, max_batch=100, max_inflight=1, timeout_s=5
    )


async def _as_request(request_id: str, router: ShardRouter, cart_id: str) -> Any:
    REQUEST_ID.set(request_id)  # as RequestContext does; this task's context only
    try:
        return await router.call(ShardKind.CART, cart_id, "get", cart_id, None)
    except Exception as error:  # noqa: BLE001 - the refusal is expected
        return error


async def test_a_requests_id_is_on_a_line_logged_inside_its_shard_call(
    captured: Capture,
) -> None:
    router = _router(CartService(CartLimits(5, 10), 3600, 100, checkpoints=Checkpoints()))
    await asyncio.create_task(_as_request("req-one", router, "bad-cart-1" + "x" * 16))
    [line] = [r for r in captured.records if "malformed" in r.getMessage()]
    assert line.name == "feira.carts"
    assert line.request_id == "req-one"  # type: ignore[attr-defined]
    assert line.request_ids == ("req-one",)  # type: ignore[attr-defined]


async def test_a_batch_of_many_requests_carries_all_their_ids(captured: Capture) -> None:
    router = _router(CartService(CartLimits(5, 10), 3600, 100, checkpoints=Checkpoints()))
    # Submitted in one loop turn: one batch, one shard call.
    await asyncio.gather(
        asyncio.create_task(_as_request("req-a", router, "bad-cart-a" + "x" * 16)),
        asyncio.create_task(_as_request("req-b", router, "good-cart" + "x" * 16)),
        asyncio.create_task(_as_request("req-c", router, "bad-cart-c" + "x" * 16)),
    )
    assert router.stats()["cart"]["calls"] == 1
    lines = [r for r in captured.records if "malformed" in r.getMessage()]
    assert len(lines) == 2
    for line in lines:
        assert line.request_ids == ("req-a", "req-b", "req-c")  # type: ignore[attr-defined]
        assert line.request_id is None  # type: ignore[attr-defined]  # many: no single one
    assert REQUEST_ID.get() is None
    assert batch_request_ids() == ()


async def test_the_write_behind_flush_does_not_carry_a_batchs_ids(captured: Capture) -> None:
    store = Checkpoints()
    store.fail = True
    service = CartService(CartLimits(5, 10), 3600, 100, checkpoints=store, lag_s=0.01)
    router = _router(service)
    cart_id = new_cart_id()
    token = REQUEST_ID.set("req-create")
    try:
        await router.call(ShardKind.CART, cart_id, "create", "op-1", cart_id, None)
    finally:
        REQUEST_ID.reset(token)
    await asyncio.sleep(0.1)
    warnings = [r for r in captured.records if "checkpoint failed" in r.getMessage()]
    assert warnings, "the failing write-behind should have warned"
    assert all(r.request_ids == () for r in warnings)  # type: ignore[attr-defined]
    assert all(r.request_id is None for r in warnings)  # type: ignore[attr-defined]
    store.fail = False
    await asyncio.sleep(0.6)  # the retry succeeds
    assert service.stats()["dirty"] == 0


def test_request_scope_binds_and_unbinds() -> None:
    with request_scope(["r1", None, "r1", ""]) as ids:
        assert ids == ("r1",)
        assert REQUEST_ID.get() == "r1"
        assert BATCH_REQUEST_IDS.get() == ("r1",)
    assert REQUEST_ID.get() is None
    assert BATCH_REQUEST_IDS.get() == ()


def test_json_lines_have_the_fields() -> None:
    stream = io.StringIO()
    handler = install_json_logs({"component": "cart-shard", "actor": "cart-3"}, stream=stream)
    try:
        log = logging.getLogger("feira.carts")
        with request_scope(["req-9", "req-10"]):
            log.warning("stored cart %s is odd", "c-1", extra={"sku": "SKU-1"})
        token = REQUEST_ID.set("req-11")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed")
        finally:
            REQUEST_ID.reset(token)
        log.debug("not at INFO")
    finally:
        uninstall_json_logs(handler)
    first, second = (orjson.loads(line) for line in stream.getvalue().splitlines())
    assert first["level"] == "WARNING"
    assert first["logger"] == "feira.carts"
    assert first["message"] == "stored cart c-1 is odd"
    assert first["request_ids"] == ["req-9", "req-10"]
    assert "request_id" not in first
    assert (first["component"], first["actor"], first["sku"]) == ("cart-shard", "cart-3", "SKU-1")
    assert first["ts"].endswith("Z")
    assert first["ts"][10] == "T"
    assert second["request_id"] == "req-11"
    assert "ValueError: boom" in second["exc"]
    assert logging.getLogger("feira").propagate is True  # uninstalled


def test_install_twice_keeps_one_handler() -> None:
    first = install_json_logs({"component": "x"}, stream=io.StringIO(), level="debug")
    second = install_json_logs({"component": "x"}, stream=io.StringIO())
    try:
        logger = logging.getLogger("feira")
        assert [h for h in logger.handlers if getattr(h, "feira_json", False)] == [second]
        assert logger.level == logging.INFO
    finally:
        uninstall_json_logs(second)
        uninstall_json_logs(first)


def test_the_formatter_keeps_redacted_exception_text() -> None:
    record = logging.LogRecord("feira.x", logging.ERROR, __file__, 1, "m", None, None)
    record.exc_text = "Traceback: [card number redacted]"
    entry = orjson.loads(JsonFormatter({}).format(record))
    assert entry["exc"] == "Traceback: [card number redacted]"


async def _sender_sees(ops: list[Op]) -> list[Reply]:
    return [(True, batch_request_ids()) for _ in ops]


async def test_the_sender_sees_the_batch_ids_as_the_ray_client_does() -> None:
    router = ShardRouter(
        {ShardKind.CART: [_sender_sees]}, max_batch=10, max_inflight=1, timeout_s=1
    )

    async def one(rid: str | None) -> Any:
        REQUEST_ID.set(rid)
        return await router.call(ShardKind.CART, "k", "get")

    replies = await asyncio.gather(*(asyncio.create_task(one(r)) for r in ("a", None, "b")))
    assert replies == [("a", "b")] * 3
