"""The stores that the settings ask for."""

from __future__ import annotations

from feira.settings import Settings
from storage.factory import Stores, open_stores


def open_configured_stores(settings: Settings) -> Stores:
    return open_stores(
        str(settings.data_dir),
        postgres_url=settings.postgres_url,
        redis_url=settings.redis_url,
        redis_prefix=settings.redis_key_prefix,
    )
