"""The stores that the settings ask for."""

from __future__ import annotations

from pathlib import Path

from feira.settings import Settings
from storage.factory import Stores, open_search_index, open_stores
from storage.interfaces import SearchIndex


def open_configured_stores(settings: Settings) -> Stores:
    return open_stores(
        str(settings.data_dir),
        postgres_url=settings.postgres_url,
        redis_url=settings.redis_url,
        redis_prefix=settings.redis_key_prefix,
        mongo_url=settings.mongo_url,
        mongo_database=settings.mongo_database,
    )


def open_configured_search(settings: Settings) -> SearchIndex:
    return open_search_index(
        str(settings.data_dir),
        elasticsearch_url=settings.elasticsearch_url,
        index=settings.elasticsearch_index,
    )


def search_position_path(settings: Settings) -> Path:
    """Where the indexer keeps how far into the catalog's change feed the index is."""
    return Path(settings.data_dir) / "search-position" / settings.elasticsearch_index
