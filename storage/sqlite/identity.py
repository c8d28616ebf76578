"""IdentityStore on one SQLite file: accounts, API keys and refresh-token families.

Same tables and rules as the PostgreSQL adapter (migration 0003). Writes run in
``BEGIN IMMEDIATE`` transactions; the single-use rule of a refresh token is one
conditional ``UPDATE ... RETURNING`` (SQLite 3.35+), so two processes sharing the file
cannot both spend one token.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from storage.errors import StoreConflict
from storage.identity import (
    KEY_ROLES,
    AccountRecord,
    ApiKeyRecord,
    RefreshFamilyRecord,
    RefreshTokenRecord,
    email_key,
)
from storage.sqlite.connection import Migration, SqliteExecutor, immediate_transaction

_ROLES = ", ".join(f"'{r}'" for r in KEY_ROLES)

MIGRATIONS = (
    Migration(
        1,
        (
            """
            CREATE TABLE IF NOT EXISTS accounts (
                customer_id TEXT PRIMARY KEY,
                email TEXT NOT NULL,
                email_key TEXT NOT NULL UNIQUE,
                password_hash TEXT NOT NULL,
                name TEXT,
                cart_id TEXT,
                created_at REAL NOT NULL,
                updated_at REAL NOT NULL
            )
            """,
            f"""
            CREATE TABLE IF NOT EXISTS api_keys (
                key_id TEXT PRIMARY KEY CHECK (key_id <> ''),
                secret_hash TEXT NOT NULL CHECK (length(secret_hash) = 64),
                role TEXT CHECK (role IS NULL OR role IN ({_ROLES})),
                subject TEXT,
                scopes TEXT NOT NULL CHECK (json_valid(scopes)),
                plan TEXT NOT NULL,
                label TEXT NOT NULL,
                created_at REAL NOT NULL,
                revoked_at REAL,
                created_by TEXT,
                CHECK (role IS NULL OR subject IS NOT NULL)
            )
            """,
            "CREATE INDEX IF NOT EXISTS api_keys_subject ON api_keys (subject, created_at)",
            """
            CREATE TABLE IF NOT EXISTS refresh_families (
                family_id TEXT PRIMARY KEY,
                customer_id TEXT NOT NULL REFERENCES accounts (customer_id),
                created_at REAL NOT NULL,
                revoked_at REAL,
                revoked_reason TEXT
            )
            """,
            """
            CREATE TABLE IF NOT EXISTS refresh_tokens (
                token_hash TEXT PRIMARY KEY CHECK (length(token_hash) = 64),
                family_id TEXT NOT NULL
                    REFERENCES refresh_families (family_id) ON DELETE CASCADE,
                customer_id TEXT NOT NULL,
                issued_at REAL NOT NULL,
                expires_at REAL NOT NULL,
                used_at REAL
            )
            """,
            "CREATE INDEX IF NOT EXISTS refresh_tokens_family ON refresh_tokens (family_id)",
            "CREATE INDEX IF NOT EXISTS refresh_tokens_expiry ON refresh_tokens (expires_at)",
        ),
    ),
)

_ACCOUNT = "customer_id, email, password_hash, name, cart_id, created_at, updated_at"
_KEY = "key_id, secret_hash, role, subject, scopes, plan, label, created_at, revoked_at, created_by"
_FAMILY = "family_id, customer_id, created_at, revoked_at, revoked_reason"
_TOKEN = "token_hash, family_id, customer_id, issued_at, expires_at, used_at"


def _account(row: Sequence[Any] | None) -> AccountRecord | None:
    return None if row is None else AccountRecord(*row)


def _key(row: Sequence[Any]) -> ApiKeyRecord:
    key_id, secret_hash, role, subject, scopes, plan, label, created, revoked, by = row
    return ApiKeyRecord(
        key_id,
        secret_hash,
        role,
        subject,
        tuple(json.loads(scopes)),
        plan,
        label,
        created,
        revoked,
        by,
    )


# --- worker-thread functions -------------------------------------------------------------


def _insert_account(conn: sqlite3.Connection, a: AccountRecord) -> None:
    with immediate_transaction(conn):
        cursor = conn.execute(
            "INSERT INTO accounts (customer_id, email, email_key, password_hash, name,"
            " cart_id, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT DO NOTHING",
            (
                a.customer_id,
                a.email,
                email_key(a.email),
                a.password_hash,
                a.name,
                a.cart_id,
                a.created_at,
                a.updated_at,
            ),
        )
        if cursor.rowcount != 1:
            raise StoreConflict(f"account {a.customer_id} or its email already exists")


def _select_account(conn: sqlite3.Connection, column: str, value: str) -> AccountRecord | None:
    return _account(
        conn.execute(f"SELECT {_ACCOUNT} FROM accounts WHERE {column} = ?", (value,)).fetchone()
    )


def _update_account(
    conn: sqlite3.Connection, column: str, value: str | None, customer_id: str, at: float
) -> AccountRecord | None:
    with immediate_transaction(conn):
        return _account(
            conn.execute(
                f"UPDATE accounts SET {column} = ?, updated_at = ? WHERE customer_id = ?"
                f" RETURNING {_ACCOUNT}",
                (value, at, customer_id),
            ).fetchone()
        )


def _insert_key(conn: sqlite3.Connection, k: ApiKeyRecord) -> None:
    with immediate_transaction(conn):
        cursor = conn.execute(
            f"INSERT INTO api_keys ({_KEY}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT DO NOTHING",
            (
                k.key_id,
                k.secret_hash,
                k.role,
                k.subject,
                json.dumps(list(k.scopes)),
                k.plan,
                k.label,
                k.created_at,
                k.revoked_at,
                k.created_by,
            ),
        )
        if cursor.rowcount != 1:
            raise StoreConflict(f"api key {k.key_id} already exists")


def _get_key(conn: sqlite3.Connection, key_id: str) -> ApiKeyRecord | None:
    row = conn.execute(f"SELECT {_KEY} FROM api_keys WHERE key_id = ?", (key_id,)).fetchone()
    return None if row is None else _key(row)


def _list_keys(
    conn: sqlite3.Connection, subject: str | None, role: str | None
) -> list[ApiKeyRecord]:
    rows = conn.execute(
        f"SELECT {_KEY} FROM api_keys WHERE (?1 IS NULL OR subject = ?1)"
        " AND (?2 IS NULL OR role = ?2) ORDER BY created_at, key_id",
        (subject, role),
    )
    return [_key(row) for row in rows]


def _revoke_key(
    conn: sqlite3.Connection, key_id: str, at: float, subject: str | None, role: str | None
) -> ApiKeyRecord | None:
    with immediate_transaction(conn):
        row = conn.execute(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?1) WHERE key_id = ?2"
            " AND (?3 IS NULL OR subject = ?3) AND (?4 IS NULL OR role = ?4)"
            f" RETURNING {_KEY}",
            (at, key_id, subject, role),
        ).fetchone()
    return None if row is None else _key(row)


def _token_row(t: RefreshTokenRecord) -> tuple[Any, ...]:
    return (t.token_hash, t.family_id, t.customer_id, t.issued_at, t.expires_at, t.used_at)


def _start_family(
    conn: sqlite3.Connection, f: RefreshFamilyRecord, first: RefreshTokenRecord
) -> None:
    with immediate_transaction(conn):
        cursor = conn.execute(
            f"INSERT INTO refresh_families ({_FAMILY}) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT DO NOTHING",
            (f.family_id, f.customer_id, f.created_at, f.revoked_at, f.revoked_reason),
        )
        if cursor.rowcount == 1:
            cursor = conn.execute(
                f"INSERT INTO refresh_tokens ({_TOKEN}) VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT DO NOTHING",
                _token_row(first),
            )
        if cursor.rowcount != 1:
            # Raising rolls back the family inserted above.
            raise StoreConflict(f"refresh family {f.family_id} or its token already exists")


def _rotate(
    conn: sqlite3.Connection, token_hash: str, new_hash: str, now: float, expires_at: float
) -> RefreshTokenRecord | None:
    with immediate_transaction(conn):
        row = conn.execute(
            """
            UPDATE refresh_tokens SET used_at = ?1
            WHERE token_hash = ?2 AND used_at IS NULL AND expires_at > ?1
              AND family_id IN (SELECT family_id FROM refresh_families
                                WHERE revoked_at IS NULL)
            RETURNING family_id, customer_id
            """,
            (now, token_hash),
        ).fetchone()
        if row is None:
            return None
        successor = RefreshTokenRecord(new_hash, row[0], row[1], now, expires_at)
        conn.execute(
            f"INSERT INTO refresh_tokens ({_TOKEN}) VALUES (?, ?, ?, ?, ?, ?)",
            _token_row(successor),
        )
    return successor


def _get_token(conn: sqlite3.Connection, token_hash: str) -> RefreshTokenRecord | None:
    row = conn.execute(
        f"SELECT {_TOKEN} FROM refresh_tokens WHERE token_hash = ?", (token_hash,)
    ).fetchone()
    return None if row is None else RefreshTokenRecord(*row)


def _get_family(conn: sqlite3.Connection, family_id: str) -> RefreshFamilyRecord | None:
    row = conn.execute(
        f"SELECT {_FAMILY} FROM refresh_families WHERE family_id = ?", (family_id,)
    ).fetchone()
    return None if row is None else RefreshFamilyRecord(*row)


def _revoke_family(conn: sqlite3.Connection, family_id: str, at: float, reason: str) -> bool:
    with immediate_transaction(conn):
        cursor = conn.execute(
            "UPDATE refresh_families SET revoked_at = ?, revoked_reason = ?"
            " WHERE family_id = ? AND revoked_at IS NULL",
            (at, reason, family_id),
        )
        return cursor.rowcount == 1


def _list_tokens(conn: sqlite3.Connection, family_id: str) -> list[RefreshTokenRecord]:
    rows = conn.execute(
        f"SELECT {_TOKEN} FROM refresh_tokens WHERE family_id = ? ORDER BY issued_at, token_hash",
        (family_id,),
    )
    return [RefreshTokenRecord(*row) for row in rows]


def _purge(conn: sqlite3.Connection, now: float) -> int:
    with immediate_transaction(conn):
        deleted = conn.execute("DELETE FROM refresh_tokens WHERE expires_at <= ?", (now,)).rowcount
        conn.execute(
            "DELETE FROM refresh_families WHERE NOT EXISTS"
            " (SELECT 1 FROM refresh_tokens AS t WHERE t.family_id = refresh_families.family_id)"
        )
        return deleted


class SqliteIdentityStore:
    """IdentityStore on one SQLite file (its own, or shared with other components)."""

    def __init__(self, path: str) -> None:
        self._db = SqliteExecutor(path, component="identity", migrations=MIGRATIONS)

    async def create_account(self, account: AccountRecord) -> None:
        await self._db.run(_insert_account, account)

    async def get_account(self, customer_id: str) -> AccountRecord | None:
        return await self._db.run(_select_account, "customer_id", customer_id)

    async def get_account_by_email(self, email: str) -> AccountRecord | None:
        return await self._db.run(_select_account, "email_key", email_key(email))

    async def set_password_hash(
        self, customer_id: str, password_hash: str, updated_at: float
    ) -> AccountRecord | None:
        return await self._db.run(
            _update_account, "password_hash", password_hash, customer_id, float(updated_at)
        )

    async def set_cart(
        self, customer_id: str, cart_id: str | None, updated_at: float
    ) -> AccountRecord | None:
        return await self._db.run(
            _update_account, "cart_id", cart_id, customer_id, float(updated_at)
        )

    async def create_api_key(self, key: ApiKeyRecord) -> None:
        await self._db.run(_insert_key, key)

    async def get_api_key(self, key_id: str) -> ApiKeyRecord | None:
        return await self._db.run(_get_key, key_id)

    async def list_api_keys(
        self, *, subject: str | None = None, role: str | None = None
    ) -> list[ApiKeyRecord]:
        return await self._db.run(_list_keys, subject, role)

    async def revoke_api_key(
        self,
        key_id: str,
        revoked_at: float,
        *,
        subject: str | None = None,
        role: str | None = None,
    ) -> ApiKeyRecord | None:
        return await self._db.run(_revoke_key, key_id, float(revoked_at), subject, role)

    async def start_refresh_family(
        self, family: RefreshFamilyRecord, first: RefreshTokenRecord
    ) -> None:
        await self._db.run(_start_family, family, first)

    async def rotate_refresh_token(
        self, token_hash: str, new_hash: str, now: float, expires_at: float
    ) -> RefreshTokenRecord | None:
        return await self._db.run(_rotate, token_hash, new_hash, float(now), float(expires_at))

    async def get_refresh_token(self, token_hash: str) -> RefreshTokenRecord | None:
        return await self._db.run(_get_token, token_hash)

    async def get_refresh_family(self, family_id: str) -> RefreshFamilyRecord | None:
        return await self._db.run(_get_family, family_id)

    async def revoke_refresh_family(self, family_id: str, revoked_at: float, reason: str) -> bool:
        return await self._db.run(_revoke_family, family_id, float(revoked_at), reason)

    async def list_refresh_tokens(self, family_id: str) -> list[RefreshTokenRecord]:
        return await self._db.run(_list_tokens, family_id)

    async def purge_refresh_tokens(self, now: float) -> int:
        return await self._db.run(_purge, float(now))

    async def close(self) -> None:
        await self._db.close()
