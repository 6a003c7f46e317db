"""A central system's services over a SQLite file and the in-process bus, with people
of two companies, a station of the first, and webhook delivery to test receivers."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from chargegraph.webhooks import WebhookDispatcher
from domain import entities as d
from domain.clock import utcnow
from domain.policy import SYSTEM, Policy, Viewer
from domain.services import ConnectorSpec, ServiceContext, Services
from pubsub.memory import MemoryEventBus
from store.sqlite import SqliteStore
from tests.helpers import FastHasher, until
from tests.webhooks.receiver import Receiver

#: Tries of a delivery in tests, and no real waiting between them.
TRIES = 3
BACKOFF = (0.01,)


@dataclass
class World:
    services: Services
    store: SqliteStore
    bus: MemoryEventBus
    users: dict[str, d.User] = field(default_factory=dict)
    companies: dict[str, d.Company] = field(default_factory=dict)
    dispatchers: list[WebhookDispatcher] = field(default_factory=list)
    receivers: list[Receiver] = field(default_factory=list)

    def viewer(self, name: str) -> Viewer:
        return Viewer.of(self.users[name])

    async def dispatcher(self, services: Services | None = None, **options: Any
                         ) -> WebhookDispatcher:
        options = {"allow_private": True, "tries": TRIES, "backoff": BACKOFF, **options}
        dispatcher = WebhookDispatcher(services or self.services, **options)
        await dispatcher.start()
        self.dispatchers.append(dispatcher)
        return dispatcher

    async def receiver(self, *statuses: int) -> Receiver:
        receiver = await Receiver(*statuses).start()
        self.receivers.append(receiver)
        return receiver

    async def webhook(self, owner: str, receiver: Receiver, *events: str
                      ) -> tuple[d.Webhook, str]:
        created = await self.services.webhooks.create_webhook(
            self.viewer(owner), url=receiver.url, events=list(events) or ["session.ended"])
        return created.webhook, created.secret

    async def settled(self) -> None:
        """Until every dispatcher has delivered (or given up on) what it was offered."""
        async def idle() -> bool:
            return all(dispatcher.idle for dispatcher in self.dispatchers)
        await until(idle)

    async def stored(self, webhook: d.Webhook) -> d.Webhook:
        [found] = await self.store.get_many(d.Webhook, [webhook.id])
        assert found is not None
        return found


async def seed(services: Services, world: World) -> None:
    acc = services.accounts
    world.companies["volt"] = volt = await acc.create_company(SYSTEM, name="Volt GmbH")
    world.companies["other"] = other = await acc.create_company(SYSTEM, name="Other AG")
    people: list[tuple[str, d.Role, str | None]] = [
        ("admin", d.Role.ADMIN, None), ("op", d.Role.OPERATOR, volt.id),
        ("op2", d.Role.OPERATOR, volt.id), ("op_other", d.Role.OPERATOR, other.id),
        ("driver", d.Role.DRIVER, None)]
    for name, role, company_id in people:
        world.users[name] = await acc.create_user(
            SYSTEM, email=f"{name}@example.com", password="password-123", name=name,
            role=role, company_id=company_id)
    await services.fleet.issue_id_tag(world.viewer("driver"), tag="TAG-OK")
    for cp_id, owner in (("CP-1", volt), ("CP-OTHER", other)):
        await services.stations.create_station(
            SYSTEM, cp_id=cp_id, name=cp_id, company_id=owner.id,
            connectors=[ConnectorSpec(1, d.ConnectorType.CCS2, 150)],
            password="station-password-1" if cp_id == "CP-1" else None)
    await services.tariffs.set_tariff(SYSTEM, company_id=volt.id,
                                      price_per_kwh=Decimal("0.40"), currency="EUR",
                                      valid_from=utcnow() - timedelta(days=1))


def new_services(store: SqliteStore, bus: MemoryEventBus) -> Services:
    return Services(ServiceContext(store=store, policy=Policy(), hasher=FastHasher(),
                                   bus=bus), webhooks_allow_private=True)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    store = SqliteStore(str(tmp_path / "webhooks.db"))
    await store.start()
    bus = MemoryEventBus()
    await bus.start()
    w = World(new_services(store, bus), store, bus)
    await seed(w.services, w)
    try:
        yield w
    finally:
        await closed(w, bus, [store])


@contextlib.asynccontextmanager
async def two_instances(tmp_path: Path) -> AsyncIterator[tuple[World, Services, Services]]:
    """Two instances' services on one database and one bus (as behind Redis), the world
    seeded through the first: ``(world, first, second)``; the bus is ``world.bus``."""
    bus = MemoryEventBus()
    await bus.start()
    stores = [SqliteStore(str(tmp_path / "shared.db")) for _ in range(2)]
    for store in stores:
        await store.start()
    first, second = (new_services(store, bus) for store in stores)
    world = World(first, stores[0], bus)
    try:
        await seed(first, world)
        yield world, first, second
    finally:
        await closed(world, bus, stores)


async def closed(world: World, bus: MemoryEventBus, stores: list[SqliteStore]) -> None:
    """Everything a test's world started, stopped: dispatchers first (they deliver from
    the stores), then receivers, the bus and the stores."""
    for dispatcher in world.dispatchers:
        await dispatcher.close()
    for receiver in world.receivers:
        await receiver.close()
    await bus.close()
    for store in stores:
        await store.close()

