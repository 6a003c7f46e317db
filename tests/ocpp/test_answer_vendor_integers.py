"""A vendor's own field in a command's answer is left out before the answer's integers are
checked against OCPP's 32 bits (``handler._beyond_int``): a millisecond timestamp of
theirs does not fail a command the charger did (review s24)."""

from __future__ import annotations

from pathlib import Path

from tests.ocpp.conftest import seed, start_central, stop_central
from tests.ocpp.test_commands import run, scripted_charger


async def test_a_vendors_extra_field_with_a_big_int_is_left_out_too(tmp_path: Path) -> None:
    central = await start_central(tmp_path / "c.db", command_timeout=2)
    await seed(central)
    try:
        async with scripted_charger(central) as charger:
            charger.answers.append(("result", {"status": "Accepted",
                                               "vendorTimestampMs": 1733443200000}))
            answer = await run(central, "clearCache", {"cpId": "CP-1"})
            print(answer)
            assert answer["errors"] == [] and answer["status"] == "ACCEPTED", answer
    finally:
        await stop_central(central)
