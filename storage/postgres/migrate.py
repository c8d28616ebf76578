"""Schema migrations for the PostgreSQL adapters: numbered ``NNNN_name.sql`` files.

Every starter (process, actor, CLI) may call ``apply_migrations`` at startup. Each pending
file runs in its own transaction under a transaction-scoped advisory lock, and the applied
set is re-read under that lock, so concurrent starters apply each file exactly once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

from storage.postgres.pool import PgConnection, PgPool

# Any fixed 64-bit key works; advisory locks are per database, so this serialises
# migrations of every schema in one database, which is harmless.
MIGRATION_LOCK_KEY = 0x6665_6972_615F_6D69  # "feira_mi"

_FILE_NAME = re.compile(r"^(\d{4})_(\w+)\.sql$")
_TRACKING_TABLE = "feira_schema_migrations"


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str  # the file name without ".sql", e.g. "0001_ledger"
    sql: str


def load_migrations() -> list[Migration]:
    """The migration files shipped with this package, in version order.

    Read through importlib.resources so they are found in a wheel as well as a checkout
    (packaging must include ``storage/postgres/migrations/*.sql``).
    """
    folder = resources.files("storage.postgres").joinpath("migrations")
    found: dict[int, Migration] = {}
    for entry in folder.iterdir():
        match = _FILE_NAME.match(entry.name)
        if match is None:
            continue
        version = int(match.group(1))
        if version in found:
            raise ValueError(
                f"two migrations with version {version}: {found[version].name}, {entry.name}"
            )
        found[version] = Migration(version, entry.name.removesuffix(".sql"), entry.read_text())
    if not found:
        raise FileNotFoundError(f"no NNNN_*.sql migrations under {folder}")
    return [found[v] for v in sorted(found)]


async def _applied_versions(conn: PgConnection) -> set[int]:
    # Tables go to current_schema() (the first existing schema on search_path), so each
    # schema tracks its own migrations. pg_tables is read with the statement's snapshot;
    # to_regclass() would consult this backend's catalog cache, which can still hold
    # "no such table" from before another starter's commit while this one waited for the
    # lock, and the migration would then run twice.
    exists = await conn.fetchval(
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_tables"
        " WHERE schemaname = current_schema() AND tablename = $1)",
        _TRACKING_TABLE,
    )
    if not exists:
        return set()
    rows = await conn.fetch(f"SELECT version FROM {_TRACKING_TABLE}")
    return {int(row[0]) for row in rows}


async def apply_migrations(pool: PgPool, migrations: list[Migration] | None = None) -> list[str]:
    """Apply every migration not yet applied; returns the names applied by this call."""
    pending = sorted(
        load_migrations() if migrations is None else migrations, key=lambda m: m.version
    )
    applied_now: list[str] = []
    async with pool.acquire() as conn:
        # Unlocked first look: on an up-to-date schema, starting takes no lock at all.
        done = await _applied_versions(conn)
        for migration in pending:
            if migration.version in done:
                continue
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_KEY)
                # Another starter may have applied it while this one waited for the lock.
                if migration.version in await _applied_versions(conn):
                    continue
                # No arguments: asyncpg uses the simple protocol, which runs a
                # multi-statement script inside the open transaction.
                await conn.execute(migration.sql)
                await conn.execute(
                    f"INSERT INTO {_TRACKING_TABLE} (version, name) VALUES ($1, $2)",
                    migration.version,
                    migration.name,
                )
            applied_now.append(migration.name)
    return applied_now
