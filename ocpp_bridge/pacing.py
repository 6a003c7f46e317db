"""How fast one charger's frames are taken in. A compliant OCPP 1.6 charger has one CALL
in flight at a time, so its rate is bounded by the round trip; one that pipelines
thousands of frames (a bug, a compromised charger) was served back to back, and the event
loop, shared by every charger and GraphQL request, waited: 20,000 StatusNotifications
held GraphQL answers for a second each. Beyond a burst, its frames are taken at a steady
rate, the rest waiting in its socket (TCP pushes back on the sender)."""

from __future__ import annotations

import time
from collections.abc import Callable

#: Frames per second one charger may send, sustained: far above a compliant charger's
#: (one CALL in flight, a round trip each) and the benchmark's 50 per charger.
FRAME_RATE = 200.0
#: Frames it may send at once before the rate applies (a queue flushed after an outage).
FRAME_BURST = 1000.0


class FramePacer:
    """A token bucket per connection: ``delay()`` is how long to wait before handling
    the next frame (0 while within the burst)."""

    def __init__(self, rate: float = FRAME_RATE, burst: float = FRAME_BURST,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self._tokens = burst
        self._at = clock()
        #: Frames that had to wait (for logs and tests).
        self.delayed = 0

    def delay(self) -> float:
        now = self.clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        self._tokens -= 1
        if self._tokens >= 0:
            return 0.0
        self.delayed += 1
        # The frame is taken once the bucket is back at zero; the debt is already counted.
        return -self._tokens / self.rate
