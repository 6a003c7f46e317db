"""A charger pipelining frames beyond any compliant one's rate is taken at a steady pace:
every frame answered, in order, none dropped, while the event loop stays shared."""

from __future__ import annotations

import asyncio
import json

import pytest

import ocpp_bridge.handler
from ocpp_bridge.pacing import FramePacer
from tests.ocpp.conftest import Central
from tests.ocpp.test_protocol import raw


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
