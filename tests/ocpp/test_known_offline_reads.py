"""A command to a charger connected to this instance reads no station record to learn
whether it is connected nowhere (``CommandService._known_offline``; review r33-d: every
command read the station once more, the gateway asked after). One to a charger
connected nowhere still reads it, and is not sent (stage NOT_SENT). A real ``ocpp``
charger (the simulator) against a real central system on a real SQLite file."""

from __future__ import annotations

from typing import Any

import pytest

from domain import entities as d
from domain.query import ALL
from ocpp_bridge.simulator import connected
from tests.helpers import until
from tests.ocpp.conftest import STATION_PASSWORD, Central
from tests.ocpp.test_commands import run


def station_reads(central: Central, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The ids of every ``Station`` read by id from now on."""
    reads: list[str] = []
    get_many = central.store.get_many

    async def counted(kind: Any, ids: Any, *args: Any, **kwargs: Any) -> Any:
        if kind is d.Station:
            reads.extend(ids)
        return await get_many(kind, ids, *args, **kwargs)

    monkeypatch.setattr(central.store, "get_many", counted)
    return reads


async def test_a_command_to_a_charger_connected_here_reads_no_station_for_it(
        central: Central, monkeypatch: pytest.MonkeyPatch) -> None:
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        reads = station_reads(central, monkeypatch)
        answer = await run(central, "clearCache", {"cpId": "CP-1"})
        assert (answer["status"], answer["errors"]) == ("ACCEPTED", [])
        assert [name for name, _ in cp.received].count("ClearCache") == 1
        assert reads == []
    # Connected nowhere now: recorded offline, read, and not sent.
    async def recorded_offline() -> bool:
        [station] = await central.store.get_many(d.Station, [central.stations["CP-1"].id])
        return station is not None and not station.online

    await until(recorded_offline)
    reads.clear()
    offline = await central.gql(
        """mutation($input: ClearCacheInput!) { clearCache(input: $input) {
        status errors { code } } }""", {"input": {"cpId": "CP-1"}}, as_user="op")
    assert offline["clearCache"]["errors"] == [{"code": "CHARGER_OFFLINE"}]
    assert central.stations["CP-1"].id in reads
    stages = [(e.after or {}).get("stage") for e in
              await central.store.find_all(d.AuditEntry, ALL)
              if e.action is d.AuditAction.COMMAND]
    assert stages == ["SENT", "ANSWERED", "NOT_SENT"]
