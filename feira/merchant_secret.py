"""The key that signs merchant tokens: from the settings, or one kept in the data dir."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from feira.settings import Settings

SECRET_FILE = "merchant-token-secret"


def merchant_token_secret(settings: Settings) -> bytes:
    if settings.merchant_token_secret is not None:
        return settings.merchant_token_secret.get_secret_value().encode()
    path = Path(settings.data_dir) / SECRET_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written aside, then linked into place: replicas starting together either create
        # it or read the complete file another one created, never a half-written one.
        scratch = path.with_name(f".{SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
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
