"""Chargers' clocks, as their timestamps show them: which timestamps can be believed, and
what "now" is on a charger's clock for state changes that carry no time of their own.

Which timestamp tells a charger's clock "now" (``ChargerClocks.observe``; QA s19,
conformance 3). No 1.6 message is stamped "now" by its nature: BootNotification and
Heartbeat carry no time, and StatusNotification, MeterValues and the transaction
messages may come from a queue the charger flushes on reconnecting, hours after their
timestamps. Taking the first believable timestamp a process saw as the clock's now (as
before) made a queued MeterValues stamped 2 h ago date the next StatusNotification
without timestamp 2 h in the past. So a timestamp is taken as the charger's now only
when it is *live*:

* not older than our clock by more than ``CLOCK_AGREES`` (nothing is queued from the
  future, and a moment ago is as good as now: a clock right, or ahead, is taken at once);
* or within ``CLOCK_AGREES`` of the charger's clock as live timestamps showed it before
  (extrapolated on our clock): the same clock, drifting;
* or showing the same clock behind ours (within ``CLOCK_AGREES``) as an earlier
  timestamp that came at least ``CONFIRM_AFTER`` before it on our clock: a clock running
  behind, as its live messages keep showing it. A queue flushed in seconds, each message
  stamped at its own time, never agrees with itself over that long.

Anything else is a candidate (``_candidate``) until confirmed. A report without a
timestamp is dated on our clock shifted by the offset learned from live timestamps only
(``charger_now``); with none learned, on arrival on our clock. The price: a clock behind
ours by more than ``CLOCK_AGREES`` dates such a report on our clock until its live
messages confirm it (``CONFIRM_AFTER``), and a stamped report older than that one is
then history, not the connector's state, until the charger's clock passes it.

The timeline of a charger's reports is another matter, and still follows every
believable timestamp, live or queued (``charger_time``, ``stamped_now``: the newest one
run on by our clock): connector state intervals are ordered on it, so that a flushed
queue's reports, a replayed history and the disconnect after them stay in order, and a
start older than it was flushed late. A first timestamp of a connection (or process)
places the intervals the connection opened on our clock onto it (``observe`` answers
True; ``intervals.rebase_intervals``): a queue flushed on reconnecting must fall inside
them, or its idle time is lost. Neither moves the clock a report without a timestamp is
dated by.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from domain.entities import BILLED_TIME_TOLERANCE

#: How far ahead of our clock a charger's timestamp may be and still be believed as its
#: clock (network delay, drift between NTP syncs). Beyond it the timestamp is a glitch.
MAX_CLOCK_AHEAD = timedelta(minutes=5)
#: How close to our clock (behind it), or to the charger's clock as live timestamps
#: showed it, a timestamp must be to be taken as the charger's clock now (see the module):
#: network delay and a charger stamping a moment before it sends.
CLOCK_AGREES = timedelta(minutes=1)
#: How long our clock must run between two timestamps that show the same clock behind
#: ours for it to be taken as live: longer than a queue takes to flush, shorter than a
#: charger's meter sample interval and status changes leave it unconfirmed.
CONFIRM_AFTER = timedelta(seconds=30)
#: How long before its station's record a start may be stamped and still be believed:
#: transactions a charger queued offline before it was registered here (moved from
#: another central system). Older is a clock never set (1970, 2000).
MAX_QUEUED_BEFORE_RECORD = timedelta(days=30)


class ChargerClocks:
    def __init__(self, now: Callable[[], datetime]) -> None:
        self.now = now
        # cp_id → (newest believable charger timestamp seen, live or queued, our time
        # then): the timeline its reports are on (``charger_time``).
        self._seen: dict[str, tuple[datetime, datetime]] = {}
        # cp_id → (newest live charger timestamp, our time then): its clock now.
        self._clock: dict[str, tuple[datetime, datetime]] = {}
        # cp_id → (a timestamp not live (yet), our time then): what may show a clock
        # behind ours once a later one agrees with it (see the module).
        self._candidate: dict[str, tuple[datetime, datetime]] = {}
        # cp_id → when its current connection (to this instance) opened, on our clock.
        self._connected: dict[str, datetime] = {}
        # Chargers connected again whose connection has sent no timestamp yet.
        self._fresh: set[str] = set()

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

    def observe(self, cp_id: str, charger_time: datetime) -> bool:
        """Track the charger's clock from its live timestamps (see the module): others (a
        queue flushed after an outage) say nothing about its clock now. True for the
        first believable timestamp of this charger since the service started, and since
        each connection opened, live or not: the intervals a reconnect opened on our
        clock go onto the charger's timeline then too (a queue it flushes on
        reconnecting was clamped to the reconnect, and a session's idle time in it lost)."""
        now = self.now()
        if not self.believable(charger_time, now):
            return False
        seen = self._seen.get(cp_id)
        if seen is None or charger_time >= seen[0]:
            self._seen[cp_id] = (charger_time, now)
        if self._live(cp_id, charger_time, now):
            clock = self._clock.get(cp_id)
            if clock is None or charger_time >= clock[0]:
                self._clock[cp_id] = (charger_time, now)
            self._candidate.pop(cp_id, None)
        first = seen is None or cp_id in self._fresh
        self._fresh.discard(cp_id)
        return first

    def _live(self, cp_id: str, charger_time: datetime, now: datetime) -> bool:
        """Whether ``charger_time``, come at ``now``, is the charger's clock now (the
        module's three rules); if not, it is kept as the candidate a later one may
        confirm (an older agreeing candidate is kept: the time between them counts)."""
        if charger_time >= now - CLOCK_AGREES:
            return True
        clock = self._clock.get(cp_id)
        if clock is not None and abs(charger_time - (clock[0] + (now - clock[1]))) \
                <= CLOCK_AGREES:
            return True
        candidate = self._candidate.get(cp_id)
        if candidate is not None and abs((charger_time - now) - (candidate[0] - candidate[1])
                                         ) <= CLOCK_AGREES:
            return now - candidate[1] >= CONFIRM_AFTER
        self._candidate[cp_id] = (charger_time, now)
        return False

    def charger_now(self, cp_id: str) -> datetime:
        """The current instant on the charger's clock, as its live timestamps show it
        (our clock until it sent one; see the module): when a report without a time of
        its own (a StatusNotification without timestamp, a start glitched into our
        future) happened."""
        clock = self._clock.get(cp_id)
        now = self.now()
        return now if clock is None else clock[0] + (now - clock[1])

    def stamped_now(self, cp_id: str) -> datetime:
        """Now on the timeline of the charger's reports: its newest timestamp, live or
        queued, run on by our clock since (ours until it sent one). What its messages
        are ordered by: a start older than it came after later ones, flushed late."""
        return self.charger_time(cp_id, self.now())

    def charger_time(self, cp_id: str, at: datetime) -> datetime:
        """Our instant ``at`` on the timeline of the charger's reports (``stamped_now``).
        Connector state intervals live on it, so that a (dis)connect falls between the
        status reports around it even when the charger's clock is off, when it flushes a
        queue, or a test replays history; a disconnect dated before now (when a charger
        whose connection was lost with a process that died was last heard of) too."""
        seen = self._seen.get(cp_id)
        return at if seen is None else seen[0] + (at - seen[1])
