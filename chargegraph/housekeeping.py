"""Chores the service runs on a timer while it is up (stored states that time changes)."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from domain.services.charging import ChargingService
    from pubsub.factory import ManagedEventBus
    from pubsub.memory import EventStream

log = logging.getLogger("chargegraph.housekeeping")

#: How often reservations past their expiry are stored EXPIRED (reads show EXPIRED at once
#: anyway; this is for filters on the stored state and for the live event).
RESERVATION_SWEEP_S = 30.0
#: How often every instance sends the cancels owed to the chargers connected to it
#: (``CommandService.sweep_owed_cancels``): the backstop of the sends at a charger's
#: connection and boot, for a cancel owed just after the charger came back, or by a
#: withdrawal that could not reach the charger (review s25).
OWED_CANCEL_SWEEP_S = 60.0
#: How often cards whose expiry passed are withdrawn from the chargers' local lists
#: (``Withdrawal.sweep_expired``): a charger itself refuses a list entry past the
#: expiryDate it was sent with, if it was sent one.
CARD_EXPIRY_SWEEP_S = 300.0
#: How often payments an instance of an older version opened without their session's
#: charger, connector and vehicle get them (``PaymentService.fill_charger_fields``):
#: until then revenue misses them from a vehicle's figures and groups them under no
#: charger. Each round reads only the payments opened since the one before.
PAYMENT_CHARGER_FIELDS_S = 300.0
#: How often refunds claimed and left unsettled by a crash (claimed longer ago than
#: ``payments.STALE_REFUND_CLAIM``) are asked of the provider again under their own key
#: and settled (``PaymentService.settle_stale_refunds``).
REFUND_CLAIM_SWEEP_S = 300.0

#: How often clients' idempotency keys past their expiry (24 hours) are deleted
#: (``IdempotencyService.sweep``).
IDEMPOTENCY_SWEEP_S = 600.0
#: How often where chargers passed their password check from is deleted once 30 days old
#: (``ChargingService.sweep_known_addresses``; an instance starting reads only the last
#: 30 days' anyway).
KNOWN_ADDRESS_SWEEP_S = 3600.0
#: How often card numbers freed 30 days ago are deleted (``FleetService.sweep_freed_tags``;
#: an issue reads only the last 30 days' anyway).
FREED_TAG_SWEEP_S = 3600.0
#: How often meter samples, status reports and connection events past their retention
#: are deleted, when the operator set one (``RetentionService.sweep``): an hour's growth
#: a round.
RETENTION_SWEEP_S = 3600.0


def every(seconds: float, chore: Callable[[], Awaitable[object]], name: str
          ) -> contextlib.AbstractAsyncContextManager[None]:
    """Runs ``chore`` at once and then every ``seconds`` until the block exits. A failed
    round (the database out of reach) is logged and retried in the next one."""
    async def loop() -> None:
        while True:
            try:
                await chore()
            except Exception:
                log.exception("%s failed; retrying in %gs", name, seconds)
            await asyncio.sleep(seconds)

    return following(loop(), name)


@contextlib.asynccontextmanager
async def following(work: Awaitable[None], name: str) -> AsyncIterator[None]:
    """Runs ``work`` (a loop, or a bus subscription's consumer) until the block exits; its
    failure is logged: the service goes on without what it ran."""
    async def guarded() -> None:
        try:
            await work
        except Exception:
            log.exception("%s stopped", name)

    task = asyncio.create_task(guarded(), name=f"chargegraph-{name}")
    try:
        yield
    finally:
        task.cancel()
        await asyncio.wait([task])
        if inspect.iscoroutine(work):
            # Left before its task first ran (a start failing at once): closed, not
            # left to the collector's "never awaited" warning (review s31).
            work.close()


@contextlib.asynccontextmanager
async def subscribed(bus: ManagedEventBus, topics: Iterable[str],
                     consume: Callable[[EventStream], Awaitable[None]], name: str
                     ) -> AsyncIterator[None]:
    """``consume`` (``following``) reading the bus's events on ``topics`` until the block
    exits. Subscribed now, not when the task first runs, so nothing published from here
    on is missed; the subscription ends with the block, whether or not its task ever
    ran. A Redis connection lost and back is an ``EventsDropped`` in the stream, which
    goes on: nothing to start again."""
    stream = bus.subscribe(topics)
    async with contextlib.aclosing(stream), following(consume(stream), name):
        yield


def following_changes(charging: ChargingService, bus: ManagedEventBus
                      ) -> contextlib.AbstractAsyncContextManager[None]:
    """``ChargingService.follow`` on the instance's one subscription to what other
    instances announce they changed (``subscribed``). Every instance has it, serving
    chargers or the API alone: its chargers' cache drops what changed elsewhere, and
    ``on_followed``'s listeners hear it (``SiteLoad.followed``)."""
    return subscribed(bus, charging.CACHED_TOPICS, charging.follow, "followed-events")
