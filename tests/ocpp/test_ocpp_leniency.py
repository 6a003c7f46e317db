"""OCPP intake leniency, as review r27-ocppconf found it wanting: a broken CALL with a long
unique id answered under it, and an answer's nulls logged once per connection."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from ocpp_bridge import frames
from tests.ocpp.conftest import seed, start_central, stop_central
from tests.ocpp.test_commands import run, scripted_charger
from tests.ocpp.test_protocol import exchange, raw

BRACED_GUID = "{0f8fad5b-d9cb-469f-a165-70867728950e}"  # 38 characters


@pytest.mark.parametrize("strict", [False, True])
async def test_a_call_not_json_with_a_long_unique_id_is_refused_under_it(
        tmp_path: Path, strict: bool) -> None:
    """README: a CALL whose uniqueId is longer than 36 characters is answered under it
    (strict: refused under it). A braced-GUID charger's CALL that is not JSON (a lone
    surrogate in its payload) is still answered under "-1": ``frames._CALL_HEAD`` keeps
    the old 36-character bound, so the charger cannot match the CALLERROR and waits out
    its timeout, as the change says it did before."""
    central = await start_central(tmp_path / "c.db", strict_schema=strict)
    await seed(central)
    ws = await raw(central)
    try:
        reply = await exchange(ws, f'[2, "{BRACED_GUID}", "Authorize", {{"idTag": "\\ud800"}}]')
        assert reply[:3] == [4, BRACED_GUID, "FormationViolation"], reply
    finally:
        await ws.close()
        await stop_central(central)


async def test_a_null_in_an_answer_is_logged_once_per_connection(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """README (CHARGEGRAPH_OCPP_STRICT_SCHEMA): answers carrying an optional field as
    null are, off strict, "left out and logged once per connection". The null is left
    out (``_leave_out_unknown`` prunes it) but never logged: only ``checked.unknown`` is
    noted, ``checked.mended`` (where the nulls are) dropped."""
    central = await start_central(tmp_path / "c.db", command_timeout=2)
    await seed(central)
    try:
        async with scripted_charger(central) as charger:
            charger.answers.append(("result", {"status": "Accepted", "data": None}))
            with caplog.at_level(logging.DEBUG, logger="chargegraph.ocpp"):
                answer = await run(central, "dataTransfer",
                                   {"cpId": "CP-1", "vendorId": "V"})
            assert answer["errors"] == [], answer
            assert "data is null" in caplog.text, caplog.text
    finally:
        await stop_central(central)


def test_a_unique_id_beyond_the_lenient_bound_is_refused_not_echoed() -> None:
    """An id is echoed in every answer: up to ``UNIQUE_ID_LENIENT_MAX`` characters are
    taken outside strict mode, a longer one is refused under "-1"."""
    taken = "x" * frames.UNIQUE_ID_LENIENT_MAX
    assert frames.parse(f'[2, "{taken}", "Heartbeat", {{}}]', strict=False).unique_id \
        == taken
    with pytest.raises(frames.FrameError) as refused:
        frames.parse(f'[2, "{taken}x", "Heartbeat", {{}}]', strict=False)
    assert (refused.value.code, refused.value.unique_id) == (frames.FORMATION_VIOLATION,
                                                             "-1")
