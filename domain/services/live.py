"""Live events for subscribers, filtered by the same visibility rules as every read."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from domain.errors import DomainError
from domain.events import DomainEvent, EventsDropped
from domain.policy import Viewer
from domain.services.base import Service


class LiveService(Service):
    async def events(self, viewer: Viewer, topics: Sequence[str]
                     ) -> AsyncIterator[DomainEvent | EventsDropped]:
        """The events on ``topics`` this viewer may see, as they happen; ``EventsDropped``
        markers pass through so clients learn they missed some."""
        bus = self.ctx.bus
        if bus is None:
            raise DomainError("live events are not enabled", code="UNAVAILABLE")
        stream = bus.subscribe(list(topics))
        try:
            async for event in stream:
                if isinstance(event, EventsDropped) or self.policy.sees_event(viewer, event):
                    yield event
        finally:
            close = getattr(stream, "aclose", None)
            if close is not None:
                await close()
