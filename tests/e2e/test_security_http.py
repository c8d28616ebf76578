"""The security edge over HTTP against the Serve app on the session's cluster (2 replicas,
identity in PostgreSQL, rate limits in Redis): the README's flows, end to end."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx

from deployments.edge import identity_service
from feira.stores import open_configured_stores


async def admin_key(settings: Any) -> str:
    """What `feira api-key create --role admin` does: a key straight in the store."""
    stores = open_configured_stores(settings)
    try:
        identity = identity_service(settings, stores.identity)
        _, plaintext = await identity.create_api_key(
            role="admin", subject="ops", plan="internal", label="e2e", created_by="test"
        )
    finally:
        await stores.close()
    return plaintext


async def test_customer_journey_with_guest_cart_merge(feira_url: str) -> None:
    email = f"{uuid.uuid4().hex[:10]}@example.com"
    async with httpx.AsyncClient(base_url=feira_url, timeout=15) as http:
        guest = (await http.post("/v1/carts")).json()["id"]
        added = await http.post(f"/v1/carts/{guest}/items", json={"sku": "SKU-0000001-1"})
        assert added.status_code == 200, added.text
        made = await http.post(
            "/v1/customers", json={"email": email, "password": "passphrase 1234"}
        )
        assert made.status_code == 201, made.text
        signed = await http.post(
            "/v1/auth/sign-in",
            json={"email": email, "password": "passphrase 1234", "guest_cart_id": guest},
        )
        assert signed.status_code == 200, signed.text
        body = signed.json()
        assert body["merge"]["merged"] is True
        mine = {"Authorization": f"Bearer {body['access_token']}"}
        cart = body["cart"]
        assert [line["sku"] for line in cart["lines"]] == ["SKU-0000001-1"]
        # Both replicas accept the token and hold the cart to its owner.
        for _ in range(4):
            assert (await http.get(f"/v1/carts/{cart['id']}", headers=mine)).status_code == 200
            assert (await http.get(f"/v1/carts/{cart['id']}")).status_code == 404
        me = await http.get("/v1/me", headers=mine)
        assert me.json()["cart_id"] == cart["id"]


async def test_client_credentials_and_admin_keys(feira_url: str, seeded: Any) -> None:
    plaintext = await admin_key(seeded)
    key_id = plaintext.split("_")[1]
    async with httpx.AsyncClient(base_url=feira_url, timeout=15) as http:
        jwks = (await http.get("/.well-known/jwks.json")).json()
        assert jwks["keys"][0]["alg"] == "EdDSA"
        granted = await http.post(
            "/oauth/token",
            data={
                "grant_type": "client_credentials",
                "client_id": key_id,
                "client_secret": plaintext,
            },
        )
        assert granted.status_code == 200, granted.text
        admin = {"Authorization": f"Bearer {granted.json()['access_token']}"}
        made = await http.post(
            "/v1/admin/api-keys",
            json={"label": "erp", "role": "merchant", "subject": "m-001", "plan": "standard"},
            headers=admin,
        )
        assert made.status_code == 201, made.text
        merchant_key = made.json()["api_key"]
        merchant = await http.post(
            "/oauth/token",
            data={"grant_type": "client_credentials", "scope": "catalog:write"},
            auth=(merchant_key.split("_")[1], merchant_key),
        )
        assert merchant.status_code == 200, merchant.text
        token = {"Authorization": f"Bearer {merchant.json()['access_token']}"}
        assert (await http.get("/v1/merchant/products", headers=token)).status_code == 200
        narrowed = await http.get("/v1/merchant/orders", headers=token)
        assert (narrowed.status_code, narrowed.json()["code"]) == (403, "forbidden")
        assert (await http.get("/v1/admin/api-keys", headers=token)).status_code == 403
        # The key itself, as X-Api-Key, puts requests on its plan.
        keyed = await http.get("/v1/products?limit=1", headers={"X-Api-Key": merchant_key})
        assert keyed.headers["ratelimit-policy"].startswith('"standard"')
        revoked = await http.delete(f"/v1/admin/api-keys/{made.json()['key_id']}", headers=admin)
        assert revoked.status_code == 204


async def test_sign_in_floods_get_429_with_retry_after(feira_url: str) -> None:
    wrong = {"email": "nobody@example.com", "password": "not the password"}
    async with httpx.AsyncClient(base_url=feira_url, timeout=15) as http:
        replies = [await http.post("/v1/auth/sign-in", json=wrong) for _ in range(14)]
        statuses = [r.status_code for r in replies]
        assert set(statuses) <= {401, 429}, statuses
        assert 429 in statuses, statuses
        limited = next(r for r in replies if r.status_code == 429)
        assert int(limited.headers["retry-after"]) >= 1
        assert '"auth"' in limited.headers["ratelimit-policy"]
        assert limited.headers["content-type"] == "application/problem+json"
        assert limited.json()["code"] == "rate_limited"
        print("sign-in statuses:", statuses)
        await asyncio.sleep(int(limited.headers["retry-after"]))
        again = await http.post("/v1/auth/sign-in", json=wrong)
        assert again.status_code == 401


async def test_the_waf_blocks_attacks_and_passes_look_alikes(feira_url: str) -> None:
    async with httpx.AsyncClient(base_url=feira_url, timeout=15) as http:
        attack = await http.get("/v1/search", params={"q": "1' UNION SELECT password FROM users--"})
        assert attack.status_code == 403, attack.text
        assert attack.json()["code"] == "request_blocked"
        assert "UNION" not in attack.text
        benign = await http.get("/v1/search", params={"q": "O'Reilly select premium coffee"})
        assert benign.status_code == 200, benign.text
        scanner = await http.get("/v1/products", headers={"User-Agent": "sqlmap/1.7"})
        assert scanner.status_code == 403
        assert attack.headers["x-content-type-options"] == "nosniff"
