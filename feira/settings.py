"""All settings, from ``FEIRA_*`` environment variables, validated at start.

Units are in the names (``_ms``, ``_s``). Settings travel to actors and replicas as the
JSON dict from :meth:`Settings.to_wire` and are validated again there.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REDIS_DEFAULT_PORT = 6379


def _per_cores(cores_per_shard: int) -> int:
    return max(1, (os.cpu_count() or 1) // cores_per_shard)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FEIRA_", extra="forbid", frozen=True)

    # Where the embedded stores and the run files of `feira up` live.
    data_dir: Path = Path("var")
    # Ray namespace that holds the named shard actors; two Feiras on one cluster need two.
    namespace: str = Field("feira", pattern=r"^[a-z][a-z0-9-]{0,31}$")

    # Shard counts. Changing one moves keys between shards: treat it as a migration (`feira
    # down` writes every cart checkpoint first; stock and prices are always durable). By
    # default one cart and one inventory shard per two cores of this machine, one pricing
    # shard per four: each shard is a process, and a Ray call costs about a millisecond of
    # CPU at each end, so on a small machine fewer shards carry more operations per call
    # (on 2 cores, 1/1/1 held 2.4x the cart adds and 4x the peak mix of 4/4/2; RESULTS.md).
    # A cluster sets them for all its cores (deployments/serve_config.yaml).
    cart_shards: int = Field(default_factory=lambda: _per_cores(2), ge=1, le=1024)
    inventory_shards: int = Field(default_factory=lambda: _per_cores(2), ge=1, le=1024)
    pricing_shards: int = Field(default_factory=lambda: _per_cores(4), ge=1, le=1024)

    currency: str = Field("EUR", pattern=r"^[A-Z]{3}$")

    # Production stores; unset means the embedded SQLite ones (and carts in memory only).
    postgres_url: str | None = Field(None, pattern=r"^postgres(ql)?://")
    redis_url: str | None = Field(None, pattern=r"^rediss?://")
    redis_key_prefix: str = Field("feira:", pattern=r"^[A-Za-z0-9:_-]{1,64}$")
    # Cart write-behind to Redis: a change reaches Redis at most this late; 0 writes it
    # before the reply.
    cart_checkpoint_lag_ms: int = Field(50, ge=0, le=60_000)

    # Catalog and search: unset URLs mean the embedded SQLite catalog and Tantivy index
    # under data_dir.
    mongo_url: str | None = Field(None, pattern=r"^mongodb(\+srv)?://")
    mongo_database: str = Field("feira", pattern=r"^[A-Za-z0-9_-]{1,63}$")
    elasticsearch_url: str | None = Field(None, pattern=r"^https?://")
    elasticsearch_index: str = Field("feira-products", pattern=r"^[a-z0-9][a-z0-9_-]{0,99}$")
    # The search index follows the catalog's change feed: polled this often, indexed in
    # batches of this many changes. Search lags the catalog by about one interval plus
    # one batch's indexing time.
    search_sync_interval_ms: int = Field(250, ge=10, le=60_000)
    search_sync_batch: int = Field(1_000, ge=1, le=10_000)

    # development: GraphiQL at /graphql. production: no GraphiQL.
    environment: Literal["development", "production"] = "development"
    # Verifies payment webhooks (and signs the sandbox's). Unset: kept in data_dir.
    payment_webhook_secret: SecretStr | None = Field(None, min_length=32)

    # Identity (issue 6). Access tokens are EdDSA JWTs signed with the keys in
    # jwt_keys_file (PEM, `kid:` lines; unset: data_dir/jwt-keys.pem, made on first use;
    # `feira keys rotate` adds a key). Every replica must read the same file.
    jwt_keys_file: Path | None = None
    jwt_keys_passphrase: SecretStr | None = Field(None, min_length=12)
    jwt_issuer: str = Field("feira", min_length=1, max_length=200)
    jwt_audience: str = Field("feira-api", min_length=1, max_length=200)
    access_token_ttl_s: int = Field(300, ge=30, le=3600)
    refresh_token_ttl_s: int = Field(30 * 24 * 3600, ge=300, le=365 * 24 * 3600)
    # argon2id cost of customer passwords (RFC 9106's second recommendation by default).
    password_memory_kib: int = Field(65_536, ge=8_192, le=4_194_304)
    password_time_cost: int = Field(3, ge=1, le=20)

    # Rate limits: plans are {name: [requests per second, burst]}. Requests with an
    # X-Api-Key use their key's plan; the others share their client IP's "anonymous"
    # plan. Sign-in, sign-up and the token endpoint also get the "auth" plan per IP.
    # In Redis when redis_url is set (one limit across replicas); in each replica's
    # memory otherwise (then each replica admits the plan on its own).
    rate_limit_enabled: bool = True
    # Per replica: verified access tokens and API-key lookups kept (each cache), and the
    # rate-limit buckets kept in memory when there is no Redis.
    edge_cache_entries: int = Field(10_000, ge=100, le=10_000_000)
    rate_limit_local_keys: int = Field(100_000, ge=1_000, le=100_000_000)
    rate_plans: dict[str, tuple[float, int]] = Field(
        default_factory=lambda: {
            "anonymous": (20.0, 40),
            "standard": (50.0, 100),
            "partner": (200.0, 400),
            "internal": (2000.0, 4000),
            "auth": (1.0, 10),
        }
    )
    # Proxies (IPs or CIDRs) whose X-Forwarded-For names the real client.
    trusted_proxies: tuple[str, ...] = ()
    # The WAF in front of every route: signature rules up to this paranoia level (1-4)
    # block once their scores reach the threshold; bodies over the limit are refused.
    waf_enabled: bool = True
    waf_paranoia_level: int = Field(1, ge=1, le=4)
    waf_anomaly_threshold: int = Field(5, ge=1, le=100)
    max_body_bytes: int = Field(1 << 20, ge=1024, le=1 << 30)
    max_import_body_bytes: int = Field(64 << 20, ge=1024, le=1 << 32)

    # Orders: the processor polls the outbox this often; shipments go to these carriers.
    order_processor_interval_ms: int = Field(500, ge=10, le=60_000)
    # A claimed outbox batch whose processor died is handed out again after this long.
    order_outbox_lease_s: float = Field(60.0, ge=1.0, le=3600.0)
    carriers: tuple[str, ...] = ("dhl", "ups")

    http_host: str = "127.0.0.1"
    http_port: int = Field(8000, ge=1, le=65535)
    # Serve's gRPC ingress (internal InventoryService, OrderService); 0 = none. Binds on
    # http_host; calls need an access token (see README, gRPC).
    grpc_port: int = Field(9000, ge=0, le=65535)
    # Ray cluster: empty address means `feira up` starts a local one.
    ray_address: str | None = None
    # Ray's GCS defaults to 6379, which is Redis's port; we never use that default.
    ray_gcs_port: int = Field(6390, ge=1024, le=65535)
    ray_dashboard_port: int = Field(8265, ge=1024, le=65535)
    ray_num_cpus: int | None = Field(None, ge=1)
    # direct (default): Feira's own uvicorn processes serve HTTP (deployments/
    # http_ingress.py); on 2 cores 2.5x the cart adds and 3.5x the bare requests of Serve's
    # request path (benchmarks/RESULTS.md). Serve then runs only the gRPC ingress, its HTTP
    # proxy moved to serve_http_port. auto: the Serve deployment behind HAProxy when an
    # haproxy binary is available, else behind Serve's proxy; haproxy / proxy force one.
    # `serve deploy deployments/serve_config.yaml` always runs the Serve deployment.
    ingress: Literal["direct", "auto", "haproxy", "proxy"] = "direct"
    # One process per 2-4 cores: on 2 cores one holds more than two (bigger shard batches).
    http_ingress_processes: int = Field(1, ge=1, le=64)
    serve_http_port: int = Field(8010, ge=1, le=65535)

    bff_replicas: int = Field(1, ge=1, le=64)
    bff_max_ongoing_requests: int = Field(2000, ge=1)

    # Shard client: one actor call carries up to this many operations.
    coalesce_max_batch: int = Field(512, ge=1, le=10_000)
    # Batches in flight per shard; more queue up and ride the next call together.
    coalesce_max_inflight: int = Field(1, ge=1, le=64)
    shard_call_timeout_ms: int = Field(5_000, ge=10)

    cart_max_lines: int = Field(50, ge=1, le=1000)
    cart_max_quantity: int = Field(99, ge=1, le=100_000)
    cart_idle_ttl_s: int = Field(7 * 24 * 3600, ge=60)
    cart_sweep_interval_s: int = Field(60, ge=1)
    reservation_ttl_s: int = Field(900, ge=1)
    reservation_sweep_interval_ms: int = Field(1_000, ge=10)
    # Idempotency memory of each shard, in operations.
    op_log_size: int = Field(100_000, ge=100)

    # Replica caches: prices may lag by this much on cart views (never at checkout).
    price_cache_ttl_ms: int = Field(1_000, ge=0)
    price_cache_size: int = Field(100_000, ge=0)
    product_cache_ttl_ms: int = Field(30_000, ge=0)
    product_cache_size: int = Field(20_000, ge=0)
    # Stock shown on product pages may be this old; carts and checkout ask the shards.
    page_stock_cache_ttl_ms: int = Field(500, ge=0, le=60_000)

    demo_products: int = Field(2_000, ge=0)
    demo_seed: int = 7

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, path: Path) -> Path:
        # Ray workers do not share the caller's working directory.
        return path.expanduser().resolve()

    @field_validator("rate_plans")
    @classmethod
    def _plans(cls, plans: dict[str, tuple[float, int]]) -> dict[str, tuple[float, int]]:
        for name in ("anonymous", "auth"):
            if name not in plans:
                raise ValueError(f"rate_plans needs a {name!r} plan")
        for name, (rate, burst) in plans.items():
            if not name.replace("-", "").replace("_", "").isalnum():
                raise ValueError(f"plan name {name!r}: letters, digits, '-' and '_' only")
            if not 0 < rate <= 1_000_000 or not 1 <= burst <= 1_000_000:
                raise ValueError(f"plan {name!r}: rate in (0, 1e6], burst in [1, 1e6]")
        return plans

    @field_validator("ray_gcs_port")
    @classmethod
    def _not_redis_port(cls, port: int) -> int:
        if port == REDIS_DEFAULT_PORT:
            raise ValueError("6379 is Redis's port; pick another port for Ray's GCS")
        return port

    def to_wire(self) -> dict[str, Any]:
        # Secrets travel in clear to the cluster's own actors and replicas only.
        wire = self.model_dump(mode="json")
        for name in ("payment_webhook_secret", "jwt_keys_passphrase"):
            secret = getattr(self, name)
            if secret is not None:
                wire[name] = secret.get_secret_value()
        return wire

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Settings:
        return cls.model_validate(data)
