"""Shopper journey against a running Feira: browse, open a product, fill a cart, view it.

    .venv/bin/locust -f loadtest/locustfile.py --host http://127.0.0.1:8000 \
        --headless -u 50 -r 10 -t 1m --csv var/locust

Checkout and the merchant, mobile and flash-sale journeys come with later issues.
"""

from __future__ import annotations

import random
from typing import Any

from locust import HttpUser, between, task


class Shopper(HttpUser):
    wait_time = between(0.5, 2.0)

    def on_start(self) -> None:
        page = self.client.get("/v1/products?limit=50", name="/v1/products").json()
        self.products: list[dict[str, Any]] = page["items"]
        self.cart_id = self.client.post("/v1/carts", name="/v1/carts").json()["id"]

    @task(5)
    def browse(self) -> None:
        product = random.choice(self.products)
        self.client.get(f"/bff/web/product/{product['id']}", name="/bff/web/product/[id]")

    @task(3)
    def add_to_cart(self) -> None:
        sku = random.choice(random.choice(self.products)["variants"])["sku"]
        with self.client.post(
            f"/v1/carts/{self.cart_id}/items",
            json={"sku": sku, "quantity": 1},
            name="/v1/carts/[id]/items",
            catch_response=True,
        ) as reply:
            # A full cart is an expected answer for a long-lived simulated shopper.
            if reply.status_code == 422 and reply.json().get("code") in {
                "cart_line_limit", "quantity_limit",
            }:
                reply.success()
                self.cart_id = self.client.post("/v1/carts", name="/v1/carts").json()["id"]

    @task(2)
    def view_cart(self) -> None:
        self.client.get(f"/v1/carts/{self.cart_id}", name="/v1/carts/[id]")
