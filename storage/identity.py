"""The identity store (issue 6): customer accounts, API keys and refresh-token families.

Plain records and one Protocol; the SQLite and PostgreSQL adapters implement it with the
same tables (``storage/sqlite/identity.py``, migration ``0003_identity.sql``). Secrets
never reach the store: it keeps password hashes, and SHA-256 digests of API-key secrets
and refresh tokens. Times are unix seconds chosen by the caller, so one injected clock
drives everything.

Errors: ``StoreConflict`` (an email or id already taken), ``StoreIntegrityError`` (the data
is refused, e.g. a refresh family for an unknown customer), ``StoreUnavailable`` (retry).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

# Roles an API key may carry; customers sign in with a password instead.
KEY_ROLES = ("merchant", "logistics", "admin")


def email_key(email: str) -> str:
    """The uniqueness key of an email. Computed here rather than with the database's
    lower(), whose Unicode behaviour depends on PostgreSQL's collation, so both backends
    agree on which emails collide."""
    return email.lower()


@dataclass(frozen=True, slots=True)
class AccountRecord:
    customer_id: str
    email: str
    password_hash: str = field(repr=False)
    name: str | None
    cart_id: str | None
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    key_id: str
    secret_hash: str = field(repr=False)  # SHA-256 hex of the secret part
    role: str | None  # one of KEY_ROLES, or None for an application (rate plan) key
    subject: str | None  # required when role is set
    scopes: tuple[str, ...]
    plan: str
    label: str
    created_at: float
    revoked_at: float | None
    created_by: str | None


@dataclass(frozen=True, slots=True)
class RefreshFamilyRecord:
    """One sign-in session: every refresh token rotated from its first one."""

    family_id: str
    customer_id: str
    created_at: float
    revoked_at: float | None = None
    revoked_reason: str | None = None


@dataclass(frozen=True, slots=True)
class RefreshTokenRecord:
    token_hash: str = field(repr=False)  # SHA-256 hex of the opaque token
    family_id: str
    customer_id: str
    issued_at: float
    expires_at: float
    used_at: float | None = None


class IdentityStore(Protocol):
    # --- accounts -------------------------------------------------------------------------

    async def create_account(self, account: AccountRecord) -> None:
        """Insert an account. ``StoreConflict`` when its email (compared by
        :func:`email_key`, so case-insensitively) or its id is taken; nothing is written."""
        ...

    async def get_account(self, customer_id: str) -> AccountRecord | None: ...

    async def get_account_by_email(self, email: str) -> AccountRecord | None:
        """Looked up by :func:`email_key`: any capitalisation finds the account."""
        ...

    async def set_password_hash(
        self, customer_id: str, password_hash: str, updated_at: float
    ) -> AccountRecord | None:
        """The updated account, or None for an unknown customer."""
        ...

    async def set_cart(
        self, customer_id: str, cart_id: str | None, updated_at: float
    ) -> AccountRecord | None:
        """Point the account at a cart (None clears it); None for an unknown customer."""
        ...

    # --- API keys -------------------------------------------------------------------------

    async def create_api_key(self, key: ApiKeyRecord) -> None:
        """Insert a key; ``StoreConflict`` if its key_id is taken."""
        ...

    async def get_api_key(self, key_id: str) -> ApiKeyRecord | None:
        """The key, revoked or not."""
        ...

    async def list_api_keys(
        self, *, subject: str | None = None, role: str | None = None
    ) -> list[ApiKeyRecord]:
        """Keys matching every filter given (revoked ones included), oldest first
        (created_at, then key_id)."""
        ...

    async def revoke_api_key(
        self,
        key_id: str,
        revoked_at: float,
        *,
        subject: str | None = None,
        role: str | None = None,
    ) -> ApiKeyRecord | None:
        """Revoke the key if it matches ``subject`` and ``role`` (when given); returns it as
        stored after the call, or None if no key matches. Revoking twice keeps the first
        ``revoked_at``."""
        ...

    # --- refresh tokens -------------------------------------------------------------------

    async def start_refresh_family(
        self, family: RefreshFamilyRecord, first: RefreshTokenRecord
    ) -> None:
        """Create a family and its first token in one transaction. ``StoreIntegrityError``
        for an unknown customer; ``StoreConflict`` if the family id or token is taken."""
        ...

    async def rotate_refresh_token(
        self, token_hash: str, new_hash: str, now: float, expires_at: float
    ) -> RefreshTokenRecord | None:
        """Spend a refresh token and issue its successor in the same family, atomically.

        The token is marked used (``used_at = now``) only if it is unused, unexpired
        (``expires_at > now``) and its family is not revoked, by one conditional UPDATE:
        of concurrent calls with one token exactly one succeeds. Returns the successor's
        record, or None when nothing was written.
        """
        ...

    async def get_refresh_token(self, token_hash: str) -> RefreshTokenRecord | None: ...

    async def get_refresh_family(self, family_id: str) -> RefreshFamilyRecord | None: ...

    async def revoke_refresh_family(self, family_id: str, revoked_at: float, reason: str) -> bool:
        """Revoke every token of the family; True if this call revoked it (False if it was
        already revoked or does not exist)."""
        ...

    async def list_refresh_tokens(self, family_id: str) -> Sequence[RefreshTokenRecord]:
        """A family's tokens in issue order, for audits and tests."""
        ...

    async def purge_refresh_tokens(self, now: float) -> int:
        """Delete tokens with ``expires_at <= now`` and the families left without tokens;
        returns how many tokens were deleted."""
        ...

    async def close(self) -> None: ...
