"""Retention of the telemetry that grows without end (``domain.services.retention``) on
both stores: meter samples and status reports older than their setting are deleted by
the housekeeping sweep, a batch per write; a session's samples only once it was closed by
its own StopTransaction and ended before the cut-off (a correction by a late stop reads
them); unset, everything stays (QA s32: nothing was ever deleted, ~250 MB a day for 100
chargers)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from domain.entities import (
    ConnectionEvent,
    MeterSample,
    Payment,
    Role,
    Session,
    SessionState,
    StatusEvent,
)
from domain.policy import SYSTEM, Policy, Viewer
from domain.ports import Store, Update
from domain.query import ALL, Eq
from domain.services import ConnectorSpec, ServiceContext, Services, retention
from domain.services.metering import MeterReading, SampledValue
from domain.services.retention import LATE_STOP_MARGIN, Retention, keeps_samples
from tests.contract.factories import meter_sample, payment, put, session, station, status_event
from tests.contract.instances import T0, Clock, instance, right_after
from tests.helpers import FastHasher

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
KEEP = timedelta(days=30)
OLD = NOW - KEEP - timedelta(days=1)
RECENT = NOW - KEEP + timedelta(days=1)
#: Ended before the cut-off by more than a late stop is waited for.
BEYOND_MARGIN = NOW - KEEP - LATE_STOP_MARGIN - timedelta(days=1)


def connection_event(st: Any, at: datetime, online: bool = True) -> ConnectionEvent:
    return ConnectionEvent(station_id=st.id, cp_id=st.cp_id, online=online, at=at)


def services(store: Store, keep: Retention) -> Services:
    return Services(ServiceContext(store=store, policy=Policy(), hasher=FastHasher(),
                                   clock=lambda: NOW), retention=keep)


def closed(st: Any, **kw: Any) -> Session:
    """A session its StopTransaction closed (``stop_reason`` set), ending at ``end``,
    its close written then (``updated_at``)."""
    end = kw.pop("end", OLD)
    kw.setdefault("stop_reason", "Local")
    kw.setdefault("updated_at", end)
    return session(st, state=SessionState.COMPLETED, start_time=end - timedelta(hours=2),
                   end_time=end, energy_wh=5000, **kw)


async def sample_sessions(store: Store) -> set[str | None]:
    return {s.session_id for s in await store.find_all(MeterSample, ALL)}


async def test_samples_go_once_their_session_is_closed_by_its_stop_and_ended_before_the_cut(
        store: Store) -> None:
    cp = station()
    billed = closed(cp)
    active = session(cp, start_time=OLD - timedelta(hours=1))
    awaiting = closed(cp, stop_reason=None)  # flushed late, its stop still to come
    without_stop = closed(cp, stop_reason="Other", closed_without_stop=True)
    long_one = closed(cp, end=RECENT)  # began before the cut, ended after it
    fresh = closed(cp, end=RECENT + timedelta(days=2))
    sessions = [billed, active, awaiting, without_stop, long_one, fresh]
    stamps = {billed.id: OLD, active.id: OLD, awaiting.id: OLD, without_stop.id: OLD,
              long_one.id: OLD, fresh.id: RECENT + timedelta(days=2)}
    await put(store, cp, *sessions, payment(billed, amount_minor=150, currency="EUR"))
    await put(store, *[meter_sample(cp, s, at=stamps[s.id] - timedelta(minutes=m),
                                    delta_wh=100) for s in sessions for m in (0, 5)],
              meter_sample(cp, None, at=OLD),  # of no session: by its own time
              meter_sample(cp, None, at=RECENT))
    deleted = await services(store, Retention(meter_samples=KEEP)).retention.sweep()
    assert deleted == 3
    assert await sample_sessions(store) == {active.id, awaiting.id, without_stop.id,
                                            long_one.id, fresh.id, None}
    [unlinked] = await store.find_all(MeterSample, Eq("session_id", None))
    assert unlinked.at == RECENT
    # The bill stays: the session with its energy, and its payment.
    [kept] = await store.get_many(Session, [billed.id])
    assert kept is not None and kept.energy_wh == 5000
    assert len(await store.find_all(Payment, ALL)) == 1
    # Nothing left to delete: a second round deletes nothing.
    assert await services(store, Retention(meter_samples=KEEP)).retention.sweep() == 0


async def test_status_reports_older_than_their_retention_go(store: Store) -> None:
    cp = station()
    await put(store, cp, status_event(cp, at=OLD), status_event(cp, at=OLD, connector_id=2),
              status_event(cp, at=RECENT))
    assert await services(store, Retention(status_events=KEEP)).retention.sweep() == 2
    assert [e.at for e in await store.find_all(StatusEvent, ALL)] == [RECENT]


async def test_connection_events_older_than_their_retention_go(store: Store) -> None:
    """Session 33: a station's connection history had no retention (nor an index on
    ``at`` alone to sweep it by: migration 86)."""
    cp = station()
    await put(store, cp, connection_event(cp, OLD - timedelta(hours=1)),
              connection_event(cp, OLD, online=False), connection_event(cp, RECENT))
    keep = Retention(connection_events=KEEP)
    assert keep.prunes
    assert await services(store, keep).retention.sweep() == 2
    assert [e.at for e in await store.find_all(ConnectionEvent, ALL)] == [RECENT]


async def test_a_session_closed_without_its_stop_keeps_its_samples_for_the_margin(
        store: Store) -> None:
    """Session 33: the samples of a session closed without its StopTransaction (as lost,
    by a reboot, by an operator's endSession) were kept until that stop came: for good
    when it never did. Its stop is accepted however late, so they wait
    ``LATE_STOP_MARGIN`` past the cut-off, then go whole."""
    cp = station()
    lost = closed(cp, stop_reason="Other", closed_without_stop=True, end=BEYOND_MARGIN)
    lately_lost = closed(cp, stop_reason="Other", closed_without_stop=True, end=OLD)
    awaiting = closed(cp, stop_reason=None, end=BEYOND_MARGIN)  # not billed yet: stays
    await put(store, cp, lost, lately_lost, awaiting,
              *[meter_sample(cp, s, at=end - timedelta(minutes=m), delta_wh=100)
                for s, end in ((lost, BEYOND_MARGIN), (lately_lost, OLD),
                               (awaiting, BEYOND_MARGIN)) for m in (0, 5)])
    assert await services(store, Retention(meter_samples=KEEP)).retention.sweep() == 2
    assert await sample_sessions(store) == {lately_lost.id, awaiting.id}


async def test_a_lost_session_closed_lately_keeps_its_samples_for_the_margin(
        store: Store) -> None:
    """Review r33-a: a session closed as lost ends at the next start's time or its last
    reading (``lost_end``, ``last_known``), maybe weeks before the close is written; its
    samples went at the next sweep, the margin counted from that end. Counted from when
    the close was written (its ``updated_at``): kept the margin from then."""
    cp = station()
    closed_now = closed(cp, stop_reason="Other", closed_without_stop=True,
                        end=BEYOND_MARGIN, updated_at=NOW - timedelta(hours=1))
    closed_then = closed(cp, stop_reason="Other", closed_without_stop=True,
                         end=BEYOND_MARGIN)
    await put(store, cp, closed_now, closed_then,
              *[meter_sample(cp, s, at=BEYOND_MARGIN - timedelta(minutes=m), delta_wh=100)
                for s in (closed_now, closed_then) for m in (0, 5)])
    assert await services(store, Retention(meter_samples=KEEP)).retention.sweep() == 2
    assert await sample_sessions(store) == {closed_now.id}
    assert keeps_samples(closed_now, NOW - KEEP)
    assert not keeps_samples(closed_then, NOW - KEEP)


#: Every kind of session the sweep may meet: open or completed, each stop reason it may
#: carry (none: open or awaiting its stop), closed without its stop or not, ended never,
#: beyond the margin, before the cut-off within it, or since the cut-off; last written
#: (``updated_at``: its close, for a closed one) beyond the margin, within it, or since
#: the cut-off.
SESSION_KINDS = list(itertools.product(
    SessionState, (None, "Local", "Other"), (False, True),
    (None, BEYOND_MARGIN, OLD, RECENT), (BEYOND_MARGIN, OLD, RECENT)))


async def test_the_sweep_s_filter_says_what_keeps_samples_says(store: Store) -> None:
    """The sweep's store filter (``samples_prunable``) restates ``keeps_samples``, whose
    rule is ``charging.stoppable``'s with the margin: over every kind of session, each
    keeps its samples by the one exactly when by the other."""
    cp = station()
    # Each on a connector of its own: one open session per connector.
    sessions = [session(cp, n, state=state, stop_reason=reason, closed_without_stop=without,
                        start_time=BEYOND_MARGIN - timedelta(hours=2), end_time=end,
                        updated_at=written)
                for n, (state, reason, without, end, written) in enumerate(SESSION_KINDS, 1)]
    await put(store, cp, *sessions,
              *[meter_sample(cp, s, at=BEYOND_MARGIN - timedelta(hours=1))
                for s in sessions])
    await services(store, Retention(meter_samples=KEEP)).retention.sweep()
    kept = await sample_sessions(store)
    expected = {s.id for s in sessions if keeps_samples(s, NOW - KEEP)}
    # Both ways found: the table holds sessions that keep and that give up their samples.
    assert expected and len(expected) < len(sessions)
    assert kept == expected


async def test_unset_keeps_everything(store: Store) -> None:
    cp = station()
    old = closed(cp)
    await put(store, cp, old, meter_sample(cp, old, at=OLD), meter_sample(cp, None, at=OLD),
              status_event(cp, at=OLD), connection_event(cp, OLD))
    keep = Retention()
    assert not keep.prunes
    assert await services(store, keep).retention.sweep() == 0
    assert len(await store.find_all(MeterSample, ALL)) == 2
    assert len(await store.find_all(StatusEvent, ALL)) == 1
    assert len(await store.find_all(ConnectionEvent, ALL)) == 1


async def test_the_sweep_deletes_a_batch_per_write(store: Store,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retention, "BATCH", 2)
    cp = station()
    await put(store, cp, *[meter_sample(cp, None, at=OLD - timedelta(minutes=m))
                           for m in range(5)],
              *[status_event(cp, at=OLD - timedelta(minutes=m)) for m in range(3)],
              *[connection_event(cp, OLD - timedelta(minutes=m)) for m in range(3)])
    writes: list[int] = []
    write = store.write

    async def counted(changes: Sequence[Any], audit: Sequence[Any], *args: Any) -> None:
        writes.append(len(changes))
        await write(changes, audit, *args)

    monkeypatch.setattr(store, "write", counted)
    keep = Retention(meter_samples=KEEP, status_events=KEEP, connection_events=KEEP)
    assert await services(store, keep).retention.sweep() == 11
    assert writes == [2, 2, 1, 2, 1, 2, 1]
    assert await store.find_all(MeterSample, ALL) == []
    assert await store.find_all(StatusEvent, ALL) == []
    assert await store.find_all(ConnectionEvent, ALL) == []


async def test_a_late_stop_s_samples_are_not_swept_from_under_its_write(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review r32-g: a stop arriving after the retention (a charger's queue sent weeks
    late) makes its session prunable by its close. On MongoDB a write's changes land one
    by one, and the session's came before the samples' it changes: another instance's
    sweep landing in between deleted the sample whose increment the stop lowers, the
    stop's write failed on it and rolled back, and its retry billed a session whose
    samples were gone. The samples' changes land first now: by the time the session is
    closed, the stop's write has nothing left to do to them."""
    clock = Clock()
    a = instance(store, clock)
    swept: list[int] = []

    async def sweep() -> None:
        other = Services(ServiceContext(store=store, policy=Policy(), hasher=FastHasher(),
                                        clock=clock), retention=Retention(meter_samples=KEEP))
        swept.append(await other.retention.sweep())

    driver = await a.accounts.create_user(SYSTEM, email="d@example.com",
                                          password="password-123", name="d",
                                          role=Role.DRIVER)
    await a.fleet.issue_id_tag(Viewer.of(driver), tag="TAG-1")
    await a.stations.create_station(SYSTEM, cp_id="CP-L", name="CP-L",
                                    connectors=[ConnectorSpec(1)])
    charging = a.charging
    tx, _ = await charging.start_transaction("CP-L", 1, "TAG-1", 0, T0)
    for wh, seconds in ((1000, 600), (9000, 1800)):  # the second believable, yet wrong
        await charging.meter_values("CP-L", 1, tx, [MeterReading(
            T0 + timedelta(seconds=seconds),
            (SampledValue(str(wh), "Energy.Active.Import.Register", "Wh"),))])
    clock.now = T0 + KEEP + timedelta(days=10)  # the stop comes that late

    def closes(change: object) -> bool:
        return isinstance(change, Update) and isinstance(change.record, Session) \
            and change.record.state is SessionState.COMPLETED
    right_after(store, monkeypatch, closes, sweep)
    await charging.stop_transaction("CP-L", tx, 2000, T0 + timedelta(seconds=3000))
    [closed] = await store.find_all(Session, Eq("transaction_id", tx))
    samples = await store.find_all(MeterSample, Eq("session_id", closed.id))
    # The sweep ran between the session's close and the rest of the write (on SQLite,
    # after it) and took the session's curve whole, the stop's first write holding: not
    # rolled back and retried over the samples left, whose closing sample took back, as
    # -7000 Wh, the increment the sweep had deleted.
    assert swept == [2]
    assert (closed.energy_wh, closed.state) == (2000, SessionState.COMPLETED)
    assert [s.delta_wh for s in samples] == []
