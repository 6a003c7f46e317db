"""Company names are unique by their identity in the store, not only by the check before
the write (review r2, d090a80: ``AccountService._refuse_taken_name`` read, then wrote;
the store's rule was on the exact name, so "Bäckerei X" and "BÄCKEREI X" created at once
were both written). Two creations at once on MongoDB, whose operations interleave as on
a server, and a creation or a rename whose check another instance's write overtakes,
forced between the check's read and the write, on either store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from domain.entities import Company, Role
from domain.errors import Conflict
from domain.policy import SYSTEM, Policy, Viewer
from domain.query import ALL
from domain.services import ServiceContext, Services
from domain.services.accounts import AccountService
from tests.contract.factories import user
from tests.domain.test_instance_races import once, two_stores
from tests.helpers import FastHasher
from tests.support.mongo_backend import open_mongo_store


async def test_two_creations_of_one_company_name_at_once_make_one_company() -> None:
    """The reviewer's case: both creations pass the check; the store's unique rule on the
    name's identity refuses the second write, reported as the check reports it."""
    async with open_mongo_store() as store:
        accounts = AccountService(ServiceContext(store=store,
                                                 policy=Policy(),
                                                 hasher=FastHasher()))
        admin = Viewer.of(user(role=Role.ADMIN))
        results = await asyncio.gather(
            accounts.create_company(admin, name="Bäckerei X"),
            accounts.create_company(admin, name="BÄCKEREI X"),
            return_exceptions=True)
        names = sorted(c.name for c in await store.find_all(Company, ALL))
        assert len(names) == 1, f"both created: {names} ({results})"
        refused = [r for r in results if isinstance(r, BaseException)]
        assert len(refused) == 1 and isinstance(refused[0], Conflict), results
        assert (refused[0].code, refused[0].field) == ("DUPLICATE", "name")


@pytest.fixture(params=["sqlite", "mongo"])
async def two(request: pytest.FixtureRequest, tmp_path: Path
              ) -> AsyncIterator[tuple[Services, Services]]:
    """Two instances, each its own ``Services``, on one SQLite file or MongoDB database."""
    async with two_stores(request.param, tmp_path / "shared.db") as (first, second):
        yield tuple(  # type: ignore[misc]
            Services(ServiceContext(store=s, policy=Policy(), hasher=FastHasher()))
            for s in (first, second))


async def test_a_creation_another_instance_overtook_is_refused(
        two: tuple[Services, Services], monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = two
    monkeypatch.setattr(b.accounts, "_companies_named", once(
        lambda: a.accounts.create_company(SYSTEM, name="Bäckerei X"),
        b.accounts._companies_named))
    with pytest.raises(Conflict) as raised:
        await b.accounts.create_company(SYSTEM, name="BÄCKEREI X")
    assert (raised.value.code, raised.value.field) == ("DUPLICATE", "name")
    assert [c.name for c in await a.ctx.store.find_all(Company, ALL)] == ["Bäckerei X"]


async def test_a_rename_another_instance_overtook_is_refused(
        two: tuple[Services, Services], monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = two
    other = await a.accounts.create_company(SYSTEM, name="Konditorei")
    monkeypatch.setattr(b.accounts, "_companies_named", once(
        lambda: a.accounts.create_company(SYSTEM, name="Bäckerei X"),
        b.accounts._companies_named))
    with pytest.raises(Conflict) as raised:
        await b.accounts.update_company(SYSTEM, other.id, name="BÄCKEREI X")
    assert (raised.value.code, raised.value.field) == ("DUPLICATE", "name")
    assert sorted(c.name for c in await a.ctx.store.find_all(Company, ALL)) == [
        "Bäckerei X", "Konditorei"]
