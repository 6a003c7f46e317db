"""Commands across instances (``pubsub/command_relay.py``): two relays, each with its own
local gateway, over one in-process bus (every event through the wire codec, as Redis
carries it) and over two real Redis connections."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from domain.errors import (
    OUTCOME_UNKNOWN,
    ChargerError,
    ChargerLost,
    ChargerOffline,
    ChargerRejected,
    ChargerTimeout,
    DomainError,
    ValidationError,
)
from domain.events import (
    ChargerCommandAnswered,
    ChargerCommandConfirmed,
    ChargerCommandRelayed,
)
from domain.services.commands import not_the_chargers_answer
from pubsub import command_relay
from pubsub.codec import decode, encode
from pubsub.command_relay import CommandRelay
from pubsub.factory import ManagedEventBus
from pubsub.memory import MemoryEventBus
from pubsub.redis import RedisEventBus
from tests.helpers import soon
from tests.support.redis_server import RedisServer
from tests.support.wire_bus import WireBus

CLAIM_TIMEOUT = 0.5
#: A command timeout far longer than any test waits: an answer that comes at all must
#: come from the holder, not from the asker giving up.
LONG = 60.0
#: How long a test waits for an answer that must come at once.
AT_ONCE = 10.0


class FakeChargers:
    """A local gateway: the chargers connected to one instance and how they answer."""

    def __init__(self, *cp_ids: str) -> None:
        self.cp_ids = set(cp_ids)
        self.calls: list[tuple[str, str, dict[str, Any], float]] = []
        self.answer: Any = {"status": "Accepted"}
        self.called = asyncio.Event()
        #: What an answer ``"held"`` waits for.
        self.released = asyncio.Event()
        #: The number the store drew for a charger's connection here, where a test gives
        #: one (``ChargePointHandler.number``): older than ``newest``, it was superseded.
        self.numbers: dict[str, int] = {}

    def is_connected(self, cp_id: str, newest: int | None = None) -> bool:
        number = self.numbers.get(cp_id)
        return cp_id in self.cp_ids and not (
            newest is not None and number is not None and newest > number)

    def connected(self) -> list[str]:
        return sorted(self.cp_ids)

    async def call(self, cp_id: str, action: str, payload: dict[str, Any],
                   timeout: float, newest: int | None = None) -> dict[str, Any]:
        self.calls.append((cp_id, action, payload, timeout))
        self.called.set()
        if isinstance(self.answer, BaseException):
            raise self.answer
        if self.answer == "never":
            await asyncio.sleep(3600)
        if self.answer == "held":
            await self.released.wait()
            return {"status": "Accepted"}
        return dict(self.answer)


@pytest.fixture(params=["memory", "redis"])
async def buses(request: pytest.FixtureRequest
                ) -> AsyncIterator[tuple[ManagedEventBus, ManagedEventBus]]:
    """The buses of instances A and B: one shared in-process bus, or two Redis clients."""
    if request.param == "memory":
        shared = WireBus()
        await shared.start()
        yield shared, shared
        await shared.close()
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    a, b = RedisEventBus(server.url), RedisEventBus(server.url)
    await a.start()
    await b.start()
    yield a, b
    await a.close()
    await b.close()


@pytest.fixture
async def instances(buses: tuple[ManagedEventBus, ManagedEventBus]
                    ) -> AsyncIterator[tuple[CommandRelay, CommandRelay, FakeChargers]]:
    """Relay A with no chargers (an instance serving only GraphQL), relay B holding CP-B."""
    on_b = FakeChargers("CP-B")
    a = CommandRelay(buses[0], None, claim_timeout=CLAIM_TIMEOUT)
    b = CommandRelay(buses[1], on_b, claim_timeout=CLAIM_TIMEOUT)
    await a.start()
    await b.start()
    yield a, b, on_b
    await a.close()
    await b.close()


async def test_a_command_reaches_the_charger_on_another_instance(
        instances: tuple[CommandRelay, CommandRelay, FakeChargers]) -> None:
    a, _, on_b = instances
    on_b.answer = {"status": "Unlocked"}
    answer = await a.call("CP-B", "UnlockConnector", {"connectorId": 1}, 5.0)
    assert answer == {"status": "Unlocked"}
    assert on_b.calls == [("CP-B", "UnlockConnector", {"connectorId": 1}, 5.0)]
    assert not a.is_connected("CP-B")


async def test_a_local_charger_is_called_directly(
        instances: tuple[CommandRelay, CommandRelay, FakeChargers]) -> None:
    _, b, on_b = instances
    assert b.is_connected("CP-B")
    assert await b.call("CP-B", "Reset", {"type": "Soft"}, 5.0) == {"status": "Accepted"}
    assert len(on_b.calls) == 1


async def test_times_travel_as_the_ocpp_wire_writes_them(
        instances: tuple[CommandRelay, CommandRelay, FakeChargers]) -> None:
    a, _, on_b = instances
    expiry = datetime(2026, 12, 3, 23, 30, 0, 123456, tzinfo=timezone(timedelta(hours=1)))
    await a.call("CP-B", "ReserveNow", {"connectorId": 1, "expiryDate": expiry,
                                        "idTag": "TAG", "nested": [{"at": expiry}]}, 5.0)
    assert on_b.calls[0][2] == {"connectorId": 1, "expiryDate": "2026-12-03T22:30:00.123Z",
                                "idTag": "TAG", "nested": [{"at": "2026-12-03T22:30:00.123Z"}]}


async def test_decimals_in_a_chargers_answer_arrive_as_numbers(
        instances: tuple[CommandRelay, CommandRelay, FakeChargers]) -> None:
    # The ocpp package parses a charger's JSON floats into Decimal (GetCompositeSchedule).
    a, _, on_b = instances
    on_b.answer = {"status": "Accepted", "chargingSchedule": {"chargingSchedulePeriod": [
        {"startPeriod": 0, "limit": Decimal("32.5")}]}}
    answer = await asyncio.wait_for(a.call("CP-B", "GetCompositeSchedule",
                                           {"connectorId": 1, "duration": 60}, LONG), AT_ONCE)
    assert answer == {"status": "Accepted", "chargingSchedule": {"chargingSchedulePeriod": [
        {"startPeriod": 0, "limit": 32.5}]}}


@pytest.mark.parametrize("error", [
    ChargerTimeout("CP-B did not answer Reset within 5s"),
    ChargerLost(OUTCOME_UNKNOWN),  # not the charger's silence: its socket closed
    ChargerError("CP-B answered Reset with NotSupported: no"),
    ChargerOffline("CP-B went offline"),
    ChargerRejected("the charger answered Rejected"),
    ValidationError("Reset: bad type", field="input"),
    ValidationError("type is required", field="type", code="REQUIRED"),
], ids=lambda e: f"{type(e).__name__}-{e.code}")
async def test_the_chargers_failure_arrives_as_the_same_error(
        instances: tuple[CommandRelay, CommandRelay, FakeChargers], error: Exception) -> None:
    a, _, on_b = instances
    on_b.answer = error
    with pytest.raises(DomainError) as raised:
        await asyncio.wait_for(a.call("CP-B", "Reset", {"type": "Soft"}, LONG), AT_ONCE)
    same = raised.value
    assert type(same) is type(error)
    assert (str(same), same.field, same.code) == (str(error), error.field,  # type: ignore[attr-defined]
                                                  error.code)  # type: ignore[attr-defined]


async def test_an_unexpected_failure_on_the_holder_is_reported_at_once(
        instances: tuple[CommandRelay, CommandRelay, FakeChargers]) -> None:
    a, _, on_b = instances
    on_b.answer = RuntimeError("a bug in the holder")
    with pytest.raises(ChargerError, match=r"CP-B: Reset failed \(RuntimeError\)"):
        await asyncio.wait_for(a.call("CP-B", "Reset", {"type": "Soft"}, LONG), AT_ONCE)


async def test_a_holder_that_shuts_down_mid_command_reports_its_outcome_unknown(
        instances: tuple[CommandRelay, CommandRelay, FakeChargers]) -> None:
    """Its charger may have the command (review s31: it was ``ChargerOffline``, never
    sent, and a reservation the charger may hold was removed): ``ChargerLost``."""
    a, b, on_b = instances
    on_b.answer = "never"
    asked = asyncio.create_task(a.call("CP-B", "Reset", {"type": "Soft"}, LONG))
    await asyncio.wait_for(on_b.called.wait(), AT_ONCE)
    await b.close()
    with pytest.raises(ChargerLost, match="the instance holding CP-B stopped while it "
                                          "had Reset; its outcome is unknown"):
        await asyncio.wait_for(asked, AT_ONCE)


async def test_only_the_first_claimers_answers_count(
        buses: tuple[ManagedEventBus, ManagedEventBus]) -> None:
    """Two instances may hold a charger for a moment (it reconnected to one before the
    other noticed its old socket die): the asker listens to the first that claims."""
    bus = buses[0]
    relay = CommandRelay(bus, None, claim_timeout=AT_ONCE)
    await relay.start()
    requests = bus.subscribe([ChargerCommandRelayed.topic])
    try:
        asked = asyncio.create_task(relay.call("CP-B", "Reset", {"type": "Soft"}, LONG))
        request = await anext(aiter(requests))
        assert isinstance(request, ChargerCommandRelayed)

        async def say(holder: str, stage: str, **fields: Any) -> None:
            await bus.publish(ChargerCommandAnswered(
                station_id=None, cp_id="CP-B", request_id=request.request_id,
                origin=request.origin, holder=holder, stage=stage, **fields))

        await say("live", "claimed")
        await say("stale", "claimed")
        await say("stale", "failed", error_code="CHARGER_OFFLINE",
                  error_message="CP-B went offline")
        await say("live", "progress")  # a stage this version does not know: ignored
        await say("live", "answered", result={"status": "Accepted"})
        assert await asyncio.wait_for(asked, AT_ONCE) == {"status": "Accepted"}
    finally:
        await requests.aclose()  # type: ignore[attr-defined]
        await relay.close()


async def test_a_holder_sends_only_what_its_asker_confirms(
        buses: tuple[ManagedEventBus, ManagedEventBus]) -> None:
    """A request heard late (the holder or Redis stalled past the asker's claim timeout,
    and the asker told its client the charger is offline) is claimed, not confirmed, and
    dropped: the charger never gets it. A confirmed one is sent."""
    asker_bus, holder_bus = buses
    on_b = FakeChargers("CP-B")
    holder = CommandRelay(holder_bus, on_b, claim_timeout=CLAIM_TIMEOUT)
    await holder.start()
    answers = asker_bus.subscribe([ChargerCommandAnswered.topic])
    try:
        async def ask(request_id: str) -> ChargerCommandAnswered:
            await asker_bus.publish(ChargerCommandRelayed(
                station_id=None, cp_id="CP-B", request_id=request_id, origin="gone",
                action="Reset", payload={"type": "Soft"}, timeout=LONG))
            claim = await asyncio.wait_for(anext(aiter(answers)), AT_ONCE)
            assert isinstance(claim, ChargerCommandAnswered) and claim.stage == "claimed"
            return claim

        await ask("late")
        # Another holder's confirmation is not this one's.
        await asker_bus.publish(ChargerCommandConfirmed(
            station_id=None, cp_id="CP-B", request_id="late", origin="gone", holder="other"))
        await asyncio.sleep(CLAIM_TIMEOUT * 3)
        assert on_b.calls == []  # never confirmed: dropped
        claim = await ask("wanted")
        await asker_bus.publish(ChargerCommandConfirmed(
            station_id=None, cp_id="CP-B", request_id="wanted", origin="gone",
            holder=claim.holder))
        answered = await asyncio.wait_for(anext(aiter(answers)), AT_ONCE)
        assert isinstance(answered, ChargerCommandAnswered)
        assert (answered.request_id, answered.stage) == ("wanted", "answered")
        assert [call[1] for call in on_b.calls] == ["Reset"]
    finally:
        await answers.aclose()  # type: ignore[attr-defined]
        await holder.close()


async def test_a_charger_no_instance_holds_is_offline(
        instances: tuple[CommandRelay, CommandRelay, FakeChargers]) -> None:
    a, _, on_b = instances
    with pytest.raises(ChargerOffline, match="CP-X is not connected") as raised:
        await a.call("CP-X", "Reset", {"type": "Soft"}, 5.0)
    assert raised.value.field == "cpId"
    assert on_b.calls == []


async def test_a_claimed_command_without_an_answer_times_out(
        instances: tuple[CommandRelay, CommandRelay, FakeChargers]) -> None:
    a, _, on_b = instances
    on_b.answer = "never"
    with pytest.raises(ChargerTimeout, match=r"did not answer Reset within 0\.2s"):
        await a.call("CP-B", "Reset", {"type": "Soft"}, 0.2)
    assert len(on_b.calls) == 1


async def test_an_unreachable_bus_is_reported_as_offline() -> None:
    class BrokenBus(MemoryEventBus):
        async def publish(self, event: Any) -> None:
            raise ConnectionError("redis is down")

    bus = BrokenBus()
    relay = CommandRelay(bus, None, claim_timeout=CLAIM_TIMEOUT)
    await relay.start()
    try:
        with pytest.raises(ChargerOffline, match="cannot be reached"):
            await relay.call("CP-B", "Reset", {"type": "Soft"}, 5.0)
    finally:
        await relay.close()
        await bus.close()


async def test_concurrent_commands_get_their_own_answers(
        instances: tuple[CommandRelay, CommandRelay, FakeChargers]) -> None:
    a, _, on_b = instances

    class Echo(FakeChargers):
        async def call(self, cp_id: str, action: str, payload: dict[str, Any],
                       timeout: float, newest: int | None = None) -> dict[str, Any]:
            await asyncio.sleep(0.01 * (5 - payload["n"]))  # answers out of order
            return {"n": payload["n"]}

    echo = Echo("CP-B")
    instances[1].local = echo
    answers = await asyncio.gather(*(a.call("CP-B", "DataTransfer", {"n": n}, 5.0)
                                     for n in range(5)))
    assert answers == [{"n": n} for n in range(5)]
    assert on_b.calls == []


# ------------------------------------------------------------------ a stop beginning
STOPPING = "the service is shutting down: try again in a moment"


async def test_a_stop_waits_for_the_answer_of_a_command_the_holder_has(
        instances: tuple[CommandRelay, CommandRelay, FakeChargers]) -> None:
    """A stop beginning on the asker's instance: a command confirmed to its holder (the
    charger may have it) waits for the charger's answer, and gets it."""
    a, _, on_b = instances
    on_b.answer = "held"
    asked = asyncio.create_task(a.call("CP-B", "Reset", {"type": "Soft"}, LONG))
    await asyncio.wait_for(on_b.called.wait(), AT_ONCE)  # confirmed and sent
    a.stop_commands(STOPPING, give_up_in=LONG)
    on_b.released.set()
    assert await asyncio.wait_for(asked, AT_ONCE) == {"status": "Accepted"}


async def test_a_stop_gives_up_on_a_command_the_holder_has_as_unanswered(
        instances: tuple[CommandRelay, CommandRelay, FakeChargers]) -> None:
    """Still unanswered when the stop gives up (its grace nearly over): CHARGER_TIMEOUT,
    the charger may have acted (never "try again": it would be sent twice). QA: before,
    the request was held until uvicorn gave up (a bare 500), then failed at once."""
    a, _, on_b = instances
    on_b.answer = "never"
    asked = asyncio.create_task(a.call("CP-B", "Reset", {"type": "Soft"}, LONG))
    await asyncio.wait_for(on_b.called.wait(), AT_ONCE)  # confirmed and sent
    a.stop_commands(STOPPING, give_up_in=0)  # the grace's margin already reached
    with pytest.raises(ChargerLost, match="may have acted"):
        await asyncio.wait_for(asked, AT_ONCE)


async def test_a_stopping_holder_carries_a_relayed_command_to_its_answer(
        instances: tuple[CommandRelay, CommandRelay, FakeChargers]) -> None:
    """The instance holding the charger begins to stop while it carries out another's
    command: its ``settle`` (before its OCPP server stops) waits for the charger's
    answer, which the asker gets."""
    a, b, on_b = instances
    on_b.answer = "held"
    asked = asyncio.create_task(a.call("CP-B", "Reset", {"type": "Soft"}, LONG))
    await asyncio.wait_for(on_b.called.wait(), AT_ONCE)
    b.stop_commands(STOPPING, give_up_in=LONG)
    settled = asyncio.create_task(b.settle())
    await asyncio.sleep(0)
    assert not settled.done()
    on_b.released.set()
    assert await asyncio.wait_for(asked, AT_ONCE) == {"status": "Accepted"}
    await asyncio.wait_for(settled, AT_ONCE)


async def test_a_close_without_a_stop_answers_a_confirmed_command_as_unanswered(
        instances: tuple[CommandRelay, CommandRelay, FakeChargers]) -> None:
    """Review s31: a close with no stop before it (a start failing, a tool) answered a
    command its holder had been told to send ChargerOffline, "never sent": a ReserveNow
    then lost the reservation the charger may hold."""
    a, _, on_b = instances
    on_b.answer = "never"
    asked = asyncio.create_task(a.call("CP-B", "Reset", {"type": "Soft"}, LONG))
    await asyncio.wait_for(on_b.called.wait(), AT_ONCE)  # confirmed and sent
    await a.close()
    with pytest.raises(ChargerLost, match="may have acted"):  # the charger may act on it
        await asyncio.wait_for(asked, AT_ONCE)


async def test_a_stop_answers_a_command_nobody_claimed_yet_as_not_sent(
        buses: tuple[ManagedEventBus, ManagedEventBus]) -> None:
    relay = CommandRelay(buses[0], None, claim_timeout=LONG)
    await relay.start()
    requests = buses[0].subscribe([ChargerCommandRelayed.topic])
    try:
        asked = asyncio.create_task(relay.call("CP-B", "Reset", {"type": "Soft"}, LONG))
        await asyncio.wait_for(anext(aiter(requests)), AT_ONCE)  # published, unclaimed
        relay.stop_commands(STOPPING)
        with pytest.raises(ChargerOffline, match="shutting down"):
            await asyncio.wait_for(asked, AT_ONCE)
    finally:
        await requests.aclose()  # type: ignore[attr-defined]
        await relay.close()


async def test_a_stop_refuses_new_commands_and_keeps_answers_that_came_first(
        instances: tuple[CommandRelay, CommandRelay, FakeChargers]) -> None:
    a, _, on_b = instances
    assert await a.call("CP-B", "Reset", {"type": "Soft"}, LONG) == {"status": "Accepted"}
    a.stop_commands(STOPPING)
    with pytest.raises(ChargerOffline, match="shutting down"):
        await a.call("CP-B", "Reset", {"type": "Soft"}, LONG)
    assert len(on_b.calls) == 1  # nothing relayed


async def test_a_stop_reaches_the_local_gateway(
        instances: tuple[CommandRelay, CommandRelay, FakeChargers]) -> None:
    """Its chargers' commands stop there (``OcppGateway.stop_commands``, then
    ``give_up_commands``), also those carried out for other instances, whose askers hear
    how they ended."""
    _, b, on_b = instances
    stopped: list[str] = []

    class Stoppable(FakeChargers):
        def stop_commands(self, reason: str) -> None:
            stopped.append(reason)

        def give_up_commands(self) -> None:
            stopped.append("given up")

    b.local = Stoppable("CP-B")
    b.stop_commands(STOPPING)
    assert stopped == [STOPPING]
    b.give_up_commands()
    assert stopped == [STOPPING, "given up"]
    assert on_b.calls == []


# ------------------------------------------------------------------ a holder gone
async def claimed_by_a_silent_holder(bus: ManagedEventBus, requests: Any) -> str:
    """Claims the next relayed command as a holder would, confirms nothing back, and then
    says nothing more: a holder killed (SIGKILL) right after its claim."""
    request = await asyncio.wait_for(anext(aiter(requests)), AT_ONCE)
    assert isinstance(request, ChargerCommandRelayed)
    await bus.publish(ChargerCommandAnswered(
        station_id=None, cp_id=request.cp_id, request_id=request.request_id,
        origin=request.origin, holder="killed", stage="claimed"))
    return request.request_id


async def test_a_holder_killed_mid_command_is_given_up_after_its_silence(
        buses: tuple[ManagedEventBus, ManagedEventBus]) -> None:
    """QA: the asker waited twice the timeout plus the claim (60 s by default) for a
    holder that was gone; a load balancer answered 504 first. Silence for the timeout
    (plus the claim's margin) now ends the wait."""
    relay = CommandRelay(buses[0], None, claim_timeout=CLAIM_TIMEOUT)
    await relay.start()
    requests = buses[1].subscribe([ChargerCommandRelayed.topic])
    try:
        asked = asyncio.create_task(relay.call("CP-B", "Reset", {"type": "Soft"}, 0.5))
        await claimed_by_a_silent_holder(buses[1], requests)
        with pytest.raises(ChargerLost, match="has not been heard from"):
            await asyncio.wait_for(asked, AT_ONCE)
    finally:
        await requests.aclose()  # type: ignore[attr-defined]
        await relay.close()


async def test_a_holder_still_at_it_is_waited_for(
        instances: tuple[CommandRelay, CommandRelay, FakeChargers]) -> None:
    """A command that waited its turn on the holder (which bounds the turn and the answer
    by the timeout each) is answered after longer than the timeout: the holder's progress
    reports keep its asker waiting."""
    a, _, _ = instances

    class Slow(FakeChargers):
        async def call(self, cp_id: str, action: str, payload: dict[str, Any],
                       timeout: float, newest: int | None = None) -> dict[str, Any]:
            await asyncio.sleep(timeout * 1.4 + CLAIM_TIMEOUT)  # past timeout + claim
            return {"status": "Accepted"}

    instances[1].local = Slow("CP-B")
    answer = await asyncio.wait_for(a.call("CP-B", "Reset", {"type": "Soft"}, 1.0), AT_ONCE)
    assert answer == {"status": "Accepted"}


async def test_a_charger_recorded_offline_ends_the_wait_at_once(
        buses: tuple[ManagedEventBus, ManagedEventBus]) -> None:
    """Its holder's socket closed, or the holder's lease expired and another instance
    recorded its chargers offline: the charger will not answer. Its holder (silent here:
    killed) did not say whether the charger got the command, so its outcome is unknown
    (``CHARGER_TIMEOUT``), as the local gateway says of a command the charger got."""
    from domain.events import StationConnectionChanged

    relay = CommandRelay(buses[0], None, claim_timeout=CLAIM_TIMEOUT)
    await relay.start()
    requests = buses[1].subscribe([ChargerCommandRelayed.topic])
    try:
        asked = asyncio.create_task(relay.call("CP-B", "Reset", {"type": "Soft"}, LONG))
        pending = relay._pending[await claimed_by_a_silent_holder(buses[1], requests)]
        await soon(lambda: pending.confirmed)  # the claim heard, confirmed to the holder
        told: list[None] = []  # the records it was told of (went_offline)
        heard: list[str] = []  # the offline records the relay heard
        real, on_offline = pending.went_offline, relay._on_offline

        def went_offline() -> None:
            told.append(None)
            real()

        def hearing(cp_id: str) -> None:
            heard.append(cp_id)
            on_offline(cp_id)
        pending.went_offline = went_offline  # type: ignore[method-assign]
        relay._on_offline = hearing  # type: ignore[method-assign]
        await buses[1].publish(StationConnectionChanged(station_id=None, cp_id="CP-C",
                                                        online=False))
        await buses[1].publish(StationConnectionChanged(station_id=None, cp_id="CP-B",
                                                        online=True))
        await buses[1].publish(StationConnectionChanged(station_id=None, cp_id="CP-B",
                                                        online=False))
        await buses[1].publish(StationConnectionChanged(station_id=None, cp_id="CP-Z",
                                                        online=False))
        # Heard in order (one topic): once the last is, so are those before. CP-B's
        # offline record alone was its command's (another charger's, or a connect, had
        # nothing to do with it): the wait for the holder's word armed, nothing ended.
        await soon(lambda: "CP-Z" in heard)
        assert (len(told), pending._offline is not None, pending.answered.done()) == (
            1, True, False), pending.answered
        # Confirmed to its holder, which says nothing more: the charger may have got it.
        with pytest.raises(ChargerLost, match=r"^the charger went offline after "
                           r"receiving the command; its outcome is unknown$"):
            await asyncio.wait_for(asked, AT_ONCE)
    finally:
        await requests.aclose()  # type: ignore[attr-defined]
        await relay.close()


async def test_a_holder_that_answers_after_its_charger_went_offline_is_heard(
        buses: tuple[ManagedEventBus, ManagedEventBus]) -> None:
    """The offline record and the holder's answer travel apart. A holder that says,
    just after, that its command was never sent (it waited its turn) is believed:
    ``CHARGER_OFFLINE``, as the local gateway says; not an unknown outcome."""
    from domain.events import StationConnectionChanged

    relay = CommandRelay(buses[0], None, claim_timeout=CLAIM_TIMEOUT)
    await relay.start()
    requests = buses[1].subscribe([ChargerCommandRelayed.topic])
    try:
        asked = asyncio.create_task(relay.call("CP-B", "Reset", {"type": "Soft"}, LONG))
        request_id = await claimed_by_a_silent_holder(buses[1], requests)
        pending = relay._pending[request_id]
        await soon(lambda: pending.confirmed)  # the claim heard, confirmed to the holder
        await buses[1].publish(StationConnectionChanged(station_id=None, cp_id="CP-B",
                                                        online=False))
        # The offline record heard first (as it may be: it and the answer travel apart).
        await soon(lambda: pending._offline is not None)
        await buses[1].publish(ChargerCommandAnswered(
            station_id=None, cp_id="CP-B", request_id=request_id, origin=relay.instance,
            holder="killed", stage="failed", error_type="ChargerOffline",
            error_code="CHARGER_OFFLINE", error_message="CP-B went offline before Reset "
            "was sent"))
        with pytest.raises(ChargerOffline, match="before Reset was sent"):
            await asyncio.wait_for(asked, AT_ONCE)
    finally:
        await requests.aclose()  # type: ignore[attr-defined]
        await relay.close()


async def test_a_holder_stops_in_bounded_time_when_the_bus_hangs(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Its stop tells the asker of a command it carries out that the charger went
    offline: with the bus hung, that publish never ends, and the instance's stop waited
    on it (QA s21: every await on the bus during a stop is bounded)."""
    monkeypatch.setattr(command_relay, "CLOSE_TIMEOUT_S", 0.2)
    released = asyncio.Event()

    class HangingBus(WireBus):
        hung = False

        async def publish(self, event: Any) -> None:
            if self.hung:
                await released.wait()  # Redis stopped answering
            await super().publish(event)

    bus = HangingBus()
    await bus.start()
    on_b = FakeChargers("CP-B")
    on_b.answer = "never"
    a = CommandRelay(bus, None, claim_timeout=CLAIM_TIMEOUT)
    b = CommandRelay(bus, on_b, claim_timeout=CLAIM_TIMEOUT)
    await a.start()
    await b.start()
    asked = asyncio.create_task(a.call("CP-B", "Reset", {"type": "Soft"}, LONG))
    try:
        await asyncio.wait_for(on_b.called.wait(), AT_ONCE)
        bus.hung = True
        await asyncio.wait_for(b.close(), AT_ONCE)  # waited for ever before
    finally:
        released.set()
        await a.close()
        with pytest.raises(DomainError):
            await asyncio.wait_for(asked, AT_ONCE)
        await bus.close()


async def test_a_holder_on_a_superseded_connection_does_not_claim(
        buses: tuple[ManagedEventBus, ManagedEventBus]) -> None:
    """Review s33: after an outage of the bus, instance B still held the charger's old
    socket, not knowing it had connected to C since; a command asked on A, carrying no
    connection number, was claimed by B (first, or alone) and sent on the old socket.
    The asker's ``newest`` travels with the request, and B's older connection does not
    claim it."""
    stale, current = FakeChargers("CP-1"), FakeChargers("CP-1")
    stale.numbers["CP-1"], current.numbers["CP-1"] = 1, 2
    a = CommandRelay(buses[0], None, claim_timeout=CLAIM_TIMEOUT)
    b = CommandRelay(buses[1], stale, claim_timeout=CLAIM_TIMEOUT)
    c = CommandRelay(buses[1], current, claim_timeout=CLAIM_TIMEOUT)
    unlock = {"connectorId": 1}
    await a.start()
    await b.start()
    try:
        # C does not hear the bus yet: nobody claims it, and nothing is sent.
        with pytest.raises(ChargerOffline):
            await a.call("CP-1", "UnlockConnector", unlock, LONG, newest=2)
        assert stale.calls == []
        # A request without a number (an older asker in a rolling upgrade) is claimed by
        # whoever holds the charger, as before.
        assert await a.call("CP-1", "UnlockConnector", unlock, LONG) == {"status": "Accepted"}
        assert len(stale.calls) == 1
        await c.start()
        for _ in range(3):  # B's claim, had it made one, could come first
            answer = await a.call("CP-1", "UnlockConnector", unlock, LONG, newest=2)
            assert answer == {"status": "Accepted"}
        assert len(current.calls) == 3
        assert len(stale.calls) == 1
    finally:
        for relay in (a, b, c):
            await relay.close()


def test_a_relayed_command_without_a_connection_number_is_read() -> None:
    """An older instance's request carries no ``newest``: it decodes, as one with it does
    on an older instance (which ignores a field it does not know)."""
    request = ChargerCommandRelayed(station_id=None, cp_id="CP-1", request_id="r", origin="o",
                                    action="Reset", payload={}, timeout=5.0, newest=7)
    raw = json.loads(encode(request))
    assert raw["newest"] == 7
    del raw["newest"]
    older = decode(json.dumps(raw))
    assert isinstance(older, ChargerCommandRelayed) and older.newest is None


# A rolling upgrade: instances of two versions, the wire carrying an error's class name
# (review r26-locallist4).

async def test_an_older_holders_socket_closed_mid_command_is_not_the_chargers_silence(
        instances: tuple[CommandRelay, CommandRelay, FakeChargers]) -> None:
    """An older holder reports a socket closed under the command as it always did,
    ``ChargerTimeout(OUTCOME_UNKNOWN)``: it arrives as ``ChargerLost``, so the list
    limits are asked again at the next list rather than left unasked for 5 minutes."""
    a, _, on_b = instances
    on_b.answer = ChargerTimeout(OUTCOME_UNKNOWN)  # what an older holder's gateway raises
    with pytest.raises(DomainError) as raised:
        await asyncio.wait_for(a.call("CP-B", "GetConfiguration", {"key": ["x"]}, LONG),
                               AT_ONCE)
    assert str(raised.value) == OUTCOME_UNKNOWN
    assert not_the_chargers_answer(raised.value), type(raised.value)


async def test_a_lost_command_reads_as_a_timeout_to_an_older_asker(
        instances: tuple[CommandRelay, CommandRelay, FakeChargers],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A newer holder's ``ChargerLost`` goes by a name an older asker knows
    (``ChargerTimeout``, with its message), not as a bare ``ChargerError`` that
    ``site_load`` records as an ERROR and ``not_the_chargers_answer`` (by the message,
    then) takes for the charger's."""
    a, _, on_b = instances
    # The asker's decoding table before ChargerLost.
    old = {k: v for k, v in command_relay._ERRORS.items() if k != "ChargerLost"}
    monkeypatch.setattr(command_relay, "_ERRORS", old)
    on_b.answer = ChargerLost(OUTCOME_UNKNOWN)
    with pytest.raises(DomainError) as raised:
        await asyncio.wait_for(a.call("CP-B", "GetConfiguration", {"key": ["x"]}, LONG),
                               AT_ONCE)
    error = raised.value
    assert isinstance(error, ChargerTimeout) and error.message == OUTCOME_UNKNOWN, \
        type(error)


async def test_a_lost_command_of_a_newer_holder_stays_lost_whatever_its_message(
        instances: tuple[CommandRelay, CommandRelay, FakeChargers]) -> None:
    """Sent as a ``ChargerTimeout``, a ``ChargerLost`` saying why (a connection taking
    over) is flagged so, and read back as itself by a newer asker."""
    a, _, on_b = instances
    on_b.answer = ChargerLost("CP-B connected to another instance; the command went to its "
                              "previous connection, which may have got it: its outcome is "
                              "unknown")
    with pytest.raises(ChargerLost, match="connected to another instance"):
        await asyncio.wait_for(a.call("CP-B", "Reset", {"type": "Soft"}, LONG), AT_ONCE)
