"""The open-loop driver: its math, its judgement, and that it does not hide a slow server."""

import asyncio
import json
import math
import random
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest

from benchmarks.cart_add import (
    SECTION_HEADING,
    CartPlan,
    carts_needed,
    coalescing_delta,
    markdown_section,
    replace_section,
)
from benchmarks.openloop import (
    HttpProtocolError,
    OpenLoopDriver,
    Request,
    StepResult,
    Target,
    intended_time,
    intended_times,
    judge,
    parse_response,
    percentile,
    percentiles,
    require_loopback,
    schedule_count,
    step_rates,
)

# --------------------------------------------------------------------------- percentiles


def test_percentile_nearest_rank_on_1_to_100() -> None:
    values = list(range(1, 101))
    random.Random(7).shuffle(values)
    assert percentile(values, 50) == 50
    assert percentile(values, 95) == 95
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile(values, 0) == 1
    assert percentile(values, 99.5) == 100


def test_percentile_small_lists_round_up_to_an_observed_value() -> None:
    ten = [10, 1, 9, 2, 8, 3, 7, 4, 6, 5]
    assert percentile(ten, 50) == 5
    assert percentile(ten, 90) == 9
    assert percentile(ten, 91) == 10  # rank ceil(9.1) = 10
    assert percentile(ten, 95) == 10
    assert percentile([0.25], 95) == 0.25
    assert percentile([3.0, 1.0], 50) == 1.0
    assert percentiles(ten, (50, 90, 95, 100)) == [5, 9, 10, 10]


def test_percentile_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="empty"):
        percentile([], 50)
    with pytest.raises(ValueError, match="within"):
        percentile([1.0], 101)
    with pytest.raises(ValueError, match="within"):
        percentiles([1.0], (-1,))


# --------------------------------------------------------------------------- schedule


def test_intended_times_are_exact() -> None:
    assert intended_times(100.0, 4, 5) == [100.0, 100.25, 100.5, 100.75, 101.0]
    assert intended_times(0.0, 1000, 3) == [0.0, 0.001, 0.002]


def test_intended_time_does_not_drift() -> None:
    # Summing 1/rate a million times drifts; i/rate does not.
    t0 = 12345.0
    assert intended_time(t0, 1000, 1_000_000) == t0 + 1000.0
    acc = 0.0
    for _ in range(1_000_000):
        acc += 1 / 1000
    assert acc != 1000.0  # the drift the schedule avoids
    assert intended_time(0.0, 3, 3) == 1.0


@pytest.mark.parametrize(
    ("rate", "seconds", "count"),
    [(1000, 10, 10_000), (3, 1, 3), (2.5, 1, 3), (1000, 0.1 + 0.2, 300), (7, 0, 0), (0.5, 1, 1)],
)
def test_schedule_count_is_requests_due_before_the_end(
    rate: float, seconds: float, count: int
) -> None:
    assert schedule_count(rate, seconds) == count
    if count:
        assert intended_time(0.0, rate, count - 1) < seconds
    assert intended_time(0.0, rate, count) >= seconds - 1e-9


def test_schedule_rejects_non_positive_rate() -> None:
    with pytest.raises(ValueError, match="rate"):
        schedule_count(0, 1)


# --------------------------------------------------------------------------- judgement


def test_judge_p95_boundary() -> None:
    assert judge(0.199999, 0, 1000)
    assert not judge(0.200, 0, 1000)  # "P95 >= 200 ms" fails
    assert not judge(0.5, 0, 1000)


def test_judge_error_rate_boundary() -> None:
    assert judge(0.01, 0, 1000)
    assert not judge(0.01, 1, 1000)  # exactly 0.1 % fails
    assert judge(0.01, 1, 1001)  # just under 0.1 % passes
    assert not judge(0.01, 2, 2000)
    assert not judge(0.01, 3, 3000)
    assert judge(0.01, 9, 10_000)
    assert not judge(0.01, 10, 10_000)


def test_judge_empty_step_fails_and_targets_are_configurable() -> None:
    assert not judge(0.0, 0, 0)
    loose = Target(p95_s=1.0, max_error_rate=0.05)
    assert judge(0.9, 4, 100, loose)
    assert not judge(0.9, 5, 100, loose)


# --------------------------------------------------------------------------- HTTP bits


def test_parse_response_content_length_chunked_and_partial() -> None:
    raw = b"HTTP/1.1 201 Created\r\nContent-Length: 5\r\n\r\nhello"
    parsed = parse_response(raw)
    assert parsed is not None
    assert parsed[0].status == 201
    assert parsed[0].body == b"hello"
    assert parsed[0].keep_alive
    assert parsed[1] == len(raw)
    assert parse_response(raw[:-1]) is None
    assert parse_response(raw[:10]) is None

    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    )
    parsed = parse_response(chunked)
    assert parsed is not None
    assert parsed[0].body == b"abcde"
    assert parsed[1] == len(chunked)
    assert parse_response(chunked[:-2]) is None

    until_close = b"HTTP/1.0 200 OK\r\n\r\nbody"
    assert parse_response(until_close) is None
    parsed = parse_response(until_close, eof=True)
    assert parsed is not None
    assert parsed[0].body == b"body"
    assert not parsed[0].keep_alive

    closing = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    parsed = parse_response(closing)
    assert parsed is not None
    assert not parsed[0].keep_alive

    with pytest.raises(HttpProtocolError):
        parse_response(b"SPDY/9 200 OK\r\n\r\n")


def test_only_loopback_targets() -> None:
    assert require_loopback("http://127.0.0.1:8000") == ("127.0.0.1", 8000)
    assert require_loopback("http://localhost:9") == ("localhost", 9)
    assert require_loopback("http://[::1]:80") == ("::1", 80)
    for url in ("http://10.0.0.1:8000", "http://example.com", "https://127.0.0.1:8000"):
        with pytest.raises(ValueError, match=r"refusing|only http"):
            require_loopback(url)


# --------------------------------------------------------------------------- a tiny server


@dataclass
class TinyServer:
    """Serves one request at a time (a global lock), each taking ``service_s``."""

    service_s: float
    port: int = 0
    served: int = 0
    service_times: list[float] = field(default_factory=list)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    handlers: set[asyncio.Task[None]] = field(default_factory=set)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        try:
            for _ in range(100_000):
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1]
                length = 0
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    if name.lower() == "content-length":
                        length = int(value)
                if length:
                    await reader.readexactly(length)
                async with self.lock:
                    started = time.monotonic()
                    await asyncio.sleep(self.service_s)
                    self.service_times.append(time.monotonic() - started)
                self.served += 1
                status = {"/fail": "500 Internal Server Error", "/conflict": "409 Conflict"}.get(
                    path, "200 OK"
                )
                body = b'{"ok":true}'
                writer.write(
                    f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
                )
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client went away; nothing to answer
        finally:
            writer.close()


@asynccontextmanager
async def tiny_server(service_s: float) -> AsyncIterator[TinyServer]:
    state = TinyServer(service_s)
    server = await asyncio.start_server(state.handle, "127.0.0.1", 0)
    state.port = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        server.close()
        # Handlers still sleeping for clients that gave up would outlive the test.
        for task in state.handlers:
            task.cancel()
        await asyncio.gather(*state.handlers, return_exceptions=True)


def get_root(_: int) -> Request:
    return "GET", "/", None, {}


# --------------------------------------------------------------------------- end to end


@pytest.mark.timeout(20)
async def test_low_rate_latency_is_close_to_service_time() -> None:
    async with tiny_server(0.010) as srv:
        driver = OpenLoopDriver(f"http://127.0.0.1:{srv.port}", get_root, connections=4)
        result = await driver.run_step(rate=20, duration_s=1.0, warmup_s=0.2)
    assert result.count == 20
    assert result.errors == 0
    assert result.passed
    assert result.p50_s >= 0.010
    # Service time plus scheduling noise; a shared 2-core machine needs the slack, and it is
    # still far below the overload case below.
    assert result.p50_s < 0.030
    assert result.p95_s < 0.100
    assert result.statuses == {"200": 20}
    assert 15 <= result.achieved_rps <= 21


@pytest.mark.timeout(20)
@pytest.mark.parametrize("connections", [1, 8])
async def test_overload_shows_in_latency_from_intended_send_time(connections: int) -> None:
    # Capacity is 1 / 10 ms = 100 req/s; offer 200 for 0.6 s. The server is never slower
    # than 10 ms per request once it starts one, so a driver timing from the moment it sent
    # (closed loop, coordinated omission) would report ~10 ms. The queue is real: request i
    # finishes near (i + 1) * 10 ms but was due at i * 5 ms.
    async with tiny_server(0.010) as srv:
        driver = OpenLoopDriver(f"http://127.0.0.1:{srv.port}", get_root, connections=connections)
        result = await driver.run_step(rate=200, duration_s=0.6, warmup_s=0.0)
    assert result.count == 120
    assert result.errors == 0
    # The server's own view: each request took about its service time.
    assert percentile(srv.service_times, 50) < 0.03
    assert result.p95_s > 0.4  # ~0.575 s expected; 40x the service time
    assert result.max_s > 0.5
    assert result.p50_s > 0.2
    assert not result.passed
    assert result.achieved_rps < 130


@pytest.mark.timeout(20)
async def test_errors_counted_and_expected_statuses_excluded() -> None:
    def make(i: int) -> Request:
        path = {0: "/fail", 1: "/conflict"}.get(i % 10, "/")
        return "POST", path, b"{}", {"Content-Type": "application/json"}

    async with tiny_server(0.0) as srv:
        driver = OpenLoopDriver(
            f"http://127.0.0.1:{srv.port}", make, connections=8, expected_statuses={409}
        )
        result = await driver.run_step(rate=200, duration_s=0.5, warmup_s=0.0)
    assert result.count == 100
    assert result.statuses == {"200": 80, "409": 10, "500": 10}
    assert result.errors == 10
    assert math.isclose(result.error_rate, 0.1)
    assert result.ok == 90
    assert not result.passed


@pytest.mark.timeout(20)
async def test_transport_errors_are_counted_not_raised() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Nothing listens on the port now.
    driver = OpenLoopDriver(f"http://127.0.0.1:{port}", get_root, connections=4)
    result = await driver.run_step(rate=50, duration_s=0.2, warmup_s=0.0)
    assert result.count == 10
    assert result.statuses == {"transport": 10}
    assert result.error_rate == 1.0
    assert not result.passed


@pytest.mark.timeout(20)
async def test_deadline_from_intended_time_bounds_a_hung_server() -> None:
    async with tiny_server(1.0) as srv:
        driver = OpenLoopDriver(
            f"http://127.0.0.1:{srv.port}", get_root, connections=2, request_timeout_s=0.2
        )
        started = time.monotonic()
        result = await driver.run_step(rate=20, duration_s=0.3, warmup_s=0.0)
        took = time.monotonic() - started
    assert result.count == 6
    assert set(result.statuses) <= {"timeout", "expired"}
    assert result.errors == 6
    assert 0.2 <= result.max_s < 0.5
    assert took < 1.5


@pytest.mark.timeout(20)
async def test_step_rates_runs_in_order_and_stops_after_first_failure() -> None:
    seen: list[float] = []
    reported: list[StepResult] = []

    async def before(rate: float) -> None:
        seen.append(rate)

    async def after(step: StepResult) -> None:
        step.extra["hooked"] = True
        reported.append(step)

    async with tiny_server(0.010) as srv:
        driver = OpenLoopDriver(f"http://127.0.0.1:{srv.port}", get_root, connections=8)
        sweep = await step_rates(
            driver,
            [300, 10, 600],
            duration_s=0.3,
            warmup_s=0.0,
            pause_s=0.0,
            target=Target(p95_s=0.05),
            before_step=before,
            after_step=after,
        )
    assert seen == [10, 300]  # 600 never ran
    assert [s.rate for s in sweep.steps] == [10, 300]
    assert [s.passed for s in sweep.steps] == [True, False]
    assert sweep.best_rate == 10
    assert all(s.extra["hooked"] for s in reported)
    # seq keeps counting across steps so factories can spread state over the whole run
    assert driver.seq == 3 + 90
    assert json.dumps(sweep.to_json())


# --------------------------------------------------------------------------- cart workload


def test_cart_plan_keeps_every_line_within_limits() -> None:
    n_requests = 50_000
    k = 10
    n_carts = carts_needed(n_requests, k, 99)
    assert n_carts == 51
    skus = [f"SKU-{i}" for i in range(37)]
    plan = CartPlan.build([f"c{i}" for i in range(n_carts)], skus, k)
    lines = Counter(plan.line_of(seq) for seq in range(n_requests))
    assert max(lines.values()) <= 99
    per_cart = Counter(cart for cart, _ in lines)
    assert len(per_cart) == n_carts
    assert all(len(set(g)) == k for g in plan.cart_skus)
    assert {s for g in plan.cart_skus for s in g} == set(skus)
    # One cart fewer would overflow some line.
    tight = CartPlan.build([f"c{i}" for i in range(n_carts - 1)], skus, k)
    assert max(Counter(tight.line_of(seq) for seq in range(n_requests)).values()) > 99


def test_cart_request_factory_builds_valid_json() -> None:
    plan = CartPlan.build(["a b", "c"], ["S1", 'we"ird'], 2)
    make = plan.factory()
    method, path, body, headers = make(0)
    assert (method, path) == ("POST", "/v1/carts/a%20b/items")
    assert body is not None
    assert json.loads(body) == {"sku": "S1", "quantity": 1}
    assert headers["Content-Type"] == "application/json"
    _, path, body, _ = make(3)
    assert path == "/v1/carts/c/items"
    assert body is not None
    assert json.loads(body)["sku"] == 'we"ird'  # cart 1, its second SKU, JSON-escaped


def _ready(calls: int, ops: int) -> dict[str, object]:
    return {"coalescing": {"cart": {"calls": calls, "ops": ops, "ops_per_call": 0.0}}}


def test_coalescing_delta_single_replica_is_exact() -> None:
    out = coalescing_delta([_ready(10, 30)] * 3, [_ready(110, 430)] * 3, "cart")
    assert out["calls"] == 100
    assert out["ops"] == 400
    assert out["ops_per_call"] == 4.0
    assert out["replicas_seen"] == 1


def test_coalescing_delta_two_replicas_summed_or_refused() -> None:
    before = [_ready(100, 1000), _ready(5000, 50_000)]
    after = [_ready(200, 3000), _ready(5100, 52_000)]
    out = coalescing_delta(before, after, "cart")
    assert (out["calls"], out["ops"], out["replicas_seen"]) == (200, 4000, 2)
    assert out["ops_per_call"] == 20.0
    ambiguous = coalescing_delta(
        [_ready(100, 1000), _ready(150, 1200)], [_ready(5000, 60_000), _ready(6000, 70_000)], "cart"
    )
    assert ambiguous["ops_per_call"] is None
    assert coalescing_delta([{}], [{}], "cart")["ops_per_call"] is None


def test_replace_section_touches_only_its_section() -> None:
    doc = (
        "# Benchmark results\n\n## Other (issue 1)\n\nkeep me\n\n"
        f"{SECTION_HEADING}\n\nold table\n```\n## not a heading inside a fence\n```\nold tail\n\n"
        "### sub of cart\n\nalso old\n\n## Later (issue 3)\n\nkeep me too\n"
    )
    new = f"{SECTION_HEADING}\n\nnew table\n"
    out = replace_section(doc, SECTION_HEADING, new)
    assert "old" not in out
    assert out.count(SECTION_HEADING) == 1
    assert out.startswith("# Benchmark results\n\n## Other (issue 1)\n\nkeep me\n\n")
    assert out.endswith(f"{SECTION_HEADING}\n\nnew table\n\n## Later (issue 3)\n\nkeep me too\n")
    assert replace_section(out, SECTION_HEADING, new) == out  # idempotent
    appended = replace_section("# Benchmark results\n", SECTION_HEADING, new)
    assert appended == f"# Benchmark results\n\n{SECTION_HEADING}\n\nnew table\n"
    assert replace_section("", SECTION_HEADING, new) == new


def test_markdown_section_renders_table_and_reproduce_command() -> None:
    step = StepResult(
        rate=200,
        duration_s=10,
        warmup_s=2,
        count=2000,
        ok=2000,
        errors=0,
        error_rate=0.0,
        achieved_rps=199.8,
        p50_s=0.012,
        p95_s=0.031,
        p99_s=0.050,
        max_s=0.09,
        statuses={"200": 2000},
        send_lag_p99_s=0.001,
        send_lag_max_s=0.002,
        connections=128,
        passed=True,
        extra={"coalescing": {"cart": {"ops_per_call": 3.5, "note": "one BFF replica answered"}}},
    )
    report = {
        "date": "2026-01-01 00:00 UTC",
        "command": "python -m benchmarks.cart_add --rates 200",
        "machine": {
            "nproc": 2,
            "cpu_model": "X",
            "memory_gib": 23.5,
            "python": "3.11.7",
            "ray": "2.60.0",
        },
        "shards": {"cart": 4},
        "config": {
            "carts": 2000,
            "skus_per_cart": 10,
            "skus": 200,
            "connections": 128,
            "warmup_s": 2.0,
            "duration_s": 10.0,
        },
        "sweep": {
            "best_rate": 200,
            "target": {"p95_s": 0.2, "max_error_rate": 0.001},
            "steps": [step.to_json()],
        },
    }
    text = markdown_section(report)
    assert text.startswith(SECTION_HEADING + "\n")
    assert "| 200 | 200 | 12.0 | 31.0 | 50.0 | 0.00 | 3.50 | pass |" in text
    assert "Highest passing rate: 200 cart adds/s" in text
    assert "python -m benchmarks.cart_add --rates 200" in text
    assert "cart=4" in text
