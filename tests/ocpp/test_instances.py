"""Connection state when several instances share one database: each OCPP server sees only
its own sockets, so one must not record a charger offline that another one holds."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

import domain.services.instances as instances_module
from domain import entities as d
from domain.clock import utcnow
from domain.ports import Update
from domain.query import ALL, Eq, Sort
from ocpp_bridge.gateway import OcppGateway
from ocpp_bridge.server import OcppServer
from ocpp_bridge.simulator import connected
from pubsub.memory import MemoryEventBus
from tests.helpers import until
from tests.ocpp.conftest import (
    REFUSAL_DELAY_S,
    STATION_PASSWORD,
    Central,
    seed,
    start_central,
    stop_central,
)


@contextlib.asynccontextmanager
async def second_instance(central: Central, bus: MemoryEventBus | None = None
                          ) -> AsyncIterator[tuple[OcppServer, str]]:
    """Another OCPP server on the same database, with its own connections, told of the
    other instances by ``bus`` (as ``chargegraph`` runs it with Redis; a bus of its own
    when none is given)."""
    if bus is None:
        bus = own_bus = MemoryEventBus()
        await own_bus.start()
    else:
        own_bus = None
    server = OcppServer(central.services.charging, OcppGateway(), "127.0.0.1", 0,
                        response_timeout=5, instances_bus=bus, refusal_delay=REFUSAL_DELAY_S)
    await server.start()
    try:
        yield server, f"ws://127.0.0.1:{server.bound_port}/ocpp"
    finally:
        await server.stop()
        if own_bus is not None:
            await own_bus.close()


async def online(central: Central) -> bool:
    station = await central.store.find_one(d.Station, Eq("cp_id", "CP-1"))
    assert station is not None
    return station.online


async def test_an_instance_starting_leaves_chargers_of_the_others_online(
        central: Central) -> None:
    async with connected(central.url, "CP-1", password=STATION_PASSWORD):
        await until(lambda: online(central))
        async with second_instance(central):
            assert await online(central)


async def test_the_sole_instance_starting_records_what_the_previous_process_lost(
        central: Central) -> None:
    async with connected(central.url, "CP-1", password=STATION_PASSWORD):
        await until(lambda: online(central))
        restarted = OcppServer(central.services.charging, OcppGateway(), "127.0.0.1", 0)
        await restarted.start()
        await restarted.stop()
        assert not await online(central)


async def test_an_old_socket_closing_does_not_take_a_charger_offline_that_moved(
        central: Central) -> None:
    """The charger reconnected to instance B before instance A noticed its old socket
    die: A closing that socket later must leave the station online."""
    async with second_instance(central) as (_, b_url), contextlib.AsyncExitStack() as on_b:
        on_a = contextlib.AsyncExitStack()
        await on_a.enter_async_context(connected(central.url, "CP-1",
                                                 password=STATION_PASSWORD))
        await until(lambda: online(central))
        events_before = await central.store.count(d.ConnectionEvent, Eq("online", True))
        await on_b.enter_async_context(connected(b_url, "CP-1", password=STATION_PASSWORD))

        async def b_recorded() -> bool:
            return await central.store.count(d.ConnectionEvent,
                                             Eq("online", True)) > events_before
        await until(b_recorded)
        await on_a.aclose()

        async def a_let_go() -> bool:
            return not central.gateway.is_connected("CP-1")
        await until(a_let_go)
        await asyncio.sleep(0.2)  # A's disconnect handling, had it written anything
        assert await online(central)
        offline = await central.store.count(d.ConnectionEvent, Eq("online", False))
        assert offline == 0
        await on_b.aclose()

        async def offline_now() -> bool:
            return not await online(central)
        await until(offline_now)


async def test_a_charger_that_connected_elsewhere_is_let_go_here(tmp_path: Path) -> None:
    """With the instances' bus: instance A closes its old socket as soon as the charger's
    connection to instance B is announced, without recording a disconnect."""
    bus = MemoryEventBus()
    await bus.start()
    central = await start_central(tmp_path / "central.db", bus=bus)
    await seed(central)
    try:
        async with second_instance(central, bus) as (a, a_url), \
                second_instance(central, bus) as (b, b_url), \
                connected(a_url, "CP-1", password=STATION_PASSWORD) as on_a:

            async def a_holds() -> bool:
                return a.gateway.is_connected("CP-1") and await online(central)
            await until(a_holds)
            async with connected(b_url, "CP-1", password=STATION_PASSWORD):

                async def a_let_go() -> bool:
                    return not a.gateway.is_connected("CP-1")
                await until(a_let_go)
                assert b.gateway.is_connected("CP-1")

                async def a_closed() -> bool:  # after it was let go, in the background
                    return on_a._connection.close_code is not None  # type: ignore[no-any-return]
                await until(a_closed)
                assert on_a._connection.close_code == 1000  # type: ignore[attr-defined]
                await asyncio.sleep(0.2)  # A's disconnect handling, had it written anything
                assert await online(central)
                assert await central.store.count(d.ConnectionEvent,
                                                 Eq("online", False)) == 0
    finally:
        await stop_central(central)
        await bus.close()


# ------------------------------------------------------------------ instance leases
@contextlib.asynccontextmanager
async def leased_instance(central: Central) -> AsyncIterator[tuple[OcppServer, str]]:
    """An instance holding a lease of an hour: its own renewals never run during a test,
    which drives them (``upkeep``) and the clock instead."""
    server = OcppServer(central.services.charging, OcppGateway(), "127.0.0.1", 0,
                        response_timeout=5, instances_bus=MemoryEventBus(),
                        instances=central.services.instances, lease_seconds=3600)
    await server.start()
    try:
        yield server, f"ws://127.0.0.1:{server.bound_port}/ocpp"
    finally:
        await server.stop()


async def station(central: Central) -> d.Station:
    found = await central.store.find_one(d.Station, Eq("cp_id", "CP-1"))
    assert found is not None
    return found


async def leases(central: Central) -> set[str]:
    return {lease.id for lease in await central.store.find_all(d.InstanceLease, ALL)}


def later(central: Central, hours: float) -> None:
    """Moves the services' clock: leases written before look that much older."""
    central.services.ctx.clock = lambda: utcnow() + timedelta(hours=hours)


async def test_the_chargers_of_an_instance_whose_lease_expired_are_recorded_offline(
        central: Central) -> None:
    async with leased_instance(central) as (a, a_url), leased_instance(central) as (b, _), \
            connected(a_url, "CP-1", password=STATION_PASSWORD):
        await until(lambda: online(central))
        assert (await station(central)).connected_instance == a.instance_id
        assert await leases(central) == {a.instance_id, b.instance_id}
        # Both leases are valid: nothing to sweep.
        assert await b.upkeep() == []
        assert await online(central)

        # An hour and more later A has not renewed (it crashed, as far as B can tell).
        later(central, 2)
        assert await b.upkeep() == ["CP-1"]
        swept = await station(central)
        assert (swept.online, swept.connected_instance) == (False, None)
        newest = await central.store.find_all(d.ConnectionEvent, Eq("cp_id", "CP-1"),
                                              (Sort("at", descending=True),
                                               Sort("id", descending=True)), limit=1)
        assert newest[0].online is False
        # Dated when A was last known to hold it (its lease's last renewal, or the
        # charger's last message), not at the sweep two hours on; lastSeen stays.
        assert newest[0].at <= utcnow()
        assert swept.last_seen is not None and newest[0].at >= swept.last_seen
        assert await leases(central) == {b.instance_id}  # none of A's stations is online
        assert await b.upkeep() == []  # swept once

        # A was only stalled: its charger is still connected. Renewing, it finds its lease
        # gone and records the connection again.
        assert await a.upkeep() == []
        back = await station(central)
        assert (back.online, back.connected_instance) == (True, a.instance_id)
        assert await leases(central) == {a.instance_id, b.instance_id}
    # The charger left A (recorded as usual, against A's newest record of it), and both
    # instances stopped cleanly: their leases went with them.
    assert not await online(central)
    assert await leases(central) == set()


async def test_a_swept_disconnect_is_dated_at_the_dead_instances_last_renewal(
        central: Central) -> None:
    """A charger silent since it connected was connected as long as its instance lived
    and renewed its lease (its pings would have closed a dead connection). The sweep
    dates the disconnect at that last renewal, and does not move lastSeen: nothing was
    heard since."""
    async with leased_instance(central) as (a, a_url), leased_instance(central) as (b, _), \
            connected(a_url, "CP-1", password=STATION_PASSWORD):
        await until(lambda: online(central))
        silent_since = (await station(central)).last_seen
        assert silent_since is not None

        async def renewed_since() -> bool:
            await a.upkeep()
            lease = (await central.store.get_many(d.InstanceLease, [a.instance_id]))[0]
            return lease is not None and lease.updated_at > silent_since
        await until(renewed_since)
        renewed = await central.store.get_many(d.InstanceLease, [a.instance_id])
        assert renewed[0] is not None
        later(central, 2)
        assert await b.upkeep() == ["CP-1"]
        swept = await station(central)
        assert swept.last_seen == silent_since
        newest = await central.store.find_all(d.ConnectionEvent, Eq("cp_id", "CP-1"),
                                              (Sort("at", descending=True),
                                               Sort("id", descending=True)), limit=1)
        assert (newest[0].online, newest[0].at) == (False, renewed[0].updated_at)


async def test_a_sweep_leaves_alone_the_chargers_of_live_instances_and_unknown_holders(
        central: Central) -> None:
    async with leased_instance(central) as (a, a_url), leased_instance(central) as (b, b_url):
        async with connected(b_url, "CP-1", password=STATION_PASSWORD):
            await until(lambda: online(central))
            # A's lease expires while B renews its own: CP-1, on B, stays online.
            later(central, 2)
            assert await b.upkeep() == []
            assert await a.upkeep() == []
            assert (await station(central)).connected_instance == b.instance_id
            assert await online(central)
        # A lapsed lease does not make A take back a charger that moved on: its old socket
        # to A is stale (A has not heard of the move yet), and the store shows it on B.
        later(central, 0)
        async with connected(a_url, "CP-1", password=STATION_PASSWORD), \
                connected(b_url, "CP-1", password=STATION_PASSWORD):

            async def on_b() -> bool:
                return (await station(central)).connected_instance == b.instance_id
            await until(on_b)
            assert a.gateway.is_connected("CP-1")
            later(central, 5)  # A's lease (renewed at +2 h) has lapsed; B renews in time
            assert await b.upkeep() == []
            assert await a.upkeep() == []
            assert (await station(central)).connected_instance == b.instance_id
        # A station online without a holder (written by a version before leases) is not
        # anyone's to sweep.
        await central.store.write([Update(dataclasses.replace(
            await station(central), online=True, connected_instance=None))], [])
        later(central, 8)
        assert await a.upkeep() == []
        assert await online(central)


async def test_an_instance_stopping_releases_its_lease(central: Central) -> None:
    async with leased_instance(central) as (a, _):
        assert await leases(central) == {a.instance_id}
    assert await leases(central) == set()


async def test_a_lease_the_store_cannot_release_at_stop_is_one_line(
        central: Central, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The database deleted under the service: the stop logged a traceback for what the
    store had already explained."""
    def delete_database() -> None:
        for path in tmp_path.glob("central.db*"):
            path.unlink()

    async with leased_instance(central):
        delete_database()
        caplog.clear()
    released = [record for record in caplog.records
                if "instance lease" in record.getMessage()]
    assert [(record.levelname, record.getMessage(), record.exc_info)
            for record in released] == [
        ("WARNING", "could not release the instance lease (the database file was deleted "
                    "while the service ran); it expires on its own", None)]


async def test_an_instance_whose_lapsed_lease_was_partly_swept_records_those_again(
        central: Central, monkeypatch: pytest.MonkeyPatch) -> None:
    """One station per sweep: B's first sweep takes CP-1 and leaves A's lease (CP-OPEN
    still online on it). A renews before B comes back and records CP-1 again, and only
    CP-1: a connection the store still shows on A gets no new history."""
    monkeypatch.setattr(instances_module, "SWEEP_BATCH", 1)
    async with leased_instance(central) as (a, a_url), leased_instance(central) as (b, _), \
            connected(a_url, "CP-1", password=STATION_PASSWORD), \
            connected(a_url, "CP-OPEN"):

        async def both_online() -> bool:
            return await central.store.count(d.Station, Eq("online", True)) == 2
        await until(both_online)
        later(central, 2)
        swept = await b.upkeep()
        assert len(swept) == 1
        assert await central.store.count(d.Station, Eq("online", True)) == 1
        assert a.instance_id in await leases(central)
        events = await central.store.count(d.ConnectionEvent, Eq("online", True))
        assert await a.upkeep() == []
        assert await central.store.count(d.Station, Eq("online", True)) == 2
        assert await central.store.count(d.ConnectionEvent, Eq("online", True)) == events + 1
        assert await b.upkeep() == []  # A's lease is valid again


async def test_a_second_instance_without_a_shared_bus_leaves_the_firsts_chargers_be(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Two processes on one database and no Redis (an accidental second container, an
    overlapping restart): the one starting must not record the other's chargers offline,
    and it says loudly that commands and events will not reach across."""
    central = await start_central(tmp_path / "central.db")
    await seed(central)
    instances = central.services.instances

    def server() -> OcppServer:
        return OcppServer(central.services.charging, OcppGateway(), "127.0.0.1", 0,
                          instances=instances)

    first = server()
    first.host_label = "elsewhere:1"  # another process (both run in this test's)
    await first.start()
    try:
        async with connected(f"ws://127.0.0.1:{first.bound_port}/ocpp", "CP-1",
                             password=STATION_PASSWORD):
            await until(lambda: online(central))
            second = server()
            with caplog.at_level(logging.ERROR, "chargegraph.ocpp"):
                await second.start()
            try:
                assert await online(central)
                assert "without a shared event bus" in caplog.text
            finally:
                await second.stop()
    finally:
        await first.stop()
        await stop_central(central)


async def test_a_restart_after_a_crash_records_what_the_dead_predecessor_held(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The usual restart after a crash, within the predecessor's lease: its lease is of
    this host and its process is gone, so it is no live instance. What it held is
    recorded offline at once (its outage is not online time), without a false alarm."""
    import socket
    import subprocess

    central = await start_central(tmp_path / "central.db")
    await seed(central)
    instances = central.services.instances
    finished = subprocess.Popen(["true"])
    finished.wait()  # a pid that no longer runs
    await instances.renew("crashed", f"{socket.gethostname()}:{finished.pid}",
                          timedelta(seconds=30))
    await central.services.charging.set_online("CP-1", True, instance="crashed")
    assert await online(central)
    restarted = OcppServer(central.services.charging, OcppGateway(), "127.0.0.1", 0,
                           instances=instances)
    with caplog.at_level(logging.ERROR, "chargegraph.ocpp"):
        await restarted.start()
    try:
        assert not await online(central)
        assert "without a shared event bus" not in caplog.text
    finally:
        await restarted.stop()
        await stop_central(central)
