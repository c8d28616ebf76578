"""Access tokens (issue 6 items 1 and 5): key ring, issue/verify, and the negative JWT suite."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.domain.errors import DomainError, ErrorCode
from actors.identity import LEEWAY_S, AccessClaims, KeyRing, Role, TokenService
from actors.identity.tokens import REQUIRED_CLAIMS

ISS = "https://feira.test"
AUD = "feira-api"
T0 = 1_750_000_000.0


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment(obj: dict[str, Any]) -> str:
    return b64(json.dumps(obj, separators=(",", ":")).encode())


def unb64(seg: str) -> bytes:
    return base64.urlsafe_b64decode(seg + "=" * (-len(seg) % 4))


def refused(svc: TokenService, token: str) -> str:
    """Assert the token is refused with UNAUTHENTICATED; return the reason."""
    with pytest.raises(DomainError) as info:
        svc.verify_access(token)
    assert info.value.code is ErrorCode.UNAUTHENTICATED
    return info.value.message


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ring() -> KeyRing:
    return KeyRing.generate("k1")


@pytest.fixture
def svc(ring: KeyRing, clock: Clock) -> TokenService:
    return TokenService(ring, ISS, AUD, clock=clock)


def good_claims(**changes: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "iss": ISS,
        "aud": AUD,
        "sub": "c-1",
        "role": "customer",
        "scope": "cart:write",
        "iat": int(T0),
        "nbf": int(T0),
        "exp": int(T0) + 300,
        "jti": "j-1",
        "typ": "access",
    }
    claims.update(changes)
    return claims


def forge(ring: KeyRing, claims: dict[str, Any], headers: dict[str, Any] | None = None) -> str:
    """Really signed with the ring's active key, with whatever claims and headers we choose."""
    kid, key = ring.signing_key()
    hdr = {"kid": kid} if headers is None else headers
    return jwt.encode(claims, key, algorithm="EdDSA", headers=hdr)


def forge_raw(ring: KeyRing, header: dict[str, Any], claims: Any) -> str:
    """Signed by hand with the active key: for headers and claims pyjwt refuses to encode."""
    _, key = ring.signing_key()
    signing_input = f"{segment(header)}.{b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{b64(key.sign(signing_input.encode()))}"


# -- round trip ----------------------------------------------------------------------------


def test_round_trip(svc: TokenService, clock: Clock) -> None:
    token = svc.issue_access(
        "m-7", Role.MERCHANT, ["products:write", "orders:read"], extra={"tenant": "t1"}
    )
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "EdDSA"
    assert header["kid"] == "k1"
    claims = svc.verify_access(token)
    assert isinstance(claims, AccessClaims)
    assert claims.subject == "m-7"
    assert claims.role is Role.MERCHANT
    assert claims.scopes == frozenset({"products:write", "orders:read"})
    assert claims.has_scope("orders:read")
    assert not claims.has_scope("admin")
    assert (claims.issuer, claims.audience, claims.kid) == (ISS, AUD, "k1")
    assert claims.issued_at == claims.not_before == int(T0)
    assert claims.expires_at == int(T0) + 300
    assert claims.jti
    assert dict(claims.extra) == {"tenant": "t1"}
    with pytest.raises(AttributeError):
        claims.role = Role.ADMIN  # type: ignore[misc]

    payload = json.loads(unb64(token.split(".")[1]))
    assert set(REQUIRED_CLAIMS) <= set(payload)
    assert payload["typ"] == "access"
    assert payload["scope"] == "products:write orders:read"


def test_every_role_round_trips_and_jti_is_unique(svc: TokenService) -> None:
    jtis = set()
    for role in Role:
        claims = svc.verify_access(svc.issue_access("s", role.value, []))
        assert claims.role is role
        assert claims.scopes == frozenset()
        jtis.add(claims.jti)
    assert len(jtis) == len(Role)
    assert {r.value for r in Role} == {"customer", "merchant", "logistics", "admin"}


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        (("", Role.CUSTOMER, []), {}),
        (("s", "superuser", []), {}),
        (("s", Role.CUSTOMER, ["has space"]), {}),
        (("s", Role.CUSTOMER, [""]), {}),
        (("s", Role.CUSTOMER, []), {"ttl_s": 0}),
        (("s", Role.CUSTOMER, []), {"ttl_s": 3601}),
        (("s", Role.CUSTOMER, []), {"extra": {"role": "admin"}}),
        (("s", Role.CUSTOMER, []), {"extra": {"exp": 9_999_999_999}}),
    ],
)
def test_issue_rejects_bad_input(svc: TokenService, args: tuple[Any, ...], kwargs: Any) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - several distinct messages
        svc.issue_access(*args, **kwargs)


# -- the negative suite (issue 6 item 5) ----------------------------------------------------


def test_alg_none_is_refused(svc: TokenService, ring: KeyRing) -> None:
    for alg in ("none", "None", "NONE"):
        header = segment({"alg": alg, "typ": "JWT", "kid": "k1"})
        token = f"{header}.{segment(good_claims())}."
        assert "not allowed" in refused(svc, token)
    # pyjwt's own unsecured encoding, too.
    unsecured = jwt.encode(good_claims(), "", algorithm="none", headers={"kid": "k1"})
    assert "not allowed" in refused(svc, unsecured)
    # Control: the same claims, really signed, are accepted - the refusal is the algorithm.
    svc.verify_access(forge(ring, good_claims()))


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
@pytest.mark.parametrize("key_form", ["pem", "raw", "jwk_x"])
def test_hmac_with_public_key_as_secret_is_refused(
    svc: TokenService, ring: KeyRing, alg: str, key_form: str
) -> None:
    public = ring.public_key("k1")
    assert public is not None
    secret: bytes
    if key_form == "pem":
        secret = public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    elif key_form == "raw":
        secret = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    else:
        secret = ring.jwks()["keys"][0]["x"].encode()
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    signing_input = f"{segment({'alg': alg, 'typ': 'JWT', 'kid': 'k1'})}.{segment(good_claims())}"
    mac = hmac.new(secret, signing_input.encode(), digest).digest()
    token = f"{signing_input}.{b64(mac)}"
    # The attack token is genuine: a verifier that HMACs with the public key material
    # accepts it (pyjwt itself refuses a PEM key as an HMAC secret, so check by hand).
    head, _, sig = token.rpartition(".")
    assert hmac.compare_digest(hmac.new(secret, head.encode(), digest).digest(), unb64(sig))
    assert "not allowed" in refused(svc, token)


def test_other_asymmetric_algorithms_are_refused(svc: TokenService) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    ec_key = ec.generate_private_key(ec.SECP256R1())
    token = jwt.encode(good_claims(), ec_key, algorithm="ES256", headers={"kid": "k1"})
    assert "not allowed" in refused(svc, token)


def test_expired_beyond_leeway_is_refused(svc: TokenService, clock: Clock) -> None:
    token = svc.issue_access("c-1", Role.CUSTOMER, ["cart:write"], ttl_s=60)
    clock.now = T0 + 60 + LEEWAY_S - 1
    svc.verify_access(token)  # inside the leeway
    clock.now = T0 + 60 + LEEWAY_S
    assert refused(svc, token) == "token expired"
    clock.now = T0 + 10_000
    assert refused(svc, token) == "token expired"


def test_future_nbf_beyond_leeway_is_refused(svc: TokenService, ring: KeyRing) -> None:
    within = forge(ring, good_claims(nbf=int(T0) + LEEWAY_S - 1))
    svc.verify_access(within)
    beyond = forge(ring, good_claims(nbf=int(T0) + LEEWAY_S + 1, exp=int(T0) + 600))
    assert "nbf" in refused(svc, beyond)


def test_future_iat_beyond_leeway_is_refused(svc: TokenService, ring: KeyRing) -> None:
    token = forge(ring, good_claims(iat=int(T0) + LEEWAY_S + 1, exp=int(T0) + 600))
    assert "iat" in refused(svc, token)


def test_wrong_issuer_is_refused(svc: TokenService, ring: KeyRing, clock: Clock) -> None:
    other = TokenService(ring, "https://evil.test", AUD, clock=clock)
    token = other.issue_access("c-1", Role.CUSTOMER, [])
    assert other.verify_access(token).subject == "c-1"
    assert refused(svc, token) == "wrong issuer"


@pytest.mark.parametrize("aud", ["other-api", ["other-api", "more"], 7, None, {"a": AUD}])
def test_wrong_audience_is_refused(svc: TokenService, ring: KeyRing, aud: Any) -> None:
    assert refused(svc, forge(ring, good_claims(aud=aud))) == "wrong audience"


def test_audience_list_containing_ours_is_accepted(svc: TokenService, ring: KeyRing) -> None:
    assert svc.verify_access(forge(ring, good_claims(aud=["x", AUD]))).audience == AUD


@pytest.mark.parametrize("typ", ["refresh", "id", "ACCESS", ""])
def test_wrong_type_is_refused(svc: TokenService, ring: KeyRing, typ: str) -> None:
    reason = refused(svc, forge(ring, good_claims(typ=typ)))
    assert reason in {"not an access token", "claim 'typ' must be a non-empty string"}


def test_unknown_kid_is_refused(svc: TokenService, ring: KeyRing) -> None:
    assert refused(svc, forge(ring, good_claims(), {"kid": "k-unknown"})) == "unknown kid"


def test_same_kid_from_another_ring_fails_the_signature(svc: TokenService, clock: Clock) -> None:
    impostor = TokenService(KeyRing.generate("k1"), ISS, AUD, clock=clock)
    token = impostor.issue_access("c-1", Role.ADMIN, [])
    assert refused(svc, token) == "bad signature"


@pytest.mark.parametrize("kid", ["absent", "", 1, None, ["k1"]])
def test_missing_kid_is_refused(svc: TokenService, ring: KeyRing, kid: Any) -> None:
    header: dict[str, Any] = {"alg": "EdDSA", "typ": "JWT"}
    if kid != "absent":
        header["kid"] = kid
    assert refused(svc, forge_raw(ring, header, good_claims())) == "token has no kid"
    # Control: the same hand-made token with the right kid is accepted.
    svc.verify_access(forge_raw(ring, {**header, "kid": "k1"}, good_claims()))


def test_tampered_payload_is_refused(svc: TokenService) -> None:
    token = svc.issue_access("c-1", Role.CUSTOMER, ["cart:write"])
    header, payload, signature = token.split(".")
    claims = json.loads(unb64(payload))
    claims["role"] = "admin"
    tampered = f"{header}.{segment(claims)}.{signature}"
    assert tampered != token
    assert refused(svc, tampered) == "bad signature"
    svc.verify_access(token)  # control


@pytest.mark.parametrize("missing", REQUIRED_CLAIMS)
def test_missing_required_claim_is_refused(svc: TokenService, ring: KeyRing, missing: str) -> None:
    claims = good_claims()
    del claims[missing]
    assert refused(svc, forge(ring, claims)) == f"missing claims: {missing}"


@pytest.mark.parametrize(
    "changes",
    [
        {"exp": "soon"},
        {"exp": True},
        {"nbf": None},
        {"iat": [1]},
        {"sub": ""},
        {"sub": 42},
        {"jti": ""},
        {"role": "superuser"},
        {"role": None},
        {"scope": ["a", "b"]},
        {"iss": None},
    ],
)
def test_ill_typed_claims_are_refused(
    svc: TokenService, ring: KeyRing, changes: dict[str, Any]
) -> None:
    refused(svc, forge_raw(ring, {"alg": "EdDSA", "kid": "k1"}, good_claims(**changes)))


def test_payload_that_is_not_an_object_is_refused(svc: TokenService, ring: KeyRing) -> None:
    for payload in ([1, 2], "x", None, 3):
        token = forge_raw(ring, {"alg": "EdDSA", "kid": "k1"}, payload)
        assert refused(svc, token) == "payload is not a JSON object"


@pytest.mark.parametrize(
    "extra", [{"crit": ["exp"], "exp": 1}, {"b64": False, "crit": ["b64"]}, {"crit": []}]
)
def test_critical_headers_are_refused(
    svc: TokenService, ring: KeyRing, extra: dict[str, Any]
) -> None:
    token = forge_raw(ring, {"alg": "EdDSA", "kid": "k1", **extra}, good_claims())
    assert refused(svc, token) == "unsupported critical header"


def test_token_signed_by_retired_key_is_refused(svc: TokenService, ring: KeyRing) -> None:
    old = svc.issue_access("c-1", Role.CUSTOMER, [])
    ring.rotate("k2")
    ring.retire("k1")
    assert refused(svc, old) == "signing key retired"


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        ".",
        "..",
        "...",
        "a.b.c",
        "not a token",
        "Bearer x.y.z",
        "eyJhbGciOiJFZERTQSJ9",
        "eyJhbGciOiJFZERTQSJ9.e30",
        "eyJhbGciOiJFZERTQSIsImtpZCI6ImsxIn0.e30.",
        "eyJhbGciOiJFZERTQSIsImtpZCI6ImsxIn0.!!!.AAAA",
        "%%%.%%%.%%%",
        "\x00\x01.\x02.\x03",
        "é.ü.ß",
        "a" * 10_000,
        "e30.e30.e30",
        "bnVsbA.e30." + "A" * 86,
    ],
)
def test_garbage_is_refused(svc: TokenService, garbage: str) -> None:
    refused(svc, garbage)


def test_non_string_is_refused(svc: TokenService) -> None:
    for value in (None, b"a.b.c", 123):
        refused(svc, value)  # type: ignore[arg-type]


# -- rotation, JWKS, PEM -------------------------------------------------------------------


def test_rotation_keeps_old_tokens_until_retired(svc: TokenService, ring: KeyRing) -> None:
    before = svc.issue_access("c-1", Role.CUSTOMER, [])
    ring.rotate("k2")
    after = svc.issue_access("c-1", Role.CUSTOMER, [])
    assert jwt.get_unverified_header(before)["kid"] == "k1"
    assert jwt.get_unverified_header(after)["kid"] == "k2"
    assert svc.verify_access(before).kid == "k1"
    assert svc.verify_access(after).kid == "k2"
    assert ring.kids == ("k2", "k1")
    ring.retire("k1")
    refused(svc, before)
    assert svc.verify_access(after).kid == "k2"
    assert list(ring.kids) == ["k2"]


def test_ring_guards(ring: KeyRing) -> None:
    with pytest.raises(ValueError, match="active"):
        ring.retire("k1")
    with pytest.raises(KeyError):
        ring.retire("nope")
    with pytest.raises(ValueError, match="already used"):
        ring.rotate("k1")
    ring.rotate("k2")
    ring.retire("k1")
    with pytest.raises(ValueError, match="already used"):
        ring.rotate("k1")  # a retired kid is never reused
    with pytest.raises(ValueError, match="bad kid"):
        ring.rotate("has space")
    with pytest.raises(ValueError, match="empty"):
        _ = KeyRing().active_kid


def test_jwks_is_public_only_one_entry_per_kid(svc: TokenService, ring: KeyRing) -> None:
    ring.rotate("k2")
    ring.rotate("k3")
    ring.retire("k1")
    jwks = ring.jwks()
    json.dumps(jwks)  # JSON-serialisable as is
    keys = jwks["keys"]
    assert [k["kid"] for k in keys] == ["k3", "k2"]
    for entry in keys:
        assert set(entry) == {"kty", "crv", "x", "kid", "use", "alg"}
        assert "d" not in entry
        assert (entry["kty"], entry["crv"], entry["alg"], entry["use"]) == (
            "OKP",
            "Ed25519",
            "EdDSA",
            "sig",
        )
        public = ring.public_key(entry["kid"])
        assert public is not None
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        assert unb64(entry["x"]) == raw
    # Interop: a third party verifies our token from the published JWKS alone.
    token = svc.issue_access("c-1", Role.CUSTOMER, [])
    jwk = jwt.PyJWKSet.from_dict(jwks)[jwt.get_unverified_header(token)["kid"]]
    decoded = jwt.decode(
        token,
        jwk,
        algorithms=["EdDSA"],
        audience=AUD,
        issuer=ISS,
        options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
    )
    assert decoded["sub"] == "c-1"


@pytest.mark.parametrize("password", [None, b"correct horse battery staple"])
def test_pem_round_trip(clock: Clock, password: bytes | None) -> None:
    ring = KeyRing.generate("k1")
    ring.rotate("k2")
    ring.rotate("k3")
    ring.retire("k1")
    text = ring.to_pem(password)
    assert text.startswith("kid: k3\n-----BEGIN ")
    assert ("ENCRYPTED" in text) is (password is not None)
    loaded = KeyRing.from_pem(text, password)
    assert loaded.kids == ring.kids == ("k3", "k2")
    assert loaded.active_kid == "k3"
    assert loaded.jwks() == ring.jwks()
    a = TokenService(ring, ISS, AUD, clock=clock)
    b = TokenService(loaded, ISS, AUD, clock=clock)
    assert b.verify_access(a.issue_access("x", Role.ADMIN, [])).role is Role.ADMIN
    assert a.verify_access(b.issue_access("y", Role.LOGISTICS, [])).kid == "k3"


def test_pem_load_errors() -> None:
    ring = KeyRing.generate("k1")
    with pytest.raises(ValueError, match="no 'kid"):
        KeyRing.from_pem("")
    with pytest.raises((TypeError, ValueError)):
        KeyRing.from_pem(ring.to_pem(b"secret"), b"wrong")
    with pytest.raises(TypeError):
        KeyRing.from_pem(ring.to_pem(b"secret"))  # encrypted, no password
    from cryptography.hazmat.primitives.asymmetric import ec

    ec_pem = (
        ec.generate_private_key(ec.SECP256R1())
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )
    with pytest.raises(ValueError, match="not an Ed25519"):
        KeyRing.from_pem(f"kid: e1\n{ec_pem}")


def test_add_existing_key() -> None:
    key = Ed25519PrivateKey.generate()
    ring = KeyRing()
    ring.add("k9", key)
    assert ring.active_kid == "k9"
    with pytest.raises(TypeError):
        ring.add("k8", object())  # type: ignore[arg-type]


# -- any single change breaks the token ---------------------------------------------------

_CLOCK = Clock()
_SVC = TokenService(KeyRing.generate("k1"), ISS, AUD, clock=_CLOCK)
_TOKEN = _SVC.issue_access("c-1", Role.CUSTOMER, ["cart:write", "orders:read"])
_BASE64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    index=st.integers(min_value=0, max_value=len(_TOKEN) - 1),
    replacement=st.one_of(
        st.sampled_from(_BASE64URL + ".=+/ "), st.characters(max_codepoint=0x2FF)
    ),
)
def test_any_single_character_change_is_refused(index: int, replacement: str) -> None:
    if _TOKEN[index] == replacement:
        replacement = "A" if _TOKEN[index] != "A" else "B"
    mutated = _TOKEN[:index] + replacement + _TOKEN[index + 1 :]
    # The signature covers the header and payload text byte for byte, and the signature
    # segment must be canonical base64url, so there are no "decodes the same" changes:
    # every one, including in the unused low bits of the last character, is refused.
    refused(_SVC, mutated)


@settings(max_examples=200, deadline=None)
@given(index=st.integers(min_value=0, max_value=len(_TOKEN) - 1), delete=st.booleans())
def test_any_single_deletion_or_insertion_is_refused(index: int, delete: bool) -> None:
    if delete:
        mutated = _TOKEN[:index] + _TOKEN[index + 1 :]
    else:
        mutated = _TOKEN[:index] + "A" + _TOKEN[index:]
    refused(_SVC, mutated)


def test_signature_padding_bits_are_not_malleable() -> None:
    # 64 bytes -> 86 characters: the last carries 2 signature bits and 4 unused ones. A
    # lenient decoder maps e.g. 'A'..'P' to the same bytes; the verifier must not.
    head, _, sig = _TOKEN.rpartition(".")
    last = _BASE64URL.index(sig[-1])
    assert last % 16 == 0
    sibling = _BASE64URL[last + 1]
    malleated = f"{head}.{sig[:-1]}{sibling}"
    assert unb64(malleated.rpartition(".")[2]) == unb64(sig)  # same bytes...
    assert refused(_SVC, malleated) == "malformed signature encoding"  # ...still refused
    assert _SVC.verify_access(_TOKEN).subject == "c-1"
