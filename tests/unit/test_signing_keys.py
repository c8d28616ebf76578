"""Signing keys kept in the data dir: one ring for every replica, rotation, secrets."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from actors.domain.errors import DomainError, ErrorCode
from feira.settings import Settings
from feira.signing_secrets import (
    JWT_KEYS_FILE,
    WEBHOOK_SECRET_FILE,
    payment_webhook_secret,
    rotate_signing_keys,
    signing_keys,
    token_service,
)


def test_racing_replicas_share_one_private_key_file(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    with ThreadPoolExecutor(8) as pool:
        kids = set(pool.map(lambda _: signing_keys(settings).active_kid, range(16)))
    assert len(kids) == 1
    assert os.stat(tmp_path / JWT_KEYS_FILE).st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == [JWT_KEYS_FILE]


def test_tokens_verify_across_a_rotation_until_the_old_key_is_retired(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    before = token_service(settings).issue_access("m-001", "merchant", ["catalog:write"])
    ring = rotate_signing_keys(settings)
    assert len(ring.kids) == 2
    after = token_service(settings)
    assert after.verify_access(before).subject == "m-001"
    fresh = after.issue_access("m-002", "merchant", [])
    rotate_signing_keys(settings, retire_others=True)
    latest = token_service(settings)
    with pytest.raises(DomainError) as refused:
        latest.verify_access(fresh)
    assert refused.value.code is ErrorCode.UNAUTHENTICATED
    assert len(signing_keys(settings).kids) == 1


def test_an_encrypted_key_file_needs_its_passphrase(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, jwt_keys_passphrase="correct horse battery")
    kid = signing_keys(settings).active_kid
    assert "ENCRYPTED PRIVATE KEY" in (tmp_path / JWT_KEYS_FILE).read_text()
    assert signing_keys(settings).active_kid == kid
    with pytest.raises(TypeError):
        signing_keys(Settings(data_dir=tmp_path))


def test_webhook_secret_is_kept_or_configured(tmp_path: Path) -> None:
    kept = payment_webhook_secret(Settings(data_dir=tmp_path))
    assert len(kept) == 64
    assert (tmp_path / WEBHOOK_SECRET_FILE).exists()
    assert payment_webhook_secret(Settings(data_dir=tmp_path)) == kept
    configured = Settings(data_dir=tmp_path / "x", payment_webhook_secret="k" * 40)
    assert payment_webhook_secret(configured) == b"k" * 40
