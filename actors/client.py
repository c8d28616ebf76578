"""The Ray seam: the only code that turns shard operations into actor calls.

``ensure_shards`` gets or creates the named, detached, restartable shard actors;
``ShardClient`` is a :class:`ShardRouter` whose shards are those actors.
``ensure_change_hub`` and ``RayChangeBus`` do the same for the embedded cache-invalidation
bus (:class:`actors.shells.ChangeHub`), and ``SearchIndexerClient`` for the one writer of
the search index (:class:`actors.shells.SearchIndexer`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

import ray
from ray.exceptions import ActorUnavailableError, RayActorError, RayError

from actors.change_log import Batch
from actors.coalescer import Send
from actors.domain.errors import DomainError, ErrorCode
from actors.invalidation import (
    DEFAULT_POLL_TIMEOUT_S,
    Backoff,
    CacheEvent,
    Change,
    poll_changes,
)
from actors.kinds import ShardKind, actor_name
from actors.protocol import Op, Reply
from actors.router import ShardRouter
from actors.shells import (
    CHANGE_HUB_NAME,
    ORDER_PROCESSOR_NAME,
    SEARCH_INDEXER_NAME,
    SHELLS,
    ChangeHub,
    OrderProcessorShell,
    SearchIndexer,
)
from feira.logs import batch_request_ids
from feira.settings import Settings
from storage.errors import StoreUnavailable


def shard_counts(settings: Settings) -> dict[ShardKind, int]:
    return {
        ShardKind.CART: settings.cart_shards,
        ShardKind.INVENTORY: settings.inventory_shards,
        ShardKind.PRICING: settings.pricing_shards,
    }


def _named(shell: Any, name: str, settings: Settings, **placement: Any) -> Any:
    """A named, detached, restartable actor class: get-or-create is safe when processes
    race, since a loser of the creation race gets the winner's actor (``get_if_exists``).
    ``max_concurrency`` bounds calls in flight: shard batches and long polls wait there."""
    return shell.options(
        name=name,
        namespace=settings.namespace,
        lifetime="detached",
        get_if_exists=True,
        max_restarts=-1,
        max_task_retries=0,
        num_cpus=0,
        max_concurrency=1000,
        **placement,
    )


# A node that advertises this custom resource (``ray start --resources='{"feira_shard":
# 1000}'``: how many shards it may hold) is a shard node. When any node of the cluster
# advertises it, shards are placed on shard nodes only (the head, which holds the GCS and
# the Serve controller, then holds none); when none does (one machine, `feira up`), shards
# go anywhere.
SHARD_RESOURCE = "feira_shard"


def shard_placement(cluster_resources: Mapping[str, float]) -> dict[str, Any]:
    """Actor options that place shards: spread over the nodes, one unit of
    :data:`SHARD_RESOURCE` each when the cluster has shard nodes.

    ``SPREAD`` puts the shards of a kind on different nodes, so losing one node takes
    only its share of each kind. A shard whose node dies is restarted by the GCS
    (``max_restarts=-1``; detached actors have no owner to lose) under the same options,
    so on another live node; it reloads its state from the stores on first use.
    """
    options: dict[str, Any] = {"scheduling_strategy": "SPREAD"}
    if cluster_resources.get(SHARD_RESOURCE, 0) > 0:
        options["resources"] = {SHARD_RESOURCE: 1}
    return options


def ensure_shards(settings: Settings) -> dict[ShardKind, list[Any]]:
    """Get or create every shard actor. Needs a connected Ray driver or worker.

    Placement options apply when an actor is created; an existing one keeps its own."""
    wire = settings.to_wire()
    placement = shard_placement(ray.cluster_resources())  # type: ignore[no-untyped-call]
    return {
        kind: [
            _named(SHELLS[kind.value], actor_name(kind, i), settings, **placement).remote(wire, i)
            for i in range(count)
        ]
        for kind, count in shard_counts(settings).items()
    }


def _sender(handle: Any) -> Send:
    # The batch's request ids (bound by the coalescer) go along, for the shard's logs. A
    # detached shard started by an older version takes no ``request_ids``: the call is
    # refused before it runs, so it is sent again without, and no ids go to it any more.
    accepts_ids = True

    async def send(ops: list[Op]) -> list[Reply]:
        nonlocal accepts_ids
        ids = batch_request_ids() if accepts_ids else ()
        replies: list[Reply]
        if not ids:
            replies = await handle.apply.remote(ops)
            return replies
        try:
            replies = await handle.apply.remote(ops, request_ids=ids)
        except TypeError as error:  # Ray's RayTaskError(TypeError) is a TypeError too
            if "request_ids" not in str(error):
                raise
            accepts_ids = False
            replies = await handle.apply.remote(ops)
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


# --- the search indexer --------------------------------------------------------------


def ensure_search_indexer(settings: Settings) -> Any:
    """Get or create the one search indexer of this namespace."""
    return _named(SearchIndexer, SEARCH_INDEXER_NAME, settings).remote(settings.to_wire())


def ensure_order_processor(settings: Settings) -> Any:
    """Get or create the one order processor of this namespace."""
    return _named(OrderProcessorShell, ORDER_PROCESSOR_NAME, settings).remote(settings.to_wire())


class SingletonClient:
    """Asks one of the namespace's singleton actors for its self-report."""

    def __init__(self, handle: Any, what: str) -> None:
        self._handle = handle
        self._what = what

    async def ready(self, timeout_s: float = 2.0) -> dict[str, Any]:
        try:
            report: dict[str, Any] = await asyncio.wait_for(self._handle.ready.remote(), timeout_s)
        except (TimeoutError, RayError) as error:
            raise DomainError(
                ErrorCode.SHARD_UNAVAILABLE, f"the {self._what} did not answer: {error}"
            ) from error
        return report


class SearchIndexerClient(SingletonClient):
    """Asks the search indexer how far behind it is, or to rebuild."""

    @classmethod
    def connect(cls, settings: Settings) -> SearchIndexerClient:
        return cls(ensure_search_indexer(settings), "search indexer")

    async def rebuild(self) -> int:
        count: int = await self._handle.rebuild.remote()
        return count


def connect_order_processor(settings: Settings) -> SingletonClient:
    return SingletonClient(ensure_order_processor(settings), "order processor")


# --- the embedded cache-invalidation bus ----------------------------------------------


def ensure_change_hub(settings: Settings) -> Any:
    """Get or create the change hub (one long poll per subscribed replica is always in
    flight on it). Needs a connected Ray driver or worker."""
    return _named(ChangeHub, CHANGE_HUB_NAME, settings).remote()


HUB_BACKOFF = Backoff(0.05, 2.0)


class RayChangeBus:
    """:class:`~actors.invalidation.ChangeBus` over the :class:`~actors.shells.ChangeHub`
    actor, for embedded mode (no Redis).

    ``publish`` is one actor call (retried a few times: a repeated invalidation is
    harmless). A subscription long-polls ``wait_since`` (``poll_timeout_s`` per call), so
    an event reaches it one actor call after it is published. When the hub is unreachable
    the subscription backs off and retries from where it was; a hub that restarted has a
    new epoch and an empty log, so the subscriber is told to Reset. A handle whose actor
    died for good (killed with ``no_restart=True``) is replaced by getting or creating the
    hub again.
    """

    def __init__(
        self,
        settings: Settings,
        handle: Any = None,
        *,
        poll_timeout_s: float = DEFAULT_POLL_TIMEOUT_S,
        call_timeout_s: float = 5.0,
        publish_attempts: int = 3,
        backoff: Backoff = HUB_BACKOFF,
    ) -> None:
        if publish_attempts < 1:
            raise ValueError("publish_attempts must be >= 1")
        self._settings = settings
        self._handle = handle
        self._poll_timeout_s = poll_timeout_s
        self._call_timeout_s = call_timeout_s
        self._publish_attempts = publish_attempts
        self._backoff = backoff
        self._closing = asyncio.Event()

    @classmethod
    def connect(cls, settings: Settings, **options: Any) -> RayChangeBus:
        """Get or create the hub now (a blocking call: use it where ``ensure_shards`` is)."""
        return cls(settings, ensure_change_hub(settings), **options)

    async def publish(self, event: CacheEvent) -> None:
        last: StoreUnavailable | None = None
        for attempt in range(1, self._publish_attempts + 1):
            if self._closing.is_set():
                raise StoreUnavailable("change hub bus is closed")
            try:
                await self._call("publish", self._call_timeout_s, event)
                return
            except StoreUnavailable as error:
                last = error
            if attempt < self._publish_attempts:
                await asyncio.sleep(self._backoff.delay(attempt))
        assert last is not None
        raise last

    def subscribe(self) -> AsyncIterator[Change]:
        return poll_changes(
            self._fetch,
            poll_timeout_s=self._poll_timeout_s,
            transient=(StoreUnavailable,),
            backoff=self._backoff,
            closing=self._closing,
            source="change hub",
        )

    async def close(self) -> None:
        self._closing.set()

    async def _fetch(
        self, epoch: str | None, after_seq: int, timeout_s: float
    ) -> Batch[CacheEvent]:
        batch: Batch[CacheEvent] = await self._call(
            "wait_since", timeout_s + self._call_timeout_s, epoch, after_seq, timeout_s
        )
        return batch

    async def _call(self, method: str, timeout_s: float, *args: Any) -> Any:
        """One hub call; every way it can fail is StoreUnavailable."""
        if self._handle is None:
            try:
                self._handle = await asyncio.to_thread(ensure_change_hub, self._settings)
            except (RayError, ValueError) as error:
                raise StoreUnavailable(f"change hub: cannot get or create: {error}") from error
        handle = self._handle
        try:
            return await asyncio.wait_for(getattr(handle, method).remote(*args), timeout_s)
        except ActorUnavailableError as error:
            # Restarting or unreachable for now: the same handle works once it is back.
            raise StoreUnavailable(f"change hub unavailable: {error}") from error
        except RayActorError as error:
            # Died. Restartable actors come back behind the same handle, but one killed for
            # good does not: get (or create) it again before the next call.
            if self._handle is handle:
                self._handle = None
            raise StoreUnavailable(f"change hub died: {error}") from error
        except TimeoutError as error:
            raise StoreUnavailable(
                f"change hub did not answer {method} in {timeout_s:.1f} s"
            ) from error
