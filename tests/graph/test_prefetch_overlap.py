"""Independent loads of one level start together only where the store's reads overlap
(``Store.overlapping_reads``)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from domain.policy import SYSTEM
from domain.services import Services
from graph.context import GraphContext
from graph.schema import schema
from tests.graph.conftest import CountingStore
from tests.graph.test_release import NESTED
from tests.graph.world import World


async def test_a_sessions_users_and_vehicles_load_together_only_where_reads_overlap(
        services: Services, world: World, store: CountingStore,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``Session.prefetch`` starts its independent loads together on a store whose reads
    overlap (MongoDB's round trips), and awaits them one by one on one whose reads run
    on the event loop (SQLite), where tasks would overlap nothing."""
    in_flight, most = 0, 0
    real_get_many = store.inner.get_many

    async def get_many(*args: Any, **kwargs: Any) -> Any:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.001)  # a round trip
        try:
            return await real_get_many(*args, **kwargs)
        finally:
            in_flight -= 1

    monkeypatch.setattr(store, "get_many", get_many, raising=False)
    context = GraphContext.build(services, None, SYSTEM)  # type: ignore[arg-type]
    result = await schema.execute(NESTED, context_value=context)
    assert result.errors is None and result.data
    assert services.reads.overlapping is store.inner.overlapping_reads
    assert most == (2 if store.inner.overlapping_reads else 1)
