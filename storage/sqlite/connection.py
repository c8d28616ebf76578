"""One SQLite connection per store, confined to one worker thread.

sqlite3 calls block, so they never run on the event loop. A connection must only be used
from the thread that opened it, hence a single-thread pool per executor: every call for a
store is serialised on that thread, which also gives each store a simple transaction model
(a function run by ``SqliteExecutor.run`` sees no interleaving from other calls).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from typing import TypeVar, TypeVarTuple

from storage.errors import StoreIntegrityError, StoreUnavailable

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

# Several processes (Ray actors, Serve replicas) open the same files. WAL lets readers run
# beside the single writer; the busy timeout makes a writer wait for the lock instead of
# failing at once. In WAL mode NORMAL skips the fsync per commit: still safe against
# process crashes and never corrupts, but the last commits can be lost on power failure.
BUSY_TIMEOUT_S = 10.0
_PRAGMAS = (
    f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}",
    "PRAGMA synchronous = NORMAL",
    "PRAGMA foreign_keys = ON",
)

# Well below SQLite's bound-parameter limit (32766 since 3.32, 999 before).
IN_CHUNK = 500
WRITE_CHUNK = 1000


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema step. Statements run one by one inside the migration's transaction
    (``executescript`` would commit early, so scripts are not used)."""

    version: int
    statements: tuple[str, ...]


_SCHEMA_VERSION_DDL = """
CREATE TABLE IF NOT EXISTS schema_version (
    component TEXT NOT NULL,
    version INTEGER NOT NULL,
    applied_at REAL NOT NULL,
    PRIMARY KEY (component, version)
)
"""


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


@contextmanager
def immediate_transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE takes the write lock up front: a deferred transaction that upgrades
    from read to write gets SQLITE_BUSY without the busy handler ever waiting."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        # Some errors (SQLITE_FULL, IOERR) make SQLite roll back on its own.
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    # Masked: extended codes (SQLITE_BUSY_RECOVERY, ...) share the primary code's low byte.
    return code is not None and code & 0xFF == sqlite3.SQLITE_BUSY


def enable_wal(conn: sqlite3.Connection) -> None:
    """Switch to WAL, waiting out other connections doing the same.

    Changing the journal mode needs an exclusive lock and SQLite does not call the busy
    handler for it: two processes opening a fresh file at once would otherwise fail at
    once with "database is locked". The mode is stored in the file, so this only
    contends on first use.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    delay = 0.005
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL").fetchall()
            return
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


@contextmanager
def read_snapshot(conn: sqlite3.Connection) -> Iterator[None]:
    """Several SELECTs that must see one consistent state of the file."""
    conn.execute("BEGIN")
    try:
        yield
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")


def apply_migrations(
    conn: sqlite3.Connection, component: str, migrations: Sequence[Migration]
) -> None:
    """Apply each not-yet-applied migration once. ``component`` keys the version rows
    because two stores (prices, stock) share the ledger file with separate schemas."""
    versions = [m.version for m in migrations]
    if versions != sorted(set(versions)):
        raise ValueError(f"{component}: migration versions must be unique and ascending")
    with immediate_transaction(conn):
        # Inside the write lock, so two processes opening a fresh file cannot both migrate.
        conn.execute(_SCHEMA_VERSION_DDL)
        applied = {
            row[0]
            for row in conn.execute(
                "SELECT version FROM schema_version WHERE component = ?", (component,)
            )
        }
        for migration in migrations:
            if migration.version in applied:
                continue
            for statement in migration.statements:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_version (component, version, applied_at) VALUES (?, ?, ?)",
                (component, migration.version, time.time()),
            )


class SqliteExecutor:
    """Owns one sqlite3 connection living in one dedicated worker thread.

    Nothing is opened at construction, so building stores (e.g. in a factory or an actor
    constructor) is free; the thread, connection and schema appear on first ``run``.
    """

    def __init__(self, path: str, *, component: str, migrations: Sequence[Migration]) -> None:
        self._path = path
        self._component = component
        self._migrations = tuple(migrations)
        self._pool: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        # Guards lazy pool creation only; the connection itself is thread-confined.
        self._pool_lock = threading.Lock()

    @property
    def path(self) -> str:
        return self._path

    async def run(self, fn: Callable[[sqlite3.Connection, *Ts], T], *args: *Ts) -> T:
        """Run ``fn(conn, *args)`` on the worker thread; driver errors become store errors.

        Cancelling the awaiting task does not stop a call that already started: a write
        may still commit. Callers that need to know must re-read.
        """
        pool = self._ensure_pool()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(pool, self._call, fn, args)

    async def close(self) -> None:
        with self._pool_lock:
            if self._closed:
                return
            self._closed = True
            pool = self._pool
        if pool is None:
            return
        loop = asyncio.get_running_loop()
        try:
            # Queued behind any calls already submitted, so those finish first.
            await loop.run_in_executor(pool, self._close_connection)
        finally:
            # The worker is idle now, so waiting for it does not stall the loop.
            pool.shutdown(wait=True)

    def _ensure_pool(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._closed:
                raise StoreUnavailable(f"{self._component} store at {self._path} is closed")
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix=f"sqlite-{self._component}"
                )
            return self._pool

    # --- worker thread only below -------------------------------------------------------

    def _call(self, fn: Callable[[sqlite3.Connection, *Ts], T], args: tuple[*Ts]) -> T:
        try:
            return fn(self._connection(), *args)
        except sqlite3.OperationalError as exc:
            # Locked/busy past the timeout, I/O errors, cannot open: may work on retry.
            raise StoreUnavailable(f"{self._component} store: {exc}") from exc
        except sqlite3.DatabaseError as exc:
            # IntegrityError (constraint) and the rest: the data or file is refused.
            raise StoreIntegrityError(f"{self._component} store: {exc}") from exc

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            # isolation_level=None: no implicit BEGINs; transactions are explicit.
            conn = sqlite3.connect(self._path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            try:
                for pragma in _PRAGMAS:
                    conn.execute(pragma).fetchall()
                enable_wal(conn)
                apply_migrations(conn, self._component, self._migrations)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _close_connection(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.close()
