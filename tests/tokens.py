"""Access tokens for tests: one signing ring per test session, and headers per role."""

from __future__ import annotations

from actors.identity.accounts import CUSTOMER_SCOPES, DEFAULT_SCOPES
from actors.identity.tokens import KeyRing, Role, TokenService
from feira.settings import Settings
from feira.signing_secrets import token_service

ISSUER = "feira"
AUDIENCE = "feira-api"
RING = KeyRing.generate("test-1")
TOKENS = TokenService(RING, ISSUER, AUDIENCE)


def role_scopes(role: Role | str) -> tuple[str, ...]:
    role = Role(role)
    return CUSTOMER_SCOPES if role is Role.CUSTOMER else tuple(DEFAULT_SCOPES[role])


def bearer(
    subject: str,
    role: Role | str = Role.MERCHANT,
    scopes: tuple[str, ...] | None = None,
    tokens: TokenService = TOKENS,
    ttl_s: int = 3600,
) -> dict[str, str]:
    """``Authorization`` for ``subject`` in ``role`` with the role's scopes by default."""
    token = tokens.issue_access(
        subject, role, role_scopes(role) if scopes is None else scopes, ttl_s=ttl_s
    )
    return {"Authorization": f"Bearer {token}"}


def deployed_bearer(settings: Settings, subject: str, role: Role | str = Role.MERCHANT) -> str:
    """A token a running Feira accepts: signed with the keys in ``settings``' data dir."""
    return token_service(settings).issue_access(subject, role, role_scopes(role), ttl_s=3600)
