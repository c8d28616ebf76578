"""Keys the platform signs with (merchant tokens, payment webhooks): from the settings,
or random ones kept in the data dir."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from feira.settings import Settings

SECRET_FILE = "merchant-token-secret"
WEBHOOK_SECRET_FILE = "payment-webhook-secret"


def kept_secret(path: Path) -> bytes:
    """The secret in ``path``, created (0600) on first use."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written aside, then linked into place: replicas starting together either create
        # it or read the complete file another one created, never a half-written one.
        scratch = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
        try:
            os.link(scratch, path)
        except FileExistsError:
            pass
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(scratch)
    return path.read_text().strip().encode()


def merchant_token_secret(settings: Settings) -> bytes:
    if settings.merchant_token_secret is not None:
        return settings.merchant_token_secret.get_secret_value().encode()
    return kept_secret(Path(settings.data_dir) / SECRET_FILE)


def payment_webhook_secret(settings: Settings) -> bytes:
    """Signs the sandbox processor's webhooks, and verifies them."""
    if settings.payment_webhook_secret is not None:
        return settings.payment_webhook_secret.get_secret_value().encode()
    return kept_secret(Path(settings.data_dir) / WEBHOOK_SECRET_FILE)
