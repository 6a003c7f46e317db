"""Everything a station's charger reports crossing a handover goes to whoever has the
station once the handover is told, never to the company it left (QA s26): every
company-scoped subscription feed, not only the live map's connection feed. Two
instances on one SQLite file and one real Redis: A, where an admin hands the station
over; B, holding the charger, whose report read the station before the handover and
is published after it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from domain.clock import utcnow
from domain.entities import Company, Role
from domain.events import (
    ConnectorStatusChanged,
    FaultReported,
    SessionChanged,
    StationSightChanged,
)
from domain.policy import SYSTEM, Policy, Viewer
from domain.services import ConnectorSpec, ServiceContext, Services
from pubsub.redis import RedisEventBus
from store.sqlite import SqliteStore
from tests.helpers import FastHasher
from tests.support.redis_server import RedisServer

CP = "CP-FEEDS"


@dataclass
class Instances:
    a: Services  # where the admin hands the station over
    b: Services  # holding the charger
    alpha: Company
    beta: Company
    station_id: str


@pytest.fixture
async def instances(tmp_path: Path) -> AsyncIterator[Instances]:
    redis = RedisServer().start()
    buses = [RedisEventBus(redis.url, channel_prefix="feeds:") for _ in range(2)]
    stores = [SqliteStore(str(tmp_path / "shared.db")) for _ in range(2)]
    try:
        for bus, store in zip(buses, stores, strict=True):
            await bus.start()
            await store.start()
        a, b = (Services(ServiceContext(store=store, policy=Policy(), hasher=FastHasher(),
                                        bus=bus)) for store, bus in zip(stores, buses,
                                                                        strict=True))
        alpha = await a.accounts.create_company(SYSTEM, name="Alpha")
        beta = await a.accounts.create_company(SYSTEM, name="Beta")
        station, _ = await a.stations.create_station(
            SYSTEM, cp_id=CP, name="Feeds", company_id=alpha.id,
            connectors=[ConnectorSpec(1, max_kw=50)])
        await b.charging.set_online(CP, True)
        yield Instances(a, b, alpha, beta, station.id)
    finally:
        for bus in buses:
            await bus.close()
        for store in stores:
            await store.close()
        redis.cleanup()


def operator_of(company: Company) -> Viewer:
    return Viewer(user_id=f"op-{company.name}", role=Role.OPERATOR, company_id=company.id)


async def told(events: AsyncIterator[Any]) -> list[Any]:
    """What a subscription got until it went quiet."""
    got: list[Any] = []
    while True:
        try:
            got.append(await asyncio.wait_for(events.__anext__(), 0.5))
        except (TimeoutError, StopAsyncIteration):
            return got


def handed_over_while_read(x: Instances, then: Callable[[], Awaitable[Any]] | None = None
                           ) -> None:
    """B's next read of the charger's station (cached or not) returns it as it was, and
    right then an admin on A hands the station to Beta (its announcement published to
    Redis before B goes on). ``then``: run after the handover, before B goes on."""
    charging = x.b.charging
    read = charging._require_station
    done = False

    async def hooked(cp_id: str, **kw: Any) -> Any:
        nonlocal done
        got = await read(cp_id, **kw)
        if not done:
            done = True
            await x.a.stations.update_station(SYSTEM, x.station_id, company_id=x.beta.id)
            if then is not None:
                await then()
        return got

    charging._require_station = hooked  # type: ignore[method-assign]


async def test_a_plug_status_read_before_a_handover_reaches_the_new_company(
        instances: Instances) -> None:
    """The charger reports its plug Faulted; B read the station (Alpha's) just before
    an admin on A handed it to Beta, and publishes after. Alpha's connectorStatusChanged
    and faultReported feeds (on either instance) are told nothing of it; Beta's are,
    and a feed that did not ask for the handover is not told it."""
    x = instances
    topics = [ConnectorStatusChanged.topic, FaultReported.topic]
    feeds = {(name, where): services.live.events(operator_of(company), topics)
             for name, company in (("Alpha", x.alpha), ("Beta", x.beta))
             for where, services in (("A", x.a), ("B", x.b))}
    handed_over_while_read(x)
    await x.b.charging.status_notification(CP, 1, "Faulted", "GroundFailure")
    got = {key: sorted(type(e).__name__ for e in await told(feed))
           for key, feed in feeds.items()}
    assert got[("Alpha", "A")] == got[("Alpha", "B")] == [], got
    assert got[("Beta", "A")] == got[("Beta", "B")] == [
        "ConnectorStatusChanged", "FaultReported"], got


async def test_a_session_handed_over_mid_charge_stays_with_its_books(
        instances: Instances) -> None:
    """The feeds that now read handovers do not re-own what is judged by its books: a
    session started under Alpha and metered after the handover is still Alpha's live
    (Alpha bills it), not Beta's."""
    x = instances
    await x.b.charging.status_notification(CP, 1, "Available", "NoError")
    transaction_id, _ = await x.b.charging.start_transaction(
        CP, 1, "FREE-TAG", 1000, timestamp=utcnow())
    topics = [SessionChanged.topic, ConnectorStatusChanged.topic, StationSightChanged.topic]
    feeds = {name: x.a.live.events(operator_of(company), topics)
             for name, company in (("Alpha", x.alpha), ("Beta", x.beta))}
    await x.a.stations.update_station(SYSTEM, x.station_id, company_id=x.beta.id)
    await asyncio.sleep(0.2)  # B hears of it (its cache too)
    await x.b.charging.stop_transaction(CP, transaction_id, 5000,
                                        timestamp=utcnow())
    got = {name: [type(e).__name__ for e in await told(feed)]
           for name, feed in feeds.items()}
    assert "SessionChanged" in got["Alpha"], got
    assert "SessionChanged" not in got["Beta"], got
