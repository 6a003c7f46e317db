"""A charger pipelining frames beyond any compliant one's rate is taken at a steady pace:
every frame answered, in order, none dropped, while the event loop stays shared."""

from __future__ import annotations

import asyncio
import json

import orjson
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from ocpp_bridge.pacing import (
    BYTE_BURST,
    BYTE_RATE,
    FRAME_BURST,
    FRAME_RATE,
    PACERS_KEPT,
    ChargerPacers,
    FramePacer,
    frame_bytes,
)
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


class _WaitedOutPacer(FramePacer):
    """A pacer whose clock moves only by the waits it hands out (as the handler sleeps
    each): the time a frame took to arrive or be read refills nothing."""

    def __init__(self, rate: float = FRAME_RATE, burst: float = FRAME_BURST,
                 **bytes_: float) -> None:
        self.now = 0.0
        #: Each wait handed out, in order.
        self.waits: list[float] = []
        super().__init__(rate, burst, clock=lambda: self.now, **bytes_)

    def delay(self, size: int = 0) -> float:
        wait = super().delay(size)
        self.now += wait
        self.waits.append(wait)
        return wait


async def test_a_charger_pipelining_frames_is_paced_and_loses_none(
        central: Central, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """Twenty heartbeats at once, a burst of 5: the fifteen beyond it each wait their
    turn. Told by the pacer's own clock, not the machine's: it runs only by the waits it
    hands out, so a loaded machine, slow to read the frames, refills no bucket between
    them (QA s29: it did, and only one frame waited)."""
    pacers: list[FramePacer] = []

    def small() -> FramePacer:
        pacers.append(_WaitedOutPacer(rate=20, burst=5))
        return pacers[-1]

    monkeypatch.setattr(central.server.pacers, "factory", small)
    ws = await raw(central)
    try:
        for i in range(20):  # all at once, no answer awaited: no compliant charger does
            await ws.send(json.dumps([2, f"hb-{i}", "Heartbeat", {}]))
        answers = [json.loads(await asyncio.wait_for(ws.recv(), 5)) for _ in range(20)]
    finally:
        await ws.close()
    assert [a[1] for a in answers] == [f"hb-{i}" for i in range(20)]
    assert all(a[0] == 3 and "currentTime" in a[2] for a in answers)
    assert pacers and pacers[-1].delayed == 15  # beyond the burst of 5, each waited
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
        central: Central, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """One charger pipelining DataTransfer frames of 1 MiB (each well below the limit;
    MeterValues that large are refused unread since session 29, ``frames.bound``): beyond its
    burst its frames wait unread while another charger's heartbeats are answered, not
    one heartbeat per large frame (QA s26: 15 in 3 s instead of 200). Told by order,
    not by time: its byte rate is made so low here that the frame after the burst waits
    for minutes, and twenty heartbeats are all answered before it, however loaded the
    machine (unpaced, a large frame went between each two heartbeats)."""
    pacers: list[FramePacer] = []

    def slow() -> FramePacer:
        pacers.append(FramePacer(byte_rate=1024))
        return pacers[-1]

    monkeypatch.setattr(central.server.pacers, "factory", slow)
    flooding = await raw(central, "CP-1")
    other = await raw(central, "CP-OPEN", None)
    try:
        frame = orjson.dumps([2, "big", "DataTransfer", {
            "vendorId": "V", "data": "reading " * 120_000}]).decode()
        assert 900_000 < len(frame) < MAX_MESSAGE
        flood = asyncio.create_task(_send_all(flooding, frame, 24))
        # Its first four (3.7 MB) are within the burst, taken at once.
        for _ in range(4):
            assert json.loads(await asyncio.wait_for(flooding.recv(), 30))[0] == 3
        large_answers = asyncio.ensure_future(flooding.recv())
        for i in range(20):
            reply = await exchange(other, json.dumps([2, f"hb-{i}", "Heartbeat", {}]))
            assert reply[0] == 3
            assert not large_answers.done(), f"a large frame was answered before hb-{i}"
        large_answers.cancel()
        flood.cancel()
        # A stop waits for every connection's handler: the flooding one's ends as the
        # stop closes it, not once its pace (minutes here) is waited out (bounded: 30 s;
        # its socket, paused, would not tell the server of a hang-up before a write).
        await asyncio.wait_for(central.server.stop(), 30)
    finally:
        flooding.transport.abort()
        await other.close()
    assert any(pacer.delayed for pacer in pacers)  # the flooding charger's
    assert "KiB a second; taking them at that rate" in caplog.text


async def _send_all(ws, frame: str, times: int) -> None:
    for _ in range(times):
        await ws.send(frame)


class _TellingPacer(FramePacer):
    """A pacer that keeps the size of every frame it was asked about: every frame a
    connection takes in is, before anything else is done with it."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    def delay(self, size: int = 0) -> float:
        self.sizes.append(size)
        return super().delay(size)


async def test_an_oversized_frame_is_closed_1009_unread_while_the_others_are_served(
        central: Central, monkeypatch: pytest.MonkeyPatch) -> None:
    """A frame beyond the limit closes its socket with 1009 ("message too big") as its
    header is read: nothing of it is taken in (no pacer is asked about it, as every frame
    taken in is), and another charger's heartbeats, sent meanwhile, are all answered.
    Told by what was taken in, not by time (QA s29: the slowest heartbeat under 0.5 s
    failed on a loaded machine); a frame read whole would be paced, parsed and answered
    or refused as any other, not closed 1009."""
    pacers: list[_TellingPacer] = []

    def telling() -> FramePacer:
        pacers.append(_TellingPacer())
        return pacers[-1]

    monkeypatch.setattr(central.server.pacers, "factory", telling)
    oversized = await raw(central, "CP-1")
    other = await raw(central, "CP-OPEN", None)
    try:
        frame = json.dumps([2, "huge", "DataTransfer", {
            "vendorId": "V", "data": "x" * (MAX_MESSAGE + 1024)}])
        sending = asyncio.create_task(oversized.send(frame))
        for i in range(20):
            assert (await exchange(other, json.dumps([2, f"hb-{i}", "Heartbeat", {}])))[0] == 3
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(oversized.recv(), 10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        await asyncio.wait([sending], timeout=10)  # its send ends with the socket
        taken = sorted(size for pacer in pacers for size in pacer.sizes)
        assert len(taken) == 20 and taken[-1] < 100, taken  # the heartbeats alone
        # The charger's next connection is served as any.
        again = await raw(central, "CP-1")
        assert (await exchange(again, '[2, "hb", "Heartbeat", {}]'))[0] == 3
        await again.close()
    finally:
        if oversized.state is not State.CLOSED:
            oversized.transport.abort()
        await other.close()


async def test_a_charger_reconnecting_keeps_its_pace(
        central: Central, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review s26: the byte bucket lived on the connection, so a charger that had spent
    its burst hung up, reconnected and had its next large frames taken at once again:
    one flooding 4 MiB per connection was never paced. The pace is its cpId's. Scaled
    down: a burst of 8,000 bytes, 39,000 a second (a tenth of a second a frame), on the
    pacer's own clock (session 31: a sum of waits above 5 s, on the machine's clock, was
    a bound a loaded machine's slow reconnects could refill)."""
    pacers: list[_WaitedOutPacer] = []

    def small() -> FramePacer:
        pacers.append(_WaitedOutPacer(byte_rate=39_000, byte_burst=8000))
        return pacers[-1]

    monkeypatch.setattr(central.server.pacers, "factory", small)
    frame = json.dumps([2, "{}", "DataTransfer", {"vendorId": "V", "data": "x" * 3900}])
    for round_ in range(3):
        ws = await raw(central, "CP-1")
        try:
            for i in range(2):  # 7.8 KB: the burst, spent
                await ws.send(frame.replace("{}", f"{round_}-{i}"))
            for _ in range(2):
                assert json.loads(await asyncio.wait_for(ws.recv(), 10))[0] == 3
        finally:
            await ws.close()
    # One pace for the three connections: the first two frames were the burst, every
    # later one, the reconnects' first ones too, waited for its bytes (3.9 KB at 39,000 a
    # second), the first the 3.7 KB it overdrew.
    [pacer] = pacers
    size = frame_bytes(frame.replace("{}", "0-0").encode())
    assert pacer.waits == [0.0, 0.0, pytest.approx((3 * size - 8000) / 39_000),
                           *[pytest.approx(size / 39_000)] * 3]
    # Each connection gave its charger's pace back as it closed: it may be forgotten.
    for _ in range(250):
        if central.server.pacers.users("CP-1") == 0:
            break
        await asyncio.sleep(0.02)
    assert central.server.pacers.users("CP-1") == 0


def test_a_chargers_pace_is_forgotten_once_its_buckets_are_full_again() -> None:
    """Memory stays bounded: past ``PACERS_KEPT`` chargers, those whose buckets have
    refilled are forgotten when the next one is added; one still owing is kept."""
    now = [0.0]
    pacers = ChargerPacers(lambda: FramePacer(rate=10, burst=10, clock=lambda: now[0],
                                              byte_rate=100, byte_burst=100))
    pacers.of("FLOOD").delay(1000)  # 900 bytes owed: 9 s
    pacers.release("FLOOD")
    for i in range(PACERS_KEPT - 1):
        pacers.of(f"CP-{i}").delay(10)
        pacers.release(f"CP-{i}")  # its connection closed
    assert len(pacers) == PACERS_KEPT
    now[0] += 5.0  # the others' buckets are full again, FLOOD's not
    flood = pacers.of("FLOOD")
    pacers.of("NEW")
    assert len(pacers) == 2 and pacers.of("FLOOD") is flood
    assert flood.delay(0) > 0


def test_a_frame_is_counted_in_bytes() -> None:
    """The pace is stated in KiB: a frame's UTF-8 bytes, not its characters."""
    assert frame_bytes("abc") == 3
    assert frame_bytes("éé") == 4 and frame_bytes("€") == 3
    assert frame_bytes(b"\x00\x01") == 2


async def test_a_frame_of_multibyte_text_is_paced_by_its_bytes(
        central: Central, monkeypatch: pytest.MonkeyPatch) -> None:
    """A DataTransfer of 3,000 three-byte characters (9 KB) spends a burst of 8,000
    bytes: the next frame waits."""
    pacers: list[FramePacer] = []

    def small() -> FramePacer:
        pacers.append(FramePacer(byte_rate=100_000, byte_burst=8000))
        return pacers[-1]

    monkeypatch.setattr(central.server.pacers, "factory", small)
    ws = await raw(central, "CP-1")
    try:
        await ws.send(json.dumps([2, "a", "DataTransfer", {"vendorId": "V",
                                                           "data": "\u20ac" * 3000}],
                                 ensure_ascii=False))
        await ws.send(json.dumps([2, "b", "Heartbeat", {}]))
        for _ in range(2):
            assert json.loads(await asyncio.wait_for(ws.recv(), 10))[0] == 3
    finally:
        await ws.close()
    assert pacers[-1].delayed == 1


def test_a_connected_chargers_pace_is_never_forgotten() -> None:
    """Review r26-robust2: a charger connected and idle (its buckets full) was swept
    when other chargers connected past ``PACERS_KEPT``, while its live connection kept
    using the forgotten pacer: it then flooded (its burst spent, in debt), reconnected,
    and was handed a fresh pacer, a whole new burst at once. A pace in use by a live
    connection is kept; once given back, and full again, it may go."""
    now = [0.0]
    pacers = ChargerPacers(lambda: FramePacer(rate=10, burst=10, clock=lambda: now[0],
                                              byte_rate=100, byte_burst=100))
    live = pacers.of("FLOOD")  # its connection's pacer, held by its handler
    now[0] += 1.0
    for i in range(PACERS_KEPT):  # a fleet connecting (or a restart's reconnect storm)
        pacers.of(f"CP-{i}")
        pacers.release(f"CP-{i}")
    live.delay(100)  # the burst, spent on the live connection
    assert live.delay(100) > 0  # in debt: the next frame waits
    pacers.release("FLOOD")  # hangs up
    again = pacers.of("FLOOD")  # and connects again
    assert again is live, "a fresh burst after reconnecting"
    pacers.release("FLOOD")
    now[0] += 60.0  # full again, and no connection holds it
    for i in range(2 * PACERS_KEPT):
        pacers.of(f"LATER-{i}")
        pacers.release(f"LATER-{i}")
    assert pacers.of("FLOOD") is not live
