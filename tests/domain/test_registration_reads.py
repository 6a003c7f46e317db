"""What a charger's handshake reads (session 29): with auto-registration on, an unknown
cpId refused by the address's limit cost seven store reads, five before the limit was
asked, and SQLite read a station it had just found once more to have it committed; with
it off, a station found was not read as committed at all."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from domain.clock import utcnow
from domain.errors import TooManyRequests
from domain.policy import SYSTEM, Policy
from domain.ports import Store
from domain.services import ServiceContext, Services
from domain.services.base import INSERT_IN_FLIGHT_FOR
from store.mongo import MongoStore, journal
from store.sqlite import SqliteStore
from tests.graph.conftest import CountingStore
from tests.helpers import FastHasher
from tests.support.mongomock_async import async_mongomock_database

ADDRESS = "203.0.113.5"


@pytest.fixture(params=["sqlite", "mongo"])
async def store(request: pytest.FixtureRequest, tmp_path: Path
                ) -> AsyncIterator[CountingStore]:
    inner: Store = SqliteStore(str(tmp_path / "reg.db")) if request.param == "sqlite" \
        else MongoStore(async_mongomock_database(), sweep_every=None)
    await inner.start()
    try:
        yield CountingStore(inner)
    finally:
        await inner.close()


def services_over(store: CountingStore, clock: Callable[[], datetime] = utcnow, *,
                  auto_register: bool = True) -> Services:
    return Services(ServiceContext(store=store, policy=Policy(),  # type: ignore[arg-type]
                                   hasher=FastHasher(), clock=clock),
                    auto_register=auto_register, registrations_per_hour=1)


async def test_an_unknown_cp_id_over_the_limit_costs_one_look(store: CountingStore) -> None:
    """The look for the station (the cpId spelt so, then in any case) is read once, the
    limit asked right after it: a station registered by then is let in whatever the
    limit (``test_auto_registration_from_one_address_is_limited``), and nothing else
    is read before the refusal."""
    charging = services_over(store).charging
    assert await charging.station_for_connection("NEW-1", ADDRESS) is not None
    store.calls.clear()
    with pytest.raises(TooManyRequests):
        await charging.station_for_connection("NEW-2", ADDRESS)
    assert store.calls == ["find_one", "find_all"]


@pytest.mark.parametrize("auto_register", [True, False], ids=["auto", "no-auto"])
async def test_a_known_station_is_read_as_committed_only_where_reads_see_writes_in_flight(
        store: CountingStore, auto_register: bool) -> None:
    """A station found by a handshake is read as committed (``Store.get_committed``) on
    MongoDB, whose reads see a registration or a createStation in flight, while it is
    new enough to be one; on SQLite, whose reads see only committed rows, the station
    found is not read again. With auto-registration off too (session 29: its look took
    the station as found, and a charger connecting while an operator's createStation
    rolled back was signed in as a station never stored)."""
    now = [utcnow()]
    services = services_over(store, lambda: now[0], auto_register=auto_register)
    station, _ = await services.stations.create_station(SYSTEM, cp_id="CP-1", name="One")
    store.calls.clear()
    found = await services.charging.station_for_connection("cp-1", ADDRESS)
    assert found is not None and found.id == station.id
    looked = ["find_one", "find_all"]  # spelt otherwise: by its key
    assert store.calls == ([*looked, "get_committed"] if store.inner.reads_in_flight
                           else looked)
    store.calls.clear()
    assert await services.charging.station_for_connection("CP-1", ADDRESS) == found
    assert store.calls == (["find_one", "get_committed"] if store.inner.reads_in_flight
                           else ["find_one"])
    # Review r29: a station stored long since is no insert in flight, and every
    # handshake of its charger read it twice on MongoDB.
    now[0] += INSERT_IN_FLIGHT_FOR + timedelta(seconds=1)
    store.calls.clear()
    assert await services.charging.station_for_connection("CP-1", ADDRESS) == found
    assert store.calls == ["find_one"]


def test_a_station_is_taken_for_committed_only_after_any_sweep_would_have_rolled_it_back(
        ) -> None:
    """Review r29: the bound rests on the MongoDB store's sweep of a dead writer's batch
    (stale after ``STALE_AFTER``, swept every ``SWEEP_EVERY_S``), which nothing tied to
    it."""
    assert journal.STALE_AFTER + timedelta(seconds=journal.SWEEP_EVERY_S) < INSERT_IN_FLIGHT_FOR
