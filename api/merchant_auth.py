"""Who is calling the merchant API: signed, expiring merchant tokens.

A token is ``fm1.<merchant id>.<expiry unix s>.<HMAC-SHA256 over the first three parts>``,
sent as ``Authorization: Bearer <token>``. The server keeps no table of tokens: the
signature proves the platform issued it (``feira merchant-token``), the expiry bounds how
long a leaked one works. OAuth2 client credentials with JWTs (issue 6) will replace the
issuing side; routes depend only on :func:`current_merchant`, which stays.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from typing import Annotated

from fastapi import Depends, Request

from actors.domain.errors import DomainError, ErrorCode

VERSION = "fm1"
MERCHANT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
DEFAULT_TTL_S = 30 * 24 * 3600


def _unauthenticated(reason: str) -> DomainError:
    return DomainError(ErrorCode.UNAUTHENTICATED, reason)


class MerchantTokens:
    def __init__(self, secret: bytes) -> None:
        if len(secret) < 32:
            raise ValueError("the token secret must be at least 32 bytes")
        self._secret = secret

    def _sign(self, body: str) -> str:
        mac = hmac.new(self._secret, body.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()

    def issue(self, merchant_id: str, ttl_s: int = DEFAULT_TTL_S, now: float | None = None) -> str:
        if not MERCHANT_ID.fullmatch(merchant_id):
            raise ValueError(f"bad merchant id {merchant_id!r}")
        if ttl_s < 1:
            raise ValueError("ttl_s must be positive")
        expires = int((time.time() if now is None else now) + ttl_s)
        body = f"{VERSION}.{merchant_id}.{expires}"
        return f"{body}.{self._sign(body)}"

    def verify(self, token: str, now: float | None = None) -> str:
        """The merchant id the token was issued to; DomainError UNAUTHENTICATED otherwise."""
        parts = token.split(".")
        if len(parts) != 4 or parts[0] != VERSION:
            raise _unauthenticated("malformed merchant token")
        version, merchant_id, expires, signature = parts
        body = f"{version}.{merchant_id}.{expires}"
        # Constant-time compare first, so a forged token learns nothing from timing.
        if not hmac.compare_digest(signature, self._sign(body)):
            raise _unauthenticated("invalid merchant token")
        if not expires.isdigit() or int(expires) < (time.time() if now is None else now):
            raise _unauthenticated("merchant token expired")
        return merchant_id


async def current_merchant(request: Request) -> str:
    tokens: MerchantTokens | None = getattr(request.app.state, "merchant_tokens", None)
    if tokens is None:
        raise DomainError(ErrorCode.UNAUTHENTICATED, "the merchant API is not enabled")
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthenticated("send 'Authorization: Bearer <merchant token>'")
    return tokens.verify(token.strip())


MerchantDep = Annotated[str, Depends(current_merchant)]
