"""The whole HTTP app in-process with every feature on: accounts, checkout, orders,
logistics, webhooks, API keys, the WAF, and (where a test asks) rate limits. No Ray."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from actors.identity.accounts import IdentityService, IdentitySettings
from actors.identity.passwords import PasswordParams
from actors.logistics import Logistics, StoreShipmentIndex
from actors.order_processor import OrderProcessor, StoreSeenEvents
from api.app import Edge, create_api
from api.routes.orders_ops import OrdersOps
from storage.sqlite.identity import SqliteIdentityStore
from tests.tokens import TOKENS
from tests.unit.test_checkout import Env, make_env

WEBHOOK_SECRET = b"whsec_security_suite_secret_32byt"
CARRIERS = ("dhl", "ups")
# Cheap argon2 parameters: the suite signs up many customers; production's are memory-hard.
CHEAP = IdentitySettings(
    password_params=PasswordParams(time_cost=1, memory_cost_kib=8, parallelism=1)
)


@dataclass
class Site:
    client: httpx.AsyncClient
    env: Env
    identity: IdentityService

    async def customer(self, email: str, password: str = "correct horse battery") -> str:
        """Sign up and sign in; the customer's access token."""
        made = await self.client.post("/v1/customers", json={"email": email, "password": password})
        assert made.status_code == 201, made.text
        signed = await self.client.post(
            "/v1/auth/sign-in", json={"email": email, "password": password}
        )
        assert signed.status_code == 200, signed.text
        token: str = signed.json()["access_token"]
        return token


async def ready() -> dict[str, Any]:
    return {}


async def build_site(tmp_path: Path, edge_changes: dict[str, Any] | None = None) -> Site:
    env = await make_env(tmp_path)
    orders = env.run.stores.orders
    processor = OrderProcessor(orders, env.run.router, env.provider, carriers=CARRIERS)
    ops = OrdersOps(
        orders=orders,
        processor=processor,
        logistics=Logistics(orders, processor, StoreShipmentIndex(orders)),
        webhook_secrets={"sandbox": WEBHOOK_SECRET},
        seen=StoreSeenEvents(orders),
    )
    identity = IdentityService(
        SqliteIdentityStore(str(tmp_path / "identity.db")), TOKENS, settings=CHEAP
    )
    edge = Edge(tokens=TOKENS, identity=identity, **(edge_changes or {}))
    app = create_api(env.run.shop, ready, edge=edge, orders_ops=ops, checkout=env.service)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://feira")
    return Site(client, env, identity)


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    made = await build_site(tmp_path)
    yield made
    await made.client.aclose()
    await made.env.run.stores.close()
