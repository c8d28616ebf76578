"""The BFF ingress deployment: a thin Serve shell around the FastAPI app and the Shop."""

from __future__ import annotations

from typing import Any

from ray import serve
from starlette.types import ASGIApp

from actors.checkout import CheckoutService, CheckoutSettings
from actors.client import (
    RayChangeBus,
    SearchIndexerClient,
    ShardClient,
    connect_order_processor,
)
from actors.commerce_metrics import SAMPLE_INTERVAL_S
from actors.domain.errors import DomainError
from actors.invalidation import ChangeBus, Follower, publishing
from actors.logistics import Logistics, StoreShipmentIndex
from actors.order_processor import OrderProcessor, SandboxAuthorizations, StoreSeenEvents
from actors.periodic import Periodic
from actors.shop import Shop, ShopLimits
from api.app import create_api
from api.card_guard import install_log_redaction
from api.routes.orders_ops import OrdersOps
from deployments.edge import build_edge
from deployments.metrics import RayCommerceMetrics, RayRequestMetrics, ReplicaReporter
from feira.logs import install_json_logs
from feira.payments import open_sandbox
from feira.settings import Settings
from feira.signing_secrets import payment_webhook_secret
from feira.stores import open_configured_search, open_configured_stores
from storage.factory import Stores
from storage.redis.changes import RedisChangeBus
from storage.redis.client import RedisClient

# Replicas ping the search indexer and the order processor now and then: a restarted one
# starts its loop on its first call, and nobody else calls it.
INDEXER_PING_EVERY = 20


def replica_identity() -> dict[str, str]:
    """Who is logging, for every JSON line of this replica."""
    identity = {"component": "bff"}
    try:
        ctx = serve.get_replica_context()
        identity["app"] = ctx.app_name
        identity["deployment"] = ctx.deployment
        identity["replica"] = ctx.replica_tag
    except Exception:  # noqa: BLE001 - outside a replica (tests): the component is enough
        pass
    return identity


def open_change_bus(s: Settings) -> ChangeBus:
    if s.redis_url:
        # A client of its own: the subscription holds one connection for good.
        return RedisChangeBus(RedisClient(s.redis_url, prefix=s.redis_key_prefix))
    return RayChangeBus.connect(s)


class BffRuntime:
    """Everything an HTTP front needs: stores, shard client, Shop, checkout, orders, the
    edge, the invalidation follower and the periodic jobs. Plain: the Serve deployment
    below and the direct ingress actors (``deployments/http_ingress.py``) host the same
    one, so both answer exactly alike."""

    def __init__(self, settings: dict[str, Any], identity: dict[str, str]) -> None:
        # JSON lines first, so the card-number redaction also goes on their handler.
        install_json_logs(identity)
        install_log_redaction()
        s = Settings.from_wire(settings)
        self.settings = s
        self.stores: Stores = open_configured_stores(s)
        self.search = open_configured_search(s)
        self.client = ShardClient.connect(s)
        self.metrics = RayCommerceMetrics()
        self.indexer = SearchIndexerClient.connect(s)
        self.order_processor = connect_order_processor(s)
        self.shop = Shop(
            self.client,
            self.stores.catalog,
            s.currency,
            ShopLimits(
                price_cache_size=s.price_cache_size,
                price_cache_ttl_s=s.price_cache_ttl_ms / 1000,
                product_cache_size=s.product_cache_size,
                product_cache_ttl_s=s.product_cache_ttl_ms / 1000,
                page_stock_ttl_s=s.page_stock_cache_ttl_ms / 1000,
            ),
            search_index=self.search,
            metrics=self.metrics,
        )
        provider, ledger = open_sandbox(s)
        self.checkout = CheckoutService(
            self.stores.orders,
            self.client,
            provider,
            self.stores.catalog,
            CheckoutSettings(currency=s.currency, reservation_ttl_s=s.reservation_ttl_s),
            metrics=self.metrics,
        )
        # Refunds, webhooks and shipment events are handled in the replica that takes
        # them; the outbox work after authorization runs in the one OrderProcessorShell.
        processor = OrderProcessor(
            self.stores.orders,
            self.client,
            provider,
            journal=self.stores.stock,
            carriers=s.carriers,
            authorizations=SandboxAuthorizations(ledger),
            lease_s=s.order_outbox_lease_s,
        )
        self.orders_ops = OrdersOps(
            orders=self.stores.orders,
            processor=processor,
            logistics=Logistics(
                self.stores.orders, processor, StoreShipmentIndex(self.stores.orders)
            ),
            webhook_secrets={provider.name: payment_webhook_secret(s)},
            seen=StoreSeenEvents(self.stores.orders),
        )
        self.edge = build_edge(s, self.stores.identity)
        self.changes = open_change_bus(s)
        self.follower = Follower(self.changes, self.shop)
        self.search_refresh = Periodic(
            "search-refresh", s.search_sync_interval_ms / 1000, self._refresh_search
        )
        self._ticks = 0
        self.request_metrics = RayRequestMetrics()
        self.reporter = ReplicaReporter(
            lambda: self.client.stats(reset_peaks=True), self.shop.cache_stats
        )
        self.report_metrics = Periodic("report-metrics", SAMPLE_INTERVAL_S, self.reporter.report)

    async def _refresh_search(self) -> None:
        self._ticks += 1
        if self._ticks % INDEXER_PING_EVERY == 1:
            await self.indexer.ready()
            await self.order_processor.ready()
        # Elasticsearch shows its own writes to every client; a Tantivy directory is
        # reloaded by each reader to see the indexer's commits.
        if self.settings.elasticsearch_url is None:
            await self.search.refresh()

    async def build_app(self, *, echo_request_id: bool) -> ASGIApp:
        # Before the app exists no request can reach a store. Idempotent and serialised by
        # an advisory lock, so every replica may run it and `serve deploy` without
        # `feira migrate` still gets its schema.
        await self.stores.migrate()
        self.follower.start()
        self.search_refresh.ensure_started()
        self.report_metrics.ensure_started()
        return create_api(
            self.shop,
            self.ready,
            edge=self.edge,
            on_change=publishing(self.changes),
            graphiql=self.settings.environment == "development",
            orders_ops=self.orders_ops,
            checkout=self.checkout,
            request_metrics=self.request_metrics,
            echo_request_id=echo_request_id,
        )

    def check_health(self) -> None:
        """Local on purpose: checking shards or stores here would make Serve replace
        every replica at once when one node or store is lost; /readyz reports those."""
        if self.follower.stopped:
            raise RuntimeError("the cache-invalidation follower stopped")

    async def ready(self) -> dict[str, Any]:
        shards = await self.client.ready()
        products = await self.stores.catalog.count_products()
        return {
            "shards": {kind: len(reports) for kind, reports in shards.items()},
            "products": products,
            "search": await self._indexer_report(),
            "invalidation": self.follower.stats.to_json(),
            "coalescing": self.client.stats(),
            "cache": self.shop.cache_stats(),
        }

    async def _indexer_report(self) -> dict[str, Any]:
        # Search reads do not go through the indexer: a slow indexer makes search stale,
        # not the replica unready.
        try:
            return await self.indexer.ready()
        except DomainError as error:
            return {"error": error.message}

    async def stop(self) -> None:
        await self.follower.stop()


@serve.ingress()
class BffIngress:
    """The Serve deployment: a thin shell around one BffRuntime."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.runtime = BffRuntime(settings, replica_identity())

    async def __serve_build_asgi_app__(self) -> ASGIApp:
        # Serve's RequestIdMiddleware around this app echoes X-Request-ID already.
        return await self.runtime.build_app(echo_request_id=False)

    async def check_health(self) -> None:
        """Serve's replica health check (every few seconds)."""
        self.runtime.check_health()

    async def __del__(self) -> None:
        # Serve awaits an async __del__ when it stops a replica.
        await self.runtime.stop()
