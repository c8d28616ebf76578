"""Identity (issue 6): keys and access tokens. No Ray, no I/O."""

from actors.identity.tokens import (
    ALGORITHM,
    LEEWAY_S,
    AccessClaims,
    KeyRing,
    Role,
    TokenService,
)

__all__ = ["ALGORITHM", "LEEWAY_S", "AccessClaims", "KeyRing", "Role", "TokenService"]
