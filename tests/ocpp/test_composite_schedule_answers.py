"""GetCompositeSchedule answers a charger computes off the 1.6 schema's letter (QA s25)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from tests.ocpp.conftest import seed, start_central, stop_central
from tests.ocpp.test_commands import run, scripted_charger

SELECTION = ("status connectorId chargingSchedule { chargingRateUnit minChargingRate "
             "chargingSchedulePeriod { startPeriod limit } } errors { code }")


def accepted(schedule: dict[str, Any]) -> dict[str, Any]:
    return {"status": "Accepted", "connectorId": 1,
            "scheduleStart": "2026-01-01T00:00:00Z", "chargingSchedule": schedule}


@pytest.mark.parametrize("strict", [False, True], ids=["lenient", "strict"])
async def test_a_composite_schedule_off_the_rate_step_or_without_periods_is_read(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, strict: bool) -> None:
    """QA s25: a charger that said Accepted with a schedule whose rates are off OCPP
    1.6's 0.1 step (16.05 A, what it computed from its profiles combined) or that has no
    ``chargingSchedulePeriod`` (nothing planned) was answered CHARGER_ERROR: the
    operator never saw what it plans to apply. By default the schedule is taken as the
    charger gave it (rates as answered, no periods as none; logged once); strict
    (``CHARGEGRAPH_OCPP_STRICT_SCHEMA``), refused as before. Anything else wrong still
    is."""
    central = await start_central(tmp_path / "c.db", command_timeout=2, strict_schema=strict)
    await seed(central)
    ask = {"cpId": "CP-1", "connectorId": 1, "duration": 3600}
    try:
        async with scripted_charger(central) as charger:
            charger.answers.append(("result", accepted({
                "chargingRateUnit": "W", "minChargingRate": 1380.55,
                "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 11000.0},
                                           {"startPeriod": 600, "limit": 3680.05}]})))
            with caplog.at_level(logging.INFO, logger="chargegraph.ocpp"):
                answer = await run(central, "getCompositeSchedule", ask, SELECTION)
            if strict:
                assert [e["code"] for e in answer["errors"]] == ["CHARGER_ERROR"], answer
                return
            assert answer["errors"] == [] and answer["status"] == "ACCEPTED", answer
            assert answer["chargingSchedule"] == {
                "chargingRateUnit": "W", "minChargingRate": 1380.55,
                "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 11000.0},
                                           {"startPeriod": 600, "limit": 3680.05}]}
            assert "0.1 step" in caplog.text

            charger.answers.append(("result", accepted({"chargingRateUnit": "A"})))
            none = await run(central, "getCompositeSchedule", ask, SELECTION)
            assert none["errors"] == [] and none["chargingSchedule"] == {
                "chargingRateUnit": "A", "minChargingRate": None,
                "chargingSchedulePeriod": []}, none

            # Still refused: a limit that is no number, a unit 1.6 does not have.
            for schedule in ({"chargingRateUnit": "A", "chargingSchedulePeriod": [
                    {"startPeriod": 0, "limit": "16.05"}]},
                    {"chargingRateUnit": "kW", "chargingSchedulePeriod": []}):
                charger.answers.append(("result", accepted(schedule)))
                refused = await run(central, "getCompositeSchedule", ask, SELECTION)
                assert [e["code"] for e in refused["errors"]] == ["CHARGER_ERROR"], refused
    finally:
        await stop_central(central)
