"""The security edge from the settings: token keys, accounts, rate limits and the WAF."""

from __future__ import annotations

from actors.domain.rate_limit import InProcessLimiter, RatePlan
from actors.identity.accounts import IdentityService, IdentitySettings
from actors.identity.passwords import PasswordParams
from api.app import Edge
from api.rate_limiting import CachedKeyLookup, Limiter, RateLimitSettings
from api.waf import WafSettings
from feira.settings import Settings
from feira.signing_secrets import token_service
from storage.identity import IdentityStore
from storage.redis.client import RedisClient
from storage.redis.rate_limit import RedisRateLimiter

IMPORT_PATH = "/v1/merchant/products/import"
# One rate-limit check per request, each holding a connection for one round trip: the
# pool must cover the replica's concurrent requests, or checks fail (503) under load.
RATE_LIMIT_CONNECTIONS = 256


def identity_service(s: Settings, store: IdentityStore) -> IdentityService:
    return IdentityService(
        store,
        token_service(s),
        settings=IdentitySettings(
            access_ttl_s=s.access_token_ttl_s,
            refresh_ttl_s=s.refresh_token_ttl_s,
            password_params=PasswordParams(
                time_cost=s.password_time_cost, memory_cost_kib=s.password_memory_kib
            ),
        ),
    )


def rate_limits(s: Settings) -> RateLimitSettings:
    plans = {name: RatePlan(rate, burst) for name, (rate, burst) in s.rate_plans.items()}
    return RateLimitSettings(
        enabled=s.rate_limit_enabled,
        plans=plans,
        trusted_proxies=frozenset(s.trusted_proxies),
    )


def limiter(s: Settings) -> Limiter:
    """Redis when configured (one limit across replicas), else this replica's memory."""
    if s.redis_url:
        client = RedisClient(
            s.redis_url, prefix=s.redis_key_prefix, max_connections=RATE_LIMIT_CONNECTIONS
        )
        return RedisRateLimiter(client)
    return InProcessLimiter(max_keys=s.rate_limit_local_keys)


def waf_settings(s: Settings) -> WafSettings:
    return WafSettings(
        enabled=s.waf_enabled,
        paranoia_level=s.waf_paranoia_level,
        anomaly_threshold=s.waf_anomaly_threshold,
        max_body_bytes=s.max_body_bytes,
        body_limits_by_path_prefix={IMPORT_PATH: s.max_import_body_bytes},
    )


def build_edge(s: Settings, store: IdentityStore) -> Edge:
    identity = identity_service(s, store)
    return Edge(
        tokens=identity.tokens,
        identity=identity,
        waf=waf_settings(s),
        limiter=limiter(s),
        rate_limits=rate_limits(s),
        key_lookup=CachedKeyLookup(identity.authenticate_api_key, max_entries=s.edge_cache_entries),
        token_cache_size=s.edge_cache_entries,
    )
