"""At most N searches at once; a bounded queue of waiting ones; the rest are refused.

A waiting request that is cancelled (client gone, deadline) leaves the queue at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from spar.errors import InvalidArgument, ResourceExhausted


class Admission:
    """Bounds searches that run at once and that wait; more get RESOURCE_EXHAUSTED."""

    def __init__(
        self, slots: int, queue: int, on_change: Callable[[int, int], None] | None = None
    ) -> None:
        if slots < 1 or queue < 0:
            raise InvalidArgument("max_concurrent_searches must be >= 1 and max_queue >= 0")
        self.slots = slots
        self.queue = queue
        self._semaphore = asyncio.Semaphore(slots)
        self.running = 0
        self.waiting = 0
        self._on_change = on_change

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change(self.running, self.waiting)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self.running >= self.slots and self.waiting >= self.queue:
            raise ResourceExhausted(
                f"the refiner is busy: {self.running} searches running and {self.waiting} "
                f"waiting (limits: SPAR_REFINER__MAX_CONCURRENT_SEARCHES={self.slots}, "
                f"SPAR_REFINER__MAX_QUEUE={self.queue}); retry later"
            )
        self.waiting += 1
        self._changed()
        try:
            await self._semaphore.acquire()
        finally:
            self.waiting -= 1
            self._changed()
        self.running += 1
        self._changed()
        try:
            yield
        finally:
            self.running -= 1
            self._semaphore.release()
            self._changed()
