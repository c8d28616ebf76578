"""A background job on an actor's event loop, started lazily on the first call.

An async actor's loop is not running in ``__init__``, so shells start their sweepers when
the first request arrives; after a restart, the first request starts them again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("feira.periodic")


class Periodic:
    __slots__ = ("_interval_s", "_job", "_name", "_task")

    def __init__(self, name: str, interval_s: float, job: Callable[[], Awaitable[object]]):
        self._name = name
        self._interval_s = interval_s
        self._job = job
        self._task: asyncio.Task[None] | None = None

    def ensure_started(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=self._name)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self._job()
            except Exception:
                # A sweep that fails is retried on the next tick; stopping the loop would
                # silently end expiry for the life of the actor.
                log.exception("periodic job %s failed; retrying next tick", self._name)
