"""Chargers' clocks, as their timestamps show them: which timestamps can be believed, and
what "now" is on a charger's clock for state changes that carry no time of their own."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from domain.entities import BILLED_TIME_TOLERANCE, Session

#: How far ahead of our clock a charger's timestamp may be and still be believed as its
#: clock (network delay, drift between NTP syncs). Beyond it the timestamp is a glitch.
MAX_CLOCK_AHEAD = timedelta(minutes=5)
#: No OCPP 1.6 charger stamped anything before 1.6 was published (October 2015): a
#: timestamp before this is a clock never set (1970, 2000 after its battery ran out),
#: not a time. Believed, it dated a session 56 years long, or in 1970 with its energy
#: and sessions counted in 1970's analytics while its payment went into today's (QA s26).
NEVER_SET_BEFORE = datetime(2015, 1, 1, tzinfo=UTC)
#: How long before its station's record a start may be stamped and still be believed:
#: transactions a charger queued offline before it was registered here (moved from
#: another central system). Older is taken for a clock behind ours, never set right
#: (a firmware's date after a reset; 1970 and 2000 are ``NEVER_SET_BEFORE``'s) unless
#: its stop is stamped as long before and long before the charger's clock read when it
#: arrived (``ticked_through``).
MAX_QUEUED_BEFORE_RECORD = timedelta(days=30)
#: How soon after its connection opened a boot is taken for the one the charger made
#: before connecting (``ChargerClocks.boot_at``): a charger sends its BootNotification
#: first, within seconds; later it is a restart on a live connection.
BOOT_OPENS_CONNECTION = timedelta(seconds=60)


class ChargerClocks:
    def __init__(self, now: Callable[[], datetime]) -> None:
        self.now = now
        # cp_id → (newest charger timestamp seen, our time then).
        self._seen: dict[str, tuple[datetime, datetime]] = {}
        # cp_id → when its current connection (to this instance) opened, on our clock.
        self._connected: dict[str, datetime] = {}
        # Chargers connected again whose connection has sent no timestamp yet.
        self._fresh: set[str] = set()
        # Chargers whose current connection (to this instance) brought a boot already.
        self._booted: set[str] = set()
        # Chargers whose clock this process took only from timestamps from before their
        # connection opened (``replayed``): a queue or a clock behind. Kept over a
        # reconnect (the answer lost with the connection, the queue sent again) until a
        # timestamp from after its connection opened shows the clock, or a boot sets it
        # (``told_time``).
        self._unsure: set[str] = set()
        # Chargers told our time on their current connection (to this instance): a
        # BootNotification's answer (``told_time``).
        self._told: set[str] = set()

    def connected(self, cp_id: str, at: datetime) -> None:
        self._connected[cp_id] = at
        self._fresh.add(cp_id)
        self._booted.discard(cp_id)
        self._told.discard(cp_id)

    def told_time(self, cp_id: str) -> None:
        """The charger sent a BootNotification on its current connection: its answer's
        ``currentTime`` sets the charger's clock, so from then its timestamps show its
        clock, before the connection's opening or not: none makes it ``_unsure``, and
        one kept over a reconnect ends. Review r32-d: a charger whose clock is behind
        (on local time, not UTC), its first status report stamped before its
        connection opened, had every start judged replayed (``ConcurrentTx`` not
        applied, billed) until a stamp passed the opening: hours, or never for one that
        reconnects more often than its lag. The price: a status report queued before a
        start, flushed after a boot to a process that has not seen the charger, sets its
        clock, and that start is judged live (as before review r32-a)."""
        self._unsure.discard(cp_id)
        self._told.add(cp_id)

    def boot_at(self, cp_id: str, now: datetime) -> datetime:
        """When the charger booted, on our clock, for its BootNotification arriving
        ``now``: the first on its connection is dated when that connection opened (it
        booted before it connected; our commands at its connection, answered before its
        boot was recorded, were answered by this boot: review r27, the site's read of
        its units at the connection, milliseconds before the boot, counted as older
        than the boot, and another instance took a charger taking only amperes for one
        taking watts); a later one on the same connection (a charger restarting its
        software, a simulator) at its arrival. Not known (the connection was not opened
        on this instance): at its arrival. Only a boot that opens its connection is dated
        so: sent before anything stamped on it (``_fresh``: a start, a status report) and
        within ``BOOT_OPENS_CONNECTION`` of it; a charger that connected without booting
        (a network drop, our restart) and restarts its software hours later on the same
        connection boots then (review r27-smart3: dated at the connection, the sessions
        started on it were taken for ones since that boot and never closed as lost)."""
        opened = self._connected.get(cp_id)
        if opened is None or cp_id in self._booted:
            return now
        self._booted.add(cp_id)
        if cp_id not in self._fresh or now - opened > BOOT_OPENS_CONNECTION:
            return now
        return min(opened, now)

    def behind_at(self, cp_id: str, start: datetime, station_since: datetime) -> bool:
        """Whether a start stamped ``start`` shows its charger's clock behind ours: it
        predates its station's record (``station_since``) by more than
        ``MAX_QUEUED_BEFORE_RECORD`` (a clock never set right; its stop may yet show a
        queue replayed, ``ticked_through``), or its charger was
        connected here since before it (by our clock) and it still arrived more than
        ``BILLED_TIME_TOLERANCE`` after it: a connected charger sends at once. A start
        stamped before its connection opened may have been queued offline, and is
        believed: the two cannot be told apart."""
        now = self.now()
        if before_record(start, station_since):
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
        return NEVER_SET_BEFORE <= charger_time <= (now or self.now()) + MAX_CLOCK_AHEAD

    def observe(self, cp_id: str, charger_time: datetime) -> bool:
        """Track the charger's clock from its newest believable timestamps. Older ones (a
        reading sent late) say nothing about its clock now and are ignored; so are
        queued ones (``queued``). True for the first believable timestamp of this
        charger since the service started, and since each connection opened, that shows
        its clock: the intervals a reconnect opened on our clock go onto the charger's
        timeline then (``intervals.rebase_intervals``). Never for a queued one: moved
        back to it, the connection's online intervals took over the hours the charger
        was away, and counted them online, available (review of e4bd937); its reports
        change the state inside the outage, offline, and at the connection's opening
        (``next_interval``), and the next timestamp that shows the clock is the
        connection's first."""
        now = self.now()
        if not self.believable(charger_time, now) or self.queued(cp_id, charger_time):
            return False
        seen = self._seen.get(cp_id)
        if seen is None or charger_time >= seen[0]:
            self._seen[cp_id] = (charger_time, now)
        if self._before_opening(cp_id, charger_time):
            if seen is None and cp_id not in self._told:
                self._unsure.add(cp_id)
        else:
            self._unsure.discard(cp_id)
        first = seen is None or cp_id in self._fresh
        self._fresh.discard(cp_id)
        return first

    def queued(self, cp_id: str, charger_time: datetime) -> bool:
        """Whether a timestamp is a report the charger queued while away from this
        connection: this process knows its clock (from an earlier connection, or from
        this one before), and it is stamped more than ``BILLED_TIME_TOLERANCE`` before
        the connection opened on that clock. Taken for the clock, a queue flushed on
        reconnecting put it hours behind: the intervals opened by its reports, and the
        one of a connector it left out, lasted only as long as our clock had seen since,
        and availability read the time since unknown (QA CP-Q1); kept, ``charger_now``
        stays the charger's now through the flush. Not one stamped more than
        ``MAX_QUEUED_BEFORE_RECORD`` before: a clock reset (1970), not a queue. A clock
        set back by less since the charger was last heard looks the same, and its
        reports take effect at the connection's opening until its new one passes it.
        Without a known clock (the first connection to this process) a queue flushed
        first is taken for the clock: a clock really behind looks the same, and counting
        its offset inflated every open interval."""
        opened = self._connected.get(cp_id)
        if opened is None or cp_id not in self._seen:
            return False
        return _in_queue_window(self.charger_time(cp_id, opened), charger_time)

    def replayed(self, cp_id: str, charger_time: datetime) -> bool:
        """Whether a start stamped ``charger_time``, asked before it is observed, was
        queued offline and replayed late: it arrives more than ``BILLED_TIME_TOLERANCE``
        after it on the charger's clock as known, or, while that clock is not known, is
        stamped more than that before its connection (to this instance) opened, on
        ours. Without the latter, a queue flushed first on a connection to a process
        that had not heard the charger yet set its clock (``queued``), and its start,
        hours old, was judged as a live one: by the card's status and sessions at its
        arrival (QA s32). So too while the clock known was taken, on this connection,
        only from timestamps from before it opened (``_unsure``): a StatusNotification
        queued just before the start, flushed first, set the clock and the start was
        judged live (review r32-a); not after a boot on this connection (``told_time``).
        A clock that far behind, its first timestamp a live start, looks the same
        (``behind_at``: the two cannot be told apart); its reports still set the clock,
        which its connectors' history follows."""
        if cp_id in self._seen and cp_id not in self._unsure:
            return self.charger_now(cp_id) - charger_time > BILLED_TIME_TOLERANCE
        return self._before_opening(cp_id, charger_time)

    def _before_opening(self, cp_id: str, charger_time: datetime) -> bool:
        """Stamped more than ``BILLED_TIME_TOLERANCE`` before the charger's connection
        (to this instance) opened, on our clock, but not more than
        ``MAX_QUEUED_BEFORE_RECORD`` (a clock reset, 1970)."""
        opened = self._connected.get(cp_id)
        return opened is not None and _in_queue_window(opened, charger_time)

    def charger_now(self, cp_id: str) -> datetime:
        """The current instant on the charger's clock (our clock until it sent a
        timestamp). Connector state intervals live on the charger's timeline, so that a
        (dis)connect falls between the status reports around it even when the charger's
        clock is off (or a test replays history)."""
        return self.charger_time(cp_id, self.now())

    def known_now(self, cp_id: str) -> datetime | None:
        """The current instant on the charger's clock as this process tracks it from its
        timestamps (``charger_now``), or ``None`` when it has sent this process none: a
        stop stamped long before it was queued (``ticked_through``)."""
        return self.charger_now(cp_id) if cp_id in self._seen else None

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


def before_record(at: datetime, station_since: datetime) -> bool:
    """Whether ``at`` is more than ``MAX_QUEUED_BEFORE_RECORD`` before its station's
    record (``station_since``)."""
    return at < station_since - MAX_QUEUED_BEFORE_RECORD


def ticked_through(session: Session, stop_stamp: datetime, station_since: datetime,
                   charger_clock: datetime | None) -> bool:
    """Whether ``session``, its start taken for a clock behind ours for being stamped
    long before its station's record (``behind_at``), was closed by a stop queued with
    it: stamped as long before the record, and more than ``BILLED_TIME_TOLERANCE``
    before what the charger's clock read when the stop arrived (``charger_clock``,
    ``ChargerClocks.known_now``, read before the stop itself is observed). The stop
    happened long before it was sent: a transaction queued offline and replayed, start
    and stop together, and the session is one (its stamps its times, as any queued
    one's). QA s33: its end was cut to what our clock saw (0.024 s of 3 h), priced by a
    tariff set after the start it kept, its energy judged by the 3 h. A stop stamped
    within the tolerance of the charger's clock (or after it) is live on that clock, a
    clock far behind ours: billed by arrival (``Session.billed_end``), whatever the time
    between the start's and the stop's arrival (review r33: a 2-minute bound on that
    billed a 61 h queue whose stop came 3 minutes after its start 3 minutes, and priced a
    live session on a clock 40 days behind, its start held by a drop, by its stamps).
    So is one whose charger's clock this process does not know (``None``: no timestamp
    of it seen yet), the conservative answer. Not a clock never set (``reported_start``:
    dated on arrival), nor a stop stamped today (a clock set right mid-session), nor one
    stamped before its start (a clock reset mid-session, to 1970: a queue's stop comes
    after its start; it ends when our clock saw it end)."""
    return session.start_clock_behind and session.reported_start is None \
        and charger_clock is not None \
        and before_record(session.start_time, station_since) \
        and session.start_time < stop_stamp \
        and before_record(stop_stamp, station_since) \
        and stop_stamp < charger_clock - BILLED_TIME_TOLERANCE


def _in_queue_window(opened: datetime, at: datetime) -> bool:
    """Whether ``at`` is more than ``BILLED_TIME_TOLERANCE`` before ``opened`` (a
    connection's opening on one clock), but not more than ``MAX_QUEUED_BEFORE_RECORD``
    (a clock reset, 1970): a report queued while the charger was away."""
    return opened - MAX_QUEUED_BEFORE_RECORD <= at < opened - BILLED_TIME_TOLERANCE
