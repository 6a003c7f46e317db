"""``removeTariff`` over both stores (real sessions: ``tests/ocpp/test_tariff_removal.py``)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from domain import entities as d
from domain.clock import utcnow
from domain.errors import StoreUnavailable, ValidationError
from domain.policy import SYSTEM
from domain.ports import Insert, Update
from domain.query import Eq
from domain.services import Services
from domain.services.charging import books_of
from graph.errors import RETRYABLE_CODES
from graph.ids import from_global_id
from tests.graph.conftest import Api
from tests.graph.test_mutations import call, codes, gid
from tests.graph.world import World


async def test_a_removed_price_list_prices_only_what_started_before(
        api: Api, services: Services, world: World) -> None:
    """``removeTariff`` on both stores: the station's price list in force ends, a session
    started before keeps it, one started after is at its company's (see
    ``tests/ocpp/test_tariff_removal.py`` over real sessions)."""
    station = world.stations["A-001"]
    company = await services.tariffs.set_tariff(
        SYSTEM, company_id=world.companies["a"].id, currency="EUR", price_per_kwh="0.30",
        valid_from=utcnow() - timedelta(hours=2))
    own = await services.tariffs.set_tariff(
        SYSTEM, station_id=station.id, currency="EUR", price_per_kwh="0.55",
        valid_from=utcnow() - timedelta(hours=1))
    removed = await call(api, world, "op_a", "removeTariff", {"id": gid("tariff", own.id)},
                         "tariff { validUntil }")
    assert removed["errors"] == [] and removed["tariff"]["validUntil"] is not None
    before = utcnow() - timedelta(minutes=30)
    assert (await services.tariffs.tariff_at(station, before)).id == own.id  # type: ignore[union-attr]
    assert (await services.tariffs.tariff_at(station, utcnow())).id == company.id  # type: ignore[union-attr]
    data = await api.gql("{ stations(first: 10) { nodes { cpId tariff { pricePerKwh } } } }",
                         as_user=world.users["driver1"].id)
    [a001] = [s for s in data["stations"]["nodes"] if s["cpId"] == "A-001"]
    assert a001["tariff"] == {"pricePerKwh": "0.30"}  # its company's again
    again = await call(api, world, "op_a", "removeTariff", {"id": gid("tariff", own.id)},
                       "tariff { id }")
    assert codes(again) == [("id", "INVALID_STATE")]


# Removals on instances whose clocks differ a little, and racing what they judge by
# (review s25). A session links to the version that prices it by its station (or books)
# and its instant, never after its receipt: what an instance ahead of ours received.


def _instance(services: Services, at: datetime) -> Services:
    """The services of another instance on the same store, its clock showing ``at``."""
    return Services(dataclasses.replace(services.ctx, clock=lambda: at))


async def _received(services: Services, station: d.Station, at: datetime) -> d.Session:
    """A session on ``station`` its charger started at ``at``, received then (by an
    instance whose clock showed ``at``)."""
    company_id, owner_id = books_of(station)
    session = d.Session(
        transaction_id=await services.ctx.store.next_sequence("transaction"),
        station_id=station.id, cp_id=station.cp_id, connector_id=2, id_tag="TAG-X",
        start_time=at, meter_start_wh=0, created_at=at, updated_at=at,
        company_id=company_id, station_owner_id=owner_id)
    await services.ctx.store.write([Insert(session)], [])
    return session


async def _scheduled(services: Services, world: World) -> tuple[d.Tariff, d.Tariff, datetime]:
    """A station's price list in force and the next one, from ``at`` (in ten minutes)."""
    station = world.stations["A-001"]
    at = utcnow().replace(microsecond=0) + timedelta(minutes=10)
    old = await services.tariffs.set_tariff(
        SYSTEM, station_id=station.id, currency="EUR", price_per_kwh="0.55",
        valid_from=utcnow() - timedelta(hours=1))
    new = await services.tariffs.set_tariff(
        SYSTEM, station_id=station.id, currency="EUR", price_per_kwh="0.99", valid_from=at)
    return old, new, at


async def test_a_version_ended_on_an_instance_ahead_is_not_deleted_by_one_behind(
        services: Services, world: World) -> None:
    """The instance ahead found the next version in force (a session started at +1 s was
    priced by it) and ended it; the one behind, to which it is not in force yet, may not
    delete it: removed already. The session keeps its price."""
    station = world.stations["A-001"]
    _, new, at = await _scheduled(services, world)
    op = world.viewer("op_a")
    ended = await _instance(services, at + timedelta(seconds=2)).tariffs.remove_tariff(
        op, new.id)
    assert ended.valid_until is not None
    started = at + timedelta(seconds=1)
    assert (await services.tariffs.tariff_at(station, started)).id == new.id  # type: ignore[union-attr]
    with pytest.raises(ValidationError) as refused:
        await _instance(services, at - timedelta(seconds=1)).tariffs.remove_tariff(
            op, new.id)
    assert refused.value.code == "INVALID_STATE"
    assert (await services.tariffs.tariff_at(station, started)).id == new.id  # type: ignore[union-attr]


async def test_a_version_that_priced_a_session_ends_after_it_rather_than_going(
        services: Services, world: World) -> None:
    """Not in force yet by the removing instance's clock, but a session received by an
    instance ahead was priced by it: it ends (after that session), not deleted, and the
    session keeps it. As any version in force ended: later sessions are at the version it
    replaced (the station's it was to follow), not the company's (s31: removeTariff
    undoes setTariff)."""
    station = world.stations["A-001"]
    company = await services.tariffs.set_tariff(
        SYSTEM, company_id=world.companies["a"].id, currency="EUR", price_per_kwh="0.30",
        valid_from=utcnow() - timedelta(hours=2))
    old, new, at = await _scheduled(services, world)
    session = await _received(services, station, at + timedelta(seconds=1))
    ended = await _instance(services, at - timedelta(seconds=1)).tariffs.remove_tariff(
        world.viewer("op_a"), new.id)
    assert ended.valid_until is not None and ended.valid_until > session.priced_at
    assert (await services.tariffs.tariff_at(station, session.priced_at)).id == new.id  # type: ignore[union-attr]
    assert (await services.tariffs.tariff_at(station, ended.valid_until)).id == old.id  # type: ignore[union-attr]
    assert (await services.tariffs.tariff_at(station, old.valid_from - timedelta(minutes=1))
            ).id == company.id  # type: ignore[union-attr]
    [stored] = await services.ctx.store.get_many(d.Tariff, [new.id])
    assert stored is not None and stored.valid_until == ended.valid_until


class _SessionLandsAfterTheRead:
    """A store on which a session is received (``landing``) just after a removal read
    the sessions: another instance's, between that read and the removal's write."""

    def __init__(self, inner: Any, landing: Callable[[], Awaitable[Any]]) -> None:
        self.inner, self.landing = inner, landing

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def find_all(self, kind: Any, *args: Any, **kwargs: Any) -> Any:
        found = await self.inner.find_all(kind, *args, **kwargs)
        if kind is d.Session and self.landing is not None:
            landing, self.landing = self.landing, None  # type: ignore[assignment]
            await landing()
        return found


async def test_a_session_received_between_the_read_and_the_deletion_keeps_its_price(
        services: Services, world: World) -> None:
    """The removal read no session priced by the version, then an instance ahead received
    one: the deletion fails on its guard, runs again and ends the version after it."""
    station = world.stations["A-001"]
    _, new, at = await _scheduled(services, world)
    landed: list[d.Session] = []

    async def landing() -> None:
        landed.append(await _received(services, station, at + timedelta(seconds=1)))

    racing = Services(dataclasses.replace(
        services.ctx, clock=lambda: at - timedelta(seconds=1),
        store=_SessionLandsAfterTheRead(services.ctx.store, landing)))
    ended = await racing.tariffs.remove_tariff(world.viewer("op_a"), new.id)
    [session] = landed
    assert ended.valid_until is not None and ended.valid_until > session.priced_at
    assert (await services.tariffs.tariff_at(station, session.priced_at)).id == new.id  # type: ignore[union-attr]


async def test_two_removals_at_once_end_a_version_once(
        services: Services, world: World) -> None:
    station = world.stations["A-001"]
    own = await services.tariffs.set_tariff(
        SYSTEM, station_id=station.id, currency="EUR", price_per_kwh="0.55",
        valid_from=utcnow() - timedelta(hours=1))
    op = world.viewer("op_a")
    results = await asyncio.gather(services.tariffs.remove_tariff(op, own.id),
                                   services.tariffs.remove_tariff(op, own.id),
                                   return_exceptions=True)
    ok = [r for r in results if not isinstance(r, BaseException)]
    assert len(ok) == 1, results
    assert [getattr(r, "code", r) for r in results if isinstance(r, BaseException)] == [
        "INVALID_STATE"]


async def test_a_version_dated_back_across_a_removal_is_in_force_after_it(
        services: Services, world: World) -> None:
    """As README says: a removal ends the version it names; an admin's version dated
    back to before that end (a correction of history) is the latest of its scope, and
    prices what starts from its ``validFrom`` on, after the removal too."""
    station = world.stations["A-001"]
    own = await services.tariffs.set_tariff(
        SYSTEM, station_id=station.id, currency="EUR", price_per_kwh="0.55",
        valid_from=utcnow() - timedelta(hours=2))
    await services.tariffs.remove_tariff(world.viewer("op_a"), own.id)
    backdated = await services.tariffs.set_tariff(
        world.viewer("admin"), station_id=station.id, currency="EUR", price_per_kwh="0.66",
        valid_from=utcnow() - timedelta(hours=1))
    assert (await services.tariffs.tariff_at(station, utcnow())).id == backdated.id  # type: ignore[union-attr]


# removeTariff undoes setTariff (QA s31): a mistaken price removed gives back the one it
# replaced, and the list's validUntil tells which version prices a new session.

_LISTED = "{ tariffs(first: 20) { nodes { id pricePerKwh validUntil } } }"


async def _listed(api: Api, world: World) -> dict[str, str | None]:
    """Each version the operator lists, by its price: its ``validUntil``."""
    data = await api.gql(_LISTED, as_user=world.users["op_a"].id)
    return {t["pricePerKwh"]: t["validUntil"] for t in data["tariffs"]["nodes"]}


async def test_removing_the_version_in_force_brings_back_the_one_it_replaced(
        api: Api, services: Services, world: World) -> None:
    """QA s31's steps: 0.40 EUR with a band, then a mistaken 0.30 "eur", removed to undo
    it: a new session is at 0.40 again (it was priced by nothing), 0.40 listed open and
    reopened by the remover; 0.30 listed as ended. Removing 0.40 then, which replaced
    nothing, leaves the company with no price, and the list shows none open."""
    station = world.stations["A-001"]
    company_id = gid("company", world.companies["a"].id)
    first = await call(api, world, "op_a", "setTariff", {
        "companyId": company_id, "pricePerKwh": "0.40", "currency": "EUR",
        "timeZone": "Europe/Berlin", "energyBands": [
            {"days": ["MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"], "start": "16:00",
             "end": "20:00", "pricePerKwh": "0.50"}]}, "tariff { id validFrom }")
    mistake = await call(api, world, "op_a", "setTariff", {
        "companyId": company_id, "pricePerKwh": "0.30", "currency": "eur"},
        "tariff { id validFrom validUntil } inForce { id }")
    assert first["errors"] == [] and mistake["errors"] == []
    assert mistake["inForce"] == {"id": mistake["tariff"]["id"]}
    assert mistake["tariff"]["validUntil"] is None
    assert await _listed(api, world) == {"0.40": mistake["tariff"]["validFrom"],
                                         "0.30": None}
    removed = await call(api, world, "op_a", "removeTariff", {"id": mistake["tariff"]["id"]},
                         "tariff { validUntil } inForce { id validUntil }")
    assert removed["errors"] == [] and removed["tariff"]["validUntil"] is not None
    assert removed["inForce"] == {"id": first["tariff"]["id"], "validUntil": None}
    in_force = await services.tariffs.tariff_at(station, utcnow())
    assert in_force is not None and in_force.price_per_kwh == Decimal("0.40")
    assert await _listed(api, world) == {"0.40": None, "0.30": removed["tariff"]["validUntil"]}
    assert in_force.updated_by == world.users["op_a"].id  # audited as the remover's change
    data = await api.gql("{ stations(first: 10) { nodes { cpId tariff { pricePerKwh } } } }",
                         as_user=world.users["op_a"].id)
    [a001] = [s for s in data["stations"]["nodes"] if s["cpId"] == "A-001"]
    assert a001["tariff"] == {"pricePerKwh": "0.40"}  # as a session starting now is priced
    again = await call(api, world, "op_a", "removeTariff", {"id": first["tariff"]["id"]},
                       "tariff { validUntil } inForce { id }")
    assert again["errors"] == [] and again["inForce"] is None  # left without a price
    assert await services.tariffs.tariff_at(station, utcnow()) is None
    assert None not in (await _listed(api, world)).values()


async def test_calling_off_a_later_version_reopens_the_one_in_force(
        api: Api, services: Services, world: World) -> None:
    """A version set for later ends the one in force where it begins (listed so); called
    off, the one in force is open again. One set between them ends where the later one
    begins, and removed, gives that end back to the one it replaced."""
    station = world.stations["A-001"]
    old, new, at = await _scheduled(services, world)
    [stored] = await services.ctx.store.get_many(d.Tariff, [old.id])
    assert stored is not None and stored.valid_until == at
    between = await services.tariffs.set_tariff(
        SYSTEM, station_id=station.id, currency="EUR", price_per_kwh="0.77")
    assert between.valid_until == at
    [stored] = await services.ctx.store.get_many(d.Tariff, [old.id])
    assert stored is not None and stored.valid_until == between.valid_from
    op = world.viewer("op_a")
    await services.tariffs.remove_tariff(op, between.id)
    [stored] = await services.ctx.store.get_many(d.Tariff, [old.id])
    assert stored is not None and stored.valid_until == at
    assert (await services.tariffs.tariff_at(station, utcnow())).id == old.id  # type: ignore[union-attr]
    assert (await services.tariffs.tariff_at(station, at)).id == new.id  # type: ignore[union-attr]
    await services.tariffs.remove_tariff(op, new.id)  # called off: deleted
    [stored] = await services.ctx.store.get_many(d.Tariff, [old.id])
    assert stored is not None and stored.valid_until is None
    assert (await services.tariffs.tariff_at(station, at)).id == old.id  # type: ignore[union-attr]


async def test_a_removal_and_a_price_set_at_once_leave_one_version_open(
        services: Services, world: World) -> None:
    """Both write the version in force (the removal ends it, the new price ends it where
    it begins), each only on the version read: one runs again on what the other wrote.
    Whichever lands last, exactly one version is open and it is the one in force."""
    station = world.stations["A-001"]
    old = await services.tariffs.set_tariff(
        SYSTEM, station_id=station.id, currency="EUR", price_per_kwh="0.40",
        valid_from=utcnow() - timedelta(hours=1))
    mistake = await services.tariffs.set_tariff(
        SYSTEM, station_id=station.id, currency="EUR", price_per_kwh="0.30")
    results = await asyncio.gather(
        services.tariffs.remove_tariff(world.viewer("op_a"), mistake.id),
        services.tariffs.set_tariff(world.viewer("op_a"), station_id=station.id,
                                    currency="EUR", price_per_kwh="0.50"),
        return_exceptions=True)
    assert not [r for r in results if isinstance(r, BaseException)
                and getattr(r, "code", None) != "INVALID_STATE"], results
    versions = await services.ctx.store.find_all(d.Tariff, Eq("station_id", station.id))
    open_ = [t for t in versions if t.valid_until is None]
    in_force = await services.tariffs.tariff_at(station, utcnow() + timedelta(seconds=1))
    assert len(open_) == 1 and in_force is not None and in_force.id == open_[0].id
    assert old.id in {t.id for t in versions}


@pytest.mark.parametrize("first", ["set", "removal"])
async def test_a_price_set_while_the_next_one_is_called_off_is_left_open(
        services: Services, world: World, monkeypatch: pytest.MonkeyPatch,
        first: str) -> None:
    """Tomorrow's price is set, none is in force today. Today's is set while tomorrow's
    is called off, each between the other's read and write (``first``: whose read comes
    first). Whichever lands last runs again: today's price is left open and prices the
    station from tomorrow on too, not ending where nothing begins (review s31: the
    station fell to its company's price from then on)."""
    from domain.services import tariffs as module
    station = world.stations["A-001"]
    at = utcnow().replace(microsecond=0) + timedelta(days=1)
    later = await services.tariffs.set_tariff(
        SYSTEM, station_id=station.id, currency="EUR", price_per_kwh="0.99", valid_from=at)
    op = world.viewer("op_a")
    made: list[d.Tariff] = []

    async def set_today() -> None:
        made.append(await services.tariffs.set_tariff(
            SYSTEM, station_id=station.id, currency="EUR", price_per_kwh="0.77"))

    async def call_off() -> None:
        await services.tariffs.remove_tariff(op, later.id)

    hooked, other = ((module._after, call_off) if first == "set"
                     else (module._replaced_by, set_today))
    done = False

    async def between(*a: Any) -> Any:
        nonlocal done
        got = await hooked(*a)  # type: ignore[operator]
        if not done:
            done = True
            await other()
        return got

    monkeypatch.setattr(module, hooked.__name__, between)
    await (set_today() if first == "set" else call_off())
    assert done and made
    [today] = await services.ctx.store.find_all(d.Tariff, Eq("station_id", station.id))
    assert today.id == made[0].id and today.valid_until is None, today.valid_until
    priced = await services.tariffs.tariff_at(station, at + timedelta(hours=1))
    assert priced is not None and priced.id == today.id


async def test_a_price_written_whose_in_force_read_fails_is_answered_written(
        api: Api, services: Services, world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """The database goes out of reach between setTariff's write and its read of what is
    in force beside it: the answer is the version written, ``inForce`` null and
    NOT_READ_BACK, not data null and STORE_UNAVAILABLE (review s31: a client sent it
    again and a second version was set). Its idempotency key keeps that answer."""
    company_id = gid("company", world.companies["a"].id)

    async def out_of_reach(*_: Any) -> Any:
        raise StoreUnavailable("the database cannot be reached", reason="test")

    monkeypatch.setattr(services.tariffs, "in_force_beside", out_of_reach)
    answer = await call(api, world, "op_a", "setTariff", {
        "companyId": company_id, "pricePerKwh": "0.40", "currency": "EUR"},
        "tariff { id } inForce { id }")
    assert answer["tariff"] is not None and answer["inForce"] is None
    assert codes(answer) == [(None, "NOT_READ_BACK")]
    assert "NOT_READ_BACK" not in RETRYABLE_CODES
    versions = await services.ctx.store.find_all(
        d.Tariff, Eq("company_id", world.companies["a"].id))
    assert [gid("tariff", t.id) for t in versions] == [answer["tariff"]["id"]]
    removed = await call(api, world, "op_a", "removeTariff", {"id": answer["tariff"]["id"]},
                         "tariff { id } inForce { id }")
    assert removed["tariff"] is not None and codes(removed) == [(None, "NOT_READ_BACK")]


def test_the_architecture_s_edit_rules_tell_how_a_tariff_is_removed() -> None:
    """docs/architecture.md said tariffs are never edited while ``removeTariff`` ends and
    deletes versions (review s25): its edit rules name the guarded writes it uses."""
    text = " ".join((Path(__file__).parents[2] / "docs" / "architecture.md")
                    .read_text(encoding="utf-8").split())
    assert "Tariffs are never edited (`setTariff` inserts the next one)" not in text
    assert "`removeTariff` ends a version with `edit()` (`valid_until`) or deletes one " \
           "with `removal()`" in text


async def test_a_version_in_force_is_removable_after_one_beside_it_was_removed(
        api: Api, services: Services, world: World) -> None:
    """QA s31: A, B, B removed (A back), C set for later, then A removed: refused as
    "removed", the removed B read as A's next version. A ends now; C still begins."""
    station = world.stations["A-001"]
    company_id = gid("company", world.companies["a"].id)
    fields = "tariff { id validUntil } inForce { id }"
    a = await call(api, world, "op_a", "setTariff", {
        "companyId": company_id, "pricePerKwh": "0.40", "currency": "EUR"}, fields)
    b = await call(api, world, "op_a", "setTariff", {
        "companyId": company_id, "pricePerKwh": "0.30", "currency": "EUR"}, fields)
    assert (await call(api, world, "op_a", "removeTariff", {"id": b["tariff"]["id"]},
                       fields))["inForce"] == {"id": a["tariff"]["id"]}
    later = (utcnow() + timedelta(hours=2)).isoformat()
    c = await call(api, world, "op_a", "setTariff", {
        "companyId": company_id, "pricePerKwh": "0.20", "currency": "EUR",
        "validFrom": later}, fields)
    assert c["errors"] == [] and c["inForce"] == {"id": a["tariff"]["id"]}
    removed = await call(api, world, "op_a", "removeTariff", {"id": a["tariff"]["id"]},
                         fields)
    assert removed["errors"] == [] and removed["inForce"] is None
    assert await services.tariffs.tariff_at(station, utcnow()) is None
    at_c = await services.tariffs.tariff_at(station, utcnow() + timedelta(hours=3))
    assert at_c is not None and at_c.id == from_global_id(c["tariff"]["id"], "id")[1]


async def test_an_admins_version_dated_back_before_removed_ones_is_in_force_after_them(
        services: Services, world: World) -> None:
    """QA s31: a station's two versions removed, an admin's dated back before the
    later's start was ended there, at a removed version's start, and the station fell to
    its company's prices. It is open: the removed versions price only what they priced."""
    station = world.stations["A-001"]
    admin = world.viewer("admin")
    first = await services.tariffs.set_tariff(
        SYSTEM, station_id=station.id, currency="EUR", price_per_kwh="0.55",
        valid_from=utcnow() - timedelta(hours=3))
    second = await services.tariffs.set_tariff(
        SYSTEM, station_id=station.id, currency="EUR", price_per_kwh="0.60",
        valid_from=utcnow() - timedelta(hours=1))
    for version in (second, first):
        await services.tariffs.remove_tariff(world.viewer("op_a"), version.id)
    backdated = await services.tariffs.set_tariff(
        admin, station_id=station.id, currency="EUR", price_per_kwh="0.66",
        valid_from=utcnow() - timedelta(hours=2))
    assert backdated.valid_until is None
    assert (await services.tariffs.tariff_at(station, utcnow())).id == backdated.id  # type: ignore[union-attr]
    assert await services.tariffs.in_force_beside(admin, backdated) == backdated


async def test_an_admins_version_dated_inside_a_removed_one_leaves_one_open(
        services: Services, world: World) -> None:
    """Review s31, left then: 0.60 replaced 0.55 and was removed (0.55 open again); an
    admin's 0.66 dated inside 0.60's priced range found 0.60 in force at its start,
    which keeps its removal, and left 0.55 open beside it: two versions listed open,
    0.66 pricing. 0.66 replaces 0.55 from its start (pricing as before), and removed,
    gives it back."""
    station = world.stations["A-001"]
    admin = world.viewer("admin")
    older = await services.tariffs.set_tariff(
        SYSTEM, station_id=station.id, currency="EUR", price_per_kwh="0.55",
        valid_from=utcnow() - timedelta(hours=3))
    removed = await services.tariffs.set_tariff(
        SYSTEM, station_id=station.id, currency="EUR", price_per_kwh="0.60",
        valid_from=utcnow() - timedelta(hours=2))
    await services.tariffs.remove_tariff(world.viewer("op_a"), removed.id)
    backdated = await services.tariffs.set_tariff(
        admin, station_id=station.id, currency="EUR", price_per_kwh="0.66",
        valid_from=utcnow() - timedelta(hours=1))

    async def open_ones() -> list[str]:
        versions = await services.ctx.store.find_all(d.Tariff, Eq("station_id", station.id))
        return [t.id for t in versions if t.valid_until is None]

    assert await open_ones() == [backdated.id]
    assert (await services.tariffs.tariff_at(station, utcnow())).id == backdated.id  # type: ignore[union-attr]
    inside = await services.tariffs.tariff_at(station, backdated.valid_from)
    assert inside is not None and inside.id == backdated.id
    await services.tariffs.remove_tariff(world.viewer("op_a"), backdated.id)
    assert await open_ones() == [older.id]
    assert (await services.tariffs.tariff_at(station, utcnow())).id == older.id  # type: ignore[union-attr]


async def test_a_corrected_price_is_removable(api: Api, services: Services,
                                              world: World) -> None:
    """Review s31: A now, X for tomorrow (A ends at T), then Y at the same T, a
    correction (X ends at T, empty). Removing Y failed CHANGED on every try, A still
    ending at Y's start; removing X did too. X is refused INVALID_STATE (it prices no
    session ever); Y is deleted, X takes its place again; the price set later from a
    removed version's end is removable too."""
    station = world.stations["A-001"]
    station_id = gid("station", station.id)
    at = (utcnow() + timedelta(days=1)).isoformat()
    fields = "tariff { id validUntil } inForce { id }"

    async def set_price(price: str, valid_from: str | None = None,
                        who: str = "op_a") -> str:
        made = await call(api, world, who, "setTariff", {
            "stationId": station_id, "pricePerKwh": price, "currency": "EUR",
            **({"validFrom": valid_from} if valid_from else {})}, fields)
        assert made["errors"] == [], made
        return str(made["tariff"]["id"])

    a = await set_price("0.40")
    x = await set_price("0.50", at)
    y = await set_price("0.55", at)
    refused = await call(api, world, "op_a", "removeTariff", {"id": x}, fields)
    assert codes(refused) == [("id", "INVALID_STATE")], refused
    removed = await call(api, world, "op_a", "removeTariff", {"id": y}, fields)
    assert removed["errors"] == [] and removed["inForce"] == {"id": a}, removed
    tomorrow = await services.tariffs.tariff_at(station, utcnow() + timedelta(days=2))
    assert tomorrow is not None and tomorrow.id == from_global_id(x, "id")[1]
    # An admin's price set from exactly a removed version's end.
    removed_a = await call(api, world, "op_a", "removeTariff", {"id": a}, fields)
    assert removed_a["errors"] == [], removed_a
    end = removed_a["tariff"]["validUntil"]
    n = await set_price("0.60", end, who="admin")
    again = await call(api, world, "op_a", "removeTariff", {"id": n}, fields)
    assert again["errors"] == [], again


async def test_a_price_dated_back_is_not_ended_at_a_version_removed_meanwhile(
        services: Services, world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review s31: an admin's version dated 2 h back, read B (in force since 1 h) as its
    next; an operator removed B (ended it now) between that read and the write: the new
    version ended at B's start and nothing was open. Run again, it is open."""
    from domain.services import tariffs as module
    station = world.stations["A-001"]
    b = await services.tariffs.set_tariff(
        SYSTEM, station_id=station.id, currency="EUR", price_per_kwh="0.60",
        valid_from=utcnow() - timedelta(hours=1))
    after = module._after
    removed = False

    async def between(*a: Any) -> Any:
        nonlocal removed
        got = await after(*a)
        if not removed:
            removed = True
            await services.tariffs.remove_tariff(world.viewer("op_a"), b.id)
        return got

    monkeypatch.setattr(module, "_after", between)
    made = await services.tariffs.set_tariff(
        world.viewer("admin"), station_id=station.id, currency="EUR", price_per_kwh="0.66",
        valid_from=utcnow() - timedelta(hours=2))
    assert removed
    [stored] = await services.ctx.store.find_all(d.Tariff, Eq("id", made.id))
    assert stored.valid_until is None, stored.valid_until
    priced = await services.tariffs.tariff_at(station, utcnow() + timedelta(hours=1))
    assert priced is not None and priced.id == made.id


async def test_the_next_version_is_read_a_page_at_a_time(
        services: Services, world: World) -> None:
    """Review s31: ``_after`` read every later version of the scope. It reads them a
    page at a time in start order and stops at the first not removed: of many set for
    later, one page; past a page of removed ones, the next page's first."""
    from domain.services import tariffs as module
    station = world.stations["A-001"]
    now = utcnow()
    versions = [await services.tariffs.set_tariff(
        SYSTEM, station_id=station.id, currency="EUR", price_per_kwh="0.50",
        valid_from=now + timedelta(hours=hour)) for hour in range(1, module.AFTER_PAGE + 6)]
    store = services.ctx.store
    read: list[int] = []

    class Counting:
        async def find_all(self, *a: Any, **k: Any) -> Any:
            found = await store.find_all(*a, **k)
            read.append(len(found))
            return found

    probe = d.Tariff(station_id=station.id, currency="EUR", price_per_kwh=Decimal(1),
                     valid_from=now)
    found = await module._after(Counting(), "station_id", station.id, probe)  # type: ignore[arg-type]
    assert found is not None and found.id == versions[0].id
    assert sum(read) <= module.AFTER_PAGE, read
    # The first page's all removed (each ended where nothing begins): the next page's.
    for version in versions[:module.AFTER_PAGE]:
        ended = dataclasses.replace(version, valid_until=version.valid_from + timedelta(
            minutes=30))
        await store.write([Update(ended, fields=frozenset({"valid_until"}))], [])
    found = await module._after(store, "station_id", station.id, probe)
    assert found is not None and found.id == versions[module.AFTER_PAGE].id
    # The page's last ending where the next page's first begins: replaced, not removed,
    # told across the pages' boundary (review s31: untested).
    last = versions[module.AFTER_PAGE - 1]
    replaced = dataclasses.replace(
        last, valid_until=versions[module.AFTER_PAGE].valid_from)
    await store.write([Update(replaced, fields=frozenset({"valid_until"}))], [])
    found = await module._after(store, "station_id", station.id, probe)
    assert found is not None and found.id == last.id


@pytest.mark.parametrize("operation", ["set", "remove"])
async def test_a_tariff_write_that_met_a_change_pauses_before_running_again(
        services: Services, world: World, monkeypatch: pytest.MonkeyPatch,
        operation: str) -> None:
    """Review s31: on MongoDB an admin's price dated back and a removal, each reading
    the other's write in flight, were both rolled back, ran again at once, in step, and
    met again until CHANGED reached the client. Each runs again after the pause a
    charger's records take (random: two in step part)."""
    from domain.errors import Conflict

    assert services.tariffs.pause_to_retry == services.charging.pause_to_retry
    paused: list[int] = []

    async def pause(attempt: int) -> None:
        paused.append(attempt)

    monkeypatch.setattr(services.tariffs, "pause_to_retry", pause)
    station = world.stations["A-001"]
    version = await services.tariffs.set_tariff(
        SYSTEM, station_id=station.id, currency="EUR", price_per_kwh="0.55")
    name = "_set" if operation == "set" else "_remove"
    real = getattr(services.tariffs, name)
    met: list[bool] = []

    async def once_changed(*args: Any) -> Any:
        if not met:
            met.append(True)
            raise Conflict("changed meanwhile", field="id", code="CHANGED")
        return await real(*args)

    monkeypatch.setattr(services.tariffs, name, once_changed)
    if operation == "set":
        await services.tariffs.set_tariff(SYSTEM, station_id=station.id, currency="EUR",
                                          price_per_kwh="0.60")
    else:
        await services.tariffs.remove_tariff(world.viewer("op_a"), version.id)
    assert paused == [1]
