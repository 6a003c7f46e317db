"""How fast one charger's frames are taken in. A compliant OCPP 1.6 charger has one CALL
in flight at a time, so its rate is bounded by the round trip; one that pipelines
thousands of frames (a bug, a compromised charger) was served back to back, and the event
loop, shared by every charger and GraphQL request, waited: 20,000 StatusNotifications
held GraphQL answers for a second each. Beyond a burst, its frames are taken at a steady
rate, the rest waiting in its socket (TCP pushes back on the sender).

Frames are paced by their bytes too: what a frame costs the loop grows with its size
(parsed, checked against the schema, a sample written per sampled value: a 4 MiB
MeterValues held it 0.7 s), and a charger sending large frames back to back, within the
frame rate by far, had the loop nearly to itself: another charger's Heartbeat was
answered once per large frame, 15 in 3 s instead of 200 (QA s26)."""

from __future__ import annotations

import time
from collections.abc import Callable

#: Frames per second one charger may send, sustained: far above a compliant charger's
#: (one CALL in flight, a round trip each) and the benchmark's 50 per charger.
FRAME_RATE = 200.0
#: Frames it may send at once before the rate applies (a queue flushed after an outage).
FRAME_BURST = 1000.0
#: The largest frame read (``OcppServer`` closes the socket with 1009 beyond it). A
#: StopTransaction's transactionData grows with the session: 12 h of one-minute samples
#: of five measurands is 450 KB, and a charger refused with 1009 retries the same frame
#: forever, so the session never closes. 4 MiB holds a few days of such samples; nothing
#: else a charger sends comes near (a configuration value, a DataTransfer, a status: a
#: few KB). It bounds one frame and reserves nothing: memory is taken as frames arrive.
MAX_FRAME_BYTES = 4 * 1024 * 1024
#: Bytes per second one charger's frames may bring in, sustained: a 450 KB stop every
#: two seconds, a MeterValues frame of a kilobyte 256 times a second (beyond the frame
#: rate), and about 5 % of the loop for a charger sending nothing but the largest frames.
BYTE_RATE = 256 * 1024
#: Bytes it may send at once before that rate applies: one frame of the largest size, or
#: an outage's queue of small ones, is taken without waiting.
BYTE_BURST = MAX_FRAME_BYTES


class FramePacer:
    """Two token buckets per connection, of frames and of bytes: ``delay(size)`` is how
    long to wait before handling the next frame, of ``size`` bytes (0 while both are
    within their bursts)."""

    def __init__(self, rate: float = FRAME_RATE, burst: float = FRAME_BURST,
                 clock: Callable[[], float] = time.monotonic, *,
                 byte_rate: float = BYTE_RATE, byte_burst: float = BYTE_BURST) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self.byte_rate, self.byte_burst = byte_rate, byte_burst
        self._tokens = burst
        self._bytes = byte_burst
        self._at = clock()
        #: Frames that had to wait (for logs and tests).
        self.delayed = 0

    def delay(self, size: int = 0) -> float:
        now = self.clock()
        elapsed = now - self._at
        self._at = now
        self._tokens = min(self.burst, self._tokens + elapsed * self.rate) - 1
        self._bytes = min(self.byte_burst, self._bytes + elapsed * self.byte_rate) - size
        if self._tokens >= 0 and self._bytes >= 0:
            return 0.0
        self.delayed += 1
        # The frame is taken once both buckets are back at zero; the debt is already
        # counted.
        return max(-self._tokens / self.rate, -self._bytes / self.byte_rate)
