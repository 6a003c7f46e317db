"""One sign-in limit across the instances behind a load balancer.

Every instance counts sign-ins (and chargers' password checks, ``ChargerSignIns``) in its
own throttles (``SignInThrottle``); this tells the others what it counted, over the event
bus, and applies what they counted. Without it a guesser spreading tries over N instances
would get N times the tries per lockout.

What is counted during one step of the event loop travels as one event (a failed sign-in
counts in three throttles). Delivery is best effort, as every event's: an instance that
misses some counts less, never more, and a count arrives within the bus's latency, so
tries sent to several instances at the same moment may each pass before the others hear.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence

from domain.events import DomainEvent, EventsDropped, SignInsCounted
from domain.ids import new_id
from domain.ports import EventBus
from domain.services.throttle import DIGEST_CHARS, Shared

log = logging.getLogger("chargegraph.services")

#: Counts one event carries at most; a step counting more (a flood of sign-ins answered
#: in one step) sends several.
MAX_PER_EVENT = 500


class ThrottleSharing:
    def __init__(self, bus: EventBus, throttles: Sequence[Shared]) -> None:
        """The throttles must not have counted anything yet, each keyed already with the
        deployment's key (``secret``, set by ``chargegraph.app.build_services`` on every
        path, sharing or not: the one place, as a lone instance's digests are stored
        too), which every instance digests keys with (``throttle.digest``)."""
        self.bus = bus
        #: This instance, so it skips its own counts when the bus brings them back.
        self.origin = new_id()
        self.throttles = {throttle.name: throttle for throttle in throttles}
        self._outgoing: list[str] = []
        self._sending: set[asyncio.Task[None]] = set()
        for throttle in throttles:
            throttle.share = self._counted

    def _counted(self, throttle: str, operation: str, key_digest: str) -> None:
        if not self._outgoing:
            asyncio.get_running_loop().call_soon(self._send)
        self._outgoing.append(f"{throttle} {operation} {key_digest}")

    def _send(self) -> None:
        counted, self._outgoing = self._outgoing, []
        for start in range(0, len(counted), MAX_PER_EVENT):
            event = SignInsCounted(station_id=None, cp_id="", origin=self.origin,
                                   counted=counted[start:start + MAX_PER_EVENT])
            task = asyncio.create_task(self._publish(event), name="chargegraph-sign-ins")
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _publish(self, event: SignInsCounted) -> None:
        try:
            await self.bus.publish(event)
        except Exception:  # the local limit still holds; the others count less
            log.exception("sharing sign-in counts failed")

    async def follow(self, events: AsyncIterator[DomainEvent | EventsDropped]) -> None:
        """Applies what the other instances count (``events``: a subscription to
        ``SignInsCounted.topic``) until the stream ends."""
        async for event in events:
            if isinstance(event, SignInsCounted) and event.origin != self.origin:
                self.apply(event.counted)

    def apply(self, counted: Sequence[str]) -> None:
        """What another instance counted. At most ``MAX_PER_EVENT`` entries of an event,
        each a digest as ``digest`` makes them: what no instance sends is not taken."""
        for entry in counted[:MAX_PER_EVENT]:
            parts = entry.split(" ") if isinstance(entry, str) else []
            throttle = self.throttles.get(parts[0]) if len(parts) == 3 else None
            if throttle is not None and len(parts[2]) == DIGEST_CHARS:
                throttle.apply(parts[1], parts[2])  # an unknown throttle: a newer one's

    async def settled(self) -> None:
        """Waits until what was counted so far is published (tests, shutdown)."""
        await asyncio.sleep(0)  # the step's ``_send`` runs first
        while self._sending:
            await asyncio.wait(set(self._sending))
