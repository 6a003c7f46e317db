"""Sign-in throttles shared between instances over the event bus (``ThrottleSharing``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from domain.events import SignInsCounted
from domain.services import throttle_sharing
from domain.services.throttle import Shared, SignInThrottle, digest
from domain.services.throttle_sharing import ThrottleSharing
from pubsub.memory import MemoryEventBus
from tests.helpers import soon

NOW = datetime(2026, 12, 5, 8, 0, tzinfo=UTC)
KEY = "ada@example.com 192.0.2.1"
SECRET = b"k" * 32


def keyed_sharing(bus: MemoryEventBus, throttles: Sequence[Shared]) -> ThrottleSharing:
    """As ``chargegraph.app`` wires them: keyed with the deployment's key, then shared."""
    for throttle in throttles:
        throttle.secret = SECRET
    return ThrottleSharing(bus, throttles)


class Instance:
    """One instance's throttle, shared over ``bus``, following what the others count."""

    def __init__(self, bus: MemoryEventBus) -> None:
        self.throttle = SignInThrottle(lambda: NOW, limit=3, name="sign_in")
        self.sharing = keyed_sharing(bus, [self.throttle])
        self.follower = asyncio.create_task(
            self.sharing.follow(bus.subscribe([SignInsCounted.topic])))


@pytest.fixture
async def bus() -> AsyncIterator[MemoryEventBus]:
    events = MemoryEventBus(queue_size=100)
    await events.start()
    yield events
    await events.close()


async def heard(instance: Instance, locked: bool) -> None:
    for _ in range(200):  # bounded: the bus delivers within a few loop steps
        if (instance.throttle.locked_for(KEY) is not None) == locked:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"never {'locked' if locked else 'unlocked'}")


async def test_failures_counted_on_two_instances_lock_both(bus: MemoryEventBus) -> None:
    a, b = Instance(bus), Instance(bus)
    await asyncio.sleep(0)  # both subscribed
    a.throttle.failed(KEY)
    b.throttle.failed(KEY)
    a.throttle.failed(KEY)
    await a.sharing.settled()
    await b.sharing.settled()
    await heard(a, locked=True)
    await heard(b, locked=True)
    # A success anywhere clears the key everywhere, as it does on one instance.
    b.throttle.succeeded(KEY)
    await b.sharing.settled()
    await heard(a, locked=False)
    for instance in (a, b):
        instance.follower.cancel()


async def test_an_instance_does_not_count_its_own_failures_twice(bus: MemoryEventBus) -> None:
    a = Instance(bus)
    other = bus.subscribe([SignInsCounted.topic])
    a.throttle.failed(KEY)
    a.throttle.failed(KEY)
    await a.sharing.settled()
    event = await anext(aiter(other))  # the bus brought it back to A's follower too
    assert isinstance(event, SignInsCounted) and len(event.counted) == 2
    await asyncio.sleep(0.02)
    assert a.throttle.locked_for(KEY) is None  # two of three, not four
    a.follower.cancel()


def test_counts_travel_as_digests_and_unknown_ones_are_skipped() -> None:
    throttle = SignInThrottle(lambda: NOW, limit=1, name="email")
    sent: list[tuple[str, str, str]] = []
    throttle.share = lambda *counted: sent.append(counted)
    throttle.secret = SECRET
    throttle.failed("ada@example.com")
    assert sent == [("email", "failed", digest("ada@example.com", SECRET))]
    # Keyed: a list of emails does not find it (QA s18: the unkeyed digest did).
    assert sent[0][2] != digest("ada@example.com")
    email = SignInThrottle(lambda: NOW, limit=1, name="email")
    sharing = keyed_sharing(MemoryEventBus(), [email])
    bob = digest("bob@example.com", SECRET)
    # A newer instance's throttle or operation, or a malformed entry: skipped, not raised.
    sharing.apply(["captcha failed x", "email reset x", "email", "email failed " + "x" * 10_000,
                   "email failed " + bob])
    assert email.locked_for("bob@example.com") is not None
    assert len(email._failures) == 1  # the long one was not taken


async def test_a_flood_counted_in_one_step_is_sent_in_bounded_events(
        bus: MemoryEventBus, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(throttle_sharing, "MAX_PER_EVENT", 4)
    a = Instance(bus)
    events = bus.subscribe([SignInsCounted.topic])
    await asyncio.sleep(0)
    for i in range(10):
        a.throttle.failed(f"user{i}@example.com")
    await a.sharing.settled()
    sizes: list[int] = []
    stream = aiter(events)
    while sum(sizes) < 10:
        event = await anext(stream)
        assert isinstance(event, SignInsCounted)
        sizes.append(len(event.counted))
    assert sorted(sizes) == [2, 4, 4]
    a.follower.cancel()


def test_an_event_is_taken_up_to_the_most_an_instance_sends() -> None:
    """A forged flood of entries in one event must not evict every other key."""
    throttle = SignInThrottle(lambda: NOW, limit=1, name="email")
    sharing = keyed_sharing(MemoryEventBus(), [throttle])
    sharing.apply([f"email failed {digest(f'u{i}@example.com', SECRET)}"
                   for i in range(throttle_sharing.MAX_PER_EVENT + 10)])
    assert len(throttle._failures) == throttle_sharing.MAX_PER_EVENT


async def sign_ins_sharing(bus: MemoryEventBus) -> list[tuple[Any, Any, asyncio.Task[None]]]:
    """Two instances' charger sign-ins sharing their counts over ``bus``, both following
    it: (sign-ins, sharing, follower) each; the caller cancels the followers."""
    from domain.services.charger_sign_ins import ChargerSignIns

    instances = []
    for _ in range(2):
        sign_ins = ChargerSignIns(lambda: NOW)
        sharing = keyed_sharing(bus, sign_ins.shared)
        instances.append((sign_ins, sharing, asyncio.create_task(
            sharing.follow(bus.subscribe([SignInsCounted.topic])))))
    await asyncio.sleep(0)  # both subscribed
    return instances


async def test_chargers_counts_and_the_addresses_they_passed_from_are_shared(
        bus: MemoryEventBus) -> None:
    """A station locked by guesses on A still checks, on B, the address its charger
    passed from on A; the guessers' failures on A lock them out on B too."""
    instances = await sign_ins_sharing(bus)
    (a, a_sharing, _), (b, _, _) = instances
    a.succeeded("CP-1", "hash", "198.51.100.10")  # the charger, on A
    for i in range(20):
        a.failed("CP-1", "hash", f"203.0.113.{i // 4}")
    await a_sharing.settled()
    for _ in range(200):  # bounded: the bus delivers within a few loop steps
        if b.lockout("CP-1", "hash", "203.0.113.0") is not None:
            break
        await asyncio.sleep(0.005)
    assert b.lockout("CP-1", "hash", "203.0.113.0") is not None  # the station's limit
    assert b.lockout("CP-1", "hash", "192.0.2.1") is not None  # a stranger
    assert b.lockout("CP-1", "hash", "198.51.100.10") is None  # the charger's address
    for _, _, follower in instances:
        follower.cancel()


async def test_a_removed_stations_known_addresses_are_forgotten_on_every_instance(
        bus: MemoryEventBus) -> None:
    """A removal's pairs (``KnownAddresses.forget``, told their digests as the store's
    rows are deleted) are dropped on the other instances too, not kept as known for up
    to 30 days; other stations' stay."""
    instances = await sign_ins_sharing(bus)
    (a, a_sharing, _), (b, _, _) = instances
    removed = a.succeeded("CP-1", "hash", "198.51.100.10")
    a.succeeded("CP-2", "hash", "198.51.100.10")
    await a_sharing.settled()
    await soon(lambda: b.passed_from("CP-2", "198.51.100.10"))
    assert removed is not None and b.passed_from("CP-1", "198.51.100.10")
    a.known.forget([removed])
    assert not a.passed_from("CP-1", "198.51.100.10")
    await a_sharing.settled()
    await soon(lambda: not b.passed_from("CP-1", "198.51.100.10"))
    assert a.passed_from("CP-2", "198.51.100.10") and b.passed_from("CP-2", "198.51.100.10")
    for _, _, follower in instances:
        follower.cancel()


async def test_made_up_cp_ids_counts_are_shared_as_stations_are(
        bus: MemoryEventBus) -> None:
    """Review s26: made-up cpIds' failures were counted on each instance apart, so a
    lockout over two instances told a real cpId from a made-up one. Their tables of
    their own (``ChargerSignIns.unknown``) travel as the stations' do."""
    instances = await sign_ins_sharing(bus)
    (a, a_sharing, _), (b, _, _) = instances
    assert a.unknown is not None and b.unknown is not None
    for i in range(20):
        a.unknown.failed("CP-9", "decoy", f"203.0.113.{i // 4}")
    await a_sharing.settled()
    for _ in range(200):  # bounded: the bus delivers within a few loop steps
        if b.unknown.lockout("CP-9", "decoy", "192.0.2.1") is not None:
            break
        await asyncio.sleep(0.005)
    assert b.unknown.lockout("CP-9", "decoy", "192.0.2.1") is not None
    assert b.lockout("CP-9", "decoy", "192.0.2.1") is None  # the stations' apart
    for _, _, follower in instances:
        follower.cancel()


async def test_an_addresss_budget_of_password_checks_is_shared(
        bus: MemoryEventBus) -> None:
    """Review r26-security4: an address's checks across cpIds are bounded
    (``ChargerSignIns.checks``), on the instances together: spent on A, refused on B;
    one given back on A (a right password) is given back on B."""
    from domain.services.charger_sign_ins import ChargerSignInLimits, ChargerSignIns

    budget = 30  # the budget on (CHARGEGRAPH_CHARGER_CHECKS_PER_MINUTE)
    instances = []
    for _ in range(2):
        sign_ins = ChargerSignIns(lambda: NOW, ChargerSignInLimits(
            checks_per_minute=budget))
        sharing = keyed_sharing(bus, sign_ins.shared)
        instances.append((sign_ins, sharing, asyncio.create_task(
            sharing.follow(bus.subscribe([SignInsCounted.topic])))))
    await asyncio.sleep(0)  # both subscribed
    (a, a_sharing, _), (b, _, _) = instances
    for _ in range(budget):
        a.check_started("2001:db8:7::1")
    await a_sharing.settled()
    for _ in range(200):  # bounded: the bus delivers within a few loop steps
        if b.checks_refused_for("2001:db8:7::2") is not None:  # the same /64
            break
        await asyncio.sleep(0.005)
    assert b.checks_refused_for("2001:db8:7::2") is not None
    assert b.checks_refused_for("203.0.113.1") is None  # another address
    a.check_given_back("2001:db8:7::1")
    await a_sharing.settled()
    for _ in range(200):
        if b.checks_refused_for("2001:db8:7::2") is None:
            break
        await asyncio.sleep(0.005)
    assert b.checks_refused_for("2001:db8:7::2") is None
    for _, _, follower in instances:
        follower.cancel()


async def test_a_rolling_limit_is_shared_and_counts_a_rolling_window(
        bus: MemoryEventBus) -> None:
    """The personal data export's limit (``RollingLimit``): uses on A count on B, a use
    given back is taken back there too, and a key is free again as soon as its oldest
    counted use is out of the window."""
    from datetime import timedelta

    from domain.services.throttle import RollingLimit

    now = [NOW]
    limits = [RollingLimit(lambda: now[0], limit=2, window=timedelta(hours=1),
                           name="export") for _ in range(2)]
    sharings = [keyed_sharing(bus, [limit]) for limit in limits]
    followers = [asyncio.create_task(s.follow(bus.subscribe([SignInsCounted.topic])))
                 for s in sharings]
    await asyncio.sleep(0)
    a, b = limits

    async def told() -> None:
        await sharings[0].settled()
        for _ in range(20):
            await asyncio.sleep(0.005)

    a.take("k")
    await told()  # B counts what it is told as it hears it
    now[0] = NOW + timedelta(minutes=59)
    a.take("k")
    a.take("k")
    a.give_back("k")
    await told()
    assert a.refused_for("k") == timedelta(minutes=1)
    assert b.refused_for("k") == timedelta(minutes=1)  # the 08:00 use leaves at 09:00
    now[0] = NOW + timedelta(minutes=61)
    assert b.refused_for("k") is None
    for follower in followers:
        follower.cancel()
