"""Live events for subscribers, filtered by the same visibility rules as every read."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from domain.errors import DomainError
from domain.events import DomainEvent, EventsDropped
from domain.policy import Viewer
from domain.services.base import Service


class LiveService(Service):
    def events(self, viewer: Viewer, topics: Sequence[str]
               ) -> AsyncIterator[DomainEvent | EventsDropped]:
        """The events on ``topics`` this viewer may see, from this call on (the
        subscription is registered before the first read); ``EventsDropped`` markers pass
        through so clients learn they missed some."""
        bus = self.ctx.bus
        if bus is None:
            raise DomainError("live events are not enabled", code="UNAVAILABLE")
        return self._visible(viewer, bus.subscribe(list(topics)))

    async def _visible(self, viewer: Viewer, stream: Any
                       ) -> AsyncIterator[DomainEvent | EventsDropped]:
        try:
            async for event in stream:
                if isinstance(event, EventsDropped) or self.policy.sees_event(viewer, event):
                    yield event
        finally:
            await stream.aclose()
