"""When site load management recomputes: a new session only once its StartTransaction
has been answered (a charger refuses a TxProfile for a transaction it was not told of),
an ended one as soon as its end is published (``SiteLoad``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from domain.clock import utcnow
from domain.services.site_load import SiteLoad
from tests.ocpp.conftest import seed, start_central, stop_central


async def test_a_start_is_shared_out_once_answered_and_a_stop_at_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []
    monkeypatch.setattr(SiteLoad, "request_station",
                        lambda self, station_id: asked.append(station_id))
    central = await start_central(tmp_path / "central.db")
    try:
        await seed(central)
        station = central.stations["CP-1"]
        charging = central.services.charging
        tx, info = await charging.start_transaction("CP-1", 1, "TAG-OK", 1000, utcnow())
        assert info.status == "Accepted"
        assert asked == []  # the charger does not know the transaction yet
        await charging.start_answered("CP-1")
        assert asked == [station.id]
        await charging.stop_transaction("CP-1", tx, 2000, utcnow())
        assert asked == [station.id, station.id]
    finally:
        await stop_central(central)
