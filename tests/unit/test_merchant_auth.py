"""Merchant tokens: only the platform's signature, unexpired, names a merchant."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from actors.domain.errors import DomainError, ErrorCode
from api.merchant_auth import MerchantTokens
from feira.settings import Settings
from feira.signing_secrets import SECRET_FILE, merchant_token_secret

SECRET = b"s" * 32
NOW = 1_800_000_000.0


def test_round_trip() -> None:
    tokens = MerchantTokens(SECRET)
    assert tokens.verify(tokens.issue("m-001", 60, NOW), NOW + 59) == "m-001"


@pytest.mark.parametrize(
    "forge",
    [
        lambda t: t.replace("m-001", "m-002"),  # claim another merchant
        lambda t: t.replace(".18", ".28", 1),  # extend the expiry
        lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),  # alter the signature
        lambda t: MerchantTokens(b"o" * 32).issue("m-001", 60, NOW),  # another key
        lambda t: "fm1.m-001",
        lambda t: "",
        lambda t: "fm2" + t[3:],
    ],
)
def test_forged_tokens_are_refused(forge: object) -> None:
    tokens = MerchantTokens(SECRET)
    token = tokens.issue("m-001", 60, NOW)
    with pytest.raises(DomainError) as caught:
        tokens.verify(forge(token), NOW)  # type: ignore[operator]
    assert caught.value.code == ErrorCode.UNAUTHENTICATED


def test_expired_token_is_refused() -> None:
    tokens = MerchantTokens(SECRET)
    token = tokens.issue("m-001", 60, NOW)
    with pytest.raises(DomainError, match="expired"):
        tokens.verify(token, NOW + 61)


def test_short_secret_and_bad_ids_are_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        MerchantTokens(b"short")
    with pytest.raises(ValueError, match="merchant id"):
        MerchantTokens(SECRET).issue("m.001")


def test_secret_file_is_private_and_shared_by_racing_replicas(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    with ThreadPoolExecutor(8) as pool:
        secrets = set(pool.map(lambda _: merchant_token_secret(settings), range(16)))
    assert len(secrets) == 1
    assert len(next(iter(secrets))) == 64
    assert os.stat(tmp_path / SECRET_FILE).st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == [SECRET_FILE]


def test_configured_secret_wins(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, merchant_token_secret="k" * 40)
    assert merchant_token_secret(settings) == b"k" * 40
    assert not (tmp_path / SECRET_FILE).exists()
