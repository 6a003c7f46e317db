"""An erasure and what lands around it (review s22 of ``domain/services/erasure.py``): a
scrub that fails, a second erasure, and requests of other instances landing between the
erasure's reads and its write (run here from inside the write, as such a request would
land), on both stores."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest

import domain.services.erasure as erasure_module
from domain import entities as d
from domain.events import AccessChanged
from domain.policy import Viewer
from domain.query import ALL, Eq
from domain.services import Services
from tests.graph.world import World

#: What names driver2 in the world: their name, email, plate and its key.
PERSONAL = ("Driver2", "driver2@example.com", "B-DR 2", "BDR2")


async def settle(services: Services) -> None:
    await services.erasure.settled()
    await services.withdrawal.settled()


async def audit_text(services: Services) -> str:
    entries = await services.ctx.store.find_all(d.AuditEntry, ALL, limit=10_000)
    return json.dumps([(e.before, e.after) for e in entries])


async def test_a_failed_scrub_still_signs_out_withdraws_and_is_retried(
        services: Services, world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    erasure = services.erasure
    published: list[Any] = []
    real_publish = erasure.publish

    async def publish(event: Any) -> None:
        published.append(event)
        await real_publish(event)

    withdrawn: list[list[str]] = []

    async def on_erased(viewer: Viewer, user: d.User, cards: Sequence[d.IdTag]) -> None:
        withdrawn.append([c.tag for c in cards])

    real_scrub = erasure._scrub_audit
    scrubs: list[str] = []

    async def scrub_failing_once(erased: d.User) -> None:
        scrubs.append(erased.id)
        if len(scrubs) == 1:
            raise RuntimeError("the store went away mid-scrub")
        await real_scrub(erased)

    monkeypatch.setattr(erasure, "publish", publish)
    monkeypatch.setattr(erasure, "on_erased", on_erased)
    monkeypatch.setattr(erasure, "_scrub_audit", scrub_failing_once)
    monkeypatch.setattr(erasure_module, "SCRUB_RETRY_S", (0.0,), raising=False)
    person = world.users["driver2"]

    # The erasure happened: its caller is told so, not the scrub's failure.
    erased = await erasure.erase_user(world.viewer("admin"), person.id)
    assert erased.erased_at is not None
    # Signed out and the card withdrawn although the scrub failed.
    assert [type(e) for e in published] == [AccessChanged]
    await settle(services)
    assert withdrawn == [["TAG-DRIVER2"]]
    # The scrub was tried again in the background, and this time it went through.
    assert scrubs == [person.id, person.id]
    text = await audit_text(services)
    assert [p for p in PERSONAL if p in text] == []
