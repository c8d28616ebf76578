"""Who is calling the merchant and logistics APIs: signed, expiring role tokens.

A merchant token is ``fm1.<merchant id>.<expiry unix s>.<HMAC-SHA256 over the first three
parts>``; a token for any other role (``carrier``: a logistics operator) is
``fm2.<role>.<subject>.<expiry>.<HMAC over the first four parts>``, so the role is signed.
Merchant tokens keep the fm1 form, so every token issued before roles existed stays valid
and means what it meant; ``verify`` also accepts an fm2 token with the merchant role.
Tokens are sent as ``Authorization: Bearer <token>``. The server keeps no table of tokens: the
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
VERSION_ROLES = "fm2"
MERCHANT = "merchant"
CARRIER = "carrier"
ROLES = frozenset({MERCHANT, CARRIER})
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

    def issue(
        self,
        merchant_id: str,
        ttl_s: int = DEFAULT_TTL_S,
        now: float | None = None,
        role: str = MERCHANT,
    ) -> str:
        """A token for ``merchant_id`` (the subject: a merchant or carrier id) in ``role``."""
        if not MERCHANT_ID.fullmatch(merchant_id):
            raise ValueError(f"bad merchant id {merchant_id!r}")
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        if ttl_s < 1:
            raise ValueError("ttl_s must be positive")
        expires = int((time.time() if now is None else now) + ttl_s)
        if role == MERCHANT:
            body = f"{VERSION}.{merchant_id}.{expires}"
        else:
            body = f"{VERSION_ROLES}.{role}.{merchant_id}.{expires}"
        return f"{body}.{self._sign(body)}"

    def verify_role(self, token: str, now: float | None = None) -> tuple[str, str]:
        """(role, subject) of a valid token; DomainError UNAUTHENTICATED otherwise."""
        parts = token.split(".")
        if len(parts) == 4 and parts[0] == VERSION:
            role = MERCHANT
            version, subject, expires, signature = parts
            body = f"{version}.{subject}.{expires}"
        elif len(parts) == 5 and parts[0] == VERSION_ROLES:
            version, role, subject, expires, signature = parts
            body = f"{version}.{role}.{subject}.{expires}"
        else:
            raise _unauthenticated("malformed token")
        # Constant-time compare first, so a forged token learns nothing from timing.
        if not hmac.compare_digest(signature, self._sign(body)):
            raise _unauthenticated("invalid token")
        if not expires.isdigit() or int(expires) < (time.time() if now is None else now):
            raise _unauthenticated("token expired")
        if role not in ROLES:
            raise _unauthenticated("unknown token role")
        return role, subject

    def verify(self, token: str, now: float | None = None) -> str:
        """The merchant id a merchant token was issued to; DomainError UNAUTHENTICATED
        otherwise, FORBIDDEN for a valid token of another role."""
        return self.verify_as(token, MERCHANT, now)

    def verify_as(self, token: str, role: str, now: float | None = None) -> str:
        """The subject of a valid token in ``role``; FORBIDDEN for another role."""
        found, subject = self.verify_role(token, now)
        if found != role:
            raise DomainError(ErrorCode.FORBIDDEN, f"this API needs a {role} token")
        return subject


async def _subject(request: Request, role: str, api: str) -> str:
    tokens: MerchantTokens | None = getattr(request.app.state, "merchant_tokens", None)
    if tokens is None:
        raise DomainError(ErrorCode.UNAUTHENTICATED, f"the {api} API is not enabled")
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthenticated(f"send 'Authorization: Bearer <{role} token>'")
    return tokens.verify_as(token.strip(), role)


async def current_merchant(request: Request) -> str:
    return await _subject(request, MERCHANT, "merchant")


async def current_carrier(request: Request) -> str:
    """The carrier (logistics operator) id of a carrier token."""
    return await _subject(request, CARRIER, "logistics")


MerchantDep = Annotated[str, Depends(current_merchant)]
CarrierDep = Annotated[str, Depends(current_carrier)]
