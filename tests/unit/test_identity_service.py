"""IdentityService over the SQLite identity store, with cheap argon2 parameters and an
injected clock: accounts, sessions (refresh-token families) and API keys."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import actors.identity.accounts as accounts_module
from actors.domain.errors import DomainError, ErrorCode
from actors.identity.accounts import (
    CUSTOMER_ID_PREFIX,
    CUSTOMER_SCOPES,
    DEFAULT_SCOPES,
    INVALID_CREDENTIALS,
    IdentityService,
    IdentitySettings,
    TokenPair,
    is_customer_id,
)
from actors.identity.passwords import (
    DEFAULT_PARAMS,
    PasswordParams,
    dummy_hash,
    hash_password,
    needs_rehash,
    verify_password,
)
from actors.identity.tokens import KeyRing, Role, TokenService
from storage.sqlite.identity import SqliteIdentityStore

T0 = 1_700_000_000.0
DAY = 86_400.0
FAST = PasswordParams(time_cost=1, memory_cost_kib=8, parallelism=1)
PASSWORD = "correct horse battery"
KEY_FORMAT = re.compile(r"fk_[a-z0-9]{12}_[A-Za-z0-9_-]{43}")


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class RecordingExecutor(ThreadPoolExecutor):
    """Remembers which functions were sent off the event loop."""

    def __init__(self) -> None:
        super().__init__(max_workers=2)
        self.calls: list[str] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.calls.append(getattr(fn, "__name__", repr(fn)))
        return super().submit(fn, *args, **kwargs)


@dataclass
class Env:
    service: IdentityService
    store: SqliteIdentityStore
    tokens: TokenService
    clock: Clock
    executor: RecordingExecutor

    def with_params(self, params: PasswordParams) -> IdentityService:
        return IdentityService(
            self.store,
            self.tokens,
            clock=self.clock,
            settings=IdentitySettings(password_params=params),
        )


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    clock = Clock()
    store = SqliteIdentityStore(str(tmp_path / "identity.db"))
    tokens = TokenService(KeyRing.generate("k1"), "https://feira.test", "feira-api", clock=clock)
    executor = RecordingExecutor()
    service = IdentityService(
        store,
        tokens,
        clock=clock,
        settings=IdentitySettings(password_params=FAST),
        executor=executor,
    )
    try:
        yield Env(service, store, tokens, clock, executor)
    finally:
        await store.close()
        executor.shutdown(wait=True)


async def refused(code: ErrorCode, awaitable: Any) -> DomainError:
    with pytest.raises(DomainError) as info:
        await awaitable
    assert info.value.code == code, info.value
    return info.value


async def signed_in(env: Env, email: str = "ana@example.com") -> TokenPair:
    await env.service.sign_up(email, PASSWORD)
    return await env.service.sign_in(email, PASSWORD)


# --- sign-up -------------------------------------------------------------------------------


async def test_sign_up_normalises_the_email_and_hashes_off_the_loop(env: Env) -> None:
    account = await env.service.sign_up("  Ana@Example.COM ", PASSWORD, name="  Ana  ")
    assert account.email == "ana@example.com"
    assert account.name == "Ana"
    assert account.cart_id is None
    assert account.created_at == account.updated_at == T0
    assert account.customer_id.startswith(CUSTOMER_ID_PREFIX)
    assert is_customer_id(account.customer_id)
    assert env.executor.calls == ["hash_password"]
    stored = await env.store.get_account(account.customer_id)
    assert stored is not None
    assert stored.password_hash.startswith("$argon2id$v=19$m=8,t=1,p=1$")
    assert PASSWORD not in stored.password_hash
    assert await env.service.get_account(account.customer_id) == account


def test_customer_ids_are_recognised() -> None:
    assert is_customer_id("cus_" + "a" * 22)
    assert not is_customer_id("cus_" + "a" * 21)
    assert not is_customer_id("usr_" + "a" * 22)
    assert not is_customer_id(None)


@pytest.mark.parametrize(
    "email",
    [
        "",
        "   ",
        "no-at-sign.com",
        "ana@localhost",
        "ana@@example.com",
        "a@b@example.com",
        "@example.com",
        "ana@.example.com",
        "ana@example.com.",
        "ana@example..com",
        "an a@example.com",
        "ana\x00@example.com",
        "a" * 243 + "@example.com",  # 255 characters
    ],
)
async def test_sign_up_refuses_bad_emails(env: Env, email: str) -> None:
    await refused(ErrorCode.INVALID_ARGUMENT, env.service.sign_up(email, PASSWORD))
    assert env.executor.calls == []  # refused before any hashing


async def test_an_email_of_254_characters_is_accepted(env: Env) -> None:
    email = "a" * 242 + "@example.com"
    assert len(email) == 254
    assert (await env.service.sign_up(email, PASSWORD)).email == email


@pytest.mark.parametrize(
    "password",
    [
        "",
        "elevenchars",  # 11
        "e\u0301" * 6,  # 12 code points, but 6 after NFKC composes them
        "x" * 1025,
        "x" * 5000,
    ],
)
async def test_sign_up_refuses_weak_passwords(env: Env, password: str) -> None:
    error = await refused(ErrorCode.PASSWORD_TOO_WEAK, env.service.sign_up("a@x.io", password))
    assert error.details == {"min_length": 12, "max_length": 1024}
    assert await env.store.get_account_by_email("a@x.io") is None


async def test_password_length_limits_are_inclusive(env: Env) -> None:
    await env.service.sign_up("twelve@x.io", "twelve chars")
    await env.service.sign_up("long@x.io", "y" * 1024)
    assert (await env.service.sign_in("long@x.io", "y" * 1024)).account.email == "long@x.io"


async def test_passwords_are_compared_after_nfkc(env: Env) -> None:
    full_width = "".join(chr(ord(c) + 0xFEE0) for c in "password1234")  # U+FF50...
    assert full_width != "password1234"
    await env.service.sign_up("wide@x.io", full_width)
    pair = await env.service.sign_in("wide@x.io", "password1234")
    assert pair.account.email == "wide@x.io"


async def test_a_taken_email_in_any_case_is_refused(env: Env) -> None:
    await env.service.sign_up("ana@example.com", PASSWORD)
    await refused(ErrorCode.EMAIL_TAKEN, env.service.sign_up("ANA@example.com", PASSWORD))


async def test_concurrent_sign_ups_make_one_account(env: Env) -> None:
    results = await asyncio.gather(
        *(env.service.sign_up("ana@example.com", PASSWORD) for _ in range(4)),
        return_exceptions=True,
    )
    taken = [r for r in results if isinstance(r, DomainError) and r.code == ErrorCode.EMAIL_TAKEN]
    assert len(taken) == 3, results
    winner = await env.store.get_account_by_email("ana@example.com")
    assert winner is not None
    assert winner.customer_id in {getattr(r, "customer_id", None) for r in results}


# --- sign-in -------------------------------------------------------------------------------


async def test_sign_in_issues_a_customer_token_pair(env: Env) -> None:
    account = await env.service.sign_up("ana@example.com", PASSWORD)
    pair = await env.service.sign_in("ANA@example.com ", PASSWORD)
    assert pair.account == account
    assert pair.token_type == "Bearer"
    assert pair.expires_in == 300
    assert pair.refresh_expires_in == 30 * 86_400
    assert pair.scope == "cart orders:read checkout"
    assert re.fullmatch(r"frt_[A-Za-z0-9_-]{43}", pair.refresh_token)
    claims = env.tokens.verify_access(pair.access_token)
    assert claims.subject == account.customer_id
    assert claims.role is Role.CUSTOMER
    assert claims.scopes == frozenset(CUSTOMER_SCOPES)
    assert claims.expires_at - claims.issued_at == 300
    assert pair.refresh_token not in repr(pair)
    assert pair.access_token not in repr(pair)
    stored = await env.store.get_refresh_token(accounts_module._sha256(pair.refresh_token))
    assert stored is not None
    assert stored.customer_id == account.customer_id
    assert stored.expires_at == T0 + 30 * DAY
    assert "verify_password" in env.executor.calls


async def test_wrong_password_and_unknown_email_get_the_same_answer(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    await env.service.sign_up("ana@example.com", PASSWORD)
    checked: list[str] = []

    def spy(password_hash: str, password: str, params: PasswordParams = DEFAULT_PARAMS) -> bool:
        checked.append(password_hash)
        return verify_password(password_hash, password, params)

    monkeypatch.setattr(accounts_module, "verify_password", spy)
    answers = [
        await refused(ErrorCode.UNAUTHENTICATED, env.service.sign_in("ana@example.com", "nope")),
        await refused(ErrorCode.UNAUTHENTICATED, env.service.sign_in("bob@example.com", PASSWORD)),
        await refused(ErrorCode.UNAUTHENTICATED, env.service.sign_in("not an email", PASSWORD)),
        await refused(
            ErrorCode.UNAUTHENTICATED, env.service.sign_in("ana@example.com", "x" * 9999)
        ),
    ]
    assert {a.message for a in answers} == {INVALID_CREDENTIALS}
    assert {repr(a.details) for a in answers} == {"{}"}
    # Every attempt paid for a hash: the unknown ones against the dummy of the same cost.
    assert len(checked) == 4
    assert checked[1] == checked[2] == dummy_hash(FAST)


async def test_sign_in_rehashes_when_the_parameters_changed(env: Env) -> None:
    account = await env.service.sign_up("ana@example.com", PASSWORD)
    stronger = PasswordParams(time_cost=2, memory_cost_kib=16, parallelism=1)
    before = await env.store.get_account(account.customer_id)
    assert before is not None
    assert needs_rehash(before.password_hash, stronger)
    env.clock.now += 60
    await env.with_params(stronger).sign_in("ana@example.com", PASSWORD)
    after = await env.store.get_account(account.customer_id)
    assert after is not None
    assert after.password_hash.startswith("$argon2id$v=19$m=16,t=2,p=1$")
    assert after.updated_at == T0 + 60
    assert not needs_rehash(after.password_hash, stronger)
    # Both services still accept the password (a hash carries its own parameters).
    await env.service.sign_in("ana@example.com", PASSWORD)


def test_password_helpers_never_raise_on_junk() -> None:
    assert verify_password("not a hash", PASSWORD, FAST) is False
    assert verify_password("", PASSWORD, FAST) is False
    assert needs_rehash("not a hash", FAST) is True
    good = hash_password(PASSWORD, FAST)
    assert verify_password(good, PASSWORD, FAST) is True
    assert verify_password(good, PASSWORD + "!", FAST) is False


def test_the_production_default_is_memory_hard() -> None:
    assert DEFAULT_PARAMS.memory_cost_kib >= 64 * 1024
    assert DEFAULT_PARAMS.time_cost >= 3
    assert IdentitySettings().password_params == DEFAULT_PARAMS
    assert hash_password(PASSWORD).startswith("$argon2id$v=19$m=65536,t=3,p=4$")


# --- refresh -------------------------------------------------------------------------------


async def test_refresh_rotates_within_the_session(env: Env) -> None:
    first = await signed_in(env)
    env.clock.now += 100
    second = await env.service.refresh(first.refresh_token)
    assert second.refresh_token != first.refresh_token
    assert second.account == first.account
    claims = env.tokens.verify_access(second.access_token)
    assert claims.subject == first.account.customer_id
    assert claims.issued_at == T0 + 100
    third = await env.service.refresh(second.refresh_token)
    old = await env.store.get_refresh_token(accounts_module._sha256(first.refresh_token))
    new = await env.store.get_refresh_token(accounts_module._sha256(third.refresh_token))
    assert old is not None
    assert new is not None
    assert old.family_id == new.family_id
    assert new.expires_at == T0 + 100 + 30 * DAY  # sliding: from the rotation


async def test_reusing_a_spent_token_revokes_the_whole_family(env: Env) -> None:
    first = await signed_in(env)
    other_session = await env.service.sign_in("ana@example.com", PASSWORD)
    second = await env.service.refresh(first.refresh_token)
    error = await refused(ErrorCode.INVALID_GRANT, env.service.refresh(first.refresh_token))
    assert "already used" in error.message
    # The legitimate holder's successor dies with the family...
    await refused(ErrorCode.INVALID_GRANT, env.service.refresh(second.refresh_token))
    token = await env.store.get_refresh_token(accounts_module._sha256(first.refresh_token))
    assert token is not None
    family = await env.store.get_refresh_family(token.family_id)
    assert family is not None
    assert family.revoked_reason == "reuse"
    # ...while another sign-in of the same customer carries on.
    assert (await env.service.refresh(other_session.refresh_token)).account == first.account


async def test_concurrent_refreshes_with_one_token_one_wins_then_family_revoked(
    env: Env,
) -> None:
    pair = await signed_in(env)
    results = await asyncio.gather(
        env.service.refresh(pair.refresh_token),
        env.service.refresh(pair.refresh_token),
        return_exceptions=True,
    )
    winners = [r for r in results if isinstance(r, TokenPair)]
    losers = [r for r in results if isinstance(r, DomainError)]
    assert len(winners) == 1, results
    assert [loser.code for loser in losers] == [ErrorCode.INVALID_GRANT]
    await refused(ErrorCode.INVALID_GRANT, env.service.refresh(winners[0].refresh_token))


async def test_expired_refresh_token(env: Env) -> None:
    pair = await signed_in(env)
    env.clock.now = T0 + 30 * DAY
    error = await refused(ErrorCode.INVALID_GRANT, env.service.refresh(pair.refresh_token))
    assert "expired" in error.message
    env.clock.now = T0 + 30 * DAY - 1  # not spent by the refused attempt
    assert (await env.service.refresh(pair.refresh_token)).account == pair.account


@pytest.mark.parametrize(
    "token",
    ["", "frt_", "frt_" + "A" * 42, "frt_" + "A" * 44, "xrt_" + "A" * 43, "frt_" + "A" * 43],
)
async def test_malformed_or_unknown_refresh_tokens_are_invalid_grants(env: Env, token: str) -> None:
    await refused(ErrorCode.INVALID_GRANT, env.service.refresh(token))


async def test_revoke_signs_out_idempotently(env: Env) -> None:
    pair = await signed_in(env)
    await env.service.revoke(pair.refresh_token)
    await env.service.revoke(pair.refresh_token)
    error = await refused(ErrorCode.INVALID_GRANT, env.service.refresh(pair.refresh_token))
    assert "revoked" in error.message
    token = await env.store.get_refresh_token(accounts_module._sha256(pair.refresh_token))
    assert token is not None
    family = await env.store.get_refresh_family(token.family_id)
    assert family is not None
    assert family.revoked_reason == "sign_out"
    for junk in ("", "frt_" + "B" * 43, "garbage", None, 7):
        await env.service.revoke(junk)  # type: ignore[arg-type]


# --- cart pointer --------------------------------------------------------------------------


async def test_cart_pointer(env: Env) -> None:
    account = await env.service.sign_up("ana@example.com", PASSWORD)
    env.clock.now += 5
    pointed = await env.service.set_cart(account.customer_id, "cart-1")
    assert pointed == replace(account, cart_id="cart-1", updated_at=T0 + 5)
    assert await env.service.get_account(account.customer_id) == pointed
    cleared = await env.service.set_cart(account.customer_id, None)
    assert cleared.cart_id is None
    await refused(ErrorCode.UNAUTHENTICATED, env.service.set_cart("cus_" + "x" * 22, "cart-1"))
    await refused(ErrorCode.UNAUTHENTICATED, env.service.set_cart("not-an-id", "cart-1"))
    await refused(ErrorCode.INVALID_ARGUMENT, env.service.set_cart(account.customer_id, ""))
    assert await env.service.get_account("cus_" + "x" * 22) is None
    assert await env.service.get_account("bogus") is None


# --- API keys ------------------------------------------------------------------------------


async def test_create_and_authenticate_an_api_key(env: Env) -> None:
    key, plaintext = await env.service.create_api_key(
        Role.MERCHANT, "m-1", plan="gold", label="backend", created_by="m-1"
    )
    assert KEY_FORMAT.fullmatch(plaintext)
    assert plaintext.startswith(f"fk_{key.key_id}_")
    assert key.role is Role.MERCHANT
    assert key.subject == "m-1"
    assert key.scopes == DEFAULT_SCOPES[Role.MERCHANT]
    assert (key.plan, key.label, key.created_by, key.created_at) == ("gold", "backend", "m-1", T0)
    assert not key.revoked
    assert await env.service.authenticate_api_key(plaintext) == key
    stored = await env.store.get_api_key(key.key_id)
    assert stored is not None
    assert plaintext.rsplit("_", 1)[-1] not in stored.secret_hash
    assert stored.secret_hash == accounts_module._sha256(plaintext[len(key.key_id) + 4 :])


async def test_api_key_authentication_refuses_anything_else(env: Env) -> None:
    key, plaintext = await env.service.create_api_key(Role.LOGISTICS, "dhl")
    wrong_secret = plaintext[:-1] + ("A" if plaintext[-1] != "A" else "B")
    other_id = "fk_" + ("0" * 12 if key.key_id != "0" * 12 else "1" * 12) + plaintext[15:]
    for candidate in (
        wrong_secret,
        other_id,
        plaintext + "x",
        plaintext[:-1],
        plaintext.upper(),
        " " + plaintext,
        "",
        "fk_",
        None,
        123,
        b"fk_bytes",
    ):
        assert await env.service.authenticate_api_key(candidate) is None, candidate
    await env.service.revoke_api_key(key.key_id)
    assert await env.service.authenticate_api_key(plaintext) is None


async def test_api_key_creation_rules(env: Env) -> None:
    create = env.service.create_api_key
    await refused(ErrorCode.INVALID_ARGUMENT, create(Role.CUSTOMER, "cus_1"))
    await refused(ErrorCode.INVALID_ARGUMENT, create("superuser", "x"))
    await refused(ErrorCode.INVALID_ARGUMENT, create(Role.MERCHANT, None))
    await refused(ErrorCode.INVALID_ARGUMENT, create(Role.MERCHANT, "  "))
    await refused(ErrorCode.INVALID_ARGUMENT, create(Role.MERCHANT, "m-1", plan=""))
    await refused(ErrorCode.INVALID_ARGUMENT, create(Role.MERCHANT, "m-1", scopes=["bad scope"]))
    # Keys can narrow their role's scopes, never widen them.
    await refused(ErrorCode.INVALID_SCOPE, create(Role.MERCHANT, "m-1", scopes=["admin"]))
    await refused(ErrorCode.INVALID_SCOPE, create(None, None, scopes=["orders:read"]))
    assert await env.store.list_api_keys() == []
    narrow, _ = await create("merchant", "m-1", scopes="orders:read orders:read catalog:write")
    assert narrow.scopes == ("orders:read", "catalog:write")
    public, _ = await create(None, None, plan="free")
    assert (public.role, public.subject, public.scopes, public.plan) == (None, None, (), "free")


async def test_list_and_revoke_api_keys_by_owner(env: Env) -> None:
    mine, plaintext = await env.service.create_api_key(Role.MERCHANT, "m-1")
    env.clock.now += 1
    theirs, _ = await env.service.create_api_key(Role.MERCHANT, "m-2")
    env.clock.now += 1
    carrier, _ = await env.service.create_api_key(Role.LOGISTICS, "m-1")
    assert await env.service.list_api_keys(subject="m-1") == [mine, carrier]
    assert await env.service.list_api_keys(subject="m-1", role=Role.MERCHANT) == [mine]
    assert await env.service.list_api_keys() == [mine, theirs, carrier]

    # Another owner's key is indistinguishable from a missing one.
    other = await refused(
        ErrorCode.API_KEY_NOT_FOUND, env.service.revoke_api_key(theirs.key_id, "m-1")
    )
    missing = await refused(
        ErrorCode.API_KEY_NOT_FOUND, env.service.revoke_api_key("zzzzzzzzzzzz", "m-1")
    )
    assert (other.message, other.details) == (missing.message, missing.details)
    await refused(
        ErrorCode.API_KEY_NOT_FOUND,
        env.service.revoke_api_key(carrier.key_id, "m-1", owner_role=Role.MERCHANT),
    )
    await refused(ErrorCode.API_KEY_NOT_FOUND, env.service.revoke_api_key("fk_garbage", None))
    assert (await env.service.list_api_keys(subject="m-2"))[0].revoked_at is None

    env.clock.now += 10
    revoked = await env.service.revoke_api_key(mine.key_id, "m-1", owner_role="merchant")
    assert revoked == replace(mine, revoked_at=T0 + 12)
    env.clock.now += 10
    again = await env.service.revoke_api_key(mine.key_id, "m-1")
    assert again.revoked_at == T0 + 12
    assert await env.service.authenticate_api_key(plaintext) is None


# --- client credentials --------------------------------------------------------------------


async def test_client_credentials_with_the_whole_key_or_the_secret(env: Env) -> None:
    key, plaintext = await env.service.create_api_key(Role.MERCHANT, "m-1")
    secret = plaintext[len(f"fk_{key.key_id}_") :]
    for client_secret in (plaintext, secret):
        grant = await env.service.client_credentials(key.key_id, client_secret, None)
        assert grant.token_type == "Bearer"
        assert grant.expires_in == 300
        assert grant.scope == " ".join(DEFAULT_SCOPES[Role.MERCHANT])
        assert (grant.client_id, grant.role, grant.subject) == (key.key_id, Role.MERCHANT, "m-1")
        claims = env.tokens.verify_access(grant.access_token)
        assert claims.subject == "m-1"
        assert claims.role is Role.MERCHANT
        assert claims.scopes == frozenset(DEFAULT_SCOPES[Role.MERCHANT])
        assert claims.extra["client_id"] == key.key_id
        assert claims.expires_at - claims.issued_at == 300
        assert grant.access_token not in repr(grant)


async def test_client_credentials_narrow_scopes(env: Env) -> None:
    key, plaintext = await env.service.create_api_key(Role.LOGISTICS, "dhl")
    grant = await env.service.client_credentials(key.key_id, plaintext, " shipments:read ")
    assert grant.scope == "shipments:read"
    assert env.tokens.verify_access(grant.access_token).scopes == {"shipments:read"}
    blank = await env.service.client_credentials(key.key_id, plaintext, "  ")
    assert blank.scope == "shipments:read shipments:write"
    error = await refused(
        ErrorCode.INVALID_SCOPE,
        env.service.client_credentials(key.key_id, plaintext, "shipments:read admin"),
    )
    assert "admin" in error.message


async def test_client_credentials_refusals(env: Env) -> None:
    key, plaintext = await env.service.create_api_key(Role.ADMIN, "ops")
    other, other_plaintext = await env.service.create_api_key(Role.ADMIN, "ops")
    public, public_plaintext = await env.service.create_api_key(None, None)
    secret = plaintext[len(f"fk_{key.key_id}_") :]
    grant = env.service.client_credentials
    for client_id, client_secret in (
        (key.key_id, secret[:-1] + ("A" if secret[-1] != "A" else "B")),
        (key.key_id, other_plaintext),  # another key's plaintext
        (other.key_id, secret),  # another key's secret
        ("", plaintext),
        (key.key_id.upper(), plaintext),
        (key.key_id, ""),
        (key.key_id, "fk_x"),
        (None, plaintext),
        (key.key_id, None),
    ):
        await refused(ErrorCode.INVALID_GRANT, grant(client_id, client_secret))  # type: ignore[arg-type]
    role_less = await refused(ErrorCode.INVALID_GRANT, grant(public.key_id, public_plaintext))
    assert "cannot obtain" in role_less.message
    await env.service.revoke_api_key(key.key_id)
    await refused(ErrorCode.INVALID_GRANT, grant(key.key_id, plaintext))
    assert (await grant(other.key_id, other_plaintext)).subject == "ops"


# --- malformed keys never raise ------------------------------------------------------------


def test_malformed_api_keys_give_none_never_an_exception(tmp_path: Path) -> None:
    loop = asyncio.new_event_loop()
    store = SqliteIdentityStore(str(tmp_path / "keys.db"))
    tokens = TokenService(KeyRing.generate("k1"), "https://feira.test", "feira-api")
    service = IdentityService(store, tokens, settings=IdentitySettings(password_params=FAST))
    try:
        _, plaintext = loop.run_until_complete(service.create_api_key(Role.MERCHANT, "m-1"))

        @st.composite
        def mutated(draw: st.DrawFn) -> str:
            """The real key with one character replaced, deleted or inserted."""
            index = draw(st.integers(0, len(plaintext) - 1))
            action = draw(st.sampled_from(["replace", "delete", "insert"]))
            middle = "" if action == "delete" else draw(st.characters())
            tail = plaintext[index:] if action == "insert" else plaintext[index + 1 :]
            return plaintext[:index] + middle + tail

        candidates = st.one_of(
            st.text(),
            st.text(alphabet="fk_abcdefghijklmnopqrstuvwxyz0123456789-ABC"),
            st.from_regex(r"fk_[a-z0-9]{12}_[A-Za-z0-9_-]{43}", fullmatch=True),
            st.binary(),
            st.none(),
            st.integers(),
            st.lists(st.text()),
            mutated(),
        )

        @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(candidates)
        def check(candidate: object) -> None:
            found = loop.run_until_complete(service.authenticate_api_key(candidate))
            assert found is None or candidate == plaintext

        check()
        assert loop.run_until_complete(service.authenticate_api_key(plaintext)) is not None
    finally:
        loop.run_until_complete(store.close())
        loop.close()
