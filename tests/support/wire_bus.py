"""An in-process event bus that carries every event through the wire codec, as Redis
does: tests of cross-instance traffic without a server still catch what JSON cannot
carry."""

from __future__ import annotations

from typing import Any

from pubsub.codec import decode, encode
from pubsub.memory import MemoryEventBus


class WireBus(MemoryEventBus):
    async def publish(self, event: Any) -> None:
        await super().publish(decode(encode(event)))
