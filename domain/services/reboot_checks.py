"""Sessions a charger lost with a reboot: after a grace for its queued StopTransaction,
whatever is still open on a connector it reported Available since is closed.

A pending check lives in this process only, but everything it stands for is stored: the
boot (``Station.booted_at``), the connector's Available report after it (its status,
written by its charger after the boot: ``reported_available_since``) and the sessions
open there from before it. So a process started since (a restart, a crash, another
instance the charger moved to) arms the check again when the charger connects to it
(``ChargingService.connect``), for what is left of the grace: OCPP 1.6 chargers do not
report their status again on a new connection, and the session stayed open for ever."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

from domain.entities import Connector, ConnectorStatus

log = logging.getLogger("chargegraph.charging")

#: How long after a rebooted charger reports a connector Available the session it left
#: open there waits for its StopTransaction (queued chargers send it within seconds of
#: their boot) before it is closed as lost.
REBOOT_STOP_GRACE_S = 120.0

#: Closes what is still open on (cp_id, connector) from before the boot at ``booted``.
CloseLost = Callable[[str, int, datetime], Awaitable[None]]


def reported_available_since(plug: Connector, booted: datetime, charger_actor: str) -> bool:
    """Whether ``plug``'s charger reported it Available after its boot at ``booted`` (our
    clock), as the stored record shows: Available, last written by the charger (only its
    status reports write a connector it has: an operator's edit is not a report), on
    our clock (``updated_at``, as ``booted``) not before the boot. The report's own
    timestamp (``status_at``) is the charger's clock, which may be anywhere."""
    return plug.status is ConnectorStatus.AVAILABLE and plug.updated_by == charger_actor \
        and plug.updated_at >= booted


#: A connector reported so holds no transaction (OCPP 1.6: Available, or Preparing for
#: the next one): a session a restore brought back open there has ended
#: (``ChargingService.restore_checks``).
FREE_AFTER_RESTORE = frozenset({ConnectorStatus.AVAILABLE, ConnectorStatus.PREPARING})


def reported_free_since(plug: Connector, restored: datetime, charger_actor: str) -> bool:
    """Whether ``plug``'s charger reported it free (``FREE_AFTER_RESTORE``) since the
    restore at ``restored`` (our clock), as the stored record shows (as
    ``reported_available_since``). A report repeating the state it had in the backup
    moves no stamp: that charger is asked for its status on connecting instead."""
    return plug.status in FREE_AFTER_RESTORE and plug.updated_by == charger_actor \
        and plug.updated_at >= restored


class RebootChecks:
    def __init__(self, close_lost: CloseLost, grace_s: float = REBOOT_STOP_GRACE_S, *,
                 lost_at: str = "its reboot") -> None:
        self.close_lost = close_lost
        #: What lost the sessions it closes, for its log lines.
        self.lost_at = lost_at
        #: Tests shorten it.
        self.grace_s = grace_s
        #: How a check waits out its grace: tests end it when they choose.
        self.sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
        #: (cp_id, connector) → (the boot it is for, the check's task).
        self.pending: dict[tuple[str, int], tuple[datetime, asyncio.Task[None]]] = {}
        #: (cp_id, connector) → the latest boot reported for while an earlier boot's
        #: check was pending, and when (loop time) its grace is over: armed once that
        #: check is done.
        self.later: dict[tuple[str, int], tuple[datetime, float]] = {}

    def schedule(self, cp_id: str, connector_id: int, booted: datetime, *,
                 reported_at: datetime | None = None, now: datetime | None = None) -> None:
        """A charger that rebooted (at ``booted``, our clock) and reports a connector
        Available has no transaction there any more. Its StopTransaction usually follows
        from its queue, with the real meterStop and reason (PowerLoss): it gets
        ``grace_s`` to come before what is still open is closed, in the background. A
        check pending for an earlier boot stays when it is due (QA s33: each boot put it
        back, and a charger booting again within the grace kept its session open for
        good); the new boot's check is armed once it is done, its grace counted from
        now (``later``). ``reported_at`` (and ``now``, both our clock): the report came
        then, to an earlier process; the grace runs from it, and once it is over the
        check runs at once."""
        key = (cp_id, connector_id)
        delay = self.grace_s
        if reported_at is not None and now is not None:
            delay = max(0.0, delay - (now - reported_at).total_seconds())
        pending = self.pending.get(key)
        if pending is None:
            self._arm(key, booted, delay)
            return
        later = self.later.get(key)
        if booted > pending[0] and (later is None or later[0] < booted):
            self.later[key] = (booted, asyncio.get_running_loop().time() + delay)

    def _arm(self, key: tuple[str, int], booted: datetime, delay: float) -> None:
        task = asyncio.create_task(self._after_grace(*key, booted, delay),
                                   name=f"reboot-check-{key[0]}-{key[1]}")
        self.pending[key] = (booted, task)

        def done(_: object) -> None:
            if self.pending.get(key, (None, None))[1] is not task:
                return
            del self.pending[key]
            later = self.later.pop(key, None)
            if later is not None and not task.cancelled():
                self._arm(key, later[0],
                          max(0.0, later[1] - asyncio.get_running_loop().time()))

        task.add_done_callback(done)

    async def done(self) -> None:
        """Waits for the pending checks (tests)."""
        while self.pending:
            await asyncio.wait({task for _, task in self.pending.values()})

    def stop(self) -> None:
        """Drops the pending checks (at shutdown: the store is closing). What they stand
        for is stored: the charger connecting again, to this instance or another, arms
        them again (``ChargingService.connect``), as does its next Available report."""
        self.later.clear()
        for _, task in self.pending.values():
            task.cancel()

    async def _after_grace(self, cp_id: str, connector_id: int, booted: datetime,
                           delay: float) -> None:
        await self.sleep(delay)
        try:
            await self.close_lost(cp_id, connector_id, booted)
        except Exception:  # the session stays open: its stop or an operator ends it
            # (a store read or write failing: the next report or connection arms it again)
            log.exception("%s: closing the session lost at %s failed", cp_id, self.lost_at)
