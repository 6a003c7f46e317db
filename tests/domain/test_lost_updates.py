"""Two requests changing one record at once each keep their change: an edit writes only
the fields it was given, so one landing between another's read and write survives."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from domain import entities as d
from domain.errors import Conflict
from domain.policy import SYSTEM, Policy, Viewer
from domain.services import ServiceContext, Services
from domain.services.edits import EDIT_ATTEMPTS
from store.sqlite import SqliteStore
from tests.helpers import FastHasher


@pytest.fixture
async def services(tmp_path: Path) -> AsyncIterator[Services]:
    store = SqliteStore(str(tmp_path / "lost.db"))
    await store.start()
    yield Services(ServiceContext(store=store, policy=Policy(), hasher=FastHasher()))
    await store.close()


async def stored_user(services: Services, user_id: str) -> d.User:
    [user] = await services.ctx.store.get_many(d.User, [user_id])
    assert user is not None
    return user


async def test_an_email_change_never_undoes_a_deactivation_made_while_it_ran(
        services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    """The owner's email change waits on its password check; an admin deactivates the
    account meanwhile. The deactivation and its token revocation stand."""
    accounts = services.accounts
    user = await accounts.create_user(SYSTEM, email="mia@example.com", password="pass-word-1",
                                      name="Mia", role=d.Role.DRIVER)
    checking, go_on = asyncio.Event(), asyncio.Event()
    confirm = accounts.confirm_current_password

    async def slow_confirm(*args: Any) -> None:
        await confirm(*args)
        checking.set()
        await go_on.wait()

    monkeypatch.setattr(accounts, "confirm_current_password", slow_confirm)
    change = asyncio.create_task(accounts.update_user(
        Viewer.of(user), user.id, email="mia@new.example.com",
        current_password="pass-word-1"))
    await asyncio.wait_for(checking.wait(), 5)
    await accounts.deactivate_user(SYSTEM, user.id)
    go_on.set()
    await change
    final = await stored_user(services, user.id)
    assert final.email == "mia@new.example.com"
    assert final.active is False and final.token_epoch == user.token_epoch + 1


async def test_two_revocations_at_once_move_the_token_epoch_once_each_or_fail(
        services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    """A password reset read before a deactivation committed: writing its epoch + 1 would
    equal the deactivation's and quietly merge two revocations; it fails instead."""
    accounts = services.accounts
    user = await accounts.create_user(SYSTEM, email="jo@example.com", password="pass-word-1",
                                      name="Jo", role=d.Role.DRIVER)
    stale = await stored_user(services, user.id)
    await accounts.deactivate_user(SYSTEM, user.id)
    visible = accounts.visible

    async def read_before(viewer: Viewer, kind: Any, record_id: str, **kw: Any) -> Any:
        return stale if kind is d.User else await visible(viewer, kind, record_id, **kw)

    monkeypatch.setattr(accounts, "visible", read_before)
    with pytest.raises(Conflict) as info:
        await accounts.update_user(SYSTEM, user.id, password="pass-word-2")
    assert info.value.code == "CHANGED"
    final = await stored_user(services, user.id)
    assert final.active is False and final.token_epoch == user.token_epoch + 1


async def test_edits_of_other_fields_made_meanwhile_stay(
        services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each edit below first works on a copy read before the other one committed: its
    write meets the newer version and it runs again on a fresh read, writing only its
    own field (``edits.retried``)."""
    stations, fleet = services.stations, services.fleet
    station, _ = await stations.create_station(SYSTEM, cp_id="CP-1", name="Old name")
    await stations.update_station(SYSTEM, station.id, lat=52.5, lon=13.4)
    monkeypatch.setattr(stations, "managed_station",
                        stale_once(station, stations.managed_station))
    await stations.update_station(SYSTEM, station.id, name="New name")
    [final] = await services.ctx.store.get_many(d.Station, [station.id])
    assert final is not None and (final.name, final.lat, final.lon) == ("New name", 52.5, 13.4)

    driver = await services.accounts.create_user(
        SYSTEM, email="lea@example.com", password="pass-word-1", name="Lea",
        role=d.Role.DRIVER)
    tag = await fleet.issue_id_tag(Viewer.of(driver), tag="LOST-CARD")
    await fleet.update_id_tag(Viewer.of(driver), tag.id, status=d.IdTagStatus.BLOCKED)
    visible = fleet.visible
    read_tag = stale_once(tag, visible)

    async def stale_tag(viewer: Viewer, kind: Any, record_id: str, **kw: Any) -> Any:
        if kind is d.IdTag:
            return await read_tag(viewer, kind, record_id, **kw)
        return await visible(viewer, kind, record_id, **kw)

    monkeypatch.setattr(fleet, "visible", stale_tag)
    soon = tag.created_at.replace(year=tag.created_at.year + 1)
    await fleet.update_id_tag(SYSTEM, tag.id, expires_at=soon)
    [card] = await services.ctx.store.get_many(d.IdTag, [tag.id])
    assert card is not None and card.status is d.IdTagStatus.BLOCKED
    assert card.expires_at == soon


async def test_an_edit_never_written_on_a_stale_read_fails_changed(
        services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    """Read stale every time (another instance's edits keep landing between its read and
    its write), an edit gives up after ``EDIT_ATTEMPTS`` with CHANGED on ``id``, and
    writes nothing."""
    stations = services.stations
    station, _ = await stations.create_station(SYSTEM, cp_id="CP-1", name="Old name")
    await stations.update_station(SYSTEM, station.id, name="Newer name")
    reads = 0

    async def always_stale(viewer: Viewer, station_id: str, field: str = "id") -> Any:
        nonlocal reads
        reads += 1
        return station

    monkeypatch.setattr(stations, "managed_station", always_stale)
    with pytest.raises(Conflict) as raised:
        await stations.update_station(SYSTEM, station.id, name="Lost name")
    assert (raised.value.code, raised.value.field) == ("CHANGED", "id")
    assert reads == EDIT_ATTEMPTS
    [final] = await services.ctx.store.get_many(d.Station, [station.id])
    assert final is not None and final.name == "Newer name"


def stale_once(stale: Any, read: Any) -> Any:
    """``read`` that answers ``stale`` the first time it is called."""
    calls = 0

    async def reading(*args: Any, **kw: Any) -> Any:
        nonlocal calls
        calls += 1
        return stale if calls == 1 else await read(*args, **kw)
    return reading


async def _ready(value: Any) -> Any:
    return value


@pytest.mark.parametrize("change", [{"active": False}, {"role": d.Role.OPERATOR}],
                         ids=["deactivated", "demoted"])
async def test_two_admins_taking_each_other_s_rights_at_once_leave_one_admin(
        services: Services, change: dict[str, Any]) -> None:
    """QA s25: two admins deactivating (or demoting) each other at once both succeeded,
    each checked while the other was still an admin, and the deployment was left with
    no admin (only the command line on the database's machine makes one). As an
    erasure does, a change that takes the last active admin's rights is refused
    (IN_USE), and a guard keeps that so inside the write."""
    accounts = services.accounts
    first, second = [await accounts.create_user(
        SYSTEM, email=f"{name}@example.com", password="pass word x", name=name,
        role=d.Role.ADMIN) for name in ("a", "b")]
    done = await asyncio.gather(
        accounts.update_user(Viewer.of(first), second.id, **change),
        accounts.update_user(Viewer.of(second), first.id, **change),
        return_exceptions=True)
    refused = [r for r in done if isinstance(r, Exception)]
    assert len(refused) == 1 and isinstance(refused[0], Conflict), done
    assert (refused[0].code, refused[0].field) == ("IN_USE", next(iter(change)))
    admins = [u for u in [await stored_user(services, x.id) for x in (first, second)]
              if u.role is d.Role.ADMIN and u.active]
    assert len(admins) == 1
    # One admin left: nobody takes that one's rights (an erasure says the same).
    with pytest.raises(Conflict) as kept:
        await accounts.update_user(SYSTEM, admins[0].id, **change)
    assert kept.value.code == "IN_USE"
