"""Follow-ups a use case sets off without waiting for them (a deactivation's reservations
cancelled at their chargers, an accepted station's charger asked to boot): the request
that caused them answers at once, and their failure is logged, never raised into it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable

log = logging.getLogger("chargegraph.services")


class Background:
    """The follow-ups under way, so tests and shutdown can wait for them (``settled``)."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def run(self, work: Awaitable[None], name: str, failure: str) -> asyncio.Task[None]:
        """Runs ``work`` as a task of its own; ``failure`` is logged (with the traceback)
        if it raises: what started it stands regardless. The task, for a caller that
        waits for it a while (``asyncio.wait``, which never cancels it)."""
        async def guarded() -> None:
            try:
                await work
            except Exception:
                log.exception(failure)

        task = asyncio.create_task(guarded(), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def settled(self) -> None:
        """Waits until no follow-up runs (new ones started meanwhile included)."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    async def under_way(self, timeout: float) -> None:
        """Waits, at most ``timeout`` seconds, for the follow-ups running now, not for
        those started meanwhile: under steady traffic ``settled`` may never return
        (review s29: an erasure waiting for answers being kept waited for ever while
        others' keyed mutations went on)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)
