"""Everything a station's charger reports crossing a handover goes to whoever has the
station once the handover is told, never to the company it left (QA s26): every
company-scoped subscription feed, not only the live map's connection feed. Two
instances on one SQLite file and one real Redis: A, where an admin hands the station
over; B, holding the charger, whose report read the station before the handover and
is published after it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from chargegraph.webhooks import WebhookDispatcher
from domain.clock import utcnow
from domain.entities import Company, Role, Station
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
from tests.helpers import FastHasher, until
from tests.support.redis_server import RedisServer
from tests.webhooks.receiver import Receiver

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
                                        bus=bus), webhooks_allow_private=True)
                for store, bus in zip(stores, buses, strict=True))
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


async def handed_back_unheard_on_b(x: Instances) -> None:
    """Alpha -> Beta, heard on B; then B's Redis listener loses its connection (it tells
    its local subscribers so: ``EventsDropped(interrupted=True)``), an admin on A hands
    the station back to Alpha meanwhile, whose announcement B never gets, and the
    listener is back (told again)."""
    heard = heard_on_b(x)
    await x.a.stations.update_station(SYSTEM, x.station_id, company_id=x.beta.id)
    await heard()
    await asyncio.sleep(0.2)
    bus: Any = x.b.ctx.bus
    dispatch = bus._dispatch
    bus.local.interrupt()
    bus._dispatch = lambda message: None
    try:
        await x.a.stations.update_station(SYSTEM, x.station_id, company_id=x.alpha.id)
        await asyncio.sleep(0.3)
    finally:
        bus._dispatch = dispatch
    bus.local.interrupt()  # reconnected
    await asyncio.sleep(0.2)


async def test_a_live_feed_across_a_lost_handover_does_not_tell_the_old_company(
        instances: Instances) -> None:
    """Beta's operator's ``faultReported``/``connectorStatusChanged`` subscription, open
    across a handover back to Alpha that B missed in a Redis outage: the charger's fault
    afterwards (B's read finds Alpha's station) is not told to Beta, which no longer has
    the station (review s26: the feed kept the handover to Beta as the newest for good,
    and re-owned every event of the station to Beta)."""
    x = instances
    topics = [ConnectorStatusChanged.topic, FaultReported.topic]
    feeds = {name: x.b.live.events(operator_of(company), topics)
             for name, company in (("Alpha", x.alpha), ("Beta", x.beta))}
    await handed_back_unheard_on_b(x)
    await x.b.charging.status_notification(CP, 1, "Faulted", "GroundFailure")
    got = {name: sorted(type(e).__name__ for e in await told(feed)
                        if type(e).__name__ != "EventsDropped")
           for name, feed in feeds.items()}
    assert got["Beta"] == [], got
    assert got["Alpha"] == ["ConnectorStatusChanged", "FaultReported"], got


async def handed_back_with_a_failed_publish(x: Instances) -> None:
    """Alpha -> Beta, heard on B; then an admin on A hands the station back to Alpha
    while A's PUBLISH of the handover fails (A's own link to Redis: B's subscription
    never breaks, so B is told nothing was lost). Then B's copy of the station, which
    the lost announcement did not drop either, expires (``CACHE_TTL_S``): B's reads
    find Alpha's station again."""
    heard = heard_on_b(x)
    await x.a.stations.update_station(SYSTEM, x.station_id, company_id=x.beta.id)
    await heard()
    await asyncio.sleep(0.2)
    bus: Any = x.a.ctx.bus
    publisher = bus._publisher
    publish = publisher.publish

    async def failing(channel: Any, payload: Any) -> Any:
        if "station_sight" in str(channel):
            raise RedisConnectionError("Connection reset by peer")
        return await publish(channel, payload)

    publisher.publish = failing
    try:
        await x.a.stations.update_station(SYSTEM, x.station_id, company_id=x.alpha.id)
        await asyncio.sleep(0.3)
    finally:
        publisher.publish = publish
    await asyncio.sleep(0.2)
    x.b.charging.cache._stations.clear()  # expired
    [station] = await x.b.ctx.store.get_many(Station, [x.station_id])
    assert station is not None and station.company_id == x.alpha.id


async def test_a_live_feed_after_a_handover_whose_publish_failed_goes_by_the_fresh_read(
        instances: Instances) -> None:
    """The handover back to Alpha never reached B (its publish failed on A, and B's
    subscription never broke: no ``EventsDropped``). The charger's fault afterwards,
    which B reads afresh (Alpha's station, a newer version than the handover B heard),
    is Alpha's, not Beta's (review s26: the feed kept the handover to Beta as the newest
    for good, and marker-driven forgetting never ran)."""
    x = instances
    topics = [ConnectorStatusChanged.topic, FaultReported.topic]
    feeds = {name: x.b.live.events(operator_of(company), topics)
             for name, company in (("Alpha", x.alpha), ("Beta", x.beta))}
    await handed_back_with_a_failed_publish(x)
    await x.b.charging.status_notification(CP, 1, "Faulted", "GroundFailure")
    got = {name: sorted(type(e).__name__ for e in await told(feed)
                        if type(e).__name__ != "EventsDropped")
           for name, feed in feeds.items()}
    assert got["Beta"] == [], got
    assert got["Alpha"] == ["ConnectorStatusChanged", "FaultReported"], got


# ------------------------------------------------------------------------ webhooks
# Delivered by the instance that published the event (B), to receivers on 127.0.0.1.

WEBHOOK_EVENTS = ["station.offline", "station.online", "connector.status_changed",
                  "fault.reported"]


@dataclass
class Hooks:
    dispatcher: WebhookDispatcher
    receivers: dict[str, Receiver]

    def told(self, name: str) -> list[str]:
        return sorted(r.json["type"] for r in self.receivers[name].requests)


@contextlib.asynccontextmanager
async def webhooks_on_b(x: Instances, **options: Any) -> AsyncIterator[Hooks]:
    """Alpha's and Beta's operators each keep a webhook of ``WEBHOOK_EVENTS``; B
    delivers what it publishes."""
    receivers: dict[str, Receiver] = {}
    for company in (x.alpha, x.beta):
        operator = await x.a.accounts.create_user(
            SYSTEM, email=f"op@{company.name.lower()}.example", password="password-123",
            name=f"op {company.name}", role=Role.OPERATOR, company_id=company.id)
        receivers[company.name] = receiver = await Receiver().start()
        await x.a.webhooks.create_webhook(Viewer.of(operator), url=receiver.url,
                                          events=WEBHOOK_EVENTS)
    dispatcher = WebhookDispatcher(x.b, allow_private=True, tries=1, backoff=(0.01,),
                                   **options)
    await dispatcher.start()
    try:
        yield Hooks(dispatcher, receivers)
    finally:
        await dispatcher.close()
        for receiver in receivers.values():
            await receiver.close()


def heard_on_b(x: Instances) -> Callable[[], Awaitable[None]]:
    """Waits until B's bus has carried the handover from A: what B publishes from then
    on, in Redis's order, comes after it."""
    assert x.b.ctx.bus is not None
    probe: Any = x.b.ctx.bus.subscribe([StationSightChanged.topic])

    async def heard() -> None:
        await asyncio.wait_for(probe.__anext__(), 5)
        await asyncio.wait_for(probe.__anext__(), 5)  # left, then joined
        await probe.aclose()
    return heard


async def delivered(hooks: Hooks) -> None:
    await asyncio.sleep(0.3)
    await until(lambda: asyncio.sleep(0, hooks.dispatcher.idle))


async def test_a_disconnect_read_before_a_handover_is_the_new_companys_webhook(
        instances: Instances) -> None:
    """B records the charger's disconnect: its read found Alpha's station, then an admin
    on A handed it to Beta, and B heard of it before it published the disconnect.
    ``station.offline`` goes to Beta's receiver (its live maps are told so too), not
    to Alpha's, which no longer has the station."""
    x = instances
    async with webhooks_on_b(x) as hooks:
        charging = x.b.charging
        read, done = charging.station, False
        heard = heard_on_b(x)

        async def hooked(cp_id: str) -> Any:
            nonlocal done
            got = await read(cp_id)
            if not done:
                done = True
                await x.a.stations.update_station(SYSTEM, x.station_id,
                                                  company_id=x.beta.id)
                await heard()
            return got

        charging.station = hooked  # type: ignore[method-assign]
        [station] = await x.b.ctx.store.get_many(Station, [x.station_id])
        assert station is not None
        assert await charging.disconnect(CP, number=station.connection)
        await delivered(hooks)
        assert hooks.told("Alpha") == [], hooks.told("Alpha")
        assert hooks.told("Beta") == ["station.offline"], hooks.told("Beta")


async def test_a_plug_report_read_before_a_handover_is_the_new_companys_webhook(
        instances: Instances) -> None:
    """The same for a plug's report: ``connector.status_changed`` and
    ``fault.reported`` go to Beta, and nothing to Alpha."""
    x = instances
    async with webhooks_on_b(x) as hooks:
        heard = heard_on_b(x)
        handed_over_while_read(x, then=heard)
        await x.b.charging.status_notification(CP, 1, "Faulted", "GroundFailure")
        await delivered(hooks)
        assert hooks.told("Alpha") == [], hooks.told("Alpha")
        assert hooks.told("Beta") == ["connector.status_changed", "fault.reported"], \
            hooks.told("Beta")


async def test_an_outage_announced_across_a_handover_is_the_new_companys(
        instances: Instances) -> None:
    """With a grace: the charger went offline under Alpha; when the grace is over B
    announces the outage, its read of the station finding Alpha's just before an admin
    on A handed it to Beta, heard by B before it announced. ``station.offline`` goes to
    Beta, and so does the ``station.online`` of the charger's return (it goes to whoever
    got the offline); Alpha is told neither."""
    x = instances
    async with webhooks_on_b(x, offline_grace=0.3) as hooks:
        store, notices = x.b.ctx.store, x.b.offline_notices
        get_many, announce = store.get_many, notices.announce
        armed = False
        heard = heard_on_b(x)

        async def reading(kind: Any, ids: Any, *a: Any, **kw: Any) -> Any:
            nonlocal armed
            got = await get_many(kind, ids, *a, **kw)
            if armed and kind is Station:
                armed = False
                await x.a.stations.update_station(SYSTEM, x.station_id,
                                                  company_id=x.beta.id)
                await heard()
            return got

        async def announcing(*a: Any, **kw: Any) -> Any:
            nonlocal armed
            armed = True
            return await announce(*a, **kw)

        store.get_many = reading  # type: ignore[method-assign]
        notices.announce = announcing  # type: ignore[method-assign]
        [station] = await get_many(Station, [x.station_id])
        assert station is not None
        assert await x.b.charging.disconnect(CP, number=station.connection)
        await asyncio.sleep(1.0)  # the grace, and a sweep after it
        await delivered(hooks)
        await x.b.charging.set_online(CP, True)
        await delivered(hooks)
        assert hooks.told("Alpha") == [], hooks.told("Alpha")
        assert hooks.told("Beta") == ["station.offline", "station.online"], \
            hooks.told("Beta")


async def test_a_handover_lost_in_a_redis_outage_does_not_send_events_to_the_old_company(
        instances: Instances) -> None:
    """B's dispatcher heard Alpha -> Beta, then missed Beta -> Alpha in a Redis outage.
    The charger's fault afterwards (B reads the station afresh: Alpha's) goes to Alpha,
    not to Beta, which handed the station back (review s26: the dispatcher ignored
    ``EventsDropped`` and re-owned every event of the station to Beta for good)."""
    x = instances
    async with webhooks_on_b(x) as hooks:
        await handed_back_unheard_on_b(x)
        await x.b.charging.status_notification(CP, 1, "Faulted", "GroundFailure")
        await delivered(hooks)
        [station] = await x.b.ctx.store.get_many(Station, [x.station_id])
        assert station is not None and station.company_id == x.alpha.id
        assert hooks.told("Beta") == [], hooks.told("Beta")
        assert hooks.told("Alpha") == ["connector.status_changed", "fault.reported"], \
            hooks.told("Alpha")


async def test_webhooks_after_a_handover_whose_publish_failed_go_by_the_fresh_read(
        instances: Instances) -> None:
    """B's dispatcher heard Alpha -> Beta; the handover back to Alpha was lost on A's
    side (no marker on B). The charger's fault afterwards, read afresh on B, goes to
    Alpha's webhooks, not Beta's (review s26)."""
    x = instances
    async with webhooks_on_b(x) as hooks:
        await handed_back_with_a_failed_publish(x)
        await x.b.charging.status_notification(CP, 1, "Faulted", "GroundFailure")
        await delivered(hooks)
        assert hooks.told("Beta") == [], hooks.told("Beta")
        assert hooks.told("Alpha") == ["connector.status_changed", "fault.reported"], \
            hooks.told("Alpha")
