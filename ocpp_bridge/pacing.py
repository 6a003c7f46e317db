"""How fast one charger's frames are taken in. A compliant OCPP 1.6 charger has one CALL
in flight at a time, so its rate is bounded by the round trip; one that pipelines
thousands of frames (a bug, a compromised charger) was served back to back, and the event
loop, shared by every charger and GraphQL request, waited: 20,000 StatusNotifications
held GraphQL answers for a second each. Beyond a burst, its frames are taken at a steady
rate, the rest waiting in its socket (TCP pushes back on the sender).

Frames are paced by their bytes too: what a frame costs the loop grows with its size
(parsed, checked against the schema, a sample written per sampled value: a 4 MiB
MeterValues held it 0.7 s, one of more than the bound (``frames.bound``) is refused
since session 29 once parsed and counted, before its schema check), and a charger
sending large frames back to back, within the frame rate by far, had the loop nearly to
itself: another charger's Heartbeat was answered once per large frame, 15 in 3 s
instead of 200 (QA s26)."""

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
#: Chargers whose pacing ``ChargerPacers`` keeps before it first looks for those it may
#: forget (their buckets full again); it looks again each time it has kept twice as many
#: as it kept after the last look.
PACERS_KEPT = 1024


def frame_bytes(message: str | bytes) -> int:
    """A frame's size in bytes, as received (UTF-8): an ASCII text's length (known without
    reading it), else its encoding's."""
    if isinstance(message, bytes):
        return len(message)
    return len(message) if message.isascii() else len(message.encode("utf-8", "replace"))


class FramePacer:
    """Two token buckets of one charger's, of frames and of bytes: ``delay(size)`` is how
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

    def full(self) -> bool:
        """Whether both buckets are full again: the charger's pace forgets nothing if it
        starts afresh."""
        elapsed = self.clock() - self._at
        return self._tokens + elapsed * self.rate >= self.burst \
            and self._bytes + elapsed * self.byte_rate >= self.byte_burst


class ChargerPacers:
    """The pace of every charger connected lately, by cpId: kept across its connections
    (review s26: kept per connection, a flooding charger that hung up and reconnected was
    given a fresh 4 MiB burst each time and never paced). A connection takes its
    charger's (``of``) and gives it back when it closes (``release``): one in use is never
    forgotten (review r26-robust2: an idle connected charger's was swept once 1,024
    others had connected, its connection went on with the forgotten one, and its
    reconnect was given a fresh burst). One no connection uses is forgotten once its
    buckets are full again (at most ``BYTE_BURST / BYTE_RATE`` seconds, 16, after its
    last frame), when the next charger is added past twice as many as were kept at the
    last look (``PACERS_KEPT`` at least): memory grows with the chargers connected or
    heard within that time, and the looks cost a constant per charger added. Per
    instance: a charger reconnecting to another instance starts afresh there."""

    def __init__(self, factory: Callable[[], FramePacer] = FramePacer) -> None:
        self.factory = factory
        self._pacers: dict[str, FramePacer] = {}
        #: How many live connections use each cpId's pacer (none: not a key).
        self._users: dict[str, int] = {}
        self._look_at = PACERS_KEPT

    def of(self, cp_id: str) -> FramePacer:
        """``cp_id``'s pace, as its last connection left it, or a fresh one: taken by a
        connection, which gives it back (``release``) when it closes."""
        pacer = self._pacers.get(cp_id)
        if pacer is None:
            if len(self._pacers) >= self._look_at:
                self._pacers = {k: p for k, p in self._pacers.items()
                                if k in self._users or not p.full()}
                self._look_at = max(PACERS_KEPT, 2 * len(self._pacers))
            pacer = self._pacers[cp_id] = self.factory()
        self._users[cp_id] = self._users.get(cp_id, 0) + 1
        return pacer

    def release(self, cp_id: str) -> None:
        """A connection that took ``cp_id``'s pace (``of``) closed: once no other uses it,
        it may be forgotten when full again."""
        users = self._users.pop(cp_id, 0) - 1
        if users > 0:
            self._users[cp_id] = users

    def users(self, cp_id: str) -> int:
        """How many live connections use ``cp_id``'s pace."""
        return self._users.get(cp_id, 0)

    def __len__(self) -> int:
        return len(self._pacers)
