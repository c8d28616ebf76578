"""A Serve replica killed under HTTP load: shard state is untouched, requests succeed or
fail with an answer a client can retry, and the app recovers by itself."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
import ray

pytestmark = pytest.mark.fault


def bff_replicas() -> list[tuple[str, str]]:
    return [
        (a["namespace"], a["name"])
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["name"].startswith("SERVE_REPLICA::feira#bff#")
    ]


def is_gateway_failure(reply: httpx.Response) -> bool:
    """A failure that says the request may not have run, so a retry with the same
    Idempotency-Key is right. Ray's HAProxy ingress rewrites its 502 and 504 (replica
    gone or silent) into a bare text/plain 500 "Internal Server Error"; Feira's own
    errors are always problem+json, so that body cannot be mistaken for an app error."""
    if reply.status_code in {502, 503, 504}:
        return True
    return (
        reply.status_code == 500
        and reply.headers.get("content-type", "").startswith("text/plain")
        and reply.text == "Internal Server Error"
    )


async def test_replica_kill_loses_no_cart(feira_url: str) -> None:
    async with httpx.AsyncClient(base_url=feira_url, timeout=10) as http:
        page = (await http.get("/v1/products", params={"limit": 5})).json()
        skus = [p["variants"][0]["sku"] for p in page["items"]]
        carts = [(await http.post("/v1/carts")).json()["id"] for _ in range(10)]
        acked: dict[str, int] = dict.fromkeys(carts, 0)
        outcomes: dict[str, int] = {"ok": 0, "retryable": 0}
        stop = time.monotonic() + 8

        async def shopper(cart_id: str) -> None:
            n = 0
            while time.monotonic() < stop:
                key = f"{cart_id[:8]}-add-{n}"
                # Retry one logical add with one Idempotency-Key until it is answered.
                for _ in range(100):
                    try:
                        reply = await http.post(
                            f"/v1/carts/{cart_id}/items",
                            json={"sku": skus[0], "quantity": 1},
                            headers={"Idempotency-Key": key},
                        )
                    except httpx.TransportError:
                        outcomes["retryable"] += 1
                    else:
                        if reply.status_code == 200:
                            acked[cart_id] = reply.json()["lines"][0]["quantity"]
                            outcomes["ok"] += 1
                            break
                        assert is_gateway_failure(reply), (reply.status_code, reply.text)
                        outcomes["retryable"] += 1
                    await asyncio.sleep(0.1)
                n += 1
                if acked[cart_id] >= 90:
                    return
                await asyncio.sleep(0.05)

        async def kill_soon() -> int:
            await asyncio.sleep(2)
            victims = bff_replicas()
            for namespace, name in victims:
                ray.kill(ray.get_actor(name, namespace=namespace), no_restart=True)
            return len(victims)

        killed, _ = await asyncio.gather(kill_soon(), asyncio.gather(*(shopper(c) for c in carts)))
        for _ in range(120):
            if (await http.get("/healthz")).status_code == 200:
                break
            await asyncio.sleep(1)
        for cart_id in carts:
            cart = (await http.get(f"/v1/carts/{cart_id}")).json()
            assert cart["lines"][0]["quantity"] == acked[cart_id]
    print(f"\nreplicas killed: {killed}; adds answered: {outcomes['ok']}; "
          f"retryable failures seen: {outcomes['retryable']}; carts intact: {len(carts)}")
    assert killed >= 1
