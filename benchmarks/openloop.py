"""Open-loop, constant-arrival-rate HTTP/1.1 load driver.

Request ``i`` of a step is due at ``t0 + i / rate`` whatever the server is doing, and its
latency is measured from that intended time. A closed-loop driver (send, wait, send again)
slows down with the server and so never records the time its own requests spent waiting to
be sent; that is coordinated omission, and it makes a stalled server look healthy. Here a
request that finds every connection busy waits for one, and the wait is part of its latency.

The client is a small hand-written HTTP/1.1 client (an asyncio.Protocol) with one keep-alive
connection per worker. The driver shares two cores with the server under test, and a general
client costs the server CPU: measured here under uvloop, this driver spends ~150 us of CPU
per request at 1,500 req/s and ~60 us at 12,000 req/s; httpx spends ~2.9 ms per request
(see benchmarks/README.md).

Only loopback targets are accepted: this driver exists to load a Feira on this machine.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit

Headers = Mapping[str, str]
Request = tuple[str, str, bytes | None, Headers]
MakeRequest = Callable[[int], Request]

# Negative status codes mark requests that got no HTTP response.
TRANSPORT_ERROR = -1  # connect refused/reset, EOF mid-response
TIMEOUT = -2  # no full response within request_timeout_s of the intended send time
EXPIRED = -3  # still waiting for a connection when its deadline passed; never sent
PROTOCOL_ERROR = -4  # the bytes that came back were not HTTP/1.1 we understand
UNSENT = -5  # placeholder; a finished step has none left

_STATUS_NAMES = {
    TRANSPORT_ERROR: "transport",
    TIMEOUT: "timeout",
    EXPIRED: "expired",
    PROTOCOL_ERROR: "protocol",
    UNSENT: "unsent",
}

# Bounds so a misbehaving server cannot make one response loop or grow memory without end.
_MAX_HEAD_BYTES = 64 * 1024
_MAX_BODY_BYTES = 64 * 1024 * 1024
_MAX_CHUNKS = 100_000
# Workers start slightly after t0 is fixed so request 0 is not already late at birth.
_START_LEAD_S = 0.05


class HttpProtocolError(Exception):
    """The peer answered with something this client does not parse."""


# --------------------------------------------------------------------------- pure helpers


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of ``values`` (need not be sorted).

    Nearest rank returns an observed value, never an interpolation between two, so a P99
    of a step is a latency some request really had. P0 is the minimum, P100 the maximum.
    """
    if not values:
        raise ValueError("percentile of an empty sequence")
    if not 0.0 <= pct <= 100.0:
        raise ValueError(f"percentile must be within [0, 100], got {pct}")
    ordered = sorted(values)
    rank = math.ceil(pct / 100.0 * len(ordered))
    return ordered[max(rank, 1) - 1]


def percentiles(values: Sequence[float], pcts: Iterable[float]) -> list[float]:
    """Several nearest-rank percentiles with one sort."""
    if not values:
        raise ValueError("percentile of an empty sequence")
    ordered = sorted(values)
    out = []
    for pct in pcts:
        if not 0.0 <= pct <= 100.0:
            raise ValueError(f"percentile must be within [0, 100], got {pct}")
        rank = math.ceil(pct / 100.0 * len(ordered))
        out.append(ordered[max(rank, 1) - 1])
    return out


def schedule_count(rate: float, seconds: float) -> int:
    """How many requests fall in ``[0, seconds)`` at ``rate`` per second: #{i : i/rate < s}."""
    if rate <= 0:
        raise ValueError(f"rate must be positive, got {rate}")
    if seconds <= 0:
        return 0
    # The epsilon keeps 1000 rps x 10 s at exactly 10,000 despite binary rounding of rate*s.
    return max(0, math.ceil(rate * seconds - 1e-9))


def intended_time(t0: float, rate: float, i: int) -> float:
    """When request ``i`` is due. Computed from ``i`` rather than accumulated, so no drift."""
    return t0 + i / rate


def intended_times(t0: float, rate: float, count: int) -> list[float]:
    return [intended_time(t0, rate, i) for i in range(count)]


@dataclass(frozen=True)
class Target:
    """The capacity target: a step passes when P95 < p95_s and error rate < max_error_rate."""

    p95_s: float = 0.200
    max_error_rate: float = 0.001


def judge(p95_s: float, errors: int, count: int, target: Target = Target()) -> bool:
    """True when a step meets the target. A step with no requests proves nothing: it fails."""
    if count <= 0:
        return False
    return p95_s < target.p95_s and errors / count < target.max_error_rate


def status_name(code: int) -> str:
    return _STATUS_NAMES.get(code, str(code))


def is_error(code: int, expected: frozenset[int] = frozenset()) -> bool:
    return not (200 <= code < 300 or code in expected)


# --------------------------------------------------------------------------- results


@dataclass
class StepResult:
    """One step. Times are seconds; latency counts every measured request, failed ones too."""

    rate: float
    duration_s: float
    warmup_s: float
    count: int  # measured requests (warm-up excluded)
    ok: int  # 2xx or expected status
    errors: int
    error_rate: float
    achieved_rps: float  # ok responses per second of the measured window
    p50_s: float
    p95_s: float
    p99_s: float
    max_s: float
    statuses: dict[str, int]
    # How late the driver woke up for a request it was idle and waiting to send. Large
    # values mean the driver itself (or CPU contention with the server) distorted the step.
    send_lag_p99_s: float
    send_lag_max_s: float
    connections: int
    passed: bool
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def summarise(
    *,
    rate: float,
    duration_s: float,
    warmup_s: float,
    latencies: Sequence[float],
    statuses: Sequence[int],
    done_times: Sequence[float],
    window_start: float,
    send_lags: Sequence[float],
    connections: int,
    expected: frozenset[int] = frozenset(),
    target: Target = Target(),
) -> StepResult:
    """Reduce the measured requests of a step (warm-up already cut) to a StepResult."""
    count = len(latencies)
    codes = Counter(statuses)
    errors = sum(n for code, n in codes.items() if is_error(code, expected))
    ok = count - errors
    if count:
        p50, p95, p99, top = percentiles(latencies, (50, 95, 99, 100))
    else:
        p50 = p95 = p99 = top = math.nan
    ok_done = [d for d, s in zip(done_times, statuses, strict=True) if not is_error(s, expected)]
    # The window runs to the last good answer, so a server that drains a backlog after the
    # schedule ends shows a lower achieved rate than the one offered.
    window = max(duration_s, (max(ok_done) - window_start) if ok_done else 0.0)
    lag_p99, lag_max = percentiles(send_lags, (99, 100)) if send_lags else (0.0, 0.0)
    return StepResult(
        rate=rate,
        duration_s=duration_s,
        warmup_s=warmup_s,
        count=count,
        ok=ok,
        errors=errors,
        error_rate=errors / count if count else 1.0,
        achieved_rps=ok / window if window > 0 else 0.0,
        p50_s=p50,
        p95_s=p95,
        p99_s=p99,
        max_s=top,
        statuses={status_name(c): n for c, n in sorted(codes.items())},
        send_lag_p99_s=lag_p99,
        send_lag_max_s=lag_max,
        connections=connections,
        passed=judge(p95, errors, count, target),
    )


# --------------------------------------------------------------------------- HTTP client


def require_loopback(base_url: str) -> tuple[str, int]:
    """(host, port) of an http:// URL on this machine; anything else is refused."""
    parts = urlsplit(base_url)
    if parts.scheme != "http":
        raise ValueError(f"only http:// is supported, got {base_url!r}")
    host = parts.hostname or ""
    if host != "localhost":
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ValueError(f"refusing to load a non-loopback host: {host!r}")
    return host, parts.port or 80


def encode_request(
    method: str, path: str, body: bytes | None, headers: Headers, host: str
) -> bytes:
    if not path.startswith("/"):
        raise ValueError(f"path must start with '/': {path!r}")
    lines = [f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n"]
    lines.extend(f"{k}: {v}\r\n" for k, v in headers.items())
    if body is not None or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body) if body else 0}\r\n")
    lines.append("\r\n")
    head = "".join(lines).encode("latin-1")
    return head + body if body else head


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    keep_alive: bool


def parse_response(
    buf: bytes | bytearray, method: str = "GET", eof: bool = False
) -> tuple[Response, int] | None:
    """Parse the response at the start of ``buf``: (response, bytes used), or None for "need
    more bytes". ``eof`` says the peer closed, which ends a body sent without a length.
    """
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) > _MAX_HEAD_BYTES:
            raise HttpProtocolError("response head too large")
        return None
    lines = bytes(buf[:end]).split(b"\r\n")
    status_line = lines[0]
    if not status_line.startswith(b"HTTP/1.") or len(status_line) < 12:
        raise HttpProtocolError(f"bad status line {status_line[:80]!r}")
    try:
        status = int(status_line[9:12])
    except ValueError as error:
        raise HttpProtocolError(f"bad status line {status_line[:80]!r}") from error
    length: int | None = None
    chunked = False
    keep_alive = status_line.startswith(b"HTTP/1.1")
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError as error:
                raise HttpProtocolError("bad content-length") from error
            if length < 0 or length > _MAX_BODY_BYTES:
                raise HttpProtocolError(f"unacceptable content-length {length}")
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name == b"connection":
            token = value.strip().lower()
            if token == b"close":
                keep_alive = False
            elif token == b"keep-alive":
                keep_alive = True
    start = end + 4
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return Response(status, b"", keep_alive), start
    if chunked:
        return _parse_chunked(buf, start, status, keep_alive)
    if length is not None:
        if len(buf) - start < length:
            return None
        return Response(status, bytes(buf[start : start + length]), keep_alive), start + length
    # Neither a length nor chunking: the body runs until the server closes.
    if len(buf) - start > _MAX_BODY_BYTES:
        raise HttpProtocolError("response body too large")
    if not eof:
        return None
    return Response(status, bytes(buf[start:]), False), len(buf)


def _parse_chunked(
    buf: bytes | bytearray, pos: int, status: int, keep_alive: bool
) -> tuple[Response, int] | None:
    parts: list[bytes] = []
    total = 0
    for _ in range(_MAX_CHUNKS):
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        try:
            size = int(bytes(buf[pos:eol]).split(b";", 1)[0].strip(), 16)
        except ValueError as error:
            raise HttpProtocolError("bad chunk size") from error
        pos = eol + 2
        if size == 0:
            # Optional trailers, then an empty line.
            if buf[pos : pos + 2] == b"\r\n":
                return Response(status, b"".join(parts), keep_alive), pos + 2
            tail = buf.find(b"\r\n\r\n", pos)
            if tail < 0:
                return None
            return Response(status, b"".join(parts), keep_alive), tail + 4
        total += size
        if total > _MAX_BODY_BYTES:
            raise HttpProtocolError("response body too large")
        if len(buf) < pos + size + 2:
            return None
        parts.append(bytes(buf[pos : pos + size]))
        pos += size + 2
    raise HttpProtocolError("too many chunks")


class _ClientProtocol(asyncio.Protocol):
    """Parses responses straight from data_received into a future.

    Cheaper than StreamReader (no readuntil/readexactly wake-ups per response), which is
    most of the driver's cost per request.
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[Response] | None = None
        self.method = "GET"
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCP transport is not registered as an asyncio.Transport, so no isinstance.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        waiter = self.waiter
        if waiter is None or waiter.done():
            # Bytes nobody asked for: the connection can no longer be trusted.
            self.fail(HttpProtocolError("unsolicited response bytes"))
            return
        try:
            parsed = parse_response(self.buf, self.method)
        except HttpProtocolError as error:
            self.fail(error)
            return
        if parsed is None:
            return
        response, used = parsed
        if used != len(self.buf):
            self.fail(HttpProtocolError("bytes after the response"))
            return
        self.buf.clear()
        self.waiter = None
        waiter.set_result(response)

    def eof_received(self) -> bool | None:
        return None  # let the transport close; connection_lost settles the waiter

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter, self.waiter = self.waiter, None
        if waiter is None or waiter.done():
            return
        try:
            parsed = parse_response(self.buf, self.method, eof=True)
        except HttpProtocolError as error:
            waiter.set_exception(error)
            return
        if parsed is not None:
            waiter.set_result(parsed[0])
        else:
            waiter.set_exception(exc or ConnectionResetError("connection closed mid-response"))

    def fail(self, error: Exception) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class Connection:
    """One keep-alive HTTP/1.1 connection, (re)opened lazily. One request at a time.

    ``deadline`` (time.monotonic) is read by the driver's watchdog, which calls ``expire``
    on requests past it; one watchdog is much cheaper than a timer per request.
    """

    def __init__(self, host: str, port: int, connect_timeout_s: float = 5.0) -> None:
        self.host = host
        self.port = port
        self.host_header = f"{host}:{port}"
        self.connect_timeout_s = connect_timeout_s
        self.deadline = math.inf
        self._proto: _ClientProtocol | None = None

    async def connect(self) -> None:
        self.close()
        loop = asyncio.get_running_loop()
        _, proto = await asyncio.wait_for(
            loop.create_connection(_ClientProtocol, self.host, self.port), self.connect_timeout_s
        )
        self._proto = proto

    def close(self) -> None:
        proto, self._proto = self._proto, None
        if proto is not None and proto.transport is not None:
            proto.transport.abort()

    def expire(self) -> None:
        """Fail the request in flight with TimeoutError and drop the connection, since a
        late answer would otherwise be read as the next request's."""
        proto = self._proto
        if proto is not None:
            proto.fail(TimeoutError("request deadline passed"))
        self._proto = None

    async def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Headers | None = None,
        timeout_s: float | None = None,
    ) -> Response:
        """Send one request and read its whole response.

        ``timeout_s`` bounds the call on its own; the driver leaves it None and relies on
        ``deadline`` and its watchdog instead.
        """
        if timeout_s is not None:
            async with asyncio.timeout(timeout_s):
                return await self.request(method, path, body, headers)
        proto = self._proto
        # A server may close an idle keep-alive connection; reconnect rather than write
        # into a socket already known to be dead.
        if proto is None or proto.closed or proto.transport is None or proto.transport.is_closing():
            await self.connect()
            proto = self._proto
            assert proto is not None
            assert proto.transport is not None
        waiter: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        proto.waiter = waiter
        proto.method = method
        proto.transport.write(encode_request(method, path, body, headers or {}, self.host_header))
        response = await waiter
        if not response.keep_alive:
            self.close()
        return response


# Transport failures a load driver counts instead of crashing on: refused or reset
# connections and connect timeouts are all OSErrors (TimeoutError is one too, so handlers
# that tell a deadline from a transport error catch TimeoutError first).
_TRANSPORT_ERRORS = (OSError,)


# --------------------------------------------------------------------------- driver


class OpenLoopDriver:
    """Runs steps of constant-rate traffic against one loopback HTTP server.

    ``make_request(seq)`` builds request number ``seq``; ``seq`` counts up across all steps
    of this driver, so a factory can spread state (carts, SKUs) over the whole run.
    """

    def __init__(
        self,
        base_url: str,
        make_request: MakeRequest,
        *,
        connections: int = 128,
        request_timeout_s: float = 10.0,
        connect_timeout_s: float = 5.0,
        expected_statuses: Iterable[int] = (),
    ) -> None:
        if connections < 1:
            raise ValueError("connections must be >= 1")
        if request_timeout_s <= 0:
            raise ValueError("request_timeout_s must be positive")
        self.host, self.port = require_loopback(base_url)
        self.make_request = make_request
        self.connections = connections
        self.request_timeout_s = request_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.expected = frozenset(expected_statuses)
        self.seq = 0

    async def run_step(
        self, rate: float, duration_s: float, warmup_s: float = 0.0, target: Target = Target()
    ) -> StepResult:
        """Offer ``rate`` req/s for ``warmup_s + duration_s``; measure the last ``duration_s``.

        Returns once every request has an answer or has failed; that takes at most the
        schedule plus ``request_timeout_s`` (plus one watchdog tick), since each request's
        deadline is its intended send time plus the timeout.
        """
        if duration_s <= 0:
            raise ValueError("duration_s must be positive")
        n_warm = schedule_count(rate, warmup_s)
        n_total = schedule_count(rate, warmup_s + duration_s)
        seq0 = self.seq
        self.seq += n_total
        latency = [math.nan] * n_total
        status = [UNSENT] * n_total
        lag: list[float] = []
        timeout_s = self.request_timeout_s
        make_request = self.make_request
        monotonic = time.monotonic

        pool = [
            Connection(self.host, self.port, self.connect_timeout_s)
            for _ in range(min(self.connections, max(n_total, 1)))
        ]
        # Connect before t0 so the first requests do not pay for opening the pool; a
        # connection that fails here is retried (and timed) on its first request.
        opened = await asyncio.gather(*(c.connect() for c in pool), return_exceptions=True)
        for conn, outcome in zip(pool, opened, strict=True):
            if outcome is None:
                continue
            if not isinstance(outcome, _TRANSPORT_ERRORS):
                raise outcome
            conn.close()

        t0 = monotonic() + _START_LEAD_S
        next_index = 0

        async def worker(conn: Connection) -> None:
            nonlocal next_index
            # Each pass claims one request, so n_total passes across all workers end it.
            while next_index < n_total:
                i = next_index
                next_index += 1
                intended = t0 + i / rate
                delay = intended - monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                    if i >= n_warm:
                        lag.append(monotonic() - intended)
                now = monotonic()
                deadline = intended + timeout_s
                if now >= deadline:
                    status[i] = EXPIRED
                    latency[i] = now - intended
                    continue
                method, path, body, headers = make_request(seq0 + i)
                conn.deadline = deadline
                try:
                    status[i] = (await conn.request(method, path, body, headers)).status
                except TimeoutError:
                    status[i] = TIMEOUT
                    conn.close()
                except _TRANSPORT_ERRORS:
                    status[i] = TRANSPORT_ERROR
                    conn.close()
                except HttpProtocolError:
                    status[i] = PROTOCOL_ERROR
                    conn.close()
                finally:
                    conn.deadline = math.inf
                latency[i] = monotonic() - intended

        tick = min(0.05, timeout_s / 10)
        max_ticks = math.ceil((_START_LEAD_S + n_total / rate + timeout_s) / tick) + 100

        async def watchdog() -> None:
            for _ in range(max_ticks):
                await asyncio.sleep(tick)
                now = monotonic()
                for conn in pool:
                    if conn.deadline <= now:
                        conn.expire()

        guard = asyncio.create_task(watchdog())
        try:
            # A TaskGroup, not gather: if make_request raises, the other workers must stop
            # too rather than keep loading the server after run_step has failed.
            async with asyncio.TaskGroup() as workers:
                for conn in pool:
                    workers.create_task(worker(conn))
        finally:
            guard.cancel()
            for conn in pool:
                conn.close()

        measured = slice(n_warm, n_total)
        done = [intended_time(t0, rate, i) + latency[i] for i in range(n_warm, n_total)]
        return summarise(
            rate=rate,
            duration_s=duration_s,
            warmup_s=warmup_s,
            latencies=latency[measured],
            statuses=status[measured],
            done_times=done,
            window_start=t0 + n_warm / rate,
            send_lags=lag,
            connections=len(pool),
            expected=self.expected,
            target=target,
        )


@dataclass
class Sweep:
    steps: list[StepResult]
    best_rate: float | None  # highest offered rate that passed; None if none did
    target: Target

    def to_json(self) -> dict[str, Any]:
        return {
            "best_rate": self.best_rate,
            "target": asdict(self.target),
            "steps": [s.to_json() for s in self.steps],
        }


async def step_rates(
    driver: OpenLoopDriver,
    rates: Iterable[float],
    *,
    duration_s: float = 10.0,
    warmup_s: float = 2.0,
    pause_s: float = 1.0,
    target: Target = Target(),
    before_step: Callable[[float], Awaitable[None]] | None = None,
    after_step: Callable[[StepResult], Awaitable[None]] | None = None,
) -> Sweep:
    """Run ``rates`` in increasing order; stop after the first step that fails ``target``.

    ``after_step`` sees each result before the next step starts (to print it, or to add
    server-side counters to ``result.extra``).
    """
    steps: list[StepResult] = []
    best: float | None = None
    for n, rate in enumerate(sorted(set(rates))):
        if n and pause_s > 0:
            # Lets the server finish background work from the last step (batches, GC).
            await asyncio.sleep(pause_s)
        if before_step is not None:
            await before_step(rate)
        result = await driver.run_step(rate, duration_s, warmup_s, target)
        if after_step is not None:
            await after_step(result)
        steps.append(result)
        if not result.passed:
            break
        best = rate
    return Sweep(steps, best, target)
