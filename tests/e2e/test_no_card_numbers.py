"""Card numbers never enter Feira (issue 5, item 8): requests holding test card numbers are
refused with 422 ``card_data_forbidden``, and afterwards a scan of everything the session
stored or logged finds none — every text and JSON column of every table in PostgreSQL,
every key and value under the session's Redis prefix, and every file of the Ray session's
logs (the replicas, the shard and processor actors, HAProxy, Ray itself).

The scan covers what the whole test session left behind up to this point; pytest runs
``tests/e2e`` after ``tests/catalog`` and before ``tests/fault``, so run it last (as
below) to cover the fault suites' traffic too.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import httpx
import pytest
import ray
import redis.asyncio as aioredis

from actors.domain.card_data import contains_card_number, find_card_numbers
from tests.tokens import deployed_bearer

pytestmark = pytest.mark.e2e

# Issuers' published test numbers: Visa, Mastercard, Amex, Discover, JCB, Diners.
VISA = "4111111111111111"
MASTERCARD = "5555 5555 5555 4444"
AMEX = "3782-822463-10005"
DISCOVER = "6011111111111117"
JCB = "3530111333300000"
DINERS = "30569309025904"
TEXT_TYPES = ("text", "character varying", "character", "json", "jsonb", "bytea", "name")
SENT = (VISA, MASTERCARD, AMEX, DISCOVER, JCB, DINERS)
# Ray may log the same file several times over a session; a few MB each at most.
MAX_LOG_BYTES = 64 * 1024 * 1024
# Ray's own accounting in its logs (raylet.out, gcs_server.out, debug_state.txt): random
# 64-bit node ids and the machine's memory in fixed point, e.g. "Local id: <19 digits>",
# "memory: [160586940420000]". One random 19-digit id in ten passes Luhn, so these
# fields are masked before the scan; the numbers this test sent are searched for
# everywhere, masked fields included.
RAY_NUMBERS = re.compile(r"\b(?:local id|node id|(?:object_store_)?memory):\s*\[?-?\d+\]?", re.I)


def refused(reply: httpx.Response) -> bool:
    return (
        reply.status_code == 422
        and reply.headers.get("content-type", "").startswith("application/problem+json")
        and bool(reply.json().get("code") == "card_data_forbidden")
    )


async def send_card_numbers(http: httpx.AsyncClient, settings: Any) -> list[str]:
    """Requests carrying a card number in a body, a path, a query and an NDJSON line;
    returns what each answered when it was not a 422 card_data_forbidden."""
    cart_id = (await http.post("/v1/carts")).json()["id"]
    sku = (await http.get("/v1/products/p-0000001")).json()["variants"][0]["sku"]
    assert (
        await http.post(f"/v1/carts/{cart_id}/items", json={"sku": sku, "quantity": 1})
    ).status_code == 200
    token = deployed_bearer(settings, "m-001")
    merchant = {"Authorization": f"Bearer {token}"}
    ndjson = (
        b'{"title": "Card kettle", "brand": "Kestrel", "category": "home/kitchen/kettles",'
        b' "variants": [{"sku": "PCI-SCAN-1", "options": {"color": "red"}}],'
        b' "description": "pay with ' + JCB.encode() + b'"}\n'
    )
    attempts = [
        http.post(
            "/v1/checkout",
            json={"cart_id": cart_id, "payment_token": VISA},
            headers={"Idempotency-Key": f"pci-{cart_id}"},
        ),
        http.post(f"/v1/carts/{cart_id}/items", json={"sku": MASTERCARD, "quantity": 1}),
        http.post("/v1/carts", json={"customer_id": AMEX}),
        http.get(f"/v1/products/{DISCOVER}"),
        http.get("/v1/search", params={"q": f"kettle {DINERS}"}),
        http.post(
            "/v1/merchant/products/import",
            content=ndjson,
            headers=merchant | {"content-type": "application/x-ndjson"},
        ),
        http.post(
            "/v1/checkout",
            json={"cart_id": cart_id, "payment_token": "tok_approve", "note": AMEX},
            headers={"Idempotency-Key": f"pci-note-{cart_id}"},
        ),
    ]
    answers = [await attempt for attempt in attempts]
    return [
        f"{r.request.method} {r.request.url.path}: {r.status_code} {r.text[:200]}"
        for r in answers
        if not refused(r)
    ]


async def scan_postgres(url: str) -> tuple[Counter[str], list[str]]:
    """Every text-like column of every table outside the system schemas."""
    scanned: Counter[str] = Counter()
    found: list[str] = []
    conn = await asyncpg.connect(url)
    try:
        columns = await conn.fetch(
            "SELECT c.table_schema, c.table_name, c.column_name, c.data_type"
            " FROM information_schema.columns AS c"
            " JOIN information_schema.tables AS t"
            "   ON t.table_schema = c.table_schema AND t.table_name = c.table_name"
            " WHERE t.table_type = 'BASE TABLE'"
            "   AND c.table_schema NOT IN ('pg_catalog', 'information_schema')"
            "   AND c.data_type = ANY($1::text[])",
            list(TEXT_TYPES),
        )
        for schema, table, column, data_type in columns:
            ident = f'"{schema}"."{table}"'
            col = f'"{column}"'
            expr = f"encode({col}, 'escape')" if data_type == "bytea" else f"{col}::text"
            scanned["columns"] += 1
            async with conn.transaction():
                async for (value,) in conn.cursor(
                    f"SELECT {expr} FROM {ident} WHERE {col} IS NOT NULL"
                ):
                    scanned["values"] += 1
                    if contains_card_number(value):
                        found.append(f"postgres {schema}.{table}.{column}: {value[:120]!r}")
            scanned["tables:" + f"{schema}.{table}"] = 1
    finally:
        await conn.close()
    return scanned, found


def _text(raw: bytes | str) -> str:
    return raw if isinstance(raw, str) else raw.decode("utf-8", "replace")


async def scan_redis(url: str, prefix: str) -> tuple[Counter[str], list[str]]:
    """Every key under ``prefix`` and every string in its value, whatever its type."""
    scanned: Counter[str] = Counter()
    found: list[str] = []
    conn = aioredis.from_url(url)
    try:
        async for key in conn.scan_iter(match=f"{prefix}*", count=1000):
            scanned["keys"] += 1
            name = _text(key)
            kind = _text(await conn.type(key))
            values: list[bytes | str] = [key]
            if kind == "string":
                values.append(await conn.get(key) or b"")
            elif kind == "hash":
                for field, value in (await conn.hgetall(key)).items():
                    values += [field, value]
            elif kind == "list":
                values += await conn.lrange(key, 0, -1)
            elif kind == "set":
                values += list(await conn.smembers(key))
            elif kind == "zset":
                members: Any = await conn.zrange(key, 0, -1)
                values += list(members)
            elif kind == "stream":
                entries: Any = await conn.xrange(key)
                for entry_id, fields in entries:
                    values.append(entry_id)
                    for field, value in fields.items():
                        values += [field, value]
            else:
                scanned[f"skipped {kind}"] += 1
            scanned["values"] += len(values) - 1
            for value in values:
                if contains_card_number(_text(value)):
                    found.append(f"redis {name}: {_text(value)[:120]!r}")
    finally:
        await conn.aclose()
    return scanned, found


def ray_logs_dir() -> Path:
    """The logs of this test session's own Ray cluster (``ray.init(address="local")``
    in tests/conftest.py starts it under Ray's temp dir, /tmp/ray/session_<time> by
    default), asked of the running node rather than guessed."""
    node: Any = ray._private.worker.global_worker.node
    return Path(node.get_logs_dir_path())


def scan_logs(logs: Path) -> tuple[Counter[str], list[str]]:
    scanned: Counter[str] = Counter()
    found: list[str] = []
    sent = [re.sub(r"[ -]", "", number).encode() for number in SENT]
    for path in sorted(p for p in logs.rglob("*") if p.is_file()):
        with path.open("rb") as file:
            data = file.read(MAX_LOG_BYTES)
        if b"\0" in data[:4096]:
            scanned["binary files skipped"] += 1
            continue
        scanned["files"] += 1
        scanned["bytes"] += len(data)
        digits = re.sub(rb"[ -]", b"", data)
        found += [
            f"log {path.relative_to(logs)}: holds a sent card number" for n in sent if n in digits
        ]
        for number, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
            scanned["lines"] += 1
            masked, ray_fields = RAY_NUMBERS.subn("", line)
            scanned["ray fields masked"] += ray_fields
            if contains_card_number(masked):
                found.append(f"log {path.relative_to(logs)}:{number}: {line[:200]!r}")
    return scanned, found


async def test_no_card_number_is_stored_or_logged(
    feira_url: str, seeded: Any, ray_cluster: None
) -> None:
    async with httpx.AsyncClient(base_url=feira_url, timeout=30) as http:
        not_refused = await send_card_numbers(http, seeded)
    assert not_refused == []
    # Give write-behind (carts to Redis) and log flushing a moment.
    await asyncio.sleep(max(1.0, seeded.cart_checkpoint_lag_ms / 1000 + 0.5))
    logs = ray_logs_dir()
    pg_scanned, pg_found = await scan_postgres(seeded.postgres_url)
    redis_scanned, redis_found = await scan_redis(seeded.redis_url, seeded.redis_key_prefix)
    log_scanned, log_found = scan_logs(logs)
    tables = sum(1 for k in pg_scanned if k.startswith("tables:"))
    print(
        f"\ncard number scan: postgres {tables} tables, {pg_scanned['columns']} columns, "
        f"{pg_scanned['values']} values; redis {redis_scanned['keys']} keys, "
        f"{redis_scanned['values']} values under {seeded.redis_key_prefix!r}; "
        f"ray logs {log_scanned['files']} files, {log_scanned['lines']} lines, "
        f"{log_scanned['bytes'] / 1e6:.1f} MB in {logs}; found "
        f"{len(pg_found) + len(redis_found) + len(log_found)}"
    )
    assert pg_found == [], pg_found[:20]
    assert redis_found == [], redis_found[:20]
    assert log_found == [], log_found[:20]
    # The scan looked at real data: the session's orders, carts and logs.
    assert pg_scanned["values"] > 0
    assert "public.orders" in {k.removeprefix("tables:") for k in pg_scanned}
    assert redis_scanned["keys"] > 0
    assert log_scanned["files"] > 0
    assert log_scanned["lines"] > 0
    assert find_card_numbers({"self-check": VISA}) == ['$["self-check"]']


async def test_card_number_in_a_header_is_refused(feira_url: str) -> None:
    async with httpx.AsyncClient(base_url=feira_url, timeout=30) as http:
        cart_id = (await http.post("/v1/carts")).json()["id"]
        sku = (await http.get("/v1/products/p-0000002")).json()["variants"][0]["sku"]
        added = await http.post(f"/v1/carts/{cart_id}/items", json={"sku": sku, "quantity": 1})
        assert added.status_code == 200
        reply = await http.post(
            "/v1/checkout",
            json={"cart_id": cart_id, "payment_token": "tok_approve"},
            headers={"Idempotency-Key": VISA},
        )
    assert refused(reply), (reply.status_code, reply.text[:200])
