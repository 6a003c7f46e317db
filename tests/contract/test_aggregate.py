"""``Store.aggregate``: group keys and metrics computed in the database, hand-checked."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from domain.aggregation import (
    ByField,
    ByTime,
    Count,
    Max,
    Metric,
    Min,
    OverlapSeconds,
    Sum,
)
from domain.entities import (
    ConnectorInterval,
    ConnectorStatus,
    MeterSample,
    Session,
    SessionState,
)
from domain.ids import new_id
from domain.ports import Insert, Store
from domain.query import ALL, Eq, Range
from domain.timebuckets import Bucket, plan

T0 = datetime(2026, 3, 28, 22, 0, tzinfo=UTC)  # the night Berlin moves to summer time


def sample(at: datetime, delta: int, cp: str = "CP-1") -> MeterSample:
    return MeterSample(session_id=new_id(), cp_id=cp, connector_id=1, at=at,
                       measurand="Energy.Active.Import.Register", value=0.0, delta_wh=delta)


async def put(store: Store, *records) -> None:  # type: ignore[no-untyped-def]
    await store.write([Insert(r) for r in records], [])


async def test_group_by_field_with_count_sum_min_max(store: Store) -> None:
    station = new_id()
    sessions = [Session(transaction_id=i, station_id=station, cp_id=cp, connector_id=1,
                        id_tag="T", start_time=T0 + timedelta(hours=i), meter_start_wh=0,
                        energy_wh=energy, state=SessionState.COMPLETED)
                for i, (cp, energy) in enumerate([("A", 100), ("A", 250), ("B", 40)], 1)]
    await put(store, *sessions)
    rows = await store.aggregate(Session, ALL, [ByField("cp_id")],
                                 {"n": Count(), "wh": Sum("energy_wh"),
                                  "first": Min("start_time"), "last": Max("start_time")})
    by_cp = {r["g0"]: r for r in rows}
    assert by_cp["A"]["n"] == 2 and by_cp["A"]["wh"] == 350
    assert by_cp["A"]["first"] == T0 + timedelta(hours=1)
    assert by_cp["A"]["last"] == T0 + timedelta(hours=2)
    assert by_cp["B"] == {"g0": "B", "n": 1, "wh": 40, "first": T0 + timedelta(hours=3),
                          "last": T0 + timedelta(hours=3)}


async def test_sums_of_whole_numbers_stay_exact_beyond_two_to_the_53(store: Store) -> None:
    """Amounts in minor units add up exactly, as each session's does; and a sum over no
    rows is 0."""
    big = 2**53 + 1
    station = new_id()
    await put(store, *(Session(transaction_id=i, station_id=station, cp_id="A",
                               connector_id=1, id_tag="T", start_time=T0, meter_start_wh=0,
                               cost_minor=cost, currency="EUR", state=SessionState.COMPLETED)
                       for i, cost in enumerate([big, 2], 1)))
    [row] = await store.aggregate(Session, ALL, [], {"minor": Sum("cost_minor")})
    assert row["minor"] == big + 2 and isinstance(row["minor"], int)
    [none] = await store.aggregate(Session, Eq("cp_id", "nobody"), [],
                                   {"minor": Sum("cost_minor")})
    assert none["minor"] == 0


async def test_time_buckets_with_offsets(store: Store) -> None:
    # Berlin: UTC+1 until 2026-03-29 01:00 UTC, UTC+2 after.
    switch = datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
    await put(store,
              sample(T0 + timedelta(minutes=30), 10),  # 23:30 local, day 28
              sample(T0 + timedelta(hours=1, minutes=30), 20),  # 00:30 local, day 29
              sample(switch + timedelta(hours=20, minutes=59), 40),  # 23:59 CEST, day 29
              sample(switch + timedelta(hours=21), 80))  # 00:00 CEST, day 30
    day = ByTime("at", offsets=((T0, 3600), (switch, 7200)), size_s=86400)
    rows = await store.aggregate(MeterSample, ALL, [day], {"wh": Sum("delta_wh")})
    local_day = {r["g0"]: r["wh"] for r in rows}
    base = (datetime(2026, 3, 28, tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)).days
    assert local_day == {base: 10, base + 1: 60, base + 2: 80}


async def test_time_buckets_by_boundaries_and_window(store: Store) -> None:
    await put(store, sample(T0, 1), sample(T0 + timedelta(days=3), 2),
              sample(T0 + timedelta(days=20), 4))  # April 17
    months = ByTime("at", boundaries=(datetime(2026, 3, 1, tzinfo=UTC),
                                      datetime(2026, 4, 1, tzinfo=UTC),
                                      datetime(2026, 5, 1, tzinfo=UTC)))
    rows = await store.aggregate(
        MeterSample, Range("at", gte=datetime(2026, 3, 1, tzinfo=UTC),
                           lt=datetime(2026, 6, 1, tzinfo=UTC)),
        [months], {"wh": Sum("delta_wh"), "n": Count()})
    assert {r["g0"]: (r["wh"], r["n"]) for r in rows} == {0: (3, 2), 1: (4, 1)}


async def test_time_buckets_closed_on_the_right(store: Store) -> None:
    """``ByTime.closed_right``: an instant on a boundary is in the bucket that ends there,
    for fixed sizes and boundaries alike, with the keys the plan gives the buckets'
    starts; an instant where the offset changes is in the stretch before it. Havana
    moves from UTC-5 to UTC-4 at local midnight (2026-03-08 05:00 UTC): that instant
    ends March 7 (on its offset, 00:00 of the 8th; on the new one, 01:00 of the 8th)."""
    havana = ZoneInfo("America/Havana")
    change = datetime(2026, 3, 8, 5, 0, tzinfo=UTC)
    second = timedelta(seconds=1)
    await put(store, sample(change - second, 1, cp="DAY"), sample(change, 2, cp="DAY"),
              sample(change + second, 4, cp="DAY"),
              sample(T0, 8, cp="HOUR"), sample(T0 + second, 16, cp="HOUR"),
              sample(T0 + timedelta(hours=1), 32, cp="HOUR"),
              sample(datetime(2026, 3, 1, tzinfo=UTC), 64, cp="MONTH"),
              sample(datetime(2026, 4, 1, tzinfo=UTC), 128, cp="MONTH"),
              sample(datetime(2026, 4, 1, tzinfo=UTC) + second, 256, cp="MONTH"))
    start, end = datetime(2026, 3, 6, tzinfo=UTC), datetime(2026, 3, 10, tzinfo=UTC)
    berlin = ZoneInfo("Europe/Berlin")
    cases = (("DAY", plan("at", Bucket.DAY, havana, start, end, closed_right=True),
              {datetime(2026, 3, 7, 5, tzinfo=UTC): 3, change: 4}),
             ("HOUR", plan("at", Bucket.HOUR, berlin, T0 - timedelta(hours=2),
                           T0 + timedelta(hours=2), closed_right=True),
              {T0 - timedelta(hours=1): 8, T0: 48}),
             ("MONTH", plan("at", Bucket.MONTH, ZoneInfo("UTC"),
                            datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 5, 1, tzinfo=UTC),
                            closed_right=True),
              {datetime(2026, 2, 1, tzinfo=UTC): 64, datetime(2026, 3, 1, tzinfo=UTC): 128,
               datetime(2026, 4, 1, tzinfo=UTC): 256}))
    for cp, bucketed, want in cases:
        assert bucketed.grouping.closed_right
        rows = await store.aggregate(MeterSample, Eq("cp_id", cp), [bucketed.grouping],
                                     {"wh": Sum("delta_wh")})
        assert {bucketed.start_of(r["g0"]): r["wh"] for r in rows} == want, cp
    # Closed on the left (the default), the same samples start the buckets.
    left = plan("at", Bucket.DAY, havana, start, end)
    rows = await store.aggregate(MeterSample, Eq("cp_id", "DAY"), [left.grouping],
                                 {"wh": Sum("delta_wh")})
    assert {left.start_of(r["g0"]): r["wh"] for r in rows} == {
        datetime(2026, 3, 7, 5, tzinfo=UTC): 1, change: 6}


async def test_overlap_seconds_with_open_intervals(store: Store) -> None:
    station = new_id()

    def interval(status: ConnectorStatus, start_h: float, end_h: float | None
                 ) -> ConnectorInterval:
        return ConnectorInterval(
            station_id=station, cp_id="CP-1", connector_id=1, status=status,
            start=T0 + timedelta(hours=start_h),
            end=T0 + timedelta(hours=end_h) if end_h is not None else None)

    await put(store, interval(ConnectorStatus.CHARGING, 0, 2),
              interval(ConnectorStatus.AVAILABLE, 2, 5),
              interval(ConnectorStatus.CHARGING, 5, None))
    lo, hi = T0 + timedelta(hours=1), T0 + timedelta(hours=10)
    metric = OverlapSeconds("start", "end", lo, hi, open_end=T0 + timedelta(hours=8))
    rows = await store.aggregate(ConnectorInterval, ALL, [ByField("status")], {"s": metric})
    seconds = {r["g0"]: r["s"] for r in rows}
    # charging: 1h (1..2) + 3h (5..8, open until "now" = 8h); available: 3h (2..5)
    assert seconds == {ConnectorStatus.CHARGING: 4 * 3600.0,
                       ConnectorStatus.AVAILABLE: 3 * 3600.0}


async def test_overlap_seconds_open_records_end_at_their_own_now(store: Store) -> None:
    """With ``since``, a record still going lasts until its start plus what our clock saw
    since ``since``: records on a clock 3 h behind ours (a charger's) and 1970 (a clock
    never set) count what our clock saw, not up to our "now" on their timeline; a closed
    record keeps its end, and one without ``since`` (stored before it was kept) counts
    up to ``open_end`` as before."""
    now, station = T0 + timedelta(hours=8), new_id()

    def interval(connector: int, start: datetime, end: datetime | None,
                 observed_at: datetime | None) -> ConnectorInterval:
        return ConnectorInterval(station_id=station, cp_id="CP-1", connector_id=connector,
                                 status=ConnectorStatus.CHARGING, start=start, end=end,
                                 observed_at=observed_at)

    behind = now - timedelta(hours=3)
    never_set = datetime(1970, 1, 1, 0, 0, 5, tzinfo=UTC)
    await put(store,
              # Opened 20 s ago on our clock, stamped 3 h behind.
              interval(1, behind - timedelta(seconds=20), None, now - timedelta(seconds=20)),
              # Closed: its end stands, whatever its clock.
              interval(2, behind - timedelta(hours=1), behind, now - timedelta(hours=1)),
              interval(3, never_set, None, now - timedelta(minutes=10)),
              # Stored before ``observed_at``: up to our now, as before.
              interval(4, now - timedelta(hours=2), None, None))
    for lo, hi, want in (
            (T0, T0 + timedelta(hours=24), {1: 20.0, 2: 3600.0, 3: 0.0, 4: 7200.0}),
            (datetime(1970, 1, 1, tzinfo=UTC), datetime(1970, 1, 2, tzinfo=UTC),
             {1: 0.0, 2: 0.0, 3: 600.0, 4: 0.0})):
        metric = OverlapSeconds("start", "end", lo, hi, open_end=now, since="observed_at")
        rows = await store.aggregate(ConnectorInterval, ALL, [ByField("connector_id")],
                                     {"s": metric})
        assert {r["g0"]: r["s"] for r in rows} == want

async def test_no_group_gives_one_row_even_without_matches(store: Store) -> None:
    rows = await store.aggregate(MeterSample, Eq("cp_id", "nope"), [],
                                 {"n": Count(), "wh": Sum("delta_wh")})
    assert rows == [{"n": 0, "wh": 0.0}]


async def test_time_buckets_floor_before_their_origin(store: Store) -> None:
    # Keys are floor(local seconds / size), also where local seconds fall before the
    # bucket origin: weeks count from Monday 1970-01-05, so 1970-01-02 is in week -1
    # (from Monday 1969-12-29); and on New York's 1970-01-01 (UTC-5) the first hours of
    # UTC are still the last day of 1969 locally.
    jan = datetime(1970, 1, 1, tzinfo=UTC)
    await put(store, sample(jan + timedelta(days=1), 2000, cp="WEEK"),
              sample(jan + timedelta(hours=2), 10, cp="NY"),
              sample(jan + timedelta(hours=6), 20, cp="NY"),
              sample(jan - timedelta(milliseconds=500), 40, cp="HOUR"))
    week = plan("at", Bucket.WEEK, ZoneInfo("UTC"), jan, jan + timedelta(days=14))
    assert week.keys == (-1, 0, 1)
    rows = await store.aggregate(MeterSample, Eq("cp_id", "WEEK"), [week.grouping],
                                 {"wh": Sum("delta_wh")})
    assert [(week.start_of(r["g0"]), r["wh"]) for r in rows] == [
        (datetime(1969, 12, 29, tzinfo=UTC), 2000)]
    new_york = ZoneInfo("America/New_York")
    day = plan("at", Bucket.DAY, new_york, jan, jan + timedelta(days=1))
    rows = await store.aggregate(MeterSample, Eq("cp_id", "NY"), [day.grouping],
                                 {"wh": Sum("delta_wh")})
    assert sorted((day.start_of(r["g0"]), r["wh"]) for r in rows) == [
        (datetime(1969, 12, 31, 5, tzinfo=UTC), 10), (datetime(1970, 1, 1, 5, tzinfo=UTC), 20)]
    # Half a second before 1970 is in the hour before it, not the one from 00:00.
    hour = ByTime("at", offsets=((jan, 0),), size_s=3600)
    rows = await store.aggregate(MeterSample, Eq("cp_id", "HOUR"), [hour],
                                 {"wh": Sum("delta_wh")})
    assert [(r["g0"], r["wh"]) for r in rows] == [(-1, 40)]


async def test_a_record_whose_bucket_field_is_null_is_in_no_time_bucket(store: Store
                                                                        ) -> None:
    """``Store.aggregate``: an active session (``end_time`` null) bucketed by its end is
    left out. SQLite put it in the last of the boundaries' buckets and failed on a
    fixed size's (a null key); MongoDB put it in bucket 0."""
    station = new_id()

    def ended(transaction_id: int, hours: float | None) -> Session:
        return Session(transaction_id=transaction_id, station_id=station, cp_id="A",
                       connector_id=transaction_id, id_tag="T", start_time=T0,
                       meter_start_wh=0, energy_wh=100 * transaction_id,
                       end_time=T0 + timedelta(hours=hours) if hours is not None else None,
                       state=SessionState.COMPLETED if hours is not None
                       else SessionState.ACTIVE)

    await put(store, ended(1, 2), ended(2, 30), ended(3, None))
    metrics: dict[str, Metric] = {"n": Count(), "wh": Sum("energy_wh")}
    days = ByTime("end_time", boundaries=(T0, T0 + timedelta(days=1)))
    rows = await store.aggregate(Session, ALL, [days], metrics)
    assert {r["g0"]: (r["n"], r["wh"]) for r in rows} == {0: (1, 100), 1: (1, 200)}

    sized = ByTime("end_time", size_s=86400, origin_s=int(T0.timestamp()))
    rows = await store.aggregate(Session, ALL, [sized], metrics)
    assert {r["g0"]: (r["n"], r["wh"]) for r in rows} == {0: (1, 100), 1: (1, 200)}

    by_plug = await store.aggregate(Session, ALL, [ByField("connector_id"), sized], metrics)
    assert {(r["g0"], r["g1"]): r["n"] for r in by_plug} == {(1, 0): 1, (2, 1): 1}
    only_active = await store.aggregate(Session, Eq("state", SessionState.ACTIVE), [sized],
                                        metrics)
    assert only_active == []
