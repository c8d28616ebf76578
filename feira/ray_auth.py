"""Token authentication for the local Ray cluster, with a token of Feira's own.

Ray 2.60 turns token auth on by itself in some start paths and not others, and reads
``RAY_AUTH_MODE`` when ``ray`` is first imported. Setting it explicitly, before any import
of ``ray``, keeps `ray start`, the driver and the workers in agreement, and keeps the token
out of the user's home directory. No ``ray`` import here, on purpose.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

TOKEN_FILE = "ray-auth-token"


def use_local_auth(data_dir: Path) -> dict[str, str]:
    """Create the token file if needed, set the variables in this process, return them."""
    token = data_dir / TOKEN_FILE
    if not token.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    os.environ.update(env)
    return env
