"""IdentityStore on PostgreSQL (migration 0003): accounts, API keys, refresh families.

Driver errors leave ``PgPool.acquire`` as storage errors (``map_pg_errors``): an unknown
customer for a refresh family is a foreign-key violation, hence ``StoreIntegrityError``.
Taken emails and ids are found with ``ON CONFLICT DO NOTHING`` and become
``StoreConflict``, so a race between two sign-ups needs no driver error to tell apart.
"""

from __future__ import annotations

from storage.errors import StoreConflict
from storage.identity import (
    AccountRecord,
    ApiKeyRecord,
    RefreshFamilyRecord,
    RefreshTokenRecord,
    email_key,
)
from storage.postgres._base import PgStore
from storage.postgres.pool import PgPool, PgRecord

_ACCOUNT = "customer_id, email, password_hash, name, cart_id, created_at, updated_at"
_KEY = "key_id, secret_hash, role, subject, scopes, plan, label, created_at, revoked_at, created_by"
_FAMILY = "family_id, customer_id, created_at, revoked_at, revoked_reason"
_TOKEN = "token_hash, family_id, customer_id, issued_at, expires_at, used_at"

# One statement: the conditional UPDATE spends the token and the INSERT issues its
# successor only if it did. A concurrent call with the same token waits for the row lock,
# then re-checks ``used_at IS NULL`` against the committed row and spends nothing. A family
# revoked concurrently may still get the successor, which can never be spent: every
# rotation re-checks the family.
_ROTATE = f"""
    WITH spent AS (
        UPDATE refresh_tokens SET used_at = $3
        WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $3
          AND family_id IN (SELECT family_id FROM refresh_families WHERE revoked_at IS NULL)
        RETURNING family_id, customer_id
    )
    INSERT INTO refresh_tokens ({_TOKEN})
    SELECT $2, family_id, customer_id, $3, $4, NULL FROM spent
    RETURNING {_TOKEN}
"""


def _account(row: PgRecord) -> AccountRecord:
    return AccountRecord(*row)


def _key(row: PgRecord) -> ApiKeyRecord:
    key_id, secret_hash, role, subject, scopes, plan, label, created, revoked, by = row
    return ApiKeyRecord(
        key_id, secret_hash, role, subject, tuple(scopes), plan, label, created, revoked, by
    )


class PgIdentityStore(PgStore):
    """IdentityStore on PostgreSQL. Expects ``apply_migrations`` to have run on the pool."""

    def __init__(self, pool: PgPool) -> None:
        super().__init__(pool, "identity")

    # --- accounts -------------------------------------------------------------------------

    async def create_account(self, account: AccountRecord) -> None:
        a = account
        async with self._connection() as conn:
            inserted = await conn.fetchval(
                "INSERT INTO accounts (customer_id, email, email_key, password_hash, name,"
                " cart_id, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                " ON CONFLICT DO NOTHING RETURNING 1",
                a.customer_id,
                a.email,
                email_key(a.email),
                a.password_hash,
                a.name,
                a.cart_id,
                float(a.created_at),
                float(a.updated_at),
            )
        if inserted is None:
            raise StoreConflict(f"account {a.customer_id} or its email already exists")

    async def get_account(self, customer_id: str) -> AccountRecord | None:
        return await self._one_account("customer_id", customer_id)

    async def get_account_by_email(self, email: str) -> AccountRecord | None:
        return await self._one_account("email_key", email_key(email))

    async def _one_account(self, column: str, value: str) -> AccountRecord | None:
        async with self._connection() as conn:
            rows = await conn.fetch(f"SELECT {_ACCOUNT} FROM accounts WHERE {column} = $1", value)
        return _account(rows[0]) if rows else None

    async def set_password_hash(
        self, customer_id: str, password_hash: str, updated_at: float
    ) -> AccountRecord | None:
        return await self._update_account("password_hash", password_hash, customer_id, updated_at)

    async def set_cart(
        self, customer_id: str, cart_id: str | None, updated_at: float
    ) -> AccountRecord | None:
        return await self._update_account("cart_id", cart_id, customer_id, updated_at)

    async def _update_account(
        self, column: str, value: str | None, customer_id: str, at: float
    ) -> AccountRecord | None:
        async with self._connection() as conn:
            rows = await conn.fetch(
                f"UPDATE accounts SET {column} = $1, updated_at = $2 WHERE customer_id = $3"
                f" RETURNING {_ACCOUNT}",
                value,
                float(at),
                customer_id,
            )
        return _account(rows[0]) if rows else None

    # --- API keys -------------------------------------------------------------------------

    async def create_api_key(self, key: ApiKeyRecord) -> None:
        k = key
        async with self._connection() as conn:
            inserted = await conn.fetchval(
                f"INSERT INTO api_keys ({_KEY}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
                " ON CONFLICT DO NOTHING RETURNING 1",
                k.key_id,
                k.secret_hash,
                k.role,
                k.subject,
                list(k.scopes),
                k.plan,
                k.label,
                float(k.created_at),
                None if k.revoked_at is None else float(k.revoked_at),
                k.created_by,
            )
        if inserted is None:
            raise StoreConflict(f"api key {k.key_id} already exists")

    async def get_api_key(self, key_id: str) -> ApiKeyRecord | None:
        async with self._connection() as conn:
            rows = await conn.fetch(f"SELECT {_KEY} FROM api_keys WHERE key_id = $1", key_id)
        return _key(rows[0]) if rows else None

    async def list_api_keys(
        self, *, subject: str | None = None, role: str | None = None
    ) -> list[ApiKeyRecord]:
        async with self._connection() as conn:
            rows = await conn.fetch(
                f"SELECT {_KEY} FROM api_keys WHERE ($1::text IS NULL OR subject = $1)"
                " AND ($2::text IS NULL OR role = $2) ORDER BY created_at, key_id",
                subject,
                role,
            )
        return [_key(row) for row in rows]

    async def revoke_api_key(
        self,
        key_id: str,
        revoked_at: float,
        *,
        subject: str | None = None,
        role: str | None = None,
    ) -> ApiKeyRecord | None:
        async with self._connection() as conn:
            rows = await conn.fetch(
                "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $1) WHERE key_id = $2"
                " AND ($3::text IS NULL OR subject = $3) AND ($4::text IS NULL OR role = $4)"
                f" RETURNING {_KEY}",
                float(revoked_at),
                key_id,
                subject,
                role,
            )
        return _key(rows[0]) if rows else None

    # --- refresh tokens -------------------------------------------------------------------

    async def start_refresh_family(
        self, family: RefreshFamilyRecord, first: RefreshTokenRecord
    ) -> None:
        f, t = family, first
        async with self._connection() as conn, conn.transaction():
            inserted = await conn.fetchval(
                f"INSERT INTO refresh_families ({_FAMILY}) VALUES ($1, $2, $3, $4, $5)"
                " ON CONFLICT DO NOTHING RETURNING 1",
                f.family_id,
                f.customer_id,
                float(f.created_at),
                None if f.revoked_at is None else float(f.revoked_at),
                f.revoked_reason,
            )
            if inserted is not None:
                inserted = await conn.fetchval(
                    f"INSERT INTO refresh_tokens ({_TOKEN}) VALUES ($1, $2, $3, $4, $5, $6)"
                    " ON CONFLICT DO NOTHING RETURNING 1",
                    t.token_hash,
                    t.family_id,
                    t.customer_id,
                    float(t.issued_at),
                    float(t.expires_at),
                    None if t.used_at is None else float(t.used_at),
                )
            if inserted is None:
                # Raising rolls back the family inserted above.
                raise StoreConflict(f"refresh family {f.family_id} or its token already exists")

    async def rotate_refresh_token(
        self, token_hash: str, new_hash: str, now: float, expires_at: float
    ) -> RefreshTokenRecord | None:
        async with self._connection() as conn:
            rows = await conn.fetch(_ROTATE, token_hash, new_hash, float(now), float(expires_at))
        return RefreshTokenRecord(*rows[0]) if rows else None

    async def get_refresh_token(self, token_hash: str) -> RefreshTokenRecord | None:
        async with self._connection() as conn:
            rows = await conn.fetch(
                f"SELECT {_TOKEN} FROM refresh_tokens WHERE token_hash = $1", token_hash
            )
        return RefreshTokenRecord(*rows[0]) if rows else None

    async def get_refresh_family(self, family_id: str) -> RefreshFamilyRecord | None:
        async with self._connection() as conn:
            rows = await conn.fetch(
                f"SELECT {_FAMILY} FROM refresh_families WHERE family_id = $1", family_id
            )
        return RefreshFamilyRecord(*rows[0]) if rows else None

    async def revoke_refresh_family(self, family_id: str, revoked_at: float, reason: str) -> bool:
        async with self._connection() as conn:
            status = await conn.execute(
                "UPDATE refresh_families SET revoked_at = $1, revoked_reason = $2"
                " WHERE family_id = $3 AND revoked_at IS NULL",
                float(revoked_at),
                reason,
                family_id,
            )
        return status == "UPDATE 1"

    async def list_refresh_tokens(self, family_id: str) -> list[RefreshTokenRecord]:
        async with self._connection() as conn:
            rows = await conn.fetch(
                f"SELECT {_TOKEN} FROM refresh_tokens WHERE family_id = $1"
                " ORDER BY issued_at, token_hash",
                family_id,
            )
        return [RefreshTokenRecord(*row) for row in rows]

    async def purge_refresh_tokens(self, now: float) -> int:
        async with self._connection() as conn, conn.transaction():
            status = await conn.execute(
                "DELETE FROM refresh_tokens WHERE expires_at <= $1", float(now)
            )
            # A separate statement: one statement's snapshot would still see the tokens
            # the first one deleted.
            await conn.execute(
                "DELETE FROM refresh_families AS f WHERE NOT EXISTS"
                " (SELECT 1 FROM refresh_tokens AS t WHERE t.family_id = f.family_id)"
            )
        return int(status.split()[-1])
