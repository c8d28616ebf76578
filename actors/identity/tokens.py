"""Access tokens (issue 6, item 1): short-lived JWTs signed with Ed25519, with ``kid`` rotation.

Algorithm: **EdDSA over Ed25519, and nothing else.** Signatures are deterministic (no per-
signature nonce to get wrong, unlike ES256), keys are 32 bytes, signing and verifying are
fast, and there are no parameters to choose. Verification accepts only ``alg == "EdDSA"``:
``none``, every ``HS*`` (the public-key-as-HMAC-secret confusion attack) and every other
algorithm are refused before a key is looked at.

Keys live in a :class:`KeyRing`. One key signs (the active one); every key in the ring
verifies. :meth:`KeyRing.rotate` adds a new key and makes it the signer, so tokens already
issued keep verifying; :meth:`KeyRing.retire` drops an old key once its tokens have expired
(wait at least the longest access TTL plus the leeway after a rotation). A retired ``kid`` is
remembered by the ring so it is never reused, and its tokens are refused.

Verification (:meth:`TokenService.verify_access`) requires a ``kid`` the ring knows, a valid
signature, every claim in :data:`REQUIRED_CLAIMS` with the right type, ``iss`` and ``aud``
equal to the service's, ``typ == "access"``, and checks time against the injected clock
with a leeway of :data:`LEEWAY_S` (30 s) for clock skew between machines: a token is
refused once ``now >= exp + 30``, while ``now < nbf - 30`` or ``now < iat - 30``. Every
refusal is ``DomainError(UNAUTHENTICATED, reason)``; the reason names what failed, never
the token.

Serialisation: :meth:`KeyRing.to_pem` writes every key as a PKCS#8 PEM block preceded by an
RFC 7468 explanatory line ``kid: <kid>`` (the active key first), optionally encrypted with a
passphrase; :meth:`KeyRing.from_pem` reads it back. Retired kids are not written: they are
gone. :meth:`KeyRing.jwks` is the public JWK Set (RFC 7517 / RFC 8037 ``OKP`` keys) for the
JWKS route.

No Ray, no I/O: the caller passes key material in and decides where it is stored.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from actors.domain.errors import DomainError, ErrorCode

ALGORITHM: Final = "EdDSA"
LEEWAY_S: Final = 30
DEFAULT_ACCESS_TTL_S: Final = 300
MAX_ACCESS_TTL_S: Final = 3600
MAX_TOKEN_CHARS: Final = 8192
ACCESS_TYPE: Final = "access"

KID = re.compile(r"[A-Za-z0-9._-]{1,64}")
SCOPE = re.compile(r"[\x21\x23-\x5B\x5D-\x7E]+")  # RFC 6749 §3.3 scope-token
BASE64URL = re.compile(r"[A-Za-z0-9_-]+")
SIGNATURE_SEGMENT = re.compile(r"[A-Za-z0-9_-]{86}")  # 64-byte Ed25519 signature, unpadded
REQUIRED_CLAIMS: Final = ("iss", "aud", "sub", "role", "scope", "iat", "nbf", "exp", "jti", "typ")
_PEM_BLOCK = re.compile(
    r"^kid: (?P<kid>\S+)\s*\n(?P<pem>-----BEGIN (?:ENCRYPTED )?PRIVATE KEY-----\n"
    r".*?\n-----END (?:ENCRYPTED )?PRIVATE KEY-----)",
    re.MULTILINE | re.DOTALL,
)


class Role(StrEnum):
    CUSTOMER = "customer"
    MERCHANT = "merchant"
    LOGISTICS = "logistics"
    ADMIN = "admin"


def _unauthenticated(reason: str) -> DomainError:
    return DomainError(ErrorCode.UNAUTHENTICATED, reason)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _check_kid(kid: str) -> str:
    if not isinstance(kid, str) or not KID.fullmatch(kid):
        raise ValueError(f"bad kid {kid!r}: 1-64 of A-Z a-z 0-9 . _ -")
    return kid


class KeyRing:
    """Ed25519 signing keys by ``kid``; one active (signs), all present ones verify."""

    def __init__(self) -> None:
        self._keys: dict[str, Ed25519PrivateKey] = {}
        self._active: str | None = None
        self._retired: set[str] = set()

    # -- building -------------------------------------------------------------------------

    @classmethod
    def generate(cls, kid: str) -> KeyRing:
        """A new ring holding one fresh key, ``kid``, which signs."""
        ring = cls()
        ring.add(kid, Ed25519PrivateKey.generate(), activate=True)
        return ring

    def add(self, kid: str, key: Ed25519PrivateKey, *, activate: bool = False) -> None:
        """Put an existing key in the ring (e.g. loaded from a secret)."""
        _check_kid(kid)
        if not isinstance(key, Ed25519PrivateKey):
            raise TypeError("only Ed25519 private keys belong in the ring")
        if kid in self._keys or kid in self._retired:
            raise ValueError(f"kid {kid!r} is already used in this ring")
        self._keys[kid] = key
        if activate or self._active is None:
            self._active = kid

    def rotate(self, new_kid: str) -> None:
        """Generate ``new_kid`` and make it the signer; older keys still verify."""
        self.add(new_kid, Ed25519PrivateKey.generate(), activate=True)

    def retire(self, kid: str) -> None:
        """Drop ``kid``: its tokens stop verifying. The active key cannot be retired."""
        if kid not in self._keys:
            raise KeyError(f"no key {kid!r} in the ring")
        if kid == self._active:
            raise ValueError(f"{kid!r} is the active key; rotate() before retiring it")
        del self._keys[kid]
        self._retired.add(kid)

    # -- reading --------------------------------------------------------------------------

    @property
    def active_kid(self) -> str:
        if self._active is None:
            raise ValueError("the key ring is empty")
        return self._active

    @property
    def kids(self) -> tuple[str, ...]:
        """Present (verifying) kids, active first."""
        return (self.active_kid, *(k for k in self._keys if k != self._active))

    def is_retired(self, kid: str) -> bool:
        return kid in self._retired

    def signing_key(self) -> tuple[str, Ed25519PrivateKey]:
        kid = self.active_kid
        return kid, self._keys[kid]

    def public_key(self, kid: str) -> Ed25519PublicKey | None:
        key = self._keys.get(kid)
        return None if key is None else key.public_key()

    def jwks(self) -> dict[str, Any]:
        """The public JWK Set (RFC 7517), one OKP/Ed25519 entry per present kid."""
        keys = []
        for kid in self.kids:
            raw = (
                self._keys[kid]
                .public_key()
                .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            )
            keys.append(
                {
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "x": _b64url(raw),
                    "kid": kid,
                    "use": "sig",
                    "alg": ALGORITHM,
                }
            )
        return {"keys": keys}

    # -- PEM ------------------------------------------------------------------------------

    def to_pem(self, password: bytes | None = None) -> str:
        """Every present key as PKCS#8 PEM, each after a ``kid: <kid>`` line; active first."""
        encryption: serialization.KeySerializationEncryption = (
            serialization.NoEncryption()
            if password is None
            else serialization.BestAvailableEncryption(password)
        )
        blocks = []
        for kid in self.kids:
            pem = self._keys[kid].private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
            )
            blocks.append(f"kid: {kid}\n{pem.decode('ascii')}")
        return "".join(blocks)

    @classmethod
    def from_pem(cls, text: str, password: bytes | None = None) -> KeyRing:
        """A ring from :meth:`to_pem` output; the first block's key signs."""
        ring = cls()
        for match in _PEM_BLOCK.finditer(text):
            key = serialization.load_pem_private_key(
                match["pem"].encode("ascii"), password=password
            )
            if not isinstance(key, Ed25519PrivateKey):
                raise ValueError(f"key {match['kid']!r} is not an Ed25519 key")
            ring.add(match["kid"], key)
        if ring._active is None:
            raise ValueError("no 'kid: <kid>' + PRIVATE KEY PEM blocks found")
        return ring


@dataclass(frozen=True, slots=True)
class AccessClaims:
    subject: str
    role: Role
    scopes: frozenset[str]
    issuer: str
    audience: str
    issued_at: float
    not_before: float
    expires_at: float
    jti: str
    kid: str
    extra: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes


def _numeric_date(payload: Mapping[str, Any], name: str) -> float:
    value = payload[name]
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise _unauthenticated(f"claim {name!r} is not a NumericDate")
    return float(value)


def _string(payload: Mapping[str, Any], name: str, *, allow_empty: bool = False) -> str:
    value = payload[name]
    if not isinstance(value, str) or (not value and not allow_empty):
        raise _unauthenticated(f"claim {name!r} must be a non-empty string")
    return value


def _canonical_signature(segment: str) -> bool:
    if not SIGNATURE_SEGMENT.fullmatch(segment):
        return False
    return _b64url(base64.urlsafe_b64decode(segment + "==")) == segment


def _unverified_header(segment: str) -> dict[str, Any]:
    """The JOSE header, parsed here (not by pyjwt) so the refusal reasons stay precise."""
    if not BASE64URL.fullmatch(segment):
        raise _unauthenticated("malformed token header")
    try:
        header = json.loads(
            base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)),
            parse_constant=_reject_constant,
        )
    except (ValueError, UnicodeDecodeError, binascii.Error) as exc:
        raise _unauthenticated("malformed token header") from exc
    if not isinstance(header, dict):
        raise _unauthenticated("malformed token header")
    return header


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


class TokenService:
    """Issues and verifies access tokens for one issuer and audience."""

    def __init__(
        self,
        keyring: KeyRing,
        issuer: str,
        audience: str,
        clock: Callable[[], float] = time.time,
        leeway_s: int = LEEWAY_S,
    ) -> None:
        if not issuer or not audience:
            raise ValueError("issuer and audience are required")
        if not 0 <= leeway_s <= 300:
            raise ValueError("leeway_s must be within 0..300")
        self._ring = keyring
        self._issuer = issuer
        self._audience = audience
        self._clock = clock
        self._leeway = leeway_s
        self._jws = jwt.api_jws.PyJWS()

    @property
    def issuer(self) -> str:
        return self._issuer

    def jwks(self) -> dict[str, Any]:
        """The public keys that verify this service's tokens (for the JWKS route)."""
        return self._ring.jwks()

    def issue_access(
        self,
        subject: str,
        role: Role | str,
        scopes: Iterable[str],
        ttl_s: int = DEFAULT_ACCESS_TTL_S,
        extra: Mapping[str, Any] | None = None,
    ) -> str:
        if not isinstance(subject, str) or not subject:
            raise ValueError("subject must be a non-empty string")
        role = Role(role)
        scope_list = list(dict.fromkeys(scopes))
        for scope in scope_list:
            if not isinstance(scope, str) or not SCOPE.fullmatch(scope):
                raise ValueError(f"bad scope {scope!r}")
        if isinstance(ttl_s, bool) or not 1 <= ttl_s <= MAX_ACCESS_TTL_S:
            raise ValueError(f"ttl_s must be within 1..{MAX_ACCESS_TTL_S}")
        extra = dict(extra or {})
        clash = set(extra) & set(REQUIRED_CLAIMS)
        if clash:
            raise ValueError(f"extra claims may not override {sorted(clash)}")
        now = int(self._clock())
        claims: dict[str, Any] = {
            **extra,
            "iss": self._issuer,
            "aud": self._audience,
            "sub": subject,
            "role": role.value,
            "scope": " ".join(scope_list),
            "iat": now,
            "nbf": now,
            "exp": now + ttl_s,
            "jti": secrets.token_urlsafe(16),
            "typ": ACCESS_TYPE,
        }
        kid, key = self._ring.signing_key()
        return jwt.encode(claims, key, algorithm=ALGORITHM, headers={"kid": kid, "typ": "JWT"})

    def verify_access(self, token: str) -> AccessClaims:
        """The claims of a valid access token; ``DomainError(UNAUTHENTICATED)`` otherwise."""
        if not isinstance(token, str) or not token:
            raise _unauthenticated("no token")
        if len(token) > MAX_TOKEN_CHARS:
            raise _unauthenticated("token too long")
        if token.count(".") != 2:
            raise _unauthenticated("malformed token: expected header.payload.signature")
        header = _unverified_header(token.partition(".")[0])
        alg = header.get("alg")
        if alg != ALGORITHM:
            raise _unauthenticated(f"algorithm {alg!r} not allowed (only {ALGORITHM})")
        if "crit" in header or "b64" in header:
            raise _unauthenticated("unsupported critical header")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise _unauthenticated("token has no kid")
        public = self._ring.public_key(kid)
        if public is None:
            reason = "signing key retired" if self._ring.is_retired(kid) else "unknown kid"
            raise _unauthenticated(reason)
        if not _canonical_signature(token.rpartition(".")[2]):
            # One token string per signature: the unused low bits of the last base64url
            # character must be zero, so a token cannot be altered and still verify.
            raise _unauthenticated("malformed signature encoding")
        try:
            decoded = self._jws.decode_complete(token, key=public, algorithms=[ALGORITHM])
        except jwt.InvalidSignatureError as exc:
            raise _unauthenticated("bad signature") from exc
        except (jwt.InvalidTokenError, ValueError, binascii.Error) as exc:
            raise _unauthenticated("malformed token") from exc
        try:
            payload = json.loads(decoded["payload"], parse_constant=_reject_constant)
        except (ValueError, UnicodeDecodeError) as exc:
            raise _unauthenticated("payload is not JSON") from exc
        if not isinstance(payload, dict):
            raise _unauthenticated("payload is not a JSON object")
        return self._check_claims(payload, kid)

    def _check_claims(self, payload: dict[str, Any], kid: str) -> AccessClaims:
        missing = [name for name in REQUIRED_CLAIMS if name not in payload]
        if missing:
            raise _unauthenticated(f"missing claims: {', '.join(missing)}")
        if _string(payload, "typ") != ACCESS_TYPE:
            raise _unauthenticated("not an access token")
        if _string(payload, "iss") != self._issuer:
            raise _unauthenticated("wrong issuer")
        aud = payload["aud"]
        audiences = [aud] if isinstance(aud, str) else aud
        if not isinstance(audiences, list) or self._audience not in audiences:
            raise _unauthenticated("wrong audience")
        now = self._clock()
        exp = _numeric_date(payload, "exp")
        nbf = _numeric_date(payload, "nbf")
        iat = _numeric_date(payload, "iat")
        if now >= exp + self._leeway:
            raise _unauthenticated("token expired")
        if now < nbf - self._leeway:
            raise _unauthenticated("token not yet valid (nbf)")
        if now < iat - self._leeway:
            raise _unauthenticated("token issued in the future (iat)")
        subject = _string(payload, "sub")
        jti = _string(payload, "jti")
        try:
            role = Role(_string(payload, "role"))
        except ValueError as exc:
            raise _unauthenticated("unknown role") from exc
        scope = _string(payload, "scope", allow_empty=True)
        extra = {k: v for k, v in payload.items() if k not in REQUIRED_CLAIMS}
        return AccessClaims(
            subject=subject,
            role=role,
            scopes=frozenset(scope.split()),
            issuer=self._issuer,
            audience=self._audience,
            issued_at=iat,
            not_before=nbf,
            expires_at=exp,
            jti=jti,
            kid=kid,
            extra=MappingProxyType(extra),
        )
