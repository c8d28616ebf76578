"""Keys the platform signs with (access tokens, payment webhooks): from the settings, or
random ones kept in the data dir."""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path

from actors.identity.tokens import KeyRing, TokenService
from feira.settings import Settings

WEBHOOK_SECRET_FILE = "payment-webhook-secret"
JWT_KEYS_FILE = "jwt-keys.pem"


def _write_new(path: Path, content: Callable[[], str], *, replace: bool = False) -> None:
    """Write ``path`` (0600) all at once: written aside, then linked (or renamed) into
    place, so replicas starting together never read a half-written file. Without
    ``replace`` an existing file wins."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(content())
    try:
        if replace:
            os.replace(scratch, path)
        else:
            os.link(scratch, path)
    except FileExistsError:
        pass
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(scratch)


def kept_secret(path: Path) -> bytes:
    """The secret in ``path``, created (0600) on first use."""
    if not path.exists():
        _write_new(path, lambda: secrets.token_hex(32))
    return path.read_text().strip().encode()


def jwt_keys_path(settings: Settings) -> Path:
    return settings.jwt_keys_file or Path(settings.data_dir) / JWT_KEYS_FILE


def _passphrase(settings: Settings) -> bytes | None:
    secret = settings.jwt_keys_passphrase
    return None if secret is None else secret.get_secret_value().encode()


def new_kid() -> str:
    # Sortable by creation, unique across machines.
    return time.strftime("k%Y%m%d%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


def signing_keys(settings: Settings) -> KeyRing:
    """The token signing keys, a first one made (and kept) on first use."""
    path = jwt_keys_path(settings)
    password = _passphrase(settings)
    if not path.exists():
        _write_new(path, lambda: KeyRing.generate(new_kid()).to_pem(password))
    return KeyRing.from_pem(path.read_text(), password)


def rotate_signing_keys(settings: Settings, retire_others: bool = False) -> KeyRing:
    """Add a new signing key (older keys keep verifying, unless ``retire_others``: only
    after the longest access-token TTL has passed since the last rotation)."""
    ring = signing_keys(settings)
    old = ring.kids
    ring.rotate(new_kid())
    if retire_others:
        for kid in old:
            ring.retire(kid)
    password = _passphrase(settings)
    _write_new(jwt_keys_path(settings), lambda: ring.to_pem(password), replace=True)
    return ring


def token_service(settings: Settings, ring: KeyRing | None = None) -> TokenService:
    return TokenService(ring or signing_keys(settings), settings.jwt_issuer, settings.jwt_audience)


def payment_webhook_secret(settings: Settings) -> bytes:
    """Signs the sandbox processor's webhooks, and verifies them."""
    if settings.payment_webhook_secret is not None:
        return settings.payment_webhook_secret.get_secret_value().encode()
    return kept_secret(Path(settings.data_dir) / WEBHOOK_SECRET_FILE)
