"""The identity service (issue 6): customer accounts, sessions and API keys.

A plain class over an :class:`~storage.identity.IdentityStore` and a
:class:`~actors.identity.tokens.TokenService`; no Ray, no HTTP. Every refusal is a
``DomainError`` whose code the HTTP layer maps (OAuth2 errors for the token endpoint).

Customers sign up with an email and a password (argon2id, hashed in a worker thread so
the event loop never blocks) and sign in for a :class:`TokenPair`: a short-lived access
JWT and an opaque refresh token. Each sign-in starts a refresh *family* (one session).
Refreshing spends the presented token and issues its successor in the same family;
presenting a spent token again is taken as theft (one of the two holders is not the
customer) and revokes the whole family (OAuth 2.0 Security BCP, refresh token rotation).

API keys (``fk_<key_id>_<secret>``) identify an application for its rate plan
(``X-Api-Key``) and, when they carry a role, act as OAuth2 client credentials
(RFC 6749 §4.4): the client gets an access token only, never a refresh token (§4.4.3).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, TypeVar, TypeVarTuple

from actors.domain.customers import CUSTOMER_ID_PREFIX
from actors.domain.errors import DomainError, ErrorCode
from actors.identity.passwords import (
    DEFAULT_PARAMS,
    PasswordParams,
    dummy_hash,
    hash_password,
    needs_rehash,
    normalise,
    verify_password,
)
from actors.identity.tokens import DEFAULT_ACCESS_TTL_S, MAX_ACCESS_TTL_S, SCOPE, Role, TokenService
from storage.errors import StorageError, StoreConflict
from storage.identity import (
    AccountRecord,
    ApiKeyRecord,
    IdentityStore,
    RefreshFamilyRecord,
    RefreshTokenRecord,
)

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

REFRESH_TOKEN_PREFIX: Final = "frt_"
API_KEY_PREFIX: Final = "fk_"
CUSTOMER_SCOPES: Final = ("cart", "orders:read", "checkout")
DEFAULT_SCOPES: Final[Mapping[Role, tuple[str, ...]]] = MappingProxyType(
    {
        Role.MERCHANT: ("catalog:write", "orders:read", "orders:write", "api_keys"),
        Role.LOGISTICS: ("shipments:read", "shipments:write"),
        Role.ADMIN: ("admin",),
    }
)
DEFAULT_PLAN: Final = "standard"  # a rate plan name (feira.settings rate_plans)
DEFAULT_REFRESH_TTL_S: Final = 30 * 86_400
MAX_EMAIL_LENGTH: Final = 254
MAX_TEXT_LENGTH: Final = 200
INVALID_CREDENTIALS: Final = "invalid email or password"

_CUSTOMER_ID = re.compile(r"cus_[A-Za-z0-9_-]{22}")  # token_urlsafe(16)
_REFRESH_TOKEN = re.compile(r"frt_[A-Za-z0-9_-]{43}")  # token_urlsafe(32)
_KEY_ID = re.compile(r"[a-z0-9]{12}")
_KEY_SECRET = re.compile(r"[A-Za-z0-9_-]{43}")
_API_KEY = re.compile(r"fk_([a-z0-9]{12})_([A-Za-z0-9_-]{43})")
_KEY_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
_EMAIL_FORBIDDEN = re.compile(r"[\s\x00-\x1f\x7f]")
_KEY_ID_ATTEMPTS = 3


def is_customer_id(value: object) -> bool:
    return isinstance(value, str) and _CUSTOMER_ID.fullmatch(value) is not None


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _invalid(message: str, **details: object) -> DomainError:
    return DomainError(ErrorCode.INVALID_ARGUMENT, message, **details)


def _invalid_grant(message: str) -> DomainError:
    return DomainError(ErrorCode.INVALID_GRANT, message)


def normalise_email(email: object) -> str:
    """Stripped and lower-cased; ``INVALID_ARGUMENT`` unless it looks like an address
    (one '@', a dotted domain, at most 254 characters). Deliverability is not checked."""
    if not isinstance(email, str):
        raise _invalid("email must be a string")
    address = email.strip().lower()
    local, _, domain = address.partition("@")
    if (
        not 0 < len(address) <= MAX_EMAIL_LENGTH
        or address.count("@") != 1
        or not local
        or "." not in domain
        or domain.startswith(".")
        or domain.endswith(".")
        or ".." in domain
        or _EMAIL_FORBIDDEN.search(address)
    ):
        raise _invalid("email is not a valid address")
    return address


def parse_api_key(plaintext: object) -> tuple[str, str] | None:
    """(key_id, secret) of a well-formed key, else None; never raises."""
    if not isinstance(plaintext, str) or len(plaintext) > 128:
        return None
    match = _API_KEY.fullmatch(plaintext)
    return None if match is None else (match[1], match[2])


def _text(value: object, what: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_TEXT_LENGTH:
        raise _invalid(f"{what} must be a non-blank string of at most {MAX_TEXT_LENGTH}")
    return value


def _optional_text(value: object, what: str) -> str | None:
    return None if value is None else _text(value, what)


def _name(name: object) -> str | None:
    """A display name, stripped; blank means none."""
    if name is None or (isinstance(name, str) and not name.strip()):
        return None
    return _text(name, "name").strip()


# --- records ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Account:
    """A customer account as callers see it: no password hash."""

    customer_id: str
    email: str
    name: str | None
    cart_id: str | None
    created_at: float
    updated_at: float

    @classmethod
    def of(cls, r: AccountRecord) -> Account:
        return cls(r.customer_id, r.email, r.name, r.cart_id, r.created_at, r.updated_at)


@dataclass(frozen=True, slots=True)
class TokenPair:
    """What a customer gets from sign-in and refresh (RFC 6749 §5.1 fields)."""

    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    expires_in: int  # seconds the access token lives
    refresh_expires_in: int  # seconds the refresh token lives, e.g. for a cookie Max-Age
    scope: str
    account: Account
    token_type: str = "Bearer"


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An API key without its secret (which only its creator ever sees, once)."""

    key_id: str
    role: Role | None
    subject: str | None
    scopes: tuple[str, ...]
    plan: str
    label: str
    created_at: float
    revoked_at: float | None
    created_by: str | None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    @classmethod
    def of(cls, r: ApiKeyRecord) -> ApiKey:
        role = None if r.role is None else Role(r.role)
        return cls(
            r.key_id,
            role,
            r.subject,
            r.scopes,
            r.plan,
            r.label,
            r.created_at,
            r.revoked_at,
            r.created_by,
        )


@dataclass(frozen=True, slots=True)
class AccessGrant:
    """The client-credentials answer: an access token and no refresh token."""

    access_token: str = field(repr=False)
    expires_in: int
    scope: str
    client_id: str
    role: Role
    subject: str
    token_type: str = "Bearer"


@dataclass(frozen=True, slots=True)
class IdentitySettings:
    access_ttl_s: int = DEFAULT_ACCESS_TTL_S
    refresh_ttl_s: int = DEFAULT_REFRESH_TTL_S
    password_params: PasswordParams = DEFAULT_PARAMS
    # Each argon2 hash holds its memory cost (64 MiB by default) while it runs: bounding
    # concurrent hashes bounds memory under a sign-in flood.
    max_concurrent_hashes: int = 2

    def __post_init__(self) -> None:
        if not 1 <= self.access_ttl_s <= MAX_ACCESS_TTL_S:
            raise ValueError(f"access_ttl_s must be within 1..{MAX_ACCESS_TTL_S}")
        if self.refresh_ttl_s < 1:
            raise ValueError("refresh_ttl_s must be >= 1")
        if self.max_concurrent_hashes < 1:
            raise ValueError("max_concurrent_hashes must be >= 1")


# --- the service -----------------------------------------------------------------------


class IdentityService:
    def __init__(
        self,
        store: IdentityStore,
        tokens: TokenService,
        *,
        clock: Callable[[], float] = time.time,
        settings: IdentitySettings | None = None,
        executor: Executor | None = None,
    ) -> None:
        """``executor`` runs the password hashing (None: the loop's default executor)."""
        self._store = store
        self._tokens = tokens
        self._clock = clock
        self._settings = settings or IdentitySettings()
        self._executor = executor
        self._hash_slots = asyncio.Semaphore(self._settings.max_concurrent_hashes)

    @property
    def tokens(self) -> TokenService:
        """The service that signs this identity's access tokens (and verifies them)."""
        return self._tokens

    async def _blocking(self, fn: Callable[[*Ts], T], *args: *Ts) -> T:
        async with self._hash_slots:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    # --- accounts ----------------------------------------------------------------------

    async def sign_up(self, email: str, password: str, name: str | None = None) -> Account:
        address = normalise_email(email)
        display = _name(name)
        normalise(password)  # refuse a weak password before spending a hash on it
        taken = DomainError(ErrorCode.EMAIL_TAKEN, "an account with this email already exists")
        if await self._store.get_account_by_email(address) is not None:
            raise taken
        params = self._settings.password_params
        password_hash = await self._blocking(hash_password, password, params)
        now = self._clock()
        customer_id = CUSTOMER_ID_PREFIX + secrets.token_urlsafe(16)
        record = AccountRecord(customer_id, address, password_hash, display, None, now, now)
        try:
            await self._store.create_account(record)
        except StoreConflict as exc:
            # A concurrent sign-up took the email after the check above.
            raise taken from exc
        return Account.of(record)

    async def sign_in(self, email: str, password: str) -> TokenPair:
        params = self._settings.password_params
        try:
            address: str | None = normalise_email(email)
        except DomainError:
            address = None
        record = None if address is None else await self._store.get_account_by_email(address)
        # An unknown email is verified against a dummy hash with the same cost, so the
        # answer takes as long as for a wrong password and does not reveal who has an account.
        stored = record.password_hash if record else await self._blocking(dummy_hash, params)
        matched = await self._blocking(verify_password, stored, password, params)
        if record is None or not matched:
            raise DomainError(ErrorCode.UNAUTHENTICATED, INVALID_CREDENTIALS)
        if needs_rehash(record.password_hash, params):
            fresh = await self._blocking(_rehash, password, params)
            # Best effort: the sign-in stands, and the next one tries again.
            with contextlib.suppress(StorageError):
                record = (
                    await self._store.set_password_hash(record.customer_id, fresh, self._clock())
                    or record
                )
        return await self._start_session(record)

    async def get_account(self, customer_id: str) -> Account | None:
        if not is_customer_id(customer_id):
            return None
        record = await self._store.get_account(customer_id)
        return None if record is None else Account.of(record)

    async def set_cart(self, customer_id: str, cart_id: str | None) -> Account:
        """Point the account at its cart (None clears it). ``UNAUTHENTICATED`` for an
        account that does not exist: the caller's token names no one."""
        cart = _optional_text(cart_id, "cart_id")
        record = None
        if is_customer_id(customer_id):
            record = await self._store.set_cart(customer_id, cart, self._clock())
        if record is None:
            raise DomainError(ErrorCode.UNAUTHENTICATED, "no such account")
        return Account.of(record)

    # --- sessions (refresh-token families) -----------------------------------------------

    def _new_refresh_token(self, now: float) -> tuple[str, str, float]:
        token = REFRESH_TOKEN_PREFIX + secrets.token_urlsafe(32)
        return token, _sha256(token), now + self._settings.refresh_ttl_s

    def _pair(self, record: AccountRecord, refresh_token: str) -> TokenPair:
        ttl = self._settings.access_ttl_s
        access = self._tokens.issue_access(
            record.customer_id, Role.CUSTOMER, CUSTOMER_SCOPES, ttl_s=ttl
        )
        return TokenPair(
            access_token=access,
            refresh_token=refresh_token,
            expires_in=ttl,
            refresh_expires_in=self._settings.refresh_ttl_s,
            scope=" ".join(CUSTOMER_SCOPES),
            account=Account.of(record),
        )

    async def _start_session(self, record: AccountRecord) -> TokenPair:
        now = self._clock()
        token, token_hash, expires_at = self._new_refresh_token(now)
        family = RefreshFamilyRecord("rff_" + secrets.token_urlsafe(16), record.customer_id, now)
        first = RefreshTokenRecord(
            token_hash, family.family_id, record.customer_id, now, expires_at
        )
        await self._store.start_refresh_family(family, first)
        return self._pair(record, token)

    async def refresh(self, refresh_token: str) -> TokenPair:
        """Spend ``refresh_token`` for a new pair in the same session. ``INVALID_GRANT``
        for an unknown, expired or revoked token, and for a spent one, whose whole
        family is then revoked (the successor issued for it stops working too)."""
        if not isinstance(refresh_token, str) or not _REFRESH_TOKEN.fullmatch(refresh_token):
            raise _invalid_grant("malformed refresh token")
        token_hash = _sha256(refresh_token)
        now = self._clock()
        token, new_hash, expires_at = self._new_refresh_token(now)
        successor = await self._store.rotate_refresh_token(token_hash, new_hash, now, expires_at)
        if successor is None:
            raise await self._refusal(token_hash, now)
        record = await self._store.get_account(successor.customer_id)
        if record is None:
            await self._store.revoke_refresh_family(successor.family_id, now, "account_gone")
            raise _invalid_grant("the account no longer exists")
        return self._pair(record, token)

    async def _refusal(self, token_hash: str, now: float) -> DomainError:
        found = await self._store.get_refresh_token(token_hash)
        if found is None:
            return _invalid_grant("unknown refresh token")
        if found.used_at is not None:
            await self._store.revoke_refresh_family(found.family_id, now, "reuse")
            return _invalid_grant("refresh token already used: the session is revoked")
        if found.expires_at <= now:
            return _invalid_grant("refresh token expired")
        return _invalid_grant("refresh token revoked")

    async def revoke(self, refresh_token: str) -> None:
        """Sign out: revoke the token's whole session. Unknown, malformed and already
        revoked tokens are accepted silently (RFC 7009 §2.2)."""
        if not isinstance(refresh_token, str) or not _REFRESH_TOKEN.fullmatch(refresh_token):
            return
        found = await self._store.get_refresh_token(_sha256(refresh_token))
        if found is not None:
            await self._store.revoke_refresh_family(found.family_id, self._clock(), "sign_out")

    # --- API keys ------------------------------------------------------------------------

    async def create_api_key(
        self,
        role: Role | str | None,
        subject: str | None,
        scopes: Iterable[str] | None = None,
        plan: str = DEFAULT_PLAN,
        label: str = "",
        created_by: str | None = None,
    ) -> tuple[ApiKey, str]:
        """A new key and its plaintext, which is shown once and never stored.

        ``role`` None makes an application key (rate plan only, no tokens). ``scopes``
        default to the role's :data:`DEFAULT_SCOPES` and may only narrow them
        (``INVALID_SCOPE`` otherwise), so no key ever holds more than its role allows.
        """
        key_role = _key_role(role)
        owner = (
            _optional_text(subject, "subject") if key_role is None else _text(subject, "subject")
        )
        granted = _key_scopes(key_role, scopes)
        plan_name = _text(plan, "plan")
        if not isinstance(label, str) or len(label) > MAX_TEXT_LENGTH:
            raise _invalid(f"label must be a string of at most {MAX_TEXT_LENGTH}")
        creator = _optional_text(created_by, "created_by")
        attempts = 0
        while True:
            key_id = "".join(secrets.choice(_KEY_ID_ALPHABET) for _ in range(12))
            secret = secrets.token_urlsafe(32)
            # SHA-256, not argon2: the secret is 256 random bits, so a fast hash leaves
            # nothing to brute-force, and keys are checked on every request, where a
            # memory-hard hash would cost tens of milliseconds each time.
            record = ApiKeyRecord(
                key_id,
                _sha256(secret),
                None if key_role is None else key_role.value,
                owner,
                granted,
                plan_name,
                label,
                self._clock(),
                None,
                creator,
            )
            try:
                await self._store.create_api_key(record)
            except StoreConflict:
                # 36**12 key ids: one collision is a fluke, several in a row a bug.
                attempts += 1
                if attempts == _KEY_ID_ATTEMPTS:
                    raise
            else:
                return ApiKey.of(record), f"{API_KEY_PREFIX}{key_id}_{secret}"

    async def list_api_keys(
        self, subject: str | None = None, role: Role | str | None = None
    ) -> list[ApiKey]:
        """Keys matching every filter given, revoked ones included, oldest first."""
        role_value = None if role is None else _key_role(role)
        records = await self._store.list_api_keys(
            subject=subject, role=None if role_value is None else role_value.value
        )
        return [ApiKey.of(r) for r in records]

    async def revoke_api_key(
        self,
        key_id: str,
        owner_subject: str | None = None,
        *,
        owner_role: Role | str | None = None,
    ) -> ApiKey:
        """Revoke a key (idempotent: the first ``revoked_at`` stays). With an owner given,
        another owner's key answers ``API_KEY_NOT_FOUND`` exactly as a missing one."""
        role = None if owner_role is None else _key_role(owner_role)
        found = None
        if isinstance(key_id, str) and _KEY_ID.fullmatch(key_id):
            found = await self._store.revoke_api_key(
                key_id,
                self._clock(),
                subject=owner_subject,
                role=None if role is None else role.value,
            )
        if found is None:
            raise DomainError(ErrorCode.API_KEY_NOT_FOUND, "no such api key")
        return ApiKey.of(found)

    async def authenticate_api_key(self, plaintext: object) -> ApiKey | None:
        """The live key ``plaintext`` names, or None (malformed, unknown, wrong secret or
        revoked). Malformed input of any type gives None, never an exception."""
        parsed = parse_api_key(plaintext)
        if parsed is None:
            return None
        key_id, secret = parsed
        record = await self._store.get_api_key(key_id)
        if record is None or record.revoked_at is not None:
            return None
        if not hmac.compare_digest(_sha256(secret), record.secret_hash):
            return None
        return ApiKey.of(record)

    async def client_credentials(
        self, client_id: str, client_secret: str, requested_scopes: str | None = None
    ) -> AccessGrant:
        """RFC 6749 §4.4: an access token for a key with a role.

        ``client_id`` is the key id; ``client_secret`` is either the whole plaintext key
        (``fk_<key_id>_<secret>``, whose key id must equal ``client_id``) or just its
        secret part: clients that only store "the API key" can send it as is.
        ``requested_scopes`` (space-separated) narrows the token; None or blank means all
        the key's scopes. ``INVALID_GRANT`` for bad credentials, a revoked key or a key
        without a role; ``INVALID_SCOPE`` for a scope the key does not have.
        """
        key = await self._client(client_id, client_secret)
        if key is None:
            raise _invalid_grant("invalid client credentials")
        if key.role is None or key.subject is None:
            raise _invalid_grant("this api key cannot obtain access tokens")
        scopes = _narrow(requested_scopes, key.scopes)
        ttl = self._settings.access_ttl_s
        token = self._tokens.issue_access(
            key.subject, key.role, scopes, ttl_s=ttl, extra={"client_id": key.key_id}
        )
        return AccessGrant(token, ttl, " ".join(scopes), key.key_id, key.role, key.subject)

    async def _client(self, client_id: object, client_secret: object) -> ApiKey | None:
        if not isinstance(client_id, str) or not _KEY_ID.fullmatch(client_id):
            return None
        if not isinstance(client_secret, str):
            return None
        parsed = parse_api_key(client_secret)
        if parsed is not None:
            if not hmac.compare_digest(parsed[0], client_id):
                return None
            plaintext = client_secret
        elif _KEY_SECRET.fullmatch(client_secret):
            plaintext = f"{API_KEY_PREFIX}{client_id}_{client_secret}"
        else:
            return None
        return await self.authenticate_api_key(plaintext)


def _rehash(password: str, params: PasswordParams) -> str:
    return hash_password(password, params, enforce_policy=False)


def _key_role(role: Role | str | None) -> Role | None:
    if role is None:
        return None
    try:
        parsed = Role(role)
    except ValueError:
        parsed = None
    if parsed is None or parsed not in DEFAULT_SCOPES:
        allowed = [r.value for r in DEFAULT_SCOPES]
        raise _invalid(f"an api key role must be one of {allowed} or none", allowed=allowed)
    return parsed


def _key_scopes(role: Role | None, scopes: Iterable[str] | None) -> tuple[str, ...]:
    allowed = () if role is None else DEFAULT_SCOPES[role]
    if scopes is None:
        return allowed
    # A string is the OAuth2 form, space-separated; iterating it would give characters.
    wanted = scopes.split() if isinstance(scopes, str) else list(scopes)
    for scope in wanted:
        if not isinstance(scope, str) or not SCOPE.fullmatch(scope):
            raise _invalid(f"bad scope {scope!r}")
    extra = [s for s in wanted if s not in allowed]
    if extra:
        raise DomainError(
            ErrorCode.INVALID_SCOPE,
            f"scopes not allowed for this key: {' '.join(extra)}",
            allowed=list(allowed),
        )
    return tuple(dict.fromkeys(wanted))


def _narrow(requested: str | None, granted: tuple[str, ...]) -> tuple[str, ...]:
    if requested is None or (isinstance(requested, str) and not requested.strip()):
        return granted
    if not isinstance(requested, str):
        raise DomainError(ErrorCode.INVALID_SCOPE, "scope must be a space-separated string")
    wanted = tuple(dict.fromkeys(requested.split()))
    missing = [s for s in wanted if s not in granted]
    if missing:
        raise DomainError(
            ErrorCode.INVALID_SCOPE,
            f"scopes not granted to this client: {' '.join(missing)}",
            granted=list(granted),
        )
    return wanted
