"""orjson responses: the serializer runs once per request on the hot path."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi.responses import Response


def json(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(content), status, headers=headers, media_type="application/json")
