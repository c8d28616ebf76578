"""MongoDB adapter for the catalog store, behind storage.interfaces (motor, asyncio).

``MongoCatalogStore(url, database)`` opens nothing until first used; it owns its client
and closes it in ``close``.
"""

from __future__ import annotations

from storage.mongo.catalog import MongoCatalogStore
from storage.mongo.errors import map_mongo_errors

__all__ = ["MongoCatalogStore", "map_mongo_errors"]
