"""Live session updates, throttled: a charger may send meter values several times a
second, and subscribers want the newest state at most once per interval, never a stale
one."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from domain.events import DomainEvent

#: Sub-second meter values would flood subscribers: at most one UPDATED event per session
#: per this many seconds; what arrives in between goes out, newest only, when it ends.
SESSION_UPDATE_INTERVAL_S = 1.0


class LatestUpdates:
    """Throttles a session's UPDATED events to one per ``interval_s`` without ever losing
    the newest: an update within the window is held (replacing one held before) and
    published when the window ends. Dropping it instead left subscribers with a stale
    session whenever a charger's last frames came less than a window apart.

    Keys are session ids; ``group`` (the charger) lets a disconnect flush its sessions.
    ``clock`` is monotonic seconds (tests replace it to hold frames in one window)."""

    def __init__(self, publish: Callable[[DomainEvent], Awaitable[None]], *,
                 interval_s: float = SESSION_UPDATE_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.publish = publish
        self.interval_s = interval_s
        self.clock = clock
        self._last: dict[str, float] = {}  # key → when its last event went out
        self._held: dict[str, tuple[str, Callable[[], DomainEvent]]] = {}  # key → (group, event)
        # A key's trailing publish is either waiting for its window to end (cancelled
        # freely) or publishing (never cancelled mid-publish: awaited instead).
        self._waiting: dict[str, asyncio.Task[None]] = {}
        self._sending: dict[str, asyncio.Task[None]] = {}

    async def offer(self, key: str, group: str, event: Callable[[], DomainEvent]) -> None:
        """Publish ``event()`` now if the key's window is over, else when it is. The event
        is built only when it goes out (most offers are replaced before)."""
        if key in self._waiting:
            self._held[key] = (group, event)
            return
        now = self.clock()
        last = self._last.get(key)
        if last is None or now - last >= self.interval_s:
            self._last[key] = now
            await self.publish(event())
            return
        self._held[key] = (group, event)
        # A clock stepping back must not hold an update for longer than one window.
        delay = min(max(last + self.interval_s - now, 0.0), self.interval_s)
        self._waiting[key] = asyncio.create_task(self._trail(key, delay))

    async def _trail(self, key: str, delay: float) -> None:
        await asyncio.sleep(delay)
        task = self._waiting.pop(key)
        held = self._held.pop(key, None)
        if held is None:
            return
        self._sending[key] = task
        try:
            self._last[key] = self.clock()
            await self.publish(held[1]())
        finally:
            if self._sending.get(key) is task:
                del self._sending[key]

    async def flush(self, group: str) -> None:
        """Publish the group's held updates now (its charger went away: no later frame
        will, and nothing must be left waiting when the server stops)."""
        for key in [k for k, (g, _) in self._held.items() if g == group]:
            await self._stop_waiting(key)
            held = self._held.pop(key, None)  # the session may have ended meanwhile
            if held is not None:
                self._last[key] = self.clock()
                await self.publish(held[1]())

    async def end(self, key: str) -> None:
        """The session ended: drop what is held, and let a publish already under way
        finish first, so the caller's ENDED is the session's last event."""
        self._held.pop(key, None)
        self._last.pop(key, None)
        await self._stop_waiting(key)
        sending = self._sending.get(key)
        if sending is not None:
            await asyncio.wait([sending])

    async def _stop_waiting(self, key: str) -> None:
        """Cancel the key's trailing publish that waits for its window, and see it gone."""
        waiting = self._waiting.pop(key, None)
        if waiting is not None:
            waiting.cancel()
            await asyncio.wait([waiting])
