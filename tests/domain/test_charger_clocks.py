"""Which of a charger's timestamps are its clock and which are reports it queued while
away (``ChargerClocks.queued``): the bounds of the rule, on the clocks alone."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from domain.entities import BILLED_TIME_TOLERANCE, Session
from domain.services.charger_clocks import MAX_QUEUED_BEFORE_RECORD, ChargerClocks, ticked_through

T = datetime(2026, 12, 5, 10, 0, tzinfo=UTC)


class Ours:
    """Our clock, moved by the test."""

    def __init__(self) -> None:
        self.now = T

    def __call__(self) -> datetime:
        return self.now


def test_a_queue_is_told_from_the_clock_only_once_the_clock_is_known() -> None:
    ours = Ours()
    clocks = ChargerClocks(ours)
    clocks.connected("CP", T)
    # Never heard from: its first timestamp, hours old, is taken for its clock.
    assert clocks.observe("CP", T - timedelta(hours=5))
    assert clocks.charger_now("CP") == T - timedelta(hours=5)
    clocks.observe("CP", T)  # and its current one sets it right
    ours.now = T + timedelta(hours=8)
    clocks.connected("CP", ours.now)
    # Back after 8 h: a report stamped an hour after it left is queued, placed by the
    # clock known, and its clock stays ours. It is not the connection's first timestamp
    # of its clock: moved back to it, the connection's online intervals took the outage.
    assert not clocks.observe("CP", T + timedelta(hours=1))
    assert clocks.ours_at("CP", T + timedelta(hours=1)) == T + timedelta(hours=1)
    assert clocks.charger_now("CP") == ours.now
    # Within the tolerance of the connection's opening: its clock, a minute behind, and
    # the connection's first timestamp of it.
    assert clocks.observe("CP", ours.now - timedelta(minutes=1))
    assert clocks.charger_now("CP") == ours.now - timedelta(minutes=1)
    assert not clocks.observe("CP", ours.now)


def test_a_timestamp_a_month_before_the_connection_is_a_clock_reset_not_a_queue() -> None:
    ours = Ours()
    clocks = ChargerClocks(ours)
    clocks.connected("CP", T)
    clocks.observe("CP", T)
    ours.now = T + timedelta(days=50)
    clocks.connected("CP", ours.now)
    clocks.observe("CP", T + timedelta(days=5))  # 45 days before: followed
    assert clocks.charger_now("CP") == T + timedelta(days=5)


def test_a_start_is_replayed_when_late_on_its_clock_or_before_its_connection_opened(
        ) -> None:
    """``ChargerClocks.replayed``, asked before the start is observed: while the clock
    is not known, stamped more than the tolerance before the connection opened (QA s32:
    the queue's first start set the clock and was judged a live one), or known only from
    such stamps; once known, late on that clock. A charger not connected here, its clock
    unknown: never."""
    ours = Ours()
    clocks = ChargerClocks(ours)
    assert not clocks.replayed("CP", T - timedelta(hours=3))
    clocks.connected("CP", T)
    ours.now = T + timedelta(seconds=5)
    assert clocks.replayed("CP", T - timedelta(hours=3))
    assert not clocks.replayed("CP", T - timedelta(minutes=1))  # within the tolerance
    assert not clocks.replayed("CP", T - timedelta(days=31))  # a clock reset, not a queue
    # Its clock taken only from stamps from before the connection opened (a queue, or
    # a clock behind): still told by the connection's opening (review r32-a: a status
    # report queued just before the start made it live).
    assert clocks.observe("CP", T - timedelta(hours=1))
    assert clocks.replayed("CP", T - timedelta(minutes=50))
    assert not clocks.replayed("CP", T - timedelta(minutes=1))
    clocks.connected("CP", T + timedelta(seconds=5))  # so too over a reconnect
    assert clocks.replayed("CP", T - timedelta(minutes=50))
    clocks.observe("CP", T)  # on time: the clock is known, and told by
    ours.now = T + timedelta(hours=1)
    assert not clocks.replayed("CP", ours.now - timedelta(minutes=1))
    assert clocks.replayed("CP", ours.now - timedelta(minutes=3))
    clocks.connected("CP", ours.now)  # a new connection leaves the clock known
    assert not clocks.replayed("CP", ours.now - timedelta(minutes=1))
    assert clocks.replayed("CP", ours.now - timedelta(minutes=3))


def test_a_boot_makes_a_clock_behind_its_clock_over_a_reconnect_too() -> None:
    """Review r32-d: a charger an hour behind ours (local time, not UTC) whose first
    stamp on a connection came before it opened had every start judged replayed until a
    stamp passed the opening, over reconnects too. A BootNotification on the connection
    (its answer's currentTime sets the clock) ends that: its stamps show its clock."""
    ours = Ours()
    clocks = ChargerClocks(ours)
    clocks.connected("CP", T)
    ours.now = T + timedelta(seconds=5)
    clocks.observe("CP", T - timedelta(hours=1))  # a status report before the boot
    assert clocks.replayed("CP", T - timedelta(hours=1))
    clocks.told_time("CP")
    assert not clocks.replayed("CP", T - timedelta(hours=1))  # live on its clock
    assert clocks.replayed("CP", T - timedelta(hours=1, minutes=3))
    # Booted first, its first stamp before the opening shows its clock: on a new
    # connection, and to a process that has not seen it.
    for fresh in (False, True):
        if fresh:
            clocks = ChargerClocks(ours)
        ours.now += timedelta(minutes=10)
        clocks.connected("CP", ours.now)
        clocks.told_time("CP")
        behind = ours.now - timedelta(hours=1)
        clocks.observe("CP", behind)
        assert not clocks.replayed("CP", behind)
        assert clocks.replayed("CP", behind - timedelta(minutes=3))
    # Not booted: doubted again, kept over a reconnect, until a boot there.
    clocks = ChargerClocks(ours)
    clocks.connected("CP", ours.now)
    clocks.observe("CP", ours.now - timedelta(hours=1))
    clocks.connected("CP", ours.now)
    assert clocks.replayed("CP", ours.now - timedelta(hours=1))
    clocks.told_time("CP")
    assert not clocks.replayed("CP", ours.now - timedelta(hours=1))


def test_a_stop_long_before_its_chargers_clock_shows_a_queue_replayed() -> None:
    """QA s33, review r33: a start taken for a clock behind ours, stamped more than
    ``MAX_QUEUED_BEFORE_RECORD`` before its station's record, is a queue replayed when
    its stop is stamped as far back and more than ``BILLED_TIME_TOLERANCE`` before what
    the charger's clock read at the stop's arrival (a clock shown by its live messages),
    however soon after the start it came; a stop stamped by that clock (within the
    tolerance, or after it) is live on a clock behind, billed by arrival, however long
    after its start it came; a clock this process does not know is taken for live; a
    stop stamped today is a clock set right mid-session, and a clock never set
    (``reported_start``) stays dated on arrival."""
    recorded = T  # the station's record; the start came at T + 1 h
    began = recorded - MAX_QUEUED_BEFORE_RECORD - timedelta(days=10)
    session = Session(station_id="st", cp_id="CP", connector_id=1, transaction_id=1,
                      id_tag="T", user_id="u", meter_start_wh=0, start_time=began,
                      created_at=T + timedelta(hours=1), start_clock_behind=True)
    stop = began + timedelta(hours=61)
    today = T + timedelta(hours=1, minutes=3)  # the clock set right: a queue
    assert ticked_through(session, stop, recorded, today)
    assert ticked_through(session, began + timedelta(minutes=2), recorded, today)
    # The bound: more than the tolerance before the charger's clock, a queue; at it or
    # within it, or after it (a clock taken from the queue's own stamps), live.
    assert ticked_through(session, stop, recorded,
                          stop + BILLED_TIME_TOLERANCE + timedelta(seconds=1))
    assert not ticked_through(session, stop, recorded, stop + BILLED_TIME_TOLERANCE)
    assert not ticked_through(session, stop, recorded, stop)
    assert not ticked_through(session, stop, recorded, began + timedelta(minutes=3))
    assert not ticked_through(session, stop, recorded, None)  # not known: by arrival
    assert not ticked_through(session, today, recorded, today)  # set right
    # A stop stamped before its start: the clock reset mid-session (1970), no queue.
    assert not ticked_through(session, datetime(1970, 1, 1, tzinfo=UTC), recorded, today)
    assert not ticked_through(session, began - timedelta(hours=1), recorded, today)
    # Its start within the month before the record: not taken for a clock behind by it.
    near = replace(session, start_time=recorded - timedelta(days=11))
    assert not ticked_through(near, near.start_time + timedelta(hours=3), recorded, today)
    assert not ticked_through(replace(session, start_clock_behind=False), stop, recorded,
                              today)
    never_set = replace(session, reported_start=datetime(1970, 1, 1, tzinfo=UTC))
    assert not ticked_through(never_set, stop, recorded, today)


def test_the_chargers_clock_is_known_from_its_own_timestamps_only() -> None:
    """``known_now``: none before the charger sent this process a timestamp; after, its
    clock as its newest one showed it, run on by ours, not moved by a queued report."""
    ours = Ours()
    clocks = ChargerClocks(ours)
    clocks.connected("CP", T)
    assert clocks.known_now("CP") is None
    behind = T - timedelta(days=40)
    clocks.observe("CP", behind)
    ours.now = T + timedelta(minutes=5)
    assert clocks.known_now("CP") == behind + timedelta(minutes=5)
    clocks.connected("CP", ours.now)
    clocks.observe("CP", behind + timedelta(minutes=1))  # queued through the drop
    assert clocks.known_now("CP") == behind + timedelta(minutes=5)
