"""The peer's configuration, from ``FEIRA_PEER_*`` environment variables."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


@dataclass(frozen=True)  # no slots: from_env reads the defaults off the class
class PeerSettings:
    postgres_url: str
    redis_url: str = "redis://127.0.0.1:6379/0"
    catalog_path: str = "var/catalog.db"  # Feira's SQLite catalog, read only
    schema: str = "peer"  # the peer's own tables live here, apart from Feira's
    redis_prefix: str = "peer:"
    currency: str = "EUR"
    # Per worker process. With --workers 2 on 2 cores, 8 connections each keep every
    # core busy while a transaction waits on a row lock, without a queue inside PostgreSQL.
    pg_pool_size: int = 8
    redis_pool_size: int = 64
    price_cache_ttl_s: float = 1.0  # like Feira's FEIRA_PRICE_CACHE_TTL_MS
    product_cache_ttl_s: float = 30.0  # like FEIRA_PRODUCT_CACHE_TTL_MS
    page_stock_ttl_s: float = 0.5  # like FEIRA_PAGE_STOCK_CACHE_TTL_MS (product pages only)
    cart_ttl_s: int = 7 * 24 * 3600
    cart_max_lines: int = 50
    cart_max_quantity: int = 99
    reservation_ttl_s: float = 900.0
    idempotency_ttl_s: int = 24 * 3600

    def __post_init__(self) -> None:
        if not _IDENTIFIER.fullmatch(self.schema):
            raise ValueError(f"schema must be a lower-case SQL identifier, got {self.schema!r}")
        if not re.fullmatch(r"[A-Z]{3}", self.currency):
            raise ValueError(f"currency must be an ISO 4217 code, got {self.currency!r}")
        if self.pg_pool_size < 1 or self.redis_pool_size < 1:
            raise ValueError("pool sizes must be >= 1")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> PeerSettings:
        e = os.environ if env is None else env
        url = e.get("FEIRA_PEER_POSTGRES_URL", "").strip()
        if not url:
            raise ValueError("set FEIRA_PEER_POSTGRES_URL (postgresql://user@host:5432/db)")
        return cls(
            postgres_url=url,
            redis_url=e.get("FEIRA_PEER_REDIS_URL", cls.redis_url),
            catalog_path=e.get("FEIRA_PEER_CATALOG", cls.catalog_path),
            schema=e.get("FEIRA_PEER_SCHEMA", cls.schema),
            redis_prefix=e.get("FEIRA_PEER_REDIS_PREFIX", cls.redis_prefix),
            currency=e.get("FEIRA_PEER_CURRENCY", cls.currency),
            pg_pool_size=int(e.get("FEIRA_PEER_PG_POOL", cls.pg_pool_size)),
            redis_pool_size=int(e.get("FEIRA_PEER_REDIS_POOL", cls.redis_pool_size)),
        )
