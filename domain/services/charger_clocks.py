"""Chargers' clocks, as their timestamps show them: which timestamps can be believed, and
what "now" is on a charger's clock for state changes that carry no time of their own."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import NamedTuple

from domain.entities import BILLED_TIME_TOLERANCE

#: How far ahead of our clock a charger's timestamp may be and still be believed as its
#: clock (network delay, drift between NTP syncs). Beyond it the timestamp is a glitch.
MAX_CLOCK_AHEAD = timedelta(minutes=5)
#: How long before its station's record a start may be stamped and still be believed:
#: transactions a charger queued offline before it was registered here (moved from
#: another central system). Older is a clock never set (1970, 2000).
MAX_QUEUED_BEFORE_RECORD = timedelta(days=30)


class Observed(NamedTuple):
    """What a charger's timestamp told of its clock (``ChargerClocks.observe``).
    ``first``: the first believable one since the service started or the connection
    opened. ``ahead``: the tracked clock moved forward (nearer ours) by more than
    ``BILLED_TIME_TOLERANCE`` since its open intervals were last placed on it."""

    first: bool
    ahead: bool


class ChargerClocks:
    def __init__(self, now: Callable[[], datetime]) -> None:
        self.now = now
        # cp_id → (newest charger timestamp seen, our time then).
        self._seen: dict[str, tuple[datetime, datetime]] = {}
        # cp_id → when its current connection (to this instance) opened, on our clock.
        self._connected: dict[str, datetime] = {}
        # Chargers connected again whose connection has sent no timestamp yet.
        self._fresh: set[str] = set()
        # cp_id → the tracked clock's offset (ours less the charger's) that its open
        # intervals' ``observed_at`` were last placed by.
        self._aligned: dict[str, timedelta] = {}

    def connected(self, cp_id: str, at: datetime) -> None:
        self._connected[cp_id] = at
        self._fresh.add(cp_id)

    def behind_at(self, cp_id: str, start: datetime, station_since: datetime) -> bool:
        """Whether a start stamped ``start`` shows its charger's clock behind ours: it
        predates its station's record (``station_since``) by more than
        ``MAX_QUEUED_BEFORE_RECORD`` (a clock never set, 1970), or its charger was
        connected here since before it (by our clock) and it still arrived more than
        ``BILLED_TIME_TOLERANCE`` after it: a connected charger sends at once. A start
        stamped before its connection opened may have been queued offline, and is
        believed: the two cannot be told apart."""
        now = self.now()
        if start < station_since - MAX_QUEUED_BEFORE_RECORD:
            return True
        opened = self._connected.get(cp_id)
        return opened is not None and opened <= start \
            and now - start > BILLED_TIME_TOLERANCE

    def believable(self, charger_time: datetime, now: datetime | None = None) -> bool:
        """Whether a charger's timestamp can be its clock: not more than
        ``MAX_CLOCK_AHEAD`` ahead of ours. A clock may be behind ours by any amount (never
        set, a queue flushed after an outage, a test replaying history), and a jump
        forward towards ours is what a corrected clock looks like, so the charger's
        tracked offset cannot bound it; but nothing real is stamped in our future. One
        such glitch (2150) believed would freeze the connector's state, since every
        later report would look older, and carry every later interval there with the
        tracked clock. The price: a charger whose clock runs hours ahead has its status
        reports placed at their arrival, on our clock."""
        return charger_time <= (now or self.now()) + MAX_CLOCK_AHEAD

    def observe(self, cp_id: str, charger_time: datetime) -> Observed:
        """Track the charger's clock from its newest believable timestamps. Older ones (a
        queue flushed after an outage) say nothing about its clock now and are ignored.
        ``first`` for the first believable timestamp of this charger since the service
        started, and since each connection opened: the intervals a reconnect opened on
        our clock go onto the charger's timeline then too (a queue it flushes on
        reconnecting was clamped to the reconnect, and a session's idle time in it lost).
        ``ahead`` when the tracked clock moved forward by more than
        ``BILLED_TIME_TOLERANCE`` since the charger's open intervals were last placed on
        it (``intervals.observe_again`` places them again): the first timestamp this
        process saw may have been a queued one, taken for its clock (days behind ours),
        and the current report that shows the clock repeats the connector's state, so
        opens no interval. Moves back (a reading sent late) are not followed: the next
        timely one would undo them, and each would be a write."""
        now = self.now()
        if not self.believable(charger_time, now):
            return Observed(False, False)
        seen = self._seen.get(cp_id)
        if seen is None or charger_time >= seen[0]:
            self._seen[cp_id] = (charger_time, now)
        first = seen is None or cp_id in self._fresh
        self._fresh.discard(cp_id)
        tracked, at = self._seen[cp_id]
        aligned = self._aligned.get(cp_id)
        ahead = aligned is not None and aligned - (at - tracked) > BILLED_TIME_TOLERANCE
        if aligned is None or ahead:
            self._aligned[cp_id] = at - tracked
        return Observed(first, ahead)

    def charger_now(self, cp_id: str) -> datetime:
        """The current instant on the charger's clock (our clock until it sent a
        timestamp). Connector state intervals live on the charger's timeline, so that a
        (dis)connect falls between the status reports around it even when the charger's
        clock is off (or a test replays history)."""
        return self.charger_time(cp_id, self.now())

    def charger_time(self, cp_id: str, at: datetime) -> datetime:
        """Our instant ``at`` on the charger's clock (ours until it sent a timestamp): a
        disconnect dated before now (when a charger whose connection was lost with a
        process that died was last heard of) goes onto its intervals' timeline too."""
        seen = self._seen.get(cp_id)
        return at if seen is None else seen[0] + (at - seen[1])

    def ours_at(self, cp_id: str, charger_time: datetime) -> datetime | None:
        """The instant on our clock when the charger's clock read ``charger_time``, by
        its tracked clock (``None`` before it sent this process a timestamp): when a
        state interval opened at ``charger_time`` was observed
        (``ConnectorInterval.observed_at``). A report queued offline is placed when it
        happened, not when it arrived; a clock set right mid-connection (1970, then
        today) is followed from its first new timestamp on."""
        seen = self._seen.get(cp_id)
        return None if seen is None else seen[1] + (charger_time - seen[0])
