"""``Station.configuration_truncated`` is control state written unaudited, as the
configuration keys are (``configuration._truncation``), on both stores."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from domain import entities as d
from domain.query import Eq
from domain.services.configuration import MAX_KEYS, record_read
from tests.graph.conftest import CountingStore
from tests.graph.world import World
from tests.support.mongo_backend import unhurried_batches


async def test_a_configuration_cut_off_moves_neither_the_station_s_version_nor_its_author(
        store: CountingStore, world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """It moves neither the station's version nor its ``updatedBy``. It was written with
    the update stamps and no audit entry: the station's ``updatedBy`` named the operator
    who read its configuration, its ``updatedAt`` moved, and no entry told of a change
    (QA s28 audit2)."""
    unhurried_batches(monkeypatch)
    op = world.viewer("op_a")
    station = world.stations["A-001"]
    assert not station.configuration_truncated
    keys = [{"key": f"Vendor.Key{i:05d}", "readonly": False, "value": "1"}
            for i in range(MAX_KEYS + 1)]
    await record_read(store, station, {"configurationKey": keys},  # type: ignore[arg-type]
                      op, datetime.now(UTC), whole=True)
    [cut] = await store.get_many(d.Station, [station.id])
    assert cut is not None and cut.configuration_truncated
    assert (cut.updated_at, cut.updated_by) == (station.updated_at, station.updated_by)
    # Cleared so too, by a read of every key that fits.
    await record_read(store, cut, {"configurationKey": keys[:10]},  # type: ignore[arg-type]
                      op, datetime.now(UTC), whole=True)
    [fits] = await store.get_many(d.Station, [station.id])
    assert fits is not None and not fits.configuration_truncated
    assert (fits.updated_at, fits.updated_by) == (station.updated_at, station.updated_by)
    assert await store.count(d.AuditEntry, Eq("entity_id", station.id)) == 1  # its CREATE
