"""A charger pipelining frames beyond any compliant one's rate is taken at a steady pace:
every frame answered, in order, none dropped, while the event loop stays shared."""

from __future__ import annotations

import asyncio
import json
import time

import orjson
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

import ocpp_bridge.handler
from ocpp_bridge.pacing import BYTE_BURST, BYTE_RATE, FramePacer
from ocpp_bridge.server import MAX_MESSAGE
from tests.ocpp.conftest import Central
from tests.ocpp.test_protocol import exchange, raw


def test_the_pacer_lets_a_burst_through_then_keeps_the_rate() -> None:
    now = [100.0]
    pacer = FramePacer(rate=10, burst=3, clock=lambda: now[0])
    assert [pacer.delay() for _ in range(3)] == [0.0, 0.0, 0.0]  # the burst
    assert pacer.delay() == pytest.approx(0.1)  # the fourth waits a tenth of a second
    assert pacer.delay() == pytest.approx(0.2)  # each further one another tenth
    now[0] += 10.0  # a quiet while refills the bucket, never above the burst
    assert [pacer.delay() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert pacer.delay() > 0 and pacer.delayed == 3


async def test_a_charger_pipelining_frames_is_paced_and_loses_none(
        central: Central, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    pacers: list[FramePacer] = []

    def small() -> FramePacer:
        pacers.append(FramePacer(rate=20, burst=5))
        return pacers[-1]

    monkeypatch.setattr(ocpp_bridge.handler, "FramePacer", small)
    ws = await raw(central)
    try:
        for i in range(20):  # all at once, no answer awaited: no compliant charger does
            await ws.send(json.dumps([2, f"hb-{i}", "Heartbeat", {}]))
        answers = [json.loads(await asyncio.wait_for(ws.recv(), 5)) for _ in range(20)]
    finally:
        await ws.close()
    assert [a[1] for a in answers] == [f"hb-{i}" for i in range(20)]
    assert all(a[0] == 3 and "currentTime" in a[2] for a in answers)
    assert pacers and pacers[-1].delayed >= 10  # beyond the burst of 5, they waited
    assert "sends frames faster than" in caplog.text


def test_the_pacer_counts_bytes_too() -> None:
    """Few frames, but large: the byte bucket makes them wait, the frame bucket does
    not. One frame of the largest size read passes at once."""
    now = [100.0]
    pacer = FramePacer(clock=lambda: now[0])
    assert BYTE_BURST >= MAX_MESSAGE
    assert pacer.delay(MAX_MESSAGE) == 0.0
    assert pacer.delay(BYTE_RATE) == pytest.approx(1.0)  # a second's worth, owed
    now[0] += 1.0
    assert pacer.delay(0) == 0.0  # paid off; small frames pass again


async def test_a_charger_sending_large_frames_back_to_back_leaves_the_others_served(
        central: Central, caplog: pytest.LogCaptureFixture) -> None:
    """One charger pipelining MeterValues frames of 1 MiB (each well below the limit,
    each holding the loop a fifth of a second as it is read and written): another
    charger's heartbeats go on being answered at their usual pace, not once per large
    frame (QA s26: 15 in 3 s instead of 200)."""
    flooding = await raw(central, "CP-1")
    other = await raw(central, "CP-OPEN", None)
    try:
        start = await exchange(flooding, json.dumps([2, "s", "StartTransaction", {
            "connectorId": 1, "idTag": "TAG-OK", "meterStart": 0,
            "timestamp": "2026-01-01T00:00:00Z"}]))
        readings = [{"timestamp": f"2026-01-01T{i // 3600:02d}:{i // 60 % 60:02d}:"
                                  f"{i % 60:02d}Z",
                     "sampledValue": [{"value": str(i), "unit": "Wh",
                                       "measurand": "Energy.Active.Import.Register",
                                       "context": "Sample.Periodic"}] * 5}
                    for i in range(1800)]
        frame = orjson.dumps([2, "big", "MeterValues", {
            "connectorId": 1, "transactionId": start[2]["transactionId"],
            "meterValue": readings}]).decode()
        assert 900_000 < len(frame) < MAX_MESSAGE
        flood = asyncio.create_task(_send_all(flooding, frame, 24))
        # Its first four (3.7 MB) are within the burst, taken at once: counted from then.
        for _ in range(4):
            assert json.loads(await asyncio.wait_for(flooding.recv(), 30))[0] == 3
        answered, slowest, began = 0, 0.0, time.monotonic()
        while time.monotonic() - began < 3.0:
            sent = time.monotonic()
            reply = await exchange(other, json.dumps([2, f"hb-{answered}", "Heartbeat", {}]))
            assert reply[0] == 3
            answered += 1
            slowest = max(slowest, time.monotonic() - sent)
            await asyncio.sleep(0.01)
        flood.cancel()
    finally:
        # Dropped, as a charger losing its link: its close frame would wait behind the
        # frames its socket still holds (reading them paused while they are paced).
        flooding.transport.abort()
        await other.close()
    # Unpaced, 5 to 15 were answered; paced, over 100 (on a loaded test machine).
    assert answered >= 40, (answered, slowest)
    assert "KiB a second; taking them at that rate" in caplog.text


async def _send_all(ws, frame: str, times: int) -> None:
    for _ in range(times):
        await ws.send(frame)


async def test_an_oversized_frame_is_closed_1009_unread_while_the_others_are_served(
        central: Central) -> None:
    """A frame beyond the limit closes its socket with 1009 ("message too big") as its
    header is read: nothing of it is parsed, and another charger's heartbeats, sent
    meanwhile, are answered at once."""
    oversized = await raw(central, "CP-1")
    other = await raw(central, "CP-OPEN", None)
    try:
        frame = json.dumps([2, "huge", "DataTransfer", {
            "vendorId": "V", "data": "x" * (MAX_MESSAGE + 1024)}])
        sending = asyncio.create_task(oversized.send(frame))
        slowest = 0.0
        for i in range(20):
            sent = time.monotonic()
            assert (await exchange(other, json.dumps([2, f"hb-{i}", "Heartbeat", {}])))[0] == 3
            slowest = max(slowest, time.monotonic() - sent)
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(oversized.recv(), 10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        await asyncio.wait([sending], timeout=10)  # its send ends with the socket
        assert slowest < 0.5, slowest
        # The charger's next connection is served as any.
        again = await raw(central, "CP-1")
        assert (await exchange(again, '[2, "hb", "Heartbeat", {}]'))[0] == 3
        await again.close()
    finally:
        if oversized.state is not State.CLOSED:
            oversized.transport.abort()
        await other.close()
