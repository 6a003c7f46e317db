"""Instances of the services over one store, on a clock a test moves by hand: what a
contract test of a record kept across instances (a restart, another process) needs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from domain.policy import Policy
from domain.ports import Store
from domain.services import ServiceContext, Services
from store.sqlite import SqliteStore
from tests.helpers import FastHasher

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
#: The deployment's key every instance shares (``ServiceContext.digest_key``).
KEY = b"a deployment's key"


class Clock:
    """The services' clock: reads ``now``, set by the test (``T0`` at first)."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def instance(store: Store, clock: Clock, key: bytes = KEY) -> Services:
    """An instance's services of their own over ``store`` (a deployment's: ``key``)."""
    return Services(ServiceContext(store=store, policy=Policy(), hasher=FastHasher(),
                                   clock=clock, digest_key=key))


def right_after(store: Store, monkeypatch: pytest.MonkeyPatch,
                landed: Callable[[object], bool], act: Callable[[], Awaitable[None]]) -> None:
    """Runs ``act`` once, as soon as a change that is ``landed`` is written: on MongoDB
    within its batch, whose changes land one by one, each seen by other writers at once
    (the rest of the batch still to come); on SQLite, one transaction, once the write is
    done. Another instance's act between two changes of one write."""
    done = False

    async def once() -> None:
        nonlocal done
        if not done:
            done = True
            await act()

    if isinstance(store, SqliteStore):
        write = store.write

        async def written(changes: Any, *args: Any, **kwargs: Any) -> None:
            await write(changes, *args, **kwargs)
            if any(landed(change) for change in changes):
                await once()
        monkeypatch.setattr(store, "write", written)
        return
    from store.mongo import writes
    apply = writes.apply

    async def applied(db: Any, step: Any, *args: Any, **kwargs: Any) -> Any:
        out = await apply(db, step, *args, **kwargs)
        if landed(step):
            await once()
        return out
    monkeypatch.setattr(writes, "apply", applied)
