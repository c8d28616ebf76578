"""The Ray seam: the only code that turns shard operations into actor calls.

``ensure_shards`` gets or creates the named, detached, restartable shard actors;
``ShardClient`` is a :class:`ShardRouter` whose shards are those actors.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ray.exceptions import ActorUnavailableError, RayActorError

from actors.coalescer import Send
from actors.domain.errors import DomainError, ErrorCode
from actors.kinds import ShardKind, actor_name
from actors.protocol import Op, Reply
from actors.router import ShardRouter
from actors.shells import SHELLS
from feira.settings import Settings


def shard_counts(settings: Settings) -> dict[ShardKind, int]:
    return {
        ShardKind.CART: settings.cart_shards,
        ShardKind.INVENTORY: settings.inventory_shards,
        ShardKind.PRICING: settings.pricing_shards,
    }


def ensure_shards(settings: Settings) -> dict[ShardKind, list[Any]]:
    """Get or create every shard actor. Needs a connected Ray driver or worker."""
    wire = settings.to_wire()
    handles: dict[ShardKind, list[Any]] = {}
    for kind, count in shard_counts(settings).items():
        shell = SHELLS[kind.value]
        handles[kind] = [
            shell.options(
                name=actor_name(kind, i),
                namespace=settings.namespace,
                lifetime="detached",
                get_if_exists=True,
                max_restarts=-1,
                max_task_retries=0,
                num_cpus=0,
                max_concurrency=1000,
            ).remote(wire, i)
            for i in range(count)
        ]
    return handles


def _sender(handle: Any) -> Send:
    async def send(ops: list[Op]) -> list[Reply]:
        replies: list[Reply] = await handle.apply.remote(ops)
        return replies

    return send


class ShardClient(ShardRouter):
    def __init__(self, settings: Settings, handles: dict[ShardKind, list[Any]]) -> None:
        super().__init__(
            {kind: [_sender(h) for h in hs] for kind, hs in handles.items()},
            max_batch=settings.coalesce_max_batch,
            max_inflight=settings.coalesce_max_inflight,
            timeout_s=settings.shard_call_timeout_ms / 1000,
            restarting=(ActorUnavailableError, RayActorError),
        )
        self._handles = handles

    @classmethod
    def connect(cls, settings: Settings) -> ShardClient:
        return cls(settings, ensure_shards(settings))

    async def ready(self, timeout_s: float = 2.0) -> dict[str, list[dict[str, Any]]]:
        """Every shard's self-report; DomainError(SHARD_UNAVAILABLE) if one does not answer."""
        refs = [(kind, h.ready.remote()) for kind, hs in self._handles.items() for h in hs]
        try:
            reports = await asyncio.wait_for(asyncio.gather(*(r for _, r in refs)), timeout_s)
        except (TimeoutError, RayActorError, ActorUnavailableError) as error:
            raise DomainError(ErrorCode.SHARD_UNAVAILABLE, f"shards not ready: {error}") from error
        out: dict[str, list[dict[str, Any]]] = {}
        for (kind, _), report in zip(refs, reports, strict=True):
            out.setdefault(kind.value, []).append(report)
        return out
