"""One lock per key (a charge point), held only while someone uses it: an instance
serving thousands of chargers keeps locks for those arriving or being checked now, not
one for every charger it ever saw."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class _Held:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class KeyedLocks:
    def __init__(self) -> None:
        self._held: dict[str, _Held] = {}

    @contextlib.asynccontextmanager
    async def one_at_a_time(self, key: str) -> AsyncIterator[None]:
        """Holds ``key``'s lock for the block; it is forgotten once nobody holds or
        waits for it."""
        held = self._held.setdefault(key, _Held())
        held.users += 1
        try:
            async with held.lock:
                yield
        finally:
            held.users -= 1
            if not held.users:
                del self._held[key]

    def users(self, key: str) -> int:
        """How many hold or wait for ``key``'s lock now (one holds it, the rest queue)."""
        held = self._held.get(key)
        return held.users if held is not None else 0

    def __len__(self) -> int:
        """Keys held or waited for now."""
        return len(self._held)
