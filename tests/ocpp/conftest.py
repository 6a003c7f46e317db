"""A real central system (SQLite file, OCPP websocket server on a free loopback port) and
a GraphQL client over the same services."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from chargegraph.housekeeping import following_changes
from domain import entities as d
from domain.clock import utcnow
from domain.policy import SYSTEM, Policy, Viewer
from domain.ports import Store
from domain.services import ConnectorSpec, ServiceContext, Services
from graph import TokenService
from ocpp_bridge.frames import MAX_SAMPLED_VALUES
from ocpp_bridge.gateway import OcppGateway
from ocpp_bridge.server import OcppServer
from pubsub.command_relay import CommandRelay
from store.sqlite import SqliteStore
from tests.helpers import FastHasher, graphql_in_process
from tests.support.mongo_backend import open_mongo_store
from tests.support.wire_bus import WireBus

SECRET = "ocpp-test-secret-long-enough-for-hs256-keys"
STATION_PASSWORD = "station-password-1"
#: The test servers' refused-password delay (``OcppServer.refusal_delay``): production's
#: ``CHARGER_REFUSAL_DELAY_S`` (1 s) made every wrong password of a test cost a second.
REFUSAL_DELAY_S = 0.05


@dataclass
class Central:
    services: Services
    store: Store
    server: OcppServer
    gateway: OcppGateway
    url: str
    tokens: TokenService
    #: Relays and the bus between them when commands go through ``CommandRelay``.
    relays: list[Any] = field(default_factory=list)
    users: dict[str, d.User] = field(default_factory=dict)
    tags: dict[str, d.IdTag] = field(default_factory=dict)
    stations: dict[str, d.Station] = field(default_factory=dict)
    vehicles: dict[str, d.Vehicle] = field(default_factory=dict)
    #: What runs beside the server as ``chargegraph`` wires it, stopped after it.
    beside: AsyncExitStack = field(default_factory=AsyncExitStack)

    async def gql(self, query: str, variables: dict[str, Any] | None = None,
                  as_user: str | None = None) -> dict[str, Any]:
        return await graphql_in_process(self.services, self.tokens, query, variables,
                                        self.users[as_user].id if as_user else None)

    async def session(self, transaction_id: int) -> d.Session | None:
        from domain.query import Eq

        return await self.store.find_one(d.Session, Eq("transaction_id", transaction_id))


async def start_central(path: Path, *, auto_register: bool = False, bus: Any = None,
                        command_timeout: float = 5.0, relayed: bool = False,
                        strict_schema: bool = False, port: int = 0,
                        ahead: timedelta = timedelta(0), leases: bool = False,
                        max_sampled_values: int = MAX_SAMPLED_VALUES,
                        store: Store | None = None) -> Central:
    """A central system on ``path``. ``relayed``: commands go the way they go between two
    instances, through a ``CommandRelay`` without chargers to one holding this server's
    connections, over a bus that carries them as JSON. ``port``: the OCPP server's (one
    restarted where its chargers connected before); any free one by default. ``ahead``:
    the services' clock runs that far ahead of the real one (a restart that long after
    the previous process stopped). ``leases``: the OCPP server holds an instance lease
    (of an hour: its own rounds never run in a test, which calls ``server.upkeep``), as
    ``chargegraph`` runs it. ``max_sampled_values``: the server's bound on a MeterValues
    (``CHARGEGRAPH_OCPP_MAX_SAMPLED_VALUES``). With a ``bus``, the services follow what
    other instances announce, as ``chargegraph`` wires every instance. ``store``: an
    open one to run on instead (MongoDB's: ``open_mongo_store``), closed with it."""
    if store is None:
        store = SqliteStore(str(path))
        await store.start()
    services = Services(ServiceContext(store=store, policy=Policy(), hasher=FastHasher(),
                                       bus=bus,
                                       clock=(lambda: utcnow() + ahead) if ahead else utcnow),
                        heartbeat_interval=60, auto_register=auto_register,
                        command_timeout=command_timeout)
    gateway = OcppGateway()
    relays: list[Any] = []
    if relayed:
        wire = WireBus()
        await wire.start()
        holder, asker = CommandRelay(wire, gateway), CommandRelay(wire, None)
        await holder.start()
        await asker.start()
        services.attach_gateway(asker)
        relays = [asker, holder, wire]
    else:
        services.attach_gateway(gateway)
    beside = AsyncExitStack()
    if bus is not None:
        await beside.enter_async_context(following_changes(services.charging, bus))
    server = OcppServer(services.charging, gateway, "127.0.0.1", port, response_timeout=5,
                        strict_schema=strict_schema, refusal_delay=REFUSAL_DELAY_S,
                        instances=services.instances if leases else None,
                        lease_seconds=3600, max_sampled_values=max_sampled_values)
    try:
        await server.start()
    except BaseException:
        await beside.aclose()
        raise
    return Central(services, store, server, gateway,
                   f"ws://127.0.0.1:{server.bound_port}/ocpp",
                   TokenService(SECRET, timedelta(hours=1)), relays, beside=beside)


async def stop_central(central: Central) -> None:
    await central.services.site_load.close()  # its runs send commands through the server
    await central.server.stop()
    await central.beside.aclose()
    for closing in central.relays:
        await closing.close()
    await central.store.close()


async def seed(c: Central) -> None:
    acc = c.services.accounts
    company = await acc.create_company(SYSTEM, name="Volt GmbH")
    other = await acc.create_company(SYSTEM, name="Other AG")
    for name, role, comp in (("admin", d.Role.ADMIN, None),
                             ("op", d.Role.OPERATOR, company.id),
                             ("op_other", d.Role.OPERATOR, other.id),
                             ("driver", d.Role.DRIVER, None),
                             ("driver2", d.Role.DRIVER, None)):
        c.users[name] = await acc.create_user(SYSTEM, email=f"{name}@example.com",
                                              password="password-123", name=name, role=role,
                                              company_id=comp)
    driver = Viewer.of(c.users["driver"])
    c.vehicles["car"] = await c.services.fleet.add_vehicle(driver, license_plate="B-EV 1")
    c.tags["ok"] = await c.services.fleet.issue_id_tag(driver, tag="TAG-OK",
                                                       vehicle_id=c.vehicles["car"].id)
    c.tags["blocked"] = await c.services.fleet.issue_id_tag(driver, tag="TAG-BLOCKED")
    await c.services.fleet.update_id_tag(driver, c.tags["blocked"].id,
                                         status=d.IdTagStatus.BLOCKED)
    c.tags["other"] = await c.services.fleet.issue_id_tag(Viewer.of(c.users["driver2"]),
                                                          tag="TAG-OTHER")
    for cp_id, password in (("CP-1", STATION_PASSWORD), ("CP-OPEN", None)):
        station, _ = await c.services.stations.create_station(
            SYSTEM, cp_id=cp_id, name=cp_id, company_id=company.id,
            owner_id=c.users["op"].id,
            connectors=[ConnectorSpec(1, d.ConnectorType.CCS2, 150),
                        ConnectorSpec(2, d.ConnectorType.TYPE2, 22)],
            password=password)
        c.stations[cp_id] = station
    await c.services.tariffs.set_tariff(SYSTEM, company_id=company.id,
                                        price_per_kwh=Decimal("0.40"), currency="EUR",
                                        valid_from=utcnow() - timedelta(days=1))


@pytest.fixture
async def central(tmp_path: Path) -> AsyncIterator[Central]:
    c = await start_central(tmp_path / "central.db")
    await seed(c)
    yield c
    await stop_central(c)


@pytest.fixture(params=["sqlite", "mongo"])
async def central_on_each_store(request: pytest.FixtureRequest, tmp_path: Path
                                ) -> AsyncIterator[Central]:
    """``central``, seeded, on SQLite and on MongoDB (mongomock) in turn: a module takes
    it as its ``central`` (``from tests.ocpp.conftest import central_on_each_store as
    central``)."""
    async with AsyncExitStack() as stack:
        store = None if request.param == "sqlite" \
            else await stack.enter_async_context(open_mongo_store())
        c = await start_central(tmp_path / "central.db", store=store)
        await seed(c)
        yield c
        await stop_central(c)
