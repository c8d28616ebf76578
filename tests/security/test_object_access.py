"""Object-level checks: a customer reaches only its carts and orders, a merchant only its
keys, and someone else's object is a 404 with nothing of it in the answer. Also the
identity flows over HTTP: sign-up, sign-in with the guest cart merged, refresh rotation
with reuse detection, sign-out, client credentials, and the JWKS document."""

from __future__ import annotations

import base64
from typing import Any

import jwt

from tests.security.conftest import Site
from tests.tokens import AUDIENCE, ISSUER, bearer


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def owned_cart(site: Site, token: str) -> dict[str, Any]:
    made = await site.client.post("/v1/carts", headers=auth(token))
    assert made.status_code == 201, made.text
    cart: dict[str, Any] = made.json()
    sku = site.env.skus[0]
    added = await site.client.post(
        f"/v1/carts/{cart['id']}/items", json={"sku": sku, "quantity": 1}, headers=auth(token)
    )
    assert added.status_code == 200, added.text
    return cart


async def test_a_customer_cart_answers_only_its_customer(site: Site) -> None:
    alice = await site.customer("alice@example.com")
    bob = await site.customer("bob@example.com")
    cart = await owned_cart(site, alice)
    assert cart["customer_id"].startswith("cus_")
    path = f"/v1/carts/{cart['id']}"
    sku = site.env.skus[1]
    attempts = [
        ("GET", path, None),
        ("POST", f"{path}/items", {"sku": sku, "quantity": 1}),
        ("PATCH", f"{path}/items/{site.env.skus[0]}", {"quantity": 5}),
        ("DELETE", f"{path}/items/{site.env.skus[0]}", None),
    ]
    for headers in (auth(bob), {}):
        for method, url, body in attempts:
            reply = await site.client.request(method, url, json=body, headers=headers)
            assert reply.status_code == 404, (method, url, reply.text)
            assert reply.json()["code"] == "cart_not_found"
            assert sku not in reply.text
    # Nothing changed: the owner still sees one line of quantity 1.
    mine = await site.client.get(path, headers=auth(alice))
    assert mine.status_code == 200
    assert [(line["sku"], line["quantity"]) for line in mine.json()["lines"]] == [
        (site.env.skus[0], 1)
    ]


async def test_checkout_and_orders_belong_to_their_customer(site: Site) -> None:
    alice = await site.customer("alice@example.com")
    bob = await site.customer("bob@example.com")
    cart = await owned_cart(site, alice)
    body = {"cart_id": cart["id"], "payment_token": "tok_approve"}
    stolen = await site.client.post(
        "/v1/checkout", json=body, headers=auth(bob) | {"Idempotency-Key": "k-1"}
    )
    assert stolen.status_code == 404
    assert stolen.json()["code"] == "cart_not_found"
    # Bob's attempt neither froze the cart nor used Alice's key: she checks out with it.
    placed = await site.client.post(
        "/v1/checkout", json=body, headers=auth(alice) | {"Idempotency-Key": "k-1"}
    )
    assert placed.status_code == 202, placed.text
    order_id = placed.json()["order_id"]
    assert (await site.client.get(f"/v1/orders/{order_id}", headers=auth(alice))).status_code == 200
    for headers in (auth(bob), {}):
        other = await site.client.get(f"/v1/orders/{order_id}", headers=headers)
        assert other.status_code == 404
        assert other.json()["code"] == "order_not_found"
    mine = await site.client.get("/v1/me/orders", headers=auth(alice))
    assert [o["id"] for o in mine.json()["items"]] == [order_id]
    theirs = await site.client.get("/v1/me/orders", headers=auth(bob))
    assert theirs.json()["items"] == []
    # The same Idempotency-Key from Bob is Bob's own: no replay of Alice's answer.
    replay = await site.client.post(
        "/v1/checkout", json=body, headers=auth(bob) | {"Idempotency-Key": "k-1"}
    )
    assert replay.status_code == 404
    assert "idempotent-replayed" not in replay.headers


async def test_a_guest_order_is_its_order_ids_holders(site: Site) -> None:
    made = await site.client.post("/v1/carts")
    cart_id = made.json()["id"]
    await site.client.post(f"/v1/carts/{cart_id}/items", json={"sku": site.env.skus[0]})
    placed = await site.client.post(
        "/v1/checkout",
        json={"cart_id": cart_id, "payment_token": "tok_approve"},
        headers={"Idempotency-Key": "guest-1"},
    )
    assert placed.status_code == 202, placed.text
    order_id = placed.json()["order_id"]
    assert (await site.client.get(f"/v1/orders/{order_id}")).status_code == 200


async def test_sign_in_merges_the_guest_cart_into_the_customers(site: Site) -> None:
    guest = (await site.client.post("/v1/carts")).json()["id"]
    sku = site.env.skus[2]
    await site.client.post(f"/v1/carts/{guest}/items", json={"sku": sku, "quantity": 2})
    made = await site.client.post(
        "/v1/customers", json={"email": "Carol@Example.com", "password": "a long passphrase"}
    )
    assert made.status_code == 201
    assert made.json()["email"] == "carol@example.com"
    signed = await site.client.post(
        "/v1/auth/sign-in",
        json={
            "email": "carol@example.com",
            "password": "a long passphrase",
            "guest_cart_id": guest,
        },
    )
    assert signed.status_code == 200, signed.text
    answer = signed.json()
    assert answer["merge"] == {"merged": True, "skipped": []}
    cart = answer["cart"]
    assert cart["id"] != guest
    assert cart["customer_id"] == answer["customer"]["id"]
    assert [(line["sku"], line["quantity"]) for line in cart["lines"]] == [(sku, 2)]
    me = await site.client.get("/v1/me", headers=auth(answer["access_token"]))
    assert me.json()["cart_id"] == cart["id"]
    # Signing in again (another device) finds the same cart; merging twice adds nothing.
    again = await site.client.post(
        "/v1/auth/sign-in",
        json={
            "email": "carol@example.com",
            "password": "a long passphrase",
            "guest_cart_id": guest,
        },
    )
    assert again.json()["cart"]["id"] == cart["id"]
    assert [(line["sku"], line["quantity"]) for line in again.json()["cart"]["lines"]] == [(sku, 2)]


async def test_sign_up_and_sign_in_refusals(site: Site) -> None:
    short = await site.client.post(
        "/v1/customers", json={"email": "d@example.com", "password": "elevenchars"}
    )
    assert (short.status_code, short.json()["code"]) == (422, "password_too_weak")
    await site.customer("dave@example.com")
    again = await site.client.post(
        "/v1/customers", json={"email": "DAVE@example.com", "password": "another long one"}
    )
    assert (again.status_code, again.json()["code"]) == (409, "email_taken")
    for email, password in (
        ("dave@example.com", "wrong password!"),
        ("nobody@x.io", "whatever12345"),
    ):
        refused = await site.client.post(
            "/v1/auth/sign-in", json={"email": email, "password": password}
        )
        assert refused.status_code == 401
        assert refused.json()["detail"] == "invalid email or password"


async def test_refresh_rotates_and_reuse_revokes_the_sign_in(site: Site) -> None:
    await site.customer("erin@example.com")
    signed = await site.client.post(
        "/v1/auth/sign-in", json={"email": "erin@example.com", "password": "correct horse battery"}
    )
    first = signed.json()["refresh_token"]

    async def refresh(token: str) -> Any:
        return await site.client.post(
            "/oauth/token", data={"grant_type": "refresh_token", "refresh_token": token}
        )

    rotated = await refresh(first)
    assert rotated.status_code == 200, rotated.text
    assert rotated.headers["cache-control"] == "no-store"
    second = rotated.json()["refresh_token"]
    assert second != first
    reused = await refresh(first)
    assert reused.status_code == 400
    assert reused.json()["error"] == "invalid_grant"
    # Reuse revoked the whole sign-in: the newest token is dead too.
    assert (await refresh(second)).status_code == 400


async def test_sign_out_revokes_the_refresh_token(site: Site) -> None:
    await site.customer("fay@example.com")
    signed = await site.client.post(
        "/v1/auth/sign-in", json={"email": "fay@example.com", "password": "correct horse battery"}
    )
    token = signed.json()["refresh_token"]
    assert (await site.client.post("/oauth/revoke", data={"token": token})).status_code == 200
    after = await site.client.post(
        "/oauth/token", data={"grant_type": "refresh_token", "refresh_token": token}
    )
    assert after.status_code == 400


async def test_client_credentials_from_a_merchant_key_and_the_jwks(site: Site) -> None:
    merchant = bearer("m-001")
    made = await site.client.post(
        "/v1/merchant/api-keys", json={"label": "erp sync"}, headers=merchant
    )
    assert made.status_code == 201, made.text
    key = made.json()
    assert key["role"] == "merchant"
    assert key["subject"] == "m-001"
    basic = base64.b64encode(f"{key['key_id']}:{key['api_key']}".encode()).decode()
    granted = await site.client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "scope": "catalog:write"},
        headers={"Authorization": f"Basic {basic}"},
    )
    assert granted.status_code == 200, granted.text
    access = granted.json()["access_token"]
    assert granted.json()["scope"] == "catalog:write"
    listed = await site.client.get("/v1/merchant/products", headers=auth(access))
    assert listed.status_code == 200
    # Narrowed to catalog:write, the token cannot read orders.
    assert (await site.client.get("/v1/merchant/orders", headers=auth(access))).status_code == 403
    # Anyone can verify it with the published keys.
    jwks = (await site.client.get("/.well-known/jwks.json")).json()
    header = jwt.get_unverified_header(access)
    jwk = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    claims = jwt.decode(
        access, jwt.PyJWK(jwk).key, algorithms=["EdDSA"], audience=AUDIENCE, issuer=ISSUER
    )
    assert (claims["sub"], claims["role"]) == ("m-001", "merchant")
    bad = await site.client.post(
        "/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": key["key_id"],
            "client_secret": "fk_wrong",
        },
    )
    assert (bad.status_code, bad.json()["error"]) == (400, "invalid_grant")
    unsupported = await site.client.post("/oauth/token", data={"grant_type": "password"})
    assert unsupported.json()["error"] == "unsupported_grant_type"


async def test_merchants_manage_only_their_own_keys(site: Site) -> None:
    made = await site.client.post(
        "/v1/merchant/api-keys", json={"label": "pos"}, headers=bearer("m-001")
    )
    key_id = made.json()["key_id"]
    other = bearer("m-002")
    assert (await site.client.get("/v1/merchant/api-keys", headers=other)).json()["items"] == []
    refused = await site.client.delete(f"/v1/merchant/api-keys/{key_id}", headers=other)
    assert (refused.status_code, refused.json()["code"]) == (404, "api_key_not_found")
    internal = await site.client.post(
        "/v1/merchant/api-keys", json={"label": "x", "plan": "internal"}, headers=other
    )
    assert internal.status_code == 400
    wider = await site.client.post(
        "/v1/merchant/api-keys", json={"label": "x", "scopes": ["admin"]}, headers=other
    )
    assert (wider.status_code, wider.json()["code"]) == (400, "invalid_scope")
    mine = await site.client.delete(f"/v1/merchant/api-keys/{key_id}", headers=bearer("m-001"))
    assert mine.status_code == 204
    listed = (await site.client.get("/v1/merchant/api-keys", headers=bearer("m-001"))).json()
    assert listed["items"][0]["revoked_at"] is not None


async def test_admins_manage_every_key(site: Site) -> None:
    admin = bearer("root", "admin")
    made = await site.client.post(
        "/v1/admin/api-keys",
        json={"label": "carrier app", "role": "logistics", "subject": "dhl", "plan": "partner"},
        headers=admin,
    )
    assert made.status_code == 201, made.text
    assert made.json()["scopes"] == ["shipments:read", "shipments:write"]
    public = await site.client.post(
        "/v1/admin/api-keys", json={"label": "mobile app", "plan": "partner"}, headers=admin
    )
    assert public.json()["role"] is None
    half = await site.client.post(
        "/v1/admin/api-keys", json={"label": "x", "role": "merchant"}, headers=admin
    )
    assert half.status_code == 400
    listed = await site.client.get("/v1/admin/api-keys?role=logistics", headers=admin)
    assert [k["subject"] for k in listed.json()["items"]] == ["dhl"]
    assert "api_key" not in listed.json()["items"][0]
    gone = await site.client.delete(f"/v1/admin/api-keys/{made.json()['key_id']}", headers=admin)
    assert gone.status_code == 204
