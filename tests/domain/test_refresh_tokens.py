"""Refresh tokens over time and restarts: expiry, a restart of the service, two refreshes
of one token at once, and the pruning of a user's expired tokens."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from domain import entities as d
from domain.clock import utcnow
from domain.errors import Unauthenticated
from domain.policy import SYSTEM, Policy
from domain.query import ALL
from domain.services import ServiceContext, Services
from store.sqlite import SqliteStore
from tests.helpers import FastHasher


class Clock:
    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(str(tmp_path / "refresh.db"))
    await s.start()
    yield s
    await s.close()


def services_over(store: SqliteStore, clock: Clock | None = None) -> Services:
    return Services(ServiceContext(store=store, policy=Policy(), hasher=FastHasher(),
                                   clock=clock or Clock()),
                    refresh_ttl=timedelta(days=30))


async def ada(services: Services) -> d.User:
    return await services.accounts.create_user(SYSTEM, email="ada@example.com",
                                               password="first password", name="Ada",
                                               role=d.Role.DRIVER)


async def test_a_refresh_token_expires_after_its_lifetime(store: SqliteStore) -> None:
    clock = Clock()
    services = services_over(store, clock)
    issued = await services.refresh_tokens.start(await ada(services))
    assert issued.expires_at == clock.now + timedelta(days=30)

    clock.now += timedelta(days=29)
    _, rotated = await services.refresh_tokens.rotate(issued.token)
    # Each rotation starts a new lifetime, its family's too: a sign-in on another device
    # after the first token's expiry (which deletes what expired) leaves the chain alive.
    assert rotated.expires_at == clock.now + timedelta(days=30)
    clock.now += timedelta(days=2)
    await services.refresh_tokens.start(await services.accounts.authenticate(
        "ada@example.com", "first password"))
    _, rotated = await services.refresh_tokens.rotate(rotated.token)
    clock.now += timedelta(days=30)
    with pytest.raises(Unauthenticated) as raised:
        await services.refresh_tokens.rotate(rotated.token)
    assert (raised.value.code, raised.value.field) == ("TOKEN_EXPIRED", "token")


async def test_refresh_tokens_survive_a_restart(tmp_path: Path) -> None:
    first = SqliteStore(str(tmp_path / "restart.db"))
    await first.start()
    services = services_over(first)
    issued = await services.refresh_tokens.start(await ada(services))
    await first.close()

    again = SqliteStore(str(tmp_path / "restart.db"))
    await again.start()
    try:
        user, _ = await services_over(again).refresh_tokens.rotate(issued.token)
        assert user.email == "ada@example.com"
    finally:
        await again.close()


async def test_two_refreshes_of_one_token_at_once_count_as_a_reuse(store: SqliteStore
                                                                   ) -> None:
    """Whichever lands second finds the token used: that is the reuse rule, so neither
    keeps a session (a client must not refresh one token twice)."""
    services = services_over(store)
    issued = await services.refresh_tokens.start(await ada(services))
    results = await asyncio.gather(services.refresh_tokens.rotate(issued.token),
                                   services.refresh_tokens.rotate(issued.token),
                                   return_exceptions=True)
    failed = [r for r in results if isinstance(r, Unauthenticated)]
    won = [r for r in results if not isinstance(r, BaseException)]
    assert len(won) == 1 and [f.code for f in failed] == ["TOKEN_REUSED"]
    [(_, successor)] = won
    with pytest.raises(Unauthenticated) as raised:
        await services.refresh_tokens.rotate(successor.token)
    assert raised.value.code == "INVALID_TOKEN"
    assert await store.count(d.RefreshToken, ALL) == 2  # no third token was stored


async def test_a_sign_in_deletes_the_users_expired_tokens(store: SqliteStore) -> None:
    clock = Clock()
    services = services_over(store, clock)
    user = await ada(services)
    old = await services.refresh_tokens.start(user)
    await services.refresh_tokens.rotate(old.token)  # two tokens of one family
    someone = await services.accounts.create_user(SYSTEM, email="bob@example.com",
                                                  password="first password", name="Bob",
                                                  role=d.Role.DRIVER)
    await services.refresh_tokens.start(someone)

    clock.now += timedelta(days=31)
    fresh = await services.refresh_tokens.start(user)
    left = await store.find_all(d.RefreshToken, ALL)
    assert sorted(t.user_id for t in left) == sorted([user.id, someone.id])
    assert len(await store.find_all(d.RefreshFamily, ALL)) == 2
    assert (await services.refresh_tokens.rotate(fresh.token))[0].id == user.id


async def test_a_sign_out_landing_during_a_refresh_wins(store: SqliteStore) -> None:
    """The refresh read the family before the sign-out wrote: its write is refused, and
    no successor outlives the sign-out."""
    services = services_over(store)
    issued = await services.refresh_tokens.start(await ada(services))
    refreshes = services.refresh_tokens
    read_family = refreshes._family

    async def signed_out_meanwhile(token: d.RefreshToken, **kw: bool) -> d.RefreshFamily:
        family = await read_family(token, **kw)
        refreshes._family = read_family  # type: ignore[method-assign]
        await refreshes.revoke(issued.token)
        return family

    refreshes._family = signed_out_meanwhile  # type: ignore[method-assign]
    with pytest.raises(Unauthenticated) as raised:
        await refreshes.rotate(issued.token)
    assert raised.value.code == "INVALID_TOKEN"
    assert await store.count(d.RefreshToken, ALL) == 1
