"""The negative JWT suite over HTTP: every forged, stale or misdirected token is a 401
problem+json with ``WWW-Authenticate: Bearer``, on a protected route and on a public one
(a client that sent a token must learn it did not count), and never reaches a handler.
``tests/unit/test_jwt_tokens.py`` covers the same cases, and more, on the verifier alone."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from actors.identity.tokens import REQUIRED_CLAIMS, KeyRing
from tests.security.conftest import Site
from tests.tokens import AUDIENCE, ISSUER, RING


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "m-001",
        "role": "merchant",
        "scope": "catalog:write orders:read",
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "jti": "j-1",
        "typ": "access",
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def signed(payload: dict[str, Any], ring: KeyRing = RING, **headers: Any) -> str:
    kid, key = ring.signing_key()
    return jwt.encode(payload, key, algorithm="EdDSA", headers={"kid": kid, **headers})


def alg_none() -> str:
    header = b64(json.dumps({"alg": "none", "kid": RING.active_kid}).encode())
    return f"{header}.{b64(json.dumps(claims()).encode())}."


def hs256_with_public_key() -> str:
    public = RING.public_key(RING.active_kid)
    assert public is not None
    secret = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": RING.active_kid}).encode())
    body = b64(json.dumps(claims()).encode())
    mac = hmac.new(secret, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{b64(mac)}"


def tampered() -> str:
    header, _, signature = signed(claims()).split(".")
    body = b64(json.dumps(claims(sub="m-002")).encode())
    return f"{header}.{body}.{signature}"


def missing(name: str) -> Callable[[], str]:
    return lambda: signed({k: v for k, v in claims().items() if k != name})


FORGERIES: dict[str, Callable[[], str]] = {
    "alg-none": alg_none,
    "hs256-signed-with-the-public-key": hs256_with_public_key,
    "expired": lambda: signed(claims(exp=int(time.time()) - 120)),
    "future-nbf": lambda: signed(claims(nbf=int(time.time()) + 600)),
    "wrong-iss": lambda: signed(claims(iss="https://evil.example")),
    "wrong-aud": lambda: signed(claims(aud="another-api")),
    "wrong-type": lambda: signed(claims(typ="refresh")),
    "unknown-kid": lambda: signed(claims(), ring=KeyRing.generate("stranger")),
    "other-key-same-kid": lambda: signed(claims(), ring=KeyRing.generate(RING.active_kid)),
    "tampered-payload": tampered,
    "not-a-jwt": lambda: "definitely-not-a-token",
    **{f"missing-{name}": missing(name) for name in REQUIRED_CLAIMS},
}


@pytest.mark.parametrize("forge", FORGERIES.values(), ids=FORGERIES.keys())
@pytest.mark.parametrize("route", ["/v1/merchant/products", "/v1/products"])
async def test_forged_tokens_are_401(site: Site, forge: Callable[[], str], route: str) -> None:
    reply = await site.client.get(route, headers={"Authorization": f"Bearer {forge()}"})
    assert reply.status_code == 401, reply.text
    assert reply.headers["content-type"] == "application/problem+json"
    assert reply.headers["www-authenticate"].startswith("Bearer")
    assert reply.json()["code"] == "unauthenticated"


async def test_the_genuine_token_passes(site: Site) -> None:
    # The control: the same construction, unforged, is accepted.
    reply = await site.client.get(
        "/v1/merchant/products", headers={"Authorization": f"Bearer {signed(claims())}"}
    )
    assert reply.status_code == 200, reply.text


@pytest.mark.parametrize("header", ["Basic bTpw", "Bearer", "Bearer ", "Token abc"])
async def test_malformed_authorization_headers_are_401(site: Site, header: str) -> None:
    reply = await site.client.get("/v1/products", headers={"Authorization": header})
    assert reply.status_code == 401
