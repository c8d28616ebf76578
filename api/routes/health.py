"""Liveness and readiness."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from actors.domain.errors import DomainError
from api.models import PingOut, StatusOut
from api.problems import domain_problem
from api.responses import json

router = APIRouter(tags=["ops"])

ReadyCheck = Callable[[], Awaitable[dict[str, Any]]]


@router.get("/healthz", response_model=StatusOut)
async def healthz() -> Response:
    return json({"status": "ok"})


@router.get("/ping", response_model=PingOut)
async def ping() -> Response:
    """Touches no actor and no store: what the edge alone costs (the benchmarks'
    ceiling). The fast path answers it before FastAPI; this documents it."""
    return json({"ok": True})


@router.get("/readyz", response_model=StatusOut)
async def readyz(request: Request) -> Response:
    check: ReadyCheck = request.app.state.ready_check
    try:
        report = await check()
    except DomainError as error:
        return domain_problem(error, "/readyz")
    return json({"status": "ready", **report})
