"""Payments an instance of the version before migration 41 opens during a rolling upgrade
(it shares the database with new ones) lack their session's charger, connector and
vehicle, which revenue reads from the payment itself: housekeeping
(``PaymentService.fill_charger_fields``) gives them their session's, on every backend.

Over ``tests/support/late_stops.py``: a 4 kWh session on CP-LATE c1 (company A, the
driver's car) ended by A's operator, 2.00 EUR."""

from __future__ import annotations

import contextlib
import sqlite3
from datetime import timedelta

from bson import ObjectId

from domain import entities as d
from domain.ports import Store
from domain.services.analytics import GroupBy, Scope
from domain.services.payments import CHARGER_FIELDS
from domain.timebuckets import Bucket
from store.sqlite import SqliteStore
from tests.contract.test_billed_revenue import at, day, late  # noqa: F401 (fixture)
from tests.support.late_stops import CP, JULY_1, LateStops


async def opened_by_an_older_version(store: Store, payment: d.Payment) -> None:
    """``payment`` stored again as the version before migration 41 inserts one: SQLite's
    INSERT names no charger columns (they hold NULL), MongoDB's document has no such
    fields."""
    if isinstance(store, SqliteStore):
        with contextlib.closing(sqlite3.connect(store.path)) as conn, conn:
            conn.row_factory = sqlite3.Row
            row = dict(conn.execute('SELECT * FROM "payment" WHERE "id" = ?',
                                    (payment.id,)).fetchone())
            old = {name: value for name, value in row.items() if name not in CHARGER_FIELDS}
            conn.execute('DELETE FROM "payment" WHERE "id" = ?', (payment.id,))
            names = ", ".join(f'"{name}"' for name in old)
            marks = ", ".join("?" for _ in old)
            conn.execute(f'INSERT INTO "payment" ({names}) VALUES ({marks})',
                         tuple(old.values()))
        return
    payments = store.db["payment"]  # type: ignore[attr-defined]
    doc = await payments.find_one({"_id": ObjectId(payment.id)})
    await payments.delete_one({"_id": doc["_id"]})
    await payments.insert_one({k: v for k, v in doc.items() if k not in CHARGER_FIELDS})


async def by_connector(h: LateStops, who: str) -> list[tuple[str | None, int | None, int]]:
    """2025-07-01's revenue per charger and connector, as ``who`` sees it."""
    rows = await h.services.analytics.energy_trend(
        h.viewer(who), Scope(), JULY_1, JULY_1 + timedelta(days=1), Bucket.DAY,
        group_by=GroupBy.CONNECTOR)
    return [(r.cp_id, r.connector_id, r.revenue_minor) for r in rows]


async def test_a_payment_an_older_version_opened_gets_its_session_s_charger(
        late: LateStops, store: Store) -> None:  # noqa: F811 (the fixture)
    tx, payment = await late.ended_by_the_operator(at(10), at(11))
    await opened_by_an_older_version(store, payment)
    before = await late.payment(tx)
    assert (before.cp_id, before.connector_id, before.vehicle_id) == (None, None, None)
    car = Scope(vehicle_id=late.vehicle.id)
    # What it cost: missing from the car's revenue, grouped under no charger (the
    # connector has its energy, from the session, and none of the money).
    assert await day(late, "driver", car) == (0, 0, 0)
    assert await by_connector(late, "op_a") == [(None, None, 200), (CP, 1, 0)]

    late.clock.now = at(11, 5)
    assert await late.services.payments.fill_charger_fields() == 1
    after = await late.payment(tx)
    assert (after.cp_id, after.connector_id, after.vehicle_id) == (CP, 1, late.vehicle.id)
    # Nobody's change: its stamps (a refund's guard) stay as they were.
    assert (after.updated_at, after.updated_by) == (before.updated_at, before.updated_by)
    assert await day(late, "driver", car) == (200, 0, 200)
    assert await day(late, "admin", car) == (200, 0, 200)
    assert await by_connector(late, "op_a") == [(CP, 1, 200)]
    assert await late.services.payments.fill_charger_fields() == 0  # nothing left


async def test_a_later_round_finds_one_dated_before_the_round_before_it_began(
        late: LateStops, store: Store) -> None:  # noqa: F811 (the fixture)
    """An older instance's clock is behind ours (or its write was still in flight): the
    payment it stores after a round is dated before that round began. The next round
    looks back far enough to find it."""
    tx, payment = await late.ended_by_the_operator(at(10), at(11))
    late.clock.now = at(11, 3)
    assert await late.services.payments.fill_charger_fields() == 0
    await opened_by_an_older_version(store, payment)  # dated 11:00, stored after 11:03
    late.clock.now = at(11, 8)
    assert await late.services.payments.fill_charger_fields() == 1
    assert (await late.payment(tx)).cp_id == CP
