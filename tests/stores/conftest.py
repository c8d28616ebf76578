"""A real, throwaway PostgreSQL for the store tests, and both ledger backends side by side.

The server is found in this order:
1. ``FEIRA_TEST_POSTGRES_URL`` (a DSN for a role allowed to CREATE DATABASE);
2. a server on 127.0.0.1:5432 that trusts user ``postgres`` or ``root``;
3. a private server started from the installed binaries (initdb, pg_ctl) in a temp dir,
   on a free port, as the ``postgres`` user when running as root.
On 1 and 2 a database ``feira_test_<random>`` is created and dropped at the end; on 3 the
whole server is stopped and deleted. Each PostgreSQL test then gets a schema of its own.
Nothing here fakes PostgreSQL: with no server to use, the session stops and says so.
"""

from __future__ import annotations

import asyncio
import glob
import os
import pwd
import shlex
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, Protocol, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg  # type: ignore[import-untyped]
import pytest

from storage.interfaces import PriceStore, StockStore
from storage.postgres import PgPool, PgPriceStore, PgStockStore, apply_migrations
from storage.sqlite.prices import SqlitePriceStore
from storage.sqlite.stock import SqliteStockStore
from tests.conftest import free_port

ENV_URL = "FEIRA_TEST_POSTGRES_URL"
LOCAL_DSNS = (
    "postgresql://postgres@127.0.0.1:5432/postgres",
    "postgresql://root@127.0.0.1:5432/postgres",
)
INSTALL_HINT = (
    "The store tests need a real PostgreSQL. Either set "
    f"{ENV_URL}=postgresql://USER[:PASSWORD]@HOST:PORT/postgres (a role with CREATEDB), "
    "run a server on 127.0.0.1:5432 that trusts user 'postgres', or install the server "
    "binaries (initdb, pg_ctl) so a private one can be started "
    "(Debian/Ubuntu: apt-get install postgresql; macOS: brew install postgresql)."
)
# What a missing, refusing or misconfigured server raises; anything else is a bug.
CONNECT_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)

T = TypeVar("T")


def stop_session(message: str) -> NoReturn:
    pytest.exit(message, returncode=pytest.ExitCode.USAGE_ERROR)


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on a loop and thread of its own.

    Session setup is synchronous (it runs binaries); its few asyncpg calls run apart from
    pytest-asyncio's session loop so neither disturbs the other.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="pg-fixture") as pool:
        return pool.submit(asyncio.run, coro).result()


def with_database(dsn: str, database: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path="/" + quote(database)))


def with_search_path(dsn: str, schema: str) -> str:
    # asyncpg sends DSN query parameters it does not know to the server as settings.
    parts = urlsplit(dsn)
    query = "&".join(q for q in (parts.query, f"search_path={schema}") if q)
    return urlunsplit(parts._replace(query=query))


def where(dsn: str) -> str:
    """host:port of a DSN, for messages: the DSN itself may carry a password."""
    parts = urlsplit(dsn)
    return f"{parts.hostname}:{parts.port or 5432}"


async def can_connect(dsn: str) -> bool:
    try:
        conn = await asyncpg.connect(dsn, timeout=3)
    except CONNECT_ERRORS:
        return False
    await conn.close()
    return True


def port_answers(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((host, port)) == 0


def find_binary(name: str) -> str | None:
    """On PATH, else the newest /usr/lib/postgresql/<major>/bin (Debian keeps them there)."""
    on_path = shutil.which(name)
    if on_path:
        return on_path

    def major(path: str) -> int:
        version = Path(path).parents[1].name
        return int(version) if version.isdigit() else 0

    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=major)
    return found[-1] if found else None


def as_server_user() -> Callable[[list[str]], list[str]]:
    """How to run a server binary: PostgreSQL refuses to run as root."""
    if os.geteuid() != 0:
        return lambda cmd: cmd
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        stop_session(
            "Running as root, which PostgreSQL refuses, and there is no 'postgres' user to "
            f"run it as: create one (useradd postgres) or set {ENV_URL}. " + INSTALL_HINT
        )
    runuser = shutil.which("runuser")
    if runuser:
        return lambda cmd: [runuser, "-u", "postgres", "--", *cmd]
    # su takes one shell command string.
    return lambda cmd: ["su", "postgres", "-c", shlex.join(cmd)]


@dataclass
class PrivateServer:
    admin_dsn: str
    base: Path
    pg_ctl: str
    wrap: Callable[[list[str]], list[str]]

    def stop(self) -> None:
        try:
            # Immediate: the data is thrown away, so no shutdown checkpoint is worth it.
            subprocess.run(
                self.wrap(
                    [self.pg_ctl, "-D", str(self.base / "data"), "-m", "immediate", "-w", "stop"]
                ),
                check=False,
                capture_output=True,
                timeout=30,
            )
        finally:
            shutil.rmtree(self.base, ignore_errors=True)


def start_private_server() -> PrivateServer | None:
    """initdb + pg_ctl start in a temp dir on a free port; None if the binaries are missing."""
    initdb, pg_ctl = find_binary("initdb"), find_binary("pg_ctl")
    if initdb is None or pg_ctl is None:
        return None
    wrap = as_server_user()
    # Not under pytest's tmp dirs: those are private to this user, and the server may run
    # as another one.
    base = Path(tempfile.mkdtemp(prefix="feira-pg-"))
    if os.geteuid() == 0:
        account = pwd.getpwnam("postgres")
        os.chown(base, account.pw_uid, account.pw_gid)
    port = free_port()
    server = PrivateServer(f"postgresql://postgres@127.0.0.1:{port}/postgres", base, pg_ctl, wrap)
    options = (
        f"-p {port} -c listen_addresses=127.0.0.1 -k {base}"  # socket in our dir
        # A throwaway server: durability only costs time.
        " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    )
    data, log = base / "data", base / "server.log"
    steps = (
        [initdb, "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"],
        [pg_ctl, "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "30", "start"],
    )
    for step in steps:
        done = subprocess.run(wrap(step), capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            detail = log.read_text() if log.exists() else ""
            server.stop()
            stop_session(
                f"Could not start a private PostgreSQL with {shlex.join(step)}:\n"
                f"{done.stdout}{done.stderr}{detail}\n{INSTALL_HINT}"
            )
    return server


async def first_reachable(dsns: tuple[str, ...]) -> str | None:
    for dsn in dsns:
        if await can_connect(dsn):
            return dsn
    return None


async def create_database(admin_dsn: str, database: str) -> bool:
    """False if the role may not create databases (then tests use schemas in its own)."""
    conn = await asyncpg.connect(admin_dsn, timeout=10)
    try:
        await conn.execute(f'CREATE DATABASE "{database}"')
    except asyncpg.InsufficientPrivilegeError:
        return False
    finally:
        await conn.close()
    return True


async def drop_database(admin_dsn: str, database: str) -> None:
    conn = await asyncpg.connect(admin_dsn, timeout=10)
    try:
        # FORCE (13+) ends sessions a failed test may have leaked.
        force = " WITH (FORCE)" if conn.get_server_version().major >= 13 else ""
        await conn.execute(f'DROP DATABASE IF EXISTS "{database}"{force}')
    finally:
        await conn.close()


@asynccontextmanager
async def fresh_schema(database_dsn: str) -> AsyncIterator[str]:
    """An empty schema for one test; yields a DSN whose search_path is that schema."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(database_dsn, timeout=10)
    try:
        await admin.execute(f"CREATE SCHEMA {schema}")
        yield with_search_path(database_dsn, schema)
    finally:
        await admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await admin.close()


class Closable(Protocol):
    async def close(self) -> None: ...


StoreT = TypeVar("StoreT", bound=Closable)


@asynccontextmanager
async def contract_stores(
    backend: tuple[str, str],
    open_sqlite: Callable[[str], StoreT],
    open_pg: Callable[[PgPool], StoreT],
    extra_pool_size: int = 2,
) -> AsyncIterator[tuple[StoreT, Callable[[], StoreT]]]:
    """The store under test on ``backend`` (SQLite file or migrated PostgreSQL schema),
    and a way to open another store on the same data, as a second process would; every
    store and pool is closed at the end."""
    kind, location = backend
    opened: list[StoreT] = []
    pools: list[PgPool] = []

    async def close_all() -> None:
        for store in opened:
            await store.close()
        for pool in pools:
            await pool.close()

    if kind == "sqlite":

        def another_sqlite() -> StoreT:
            opened.append(open_sqlite(location))
            return opened[-1]

        try:
            yield another_sqlite(), another_sqlite
        finally:
            await close_all()
        return
    async with fresh_schema(location) as dsn:
        # Closed inside the schema's block: its DROP must not wait on our connections.
        try:
            pools.append(PgPool(dsn))
            await apply_migrations(pools[0])

            def another_pg() -> StoreT:
                pools.append(PgPool(dsn, min_size=0, max_size=extra_pool_size))
                opened.append(open_pg(pools[-1]))
                return opened[-1]

            opened.append(open_pg(pools[0]))
            yield opened[0], another_pg
        finally:
            await close_all()


@pytest.fixture
async def pg_schema(pg_database: str) -> AsyncIterator[str]:
    """DSN of an empty schema (no migrations applied)."""
    async with fresh_schema(pg_database) as dsn:
        yield dsn


@pytest.fixture
async def pg_pool(pg_schema: str) -> AsyncIterator[PgPool]:
    """A pool on a migrated, empty schema."""
    pool = PgPool(pg_schema)
    try:
        await apply_migrations(pool)
        yield pool
    finally:
        await pool.close()


@dataclass(frozen=True)
class Ledger:
    backend: str
    prices: PriceStore
    stock: StockStore


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(backend, location). PostgreSQL is only looked for when a postgres case runs, and
    tmp_path only set up for SQLite: pytest fails tearing down a tmp_path whose test was
    stopped by pytest.exit during setup, which would bury the message saying why."""
    if request.param == "postgres":
        return "postgres", str(request.getfixturevalue("pg_database"))
    tmp_path: Path = request.getfixturevalue("tmp_path")
    return "sqlite", str(tmp_path / "ledger.db")


@pytest.fixture
async def ledger(backend: tuple[str, str]) -> AsyncIterator[Ledger]:
    """Prices and stock on one clean ledger: a new SQLite file or a new PostgreSQL schema."""
    kind, location = backend
    if kind == "sqlite":
        prices, stock = SqlitePriceStore(location), SqliteStockStore(location)
        try:
            yield Ledger(kind, prices, stock)
        finally:
            await prices.close()
            await stock.close()
        return
    async with fresh_schema(location) as dsn:
        pool = PgPool(dsn)
        try:
            await apply_migrations(pool)
            pg_prices, pg_stock = PgPriceStore(pool), PgStockStore(pool)
            yield Ledger(kind, pg_prices, pg_stock)
            await pg_prices.close()
            await pg_stock.close()
        finally:
            await pool.close()
