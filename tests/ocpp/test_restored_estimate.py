"""A restored session's estimate ends where any close bills it: at its last reading while
it is unheard since the restore (review r27-restore2: it ran on to now)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from domain import entities as d
from domain.policy import SYSTEM
from domain.query import Eq
from ocpp_bridge.simulator import connected
from store.sqlite.backup import backup, restore
from tests.helpers import graphql_in_process
from tests.ocpp.conftest import STATION_PASSWORD, seed, start_central
from tests.ocpp.test_lost_sessions import meter, start, stopping

ESTIMATE = "{ sessions(first: 5) { nodes { transactionId estimatedCost { amountMinor } } } }"


async def test_estimated_cost_of_a_restored_session_matches_what_any_close_bills(
        tmp_path: Path) -> None:
    """A session a restore brought back open, not heard of since, is billed to its last
    reading whatever closes it (``end_without_stop``: the restore's check, a newer start,
    a reboot's check, ``endSession`` by default). Its ``estimatedCost`` (shown to its
    driver and its operator while it is ACTIVE, "where endSession would bill it") still
    runs to now: hours (days, for an older backup) of a per-minute price that nothing
    will ever bill."""
    database, copy = tmp_path / "central.db", tmp_path / "backup.db"
    first = await start_central(database)
    await seed(first)
    now = datetime.now(UTC)
    await first.services.tariffs.set_tariff(
        SYSTEM, station_id=first.stations["CP-1"].id, price_per_kwh=Decimal("0.40"),
        price_per_minute=Decimal("0.10"), currency="EUR",
        valid_from=now - timedelta(days=1))
    async with connected(first.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        tx = await start(cp, 1000, now - timedelta(hours=2, minutes=10))
        await meter(cp, tx, 4000, now - timedelta(hours=2))
        await cp.status(1, "Charging")
    await stopping(first)
    backup(database, copy)
    restore(copy, database)

    second = await start_central(database)
    try:
        admin = await second.store.find_one(d.User, Eq("email", "admin@example.com"))
        assert admin is not None
        data = await graphql_in_process(second.services, second.tokens, ESTIMATE, None,
                                        admin.id)
        [estimate] = [s["estimatedCost"]["amountMinor"]
                      for s in data["sessions"]["nodes"] if s["transactionId"] == tx]
        session = await second.session(tx)
        assert session is not None and session.open_at_restore is not None
        ended = await second.services.charging.end_session(SYSTEM, session.id)
        assert ended.cost_minor is not None
        print("estimate", estimate, "billed", ended.cost_minor, ended.start_time,
              ended.end_time)
        # Billed: 3 kWh at 0.40 + 10 min at 0.10 = 2.20. Estimated: 2 h 10 min of it.
        assert abs(int(estimate) - ended.cost_minor) <= 20, (estimate, ended.cost_minor)
    finally:
        await stopping(second)
