"""Sessions a charger lost with a reboot: after a grace for its queued StopTransaction,
whatever is still open on a connector it reported Available since is closed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

log = logging.getLogger("chargegraph.charging")

#: How long after a rebooted charger reports a connector Available the session it left
#: open there waits for its StopTransaction (queued chargers send it within seconds of
#: their boot) before it is closed as lost.
REBOOT_STOP_GRACE_S = 120.0

#: Closes what is still open on (cp_id, connector) from before the boot at ``booted``.
CloseLost = Callable[[str, int, datetime], Awaitable[None]]


class RebootChecks:
    def __init__(self, close_lost: CloseLost, grace_s: float = REBOOT_STOP_GRACE_S) -> None:
        self.close_lost = close_lost
        #: Tests shorten it.
        self.grace_s = grace_s
        #: (cp_id, connector) → (the boot it is for, the check's task).
        self.pending: dict[tuple[str, int], tuple[datetime, asyncio.Task[None]]] = {}

    def schedule(self, cp_id: str, connector_id: int, booted: datetime) -> None:
        """A charger that rebooted (at ``booted``, our clock) and reports a connector
        Available has no transaction there any more. Its StopTransaction usually follows
        from its queue, with the real meterStop and reason (PowerLoss): it gets
        ``grace_s`` to come before what is still open is closed, in the background. A
        check pending for an earlier boot gives way: the new boot's stop gets its whole
        grace."""
        key = (cp_id, connector_id)
        pending = self.pending.get(key)
        if pending is not None:
            if pending[0] == booted:
                return
            pending[1].cancel()
        task = asyncio.create_task(self._after_grace(cp_id, connector_id, booted),
                                   name=f"reboot-check-{cp_id}-{connector_id}")
        self.pending[key] = (booted, task)

        def done(_: object) -> None:
            if self.pending.get(key, (None, None))[1] is task:
                del self.pending[key]

        task.add_done_callback(done)

    async def done(self) -> None:
        """Waits for the pending checks (tests)."""
        while self.pending:
            await asyncio.wait({task for _, task in self.pending.values()})

    def stop(self) -> None:
        """Drops the pending checks (at shutdown: the store is closing). A charger that
        reports the connector Available again, to this instance or another, starts its
        check again (the boot time is stored)."""
        for _, task in self.pending.values():
            task.cancel()

    async def _after_grace(self, cp_id: str, connector_id: int, booted: datetime) -> None:
        await asyncio.sleep(self.grace_s)
        try:
            await self.close_lost(cp_id, connector_id, booted)
        except Exception:  # the session stays open: its stop or an operator ends it
            log.exception("%s: closing the session lost at its reboot failed", cp_id)
