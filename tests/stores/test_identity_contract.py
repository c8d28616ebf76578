"""The identity store contract: every test runs on SQLite and on a real PostgreSQL.

Accounts (case-insensitive email uniqueness, cart pointer), API keys and refresh-token
families (single use under concurrency, revocation, expiry, purge).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace

import pytest

from storage.errors import StoreConflict, StoreIntegrityError
from storage.identity import (
    AccountRecord,
    ApiKeyRecord,
    IdentityStore,
    RefreshFamilyRecord,
    RefreshTokenRecord,
)
from storage.postgres.identity import PgIdentityStore
from storage.sqlite.identity import SqliteIdentityStore
from tests.stores.conftest import contract_stores

T0 = 1_700_000_000.0
DAY = 86_400.0


@dataclass
class Identity:
    backend: str
    store: IdentityStore
    # Another store on the same data, with its own connection(s): a second process.
    another: Callable[[], IdentityStore]


@pytest.fixture
async def identity(backend: tuple[str, str]) -> AsyncIterator[Identity]:
    async with contract_stores(
        backend, SqliteIdentityStore, PgIdentityStore, extra_pool_size=4
    ) as (store, another):
        yield Identity(backend[0], store, another)


def h(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def account(
    customer_id: str = "cus_1", email: str = "ana@example.com", at: float = T0
) -> AccountRecord:
    return AccountRecord(customer_id, email, "$argon2id$hash", "Ana", None, at, at)


def api_key(
    key_id: str = "key000000001",
    role: str | None = "merchant",
    subject: str | None = "m-1",
    at: float = T0,
) -> ApiKeyRecord:
    return ApiKeyRecord(
        key_id=key_id,
        secret_hash=h(key_id),
        role=role,
        subject=subject,
        scopes=("orders:read", "catalog:write"),
        plan="gold",
        label="shop backend",
        created_at=at,
        revoked_at=None,
        created_by="admin-1",
    )


async def session(
    store: IdentityStore,
    family_id: str = "fam-1",
    token: str = "t1",
    customer_id: str = "cus_1",
    at: float = T0,
    ttl: float = DAY,
) -> RefreshTokenRecord:
    first = RefreshTokenRecord(h(token), family_id, customer_id, at, at + ttl)
    await store.start_refresh_family(RefreshFamilyRecord(family_id, customer_id, at), first)
    return first


# --- accounts ------------------------------------------------------------------------------


async def test_account_round_trips_and_is_found_by_any_capitalisation(
    identity: Identity,
) -> None:
    store = identity.store
    ana = account()
    await store.create_account(ana)
    assert await store.get_account("cus_1") == ana
    assert await store.get_account_by_email("ana@example.com") == ana
    assert await store.get_account_by_email("ANA@Example.COM") == ana
    assert await store.get_account("cus_2") is None
    assert await store.get_account_by_email("bob@example.com") is None
    # The hash is kept out of reprs, so it cannot leak into logs.
    assert "argon2" not in repr(ana)


async def test_email_is_unique_case_insensitively(identity: Identity) -> None:
    store = identity.store
    await store.create_account(account())
    with pytest.raises(StoreConflict):
        await store.create_account(account("cus_2", "Ana@EXAMPLE.com"))
    assert await store.get_account("cus_2") is None
    with pytest.raises(StoreConflict):  # the id is taken too
        await store.create_account(account("cus_1", "other@example.com"))
    assert await store.get_account_by_email("other@example.com") is None


async def test_concurrent_sign_ups_with_one_email_create_one_account(identity: Identity) -> None:
    stores = [identity.store, identity.another(), identity.another()]
    spellings = ["ana@example.com", "ANA@example.com", "Ana@Example.Com"]
    results = await asyncio.gather(
        *(stores[i % 3].create_account(account(f"cus_{i}", spellings[i % 3])) for i in range(6)),
        return_exceptions=True,
    )
    conflicts = [r for r in results if isinstance(r, StoreConflict)]
    assert results.count(None) == 1, results
    assert len(conflicts) == 5, results
    winner = await identity.store.get_account_by_email("ana@example.com")
    assert winner is not None
    assert winner.customer_id == f"cus_{results.index(None)}"


async def test_cart_pointer_and_password_hash_updates(identity: Identity) -> None:
    store = identity.store
    await store.create_account(account())
    pointed = await store.set_cart("cus_1", "cart-9", T0 + 5)
    assert pointed == replace(account(), cart_id="cart-9", updated_at=T0 + 5)
    assert await store.get_account("cus_1") == pointed
    cleared = await store.set_cart("cus_1", None, T0 + 6)
    assert cleared is not None
    assert cleared.cart_id is None
    rehashed = await store.set_password_hash("cus_1", "$argon2id$new", T0 + 7)
    assert rehashed == replace(account(), password_hash="$argon2id$new", updated_at=T0 + 7)
    assert await store.set_cart("cus_404", "cart-1", T0) is None
    assert await store.set_password_hash("cus_404", "x", T0) is None


# --- API keys ------------------------------------------------------------------------------


async def test_api_key_round_trips_and_key_ids_are_unique(identity: Identity) -> None:
    store = identity.store
    key = api_key()
    app = replace(api_key("key000000002", role=None, subject=None), scopes=())
    await store.create_api_key(key)
    await store.create_api_key(app)
    assert await store.get_api_key("key000000001") == key
    assert await store.get_api_key("key000000002") == app
    assert await store.get_api_key("key000000003") is None
    with pytest.raises(StoreConflict):
        await store.create_api_key(replace(api_key(), subject="m-2"))
    stored = await store.get_api_key("key000000001")
    assert stored is not None
    assert stored.subject == "m-1"


async def test_api_key_rows_the_schema_refuses(identity: Identity) -> None:
    store = identity.store
    with pytest.raises(StoreIntegrityError):  # a role needs a subject
        await store.create_api_key(api_key(subject=None))
    with pytest.raises(StoreIntegrityError):  # customers do not get keys
        await store.create_api_key(api_key(role="customer"))
    assert await store.list_api_keys() == []


async def test_list_api_keys_filters_and_orders(identity: Identity) -> None:
    store = identity.store
    keys = [
        api_key("key00000000c", "merchant", "m-1", T0 + 1),
        api_key("key00000000b", "merchant", "m-1", T0 + 1),
        api_key("key00000000a", "logistics", "m-1", T0 + 3),
        api_key("key00000000d", "merchant", "m-2", T0 + 0),
        api_key("key00000000e", None, None, T0 + 4),
    ]
    for key in keys:
        await store.create_api_key(key)
    everything = await store.list_api_keys()
    assert [k.key_id for k in everything] == [
        "key00000000d",
        "key00000000b",
        "key00000000c",
        "key00000000a",
        "key00000000e",
    ]
    assert [k.key_id for k in await store.list_api_keys(subject="m-1")] == [
        "key00000000b",
        "key00000000c",
        "key00000000a",
    ]
    assert [k.key_id for k in await store.list_api_keys(subject="m-1", role="merchant")] == [
        "key00000000b",
        "key00000000c",
    ]
    assert [k.key_id for k in await store.list_api_keys(role="logistics")] == ["key00000000a"]
    assert await store.list_api_keys(subject="nobody") == []


async def test_revoke_api_key_checks_the_owner_and_keeps_the_first_time(
    identity: Identity,
) -> None:
    store = identity.store
    await store.create_api_key(api_key())
    assert await store.revoke_api_key("key000000001", T0 + 1, subject="m-2") is None
    assert await store.revoke_api_key("key000000001", T0 + 1, role="admin") is None
    untouched = await store.get_api_key("key000000001")
    assert untouched is not None
    assert untouched.revoked_at is None
    revoked = await store.revoke_api_key("key000000001", T0 + 2, subject="m-1", role="merchant")
    assert revoked == replace(api_key(), revoked_at=T0 + 2)
    again = await store.revoke_api_key("key000000001", T0 + 9)
    assert again is not None
    assert again.revoked_at == T0 + 2
    assert await store.get_api_key("key000000001") == revoked
    assert await store.revoke_api_key("key00000missing", T0) is None


# --- refresh tokens --------------------------------------------------------------------------


async def test_rotation_spends_the_token_and_issues_a_successor(identity: Identity) -> None:
    store = identity.store
    await store.create_account(account())
    first = await session(store)
    assert await store.get_refresh_token(h("t1")) == first
    assert await store.get_refresh_family("fam-1") == RefreshFamilyRecord("fam-1", "cus_1", T0)

    second = await store.rotate_refresh_token(h("t1"), h("t2"), T0 + 10, T0 + 10 + DAY)
    assert second == RefreshTokenRecord(h("t2"), "fam-1", "cus_1", T0 + 10, T0 + 10 + DAY)
    assert await store.get_refresh_token(h("t1")) == replace(first, used_at=T0 + 10)
    # Spent: a second rotation with it writes nothing.
    assert await store.rotate_refresh_token(h("t1"), h("t3"), T0 + 20, T0 + 20 + DAY) is None
    assert await store.get_refresh_token(h("t3")) is None
    third = await store.rotate_refresh_token(h("t2"), h("t4"), T0 + 30, T0 + 30 + DAY)
    assert third is not None
    assert third.family_id == "fam-1"
    assert [t.token_hash for t in await store.list_refresh_tokens("fam-1")] == [
        h("t1"),
        h("t2"),
        h("t4"),
    ]
    assert await store.rotate_refresh_token(h("unknown"), h("t5"), T0, T0 + DAY) is None


async def test_concurrent_rotations_of_one_token_have_one_winner(identity: Identity) -> None:
    await identity.store.create_account(account())
    await session(identity.store)
    stores = [identity.store, identity.another(), identity.another()]
    results = await asyncio.gather(
        *(
            stores[i % 3].rotate_refresh_token(h("t1"), h(f"next-{i}"), T0 + 1, T0 + DAY)
            for i in range(8)
        )
    )
    winners = [r for r in results if r is not None]
    assert len(winners) == 1, results
    tokens = await identity.store.list_refresh_tokens("fam-1")
    assert {t.token_hash for t in tokens} == {h("t1"), winners[0].token_hash}
    spent = await identity.store.get_refresh_token(h("t1"))
    assert spent is not None
    assert spent.used_at == T0 + 1


async def test_revoked_family_cannot_rotate(identity: Identity) -> None:
    store = identity.store
    await store.create_account(account())
    await session(store)
    await session(store, "fam-2", "other")
    assert await store.revoke_refresh_family("fam-1", T0 + 5, "reuse") is True
    assert await store.revoke_refresh_family("fam-1", T0 + 6, "sign_out") is False
    assert await store.revoke_refresh_family("fam-404", T0 + 6, "sign_out") is False
    assert await store.get_refresh_family("fam-1") == RefreshFamilyRecord(
        "fam-1", "cus_1", T0, T0 + 5, "reuse"
    )
    assert await store.rotate_refresh_token(h("t1"), h("t2"), T0 + 7, T0 + DAY) is None
    token = await store.get_refresh_token(h("t1"))
    assert token is not None
    assert token.used_at is None  # refused, not spent
    # Another session of the same customer is untouched.
    assert await store.rotate_refresh_token(h("other"), h("o2"), T0 + 7, T0 + DAY) is not None


async def test_an_expired_token_is_not_spent(identity: Identity) -> None:
    store = identity.store
    await store.create_account(account())
    await session(store, ttl=100)
    assert await store.rotate_refresh_token(h("t1"), h("t2"), T0 + 100, T0 + DAY) is None
    token = await store.get_refresh_token(h("t1"))
    assert token is not None
    assert token.used_at is None
    assert await store.rotate_refresh_token(h("t1"), h("t2"), T0 + 99.5, T0 + DAY) is not None


async def test_family_needs_a_customer_and_fresh_ids(identity: Identity) -> None:
    store = identity.store
    with pytest.raises(StoreIntegrityError):
        await session(store, customer_id="cus_404")
    assert await store.get_refresh_family("fam-1") is None
    await store.create_account(account())
    await session(store)
    with pytest.raises(StoreConflict):  # family id taken
        await session(store, token="t9")
    with pytest.raises(StoreConflict):  # token taken: the new family is rolled back
        await session(store, family_id="fam-2")
    assert await store.get_refresh_family("fam-2") is None
    assert await store.get_refresh_token(h("t9")) is None


async def test_purge_drops_expired_tokens_and_empty_families(identity: Identity) -> None:
    store = identity.store
    await store.create_account(account())
    await session(store, "old", "old-1", ttl=100)
    await session(store, "live", "live-1", ttl=100)
    await store.rotate_refresh_token(h("live-1"), h("live-2"), T0 + 50, T0 + 50 + DAY)
    assert await store.purge_refresh_tokens(T0 + 100) == 2
    assert await store.get_refresh_family("old") is None
    assert await store.get_refresh_token(h("old-1")) is None
    assert await store.get_refresh_family("live") is not None
    assert [t.token_hash for t in await store.list_refresh_tokens("live")] == [h("live-2")]
    assert await store.purge_refresh_tokens(T0 + 100) == 0
