"""Clients' idempotency keys (``IdempotencyService``) on both stores: a key is claimed
once however many requests race for it, per user; its answer is given again to the same
request and refused to another; a released key runs again; an expired or abandoned one
is a fresh key; the sweep and an erasure delete them."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from domain.entities import IdempotencyKey, IdempotencyState, Role, User
from domain.errors import StoreBusy, StoreRefused
from domain.policy import Policy, Viewer
from domain.ports import Store, Update
from domain.query import ALL
from domain.services import ServiceContext
from domain.services.idempotency import (
    ANSWER_LANDS_WITHIN,
    ERASED_BEFORE_CLAIM,
    LEASE,
    RUNS_WITHIN,
    SOON,
    Claim,
    IdempotencyService,
    InProgress,
    Refusal,
    Replay,
    key_id,
)
from store.sqlite import SqliteStore
from tests.contract.factories import oid, put, user
from tests.helpers import FastHasher

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ANNA = Viewer(user_id=oid(1))
BEN = Viewer(user_id=oid(2))
ANSWER = '{"data":{"addVehicle":{"vehicle":{"id":"V1"},"errors":[]}}}'


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def service(store: Store, clock: Clock) -> IdempotencyService:
    return IdempotencyService(ServiceContext(store=store, policy=Policy(),
                                             hasher=FastHasher(), clock=clock))


async def test_a_key_answered_gives_its_answer_again_and_refuses_other_input(
        store: Store) -> None:
    keys = service(store, Clock())
    first = await keys.begin(ANNA, "k-1", "fp-a")
    assert isinstance(first, Claim)
    assert await keys.begin(ANNA, "k-1", "fp-a") == InProgress(SOON)
    await keys.finish(first, ANSWER)

    assert await keys.begin(ANNA, "k-1", "fp-a") == Replay(ANSWER)
    assert await keys.begin(ANNA, "k-1", "fp-b") is Refusal.REUSED
    # Per user: Ben's "k-1" is another key.
    assert isinstance(await keys.begin(BEN, "k-1", "fp-b"), Claim)
    stored = (await store.get_many(IdempotencyKey, [key_id(ANNA.user_id or "", "k-1")]))[0]
    assert stored is not None and stored.state is IdempotencyState.DONE
    assert stored.expires_at == T0 + timedelta(hours=24)


async def test_requests_racing_for_one_key_claim_it_once(store: Store) -> None:
    keys = service(store, Clock())
    begun = await asyncio.gather(*(keys.begin(ANNA, "race", "fp") for _ in range(8)))
    assert sum(isinstance(b, Claim) for b in begun) == 1
    assert all(b == InProgress(SOON) for b in begun if not isinstance(b, Claim))


async def test_a_released_key_runs_again(store: Store) -> None:
    keys = service(store, Clock())
    first = await keys.begin(ANNA, "k", "fp")
    assert isinstance(first, Claim)
    await keys.release(first)
    assert await store.find_all(IdempotencyKey, ALL) == []
    again = await keys.begin(ANNA, "k", "fp")
    assert isinstance(again, Claim) and again.record.claimant != first.record.claimant
    # The first claim's late release (or answer) does not touch the second's.
    await keys.release(first)
    await keys.finish(first, ANSWER)
    assert await keys.begin(ANNA, "k", "fp") == InProgress(SOON)


async def test_an_expired_key_is_a_fresh_key_and_the_sweep_deletes_it(store: Store) -> None:
    clock = Clock()
    keys = service(store, clock)
    old = await keys.begin(ANNA, "old", "fp-a")
    assert isinstance(old, Claim)
    await keys.finish(old, ANSWER)
    other = await keys.begin(ANNA, "other", "fp")
    assert isinstance(other, Claim)
    await keys.finish(other, ANSWER)

    clock.now = T0 + timedelta(hours=24)
    # Not swept yet: found expired, it is taken over, whatever it was sent with before.
    fresh = await keys.begin(ANNA, "old", "fp-b")
    assert isinstance(fresh, Claim)
    await keys.finish(fresh, "{}")
    assert await keys.begin(ANNA, "old", "fp-b") == Replay("{}")

    assert await keys.sweep() == 1  # "other"; "old" lives 24 hours from its new claim
    assert [k.key for k in await store.find_all(IdempotencyKey, ALL)] == ["old"]


async def test_a_claim_whose_request_died_lapses_after_its_lease(store: Store) -> None:
    clock = Clock()
    keys = service(store, clock)
    dead = await keys.begin(ANNA, "k", "fp")
    assert isinstance(dead, Claim)
    # While a request could still be running, a retry is told to ask again in a moment;
    # older, its instance most likely died: told when the lease lapses, not every second
    # for the rest of it (QA s32).
    clock.now = T0 + RUNS_WITHIN - timedelta(seconds=1)
    assert await keys.begin(ANNA, "k", "fp") == InProgress(SOON)
    clock.now = T0 + RUNS_WITHIN
    assert await keys.begin(ANNA, "k", "fp") == InProgress(LEASE - RUNS_WITHIN)
    clock.now = T0 + LEASE - timedelta(milliseconds=10)
    assert await keys.begin(ANNA, "k", "fp") == InProgress(SOON)  # never below SOON
    clock.now = T0 + LEASE
    retry = await keys.begin(ANNA, "k", "fp")
    assert isinstance(retry, Claim)
    # The dead request's answer, come late, is not kept over the retry's claim.
    await keys.finish(dead, '{"late":true}')
    await keys.finish(retry, ANSWER)
    assert await keys.begin(ANNA, "k", "fp") == Replay(ANSWER)


async def test_forget_deletes_every_key_of_the_user(store: Store) -> None:
    keys = service(store, Clock())
    for key in ("a", "b"):
        claim = await keys.begin(ANNA, key, "fp")
        assert isinstance(claim, Claim)
    assert isinstance(await keys.begin(BEN, "a", "fp"), Claim)
    await keys.forget(ANNA.user_id or "")
    assert [k.user_id for k in await store.find_all(IdempotencyKey, ALL)] == [BEN.user_id]


async def test_an_erasure_forgets_an_answer_still_being_kept_that_names_the_person(
        store: Store) -> None:
    """Review s29: an answer naming the erased person (an admin's ``updateUser``) still
    being kept (its write slow) when the erasure looked for it was not found, and landed
    after, kept for a day. The erasure waits for what is being kept, then looks."""
    keys = service(store, Clock())
    claim = await keys.begin(BEN, "update-anna", "fp")
    assert isinstance(claim, Claim)
    real_write, real_find_all = store.write, store.find_all
    real_under_way = keys._keeping.under_way
    entered, lands = asyncio.Event(), asyncio.Event()
    reads = 0

    async def write(changes: Any, audit: Any, *rest: Any) -> None:
        if any(isinstance(c, Update) and isinstance(c.record, IdempotencyKey)
               for c in changes):  # the answer's keeping, held
            entered.set()
            await lands.wait()
        await real_write(changes, audit, *rest)

    async def find_all(kind: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal reads
        found = await real_find_all(kind, *args, **kwargs)
        reads += kind is IdempotencyKey
        if reads == 2:  # the erasure's look at every answer is over: it lands now
            lands.set()
        return found

    async def under_way(timeout: float) -> None:  # the erasure waits for it: it lands now
        lands.set()
        await real_under_way(timeout)
    store.write = write  # type: ignore[method-assign,assignment]
    store.find_all = find_all  # type: ignore[method-assign]
    keys._keeping.under_way = under_way  # type: ignore[method-assign]
    try:
        finishing = asyncio.create_task(keys.finish(
            claim, '{"data":{"updateUser":{"user":{"email":"anna@example.com"}}}}'))
        await asyncio.wait_for(entered.wait(), 5)
        await keys.forget(ANNA.user_id or "", ["anna@example.com"])
        await finishing
        await keys.settled()
    finally:
        store.write, store.find_all = real_write, real_find_all  # type: ignore[method-assign]
    assert await store.find_all(IdempotencyKey, ALL) == []


async def test_an_erasure_waits_for_the_answers_being_kept_when_it_began_only(
        store: Store) -> None:
    """Review r29: the erasure waited until no answer at all was being kept, those of
    keyed mutations arriving meanwhile too, so under steady traffic it never began. It
    waits for the answers being kept when it starts, not for later ones."""
    keys = service(store, Clock())
    real_write = store.write
    held: dict[str, asyncio.Event] = {}
    entered: dict[str, asyncio.Event] = {}

    async def write(changes: Any, audit: Any, *rest: Any) -> None:
        for c in changes:
            if isinstance(c, Update) and isinstance(c.record, IdempotencyKey):
                entered[c.record.key].set()
                await held[c.record.key].wait()
        await real_write(changes, audit, *rest)

    async def keeping(key: str) -> asyncio.Task[None]:
        claim = await keys.begin(BEN, key, "fp")
        assert isinstance(claim, Claim)
        held[key], entered[key] = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(keys.finish(claim, ANSWER))
        await asyncio.wait_for(entered[key].wait(), 5)
        return task

    store.write = write  # type: ignore[method-assign,assignment]
    try:
        first = await keeping("before")
        erasure = asyncio.create_task(keys.forget(ANNA.user_id or ""))
        later = await keeping("meanwhile")  # begun after the erasure
        held["before"].set()
        await asyncio.wait_for(erasure, 5)  # not waiting for "meanwhile"
        assert not held["meanwhile"].is_set()
        held["meanwhile"].set()
        await first
        await later
        await keys.settled()
    finally:
        store.write = real_write  # type: ignore[method-assign]


async def test_an_answer_is_refused_to_its_user_once_their_access_changed(
        store: Store) -> None:
    """Review s27: a demoted operator's retry got the kept answer (a webhook's secret).
    The answer is kept with what its user could do when it ran (role and company); a
    retry by them with other access is refused, and nothing is claimed to run again."""
    keys = service(store, Clock())
    operator = Viewer(user_id=oid(3), role=Role.OPERATOR, company_id=oid(7))
    claim = await keys.begin(operator, "hook-1", "fp-a")
    assert isinstance(claim, Claim)
    await keys.finish(claim, ANSWER)
    demoted = Viewer(user_id=operator.user_id, role=Role.DRIVER)
    moved = Viewer(user_id=operator.user_id, role=Role.OPERATOR, company_id=oid(8))
    for changed in (demoted, moved):
        assert await keys.begin(changed, "hook-1", "fp-a") is Refusal.ACCESS_CHANGED
    stored = (await store.get_many(IdempotencyKey, [key_id(oid(3), "hook-1")]))[0]
    assert stored is not None and stored.state is IdempotencyState.DONE
    # Their access as it was: the answer again.
    assert await keys.begin(operator, "hook-1", "fp-a") == Replay(ANSWER)


async def test_an_answer_is_kept_unless_someone_was_erased_while_its_request_ran(
        store: Store) -> None:
    """An answer kept after an erasure on another instance looked for those naming the
    person is withheld by its own keeping (``_unless_erased_since``): a retry is told
    its request ran, and nothing runs again. One whose request claimed its key after
    every erasure (``ERASED_BEFORE_CLAIM`` allowing for clocks) is kept."""
    clock = Clock()
    keys = service(store, clock)
    await put(store, user(erased_at=T0 - ERASED_BEFORE_CLAIM - timedelta(seconds=1)))
    claim = await keys.begin(BEN, "after-erasure", "fp")
    assert isinstance(claim, Claim)
    await keys.finish(claim, ANSWER)
    assert await keys.begin(BEN, "after-erasure", "fp") == Replay(ANSWER)

    clock.now += timedelta(minutes=5)
    claim = await keys.begin(BEN, "during-erasure", "fp")
    assert isinstance(claim, Claim)
    await put(store, user(erased_at=clock.now - ERASED_BEFORE_CLAIM))
    await keys.finish(claim, ANSWER)
    stored = (await store.get_many(IdempotencyKey, [claim.record.id]))[0]
    assert stored is not None and stored.response is None
    assert await keys.begin(BEN, "during-erasure", "fp") is Refusal.WITHHELD


async def test_an_answer_is_written_once_and_withheld_when_erasures_cannot_be_read(
        store: Store, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """Review s30: the check for erasures ran inside the tries of writing the answer, so
    a failed read of them wrote the answer again (over one the check had withheld
    meanwhile), and after the last try the answer stayed kept while the log said the key
    would lapse. The answer is written once; the check alone is tried again; one that
    cannot be made withholds the answer (the safe side), and says so. A withholding
    that cannot be written leaves the answer kept, and says that; a retry is refused it
    all the same (session 31: it was given it, naming perhaps the person erased), by
    the same check made before a replay, and told to try again when that check cannot
    be made: never given the answer, never run again."""
    keys = service(store, Clock())
    monkeypatch.setattr("domain.services.idempotency.FINISH_PAUSES_S", (0.0, 0.0))
    find_one, write = store.find_one, store.write
    failing_reads: list[int] = []
    failing_withholds: list[int] = []
    answers: list[str | None] = []

    async def reading(kind: Any, *args: Any, **kwargs: Any) -> Any:
        if kind is User and failing_reads:
            failing_reads.pop()
            raise StoreBusy("the database is locked")
        return await find_one(kind, *args, **kwargs)

    async def writing(changes: Any, *args: Any, **kwargs: Any) -> Any:
        [change] = changes if len(changes) == 1 else [None]
        if isinstance(change, Update) and "response" in (change.fields or ()):
            response = change.record.response  # type: ignore[attr-defined]
            if response is None and failing_withholds:
                failing_withholds.pop()
                raise StoreBusy("the database is locked")
            answers.append(response)
        return await write(changes, *args, **kwargs)

    monkeypatch.setattr(store, "find_one", reading)
    monkeypatch.setattr(store, "write", writing)
    caplog.set_level(logging.INFO, logger="chargegraph.idempotency")
    # A read failing once, then nobody erased: kept, written once.
    failing_reads.append(1)
    claim = await keys.begin(ANNA, "k-read-once", "fp-a")
    assert isinstance(claim, Claim)
    await keys.finish(claim, ANSWER)
    await keys.settled()
    assert answers == [ANSWER]
    assert await keys.begin(ANNA, "k-read-once", "fp-a") == Replay(ANSWER)
    # Every read failing: withheld, the answer written once.
    answers.clear()
    caplog.clear()
    failing_reads.extend([1, 1, 1])
    claim = await keys.begin(ANNA, "k-unread", "fp-a")
    assert isinstance(claim, Claim)
    await keys.finish(claim, ANSWER)
    await keys.settled()
    assert answers == [ANSWER, None]
    assert await keys.begin(ANNA, "k-unread", "fp-a") is Refusal.WITHHELD
    said = [r.getMessage() for r in caplog.records]
    assert any("reading whether an account was erased" in m and "its answer is withheld"
               in m for m in said), said
    assert not any("lapses" in m for m in said), said
    # Erased meanwhile, and the withholding failing every try: the answer stays, as
    # the log says, and is not written again; a retry is refused it.
    answers.clear()
    caplog.clear()
    claim = await keys.begin(ANNA, "k-kept", "fp-a")
    assert isinstance(claim, Claim)
    await put(store, user(erased_at=T0))
    failing_withholds.extend([1, 1, 1])
    await keys.finish(claim, ANSWER)
    await keys.settled()
    assert answers == [ANSWER]
    said = [r.getMessage() for r in caplog.records]
    assert any("withholding the answer" in m and "stays kept" in m for m in said), said
    stored = (await store.get_many(IdempotencyKey, [claim.record.id]))[0]
    assert stored is not None and stored.response == ANSWER
    assert await keys.begin(ANNA, "k-kept", "fp-a") is Refusal.WITHHELD
    # The replay's check failing: the store's error, as any read of the claim's (a
    # retry asks again), not the answer; the key still the first request's.
    failing_reads.append(1)
    with pytest.raises(StoreBusy):
        await keys.begin(ANNA, "k-kept", "fp-a")
    assert not failing_reads
    assert (await store.get_many(IdempotencyKey, [claim.record.id]))[0] == stored
    assert answers == [ANSWER]


async def test_a_replay_is_refused_only_for_an_erasure_while_its_answer_was_kept(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review s31: a replay was refused after any erasure anywhere for the key's whole
    day (an answer kept and checked clean; 10 hours on, an unrelated user erased; the
    retry 410), telling a client that someone was erased. Its check reads the window the
    keeping checks, from the claim until the answer was written (on the service's
    clock), a margin either side: after it, an erasure deletes the answers naming the
    person itself (``forget``). A withholding whose write failed is still refused, an
    erasure after its request's lease but before its answer was written included."""
    clock = Clock()
    keys = service(store, clock)
    monkeypatch.setattr("domain.services.idempotency.FINISH_PAUSES_S", (0.0, 0.0))
    write = store.write
    failing_withholds: list[int] = []

    async def writing(changes: Any, *args: Any, **kwargs: Any) -> Any:
        [change] = changes if len(changes) == 1 else [None]
        if (isinstance(change, Update) and "response" in (change.fields or ())
                and change.record.response is None and failing_withholds):  # type: ignore[attr-defined]
            failing_withholds.pop()
            raise StoreBusy("the database is locked")
        return await write(changes, *args, **kwargs)

    monkeypatch.setattr(store, "write", writing)
    clean = await keys.begin(ANNA, "k-clean", "fp-a")
    assert isinstance(clean, Claim)
    await keys.finish(clean, ANSWER)
    await keys.settled()
    clock.now += timedelta(hours=10)
    await put(store, user(erased_at=clock.now))
    assert await keys.begin(ANNA, "k-clean", "fp-a") == Replay(ANSWER)

    # A request running past its lease (none took it over): erased after the lease, its
    # answer written later, the withholding failing every try: refused, 10 hours on too.
    clock.now += timedelta(hours=1)
    slow = await keys.begin(ANNA, "k-slow", "fp-a")
    assert isinstance(slow, Claim)
    clock.now += LEASE + 2 * ERASED_BEFORE_CLAIM
    await put(store, user(erased_at=clock.now))
    clock.now += 2 * ERASED_BEFORE_CLAIM
    failing_withholds.extend([1, 1, 1])
    await keys.finish(slow, ANSWER)
    await keys.settled()
    assert not failing_withholds
    stored = (await store.get_many(IdempotencyKey, [slow.record.id]))[0]
    assert stored is not None and stored.response == ANSWER
    answered = clock.now
    clock.now += timedelta(hours=10)
    assert await keys.begin(ANNA, "k-slow", "fp-a") is Refusal.WITHHELD
    assert stored.lease_until == answered  # the answer's time, on the service's clock


async def test_a_replay_is_refused_for_an_erasure_while_its_answers_write_stalled(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review s31: the answer's time is taken as its write is sent; a try stalling over a
    minute (the store's own timeout, within the keeping's bound), an erasure in the stall,
    and the withholding's write failing: the replay's check covers the stall too."""
    clock = Clock()
    keys = service(store, clock)
    monkeypatch.setattr("domain.services.idempotency.FINISH_PAUSES_S", (0.0, 0.0))
    write = store.write
    stalls = [ERASED_BEFORE_CLAIM + ANSWER_LANDS_WITHIN / 2]
    failing_withholds = [1, 1, 1]

    async def writing(changes: Any, *args: Any, **kwargs: Any) -> Any:
        [change] = changes if len(changes) == 1 else [None]
        if isinstance(change, Update) and "response" in (change.fields or ()):
            if change.record.response is None and failing_withholds:  # type: ignore[attr-defined]
                failing_withholds.pop()
                raise StoreBusy("the database is locked")
            if stalls:  # the answer's write, its time taken: erased while it stalls
                clock.now += stalls.pop()
                await put(store, user(erased_at=clock.now))
        return await write(changes, *args, **kwargs)

    monkeypatch.setattr(store, "write", writing)
    claim = await keys.begin(ANNA, "k-stalled", "fp-a")
    assert isinstance(claim, Claim)
    await keys.finish(claim, ANSWER)
    await keys.settled()
    assert not stalls and not failing_withholds
    stored = (await store.get_many(IdempotencyKey, [claim.record.id]))[0]
    assert stored is not None and stored.response == ANSWER  # the withholding failed
    clock.now += timedelta(hours=10)
    assert await keys.begin(ANNA, "k-stalled", "fp-a") is Refusal.WITHHELD


async def test_an_answer_written_though_every_try_failed_is_checked_for_erasures(
        store: Store, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """Review s30: every try of the answer's write raising, the keeping gave up without
    the check for erasures and logged that the key would lapse, though a write whose
    reply was lost (MongoDB) had landed: the answer stayed, naming perhaps someone
    erased meanwhile. Its outcome unknown, the check runs all the same, and the log
    says the answer may have been kept."""
    keys = service(store, Clock())
    monkeypatch.setattr("domain.services.idempotency.FINISH_PAUSES_S", (0.0, 0.0))
    write = store.write
    lost: list[int] = []

    async def reply_lost(changes: Any, *args: Any, **kwargs: Any) -> None:
        await write(changes, *args, **kwargs)
        [change] = changes if len(changes) == 1 else [None]
        if isinstance(change, Update) and change.record.response == ANSWER:  # type: ignore[attr-defined]
            lost.append(1)
            raise StoreBusy("the reply was lost")

    monkeypatch.setattr(store, "write", reply_lost)
    caplog.set_level(logging.INFO, logger="chargegraph.idempotency")
    claim = await keys.begin(ANNA, "k-lost", "fp-a")
    assert isinstance(claim, Claim)
    await put(store, user(erased_at=T0))
    await keys.finish(claim, ANSWER)
    await keys.settled()
    assert lost == [1, 1, 1]  # every try landed, none was told so
    stored = (await store.get_many(IdempotencyKey, [claim.record.id]))[0]
    assert stored is not None and stored.response is None
    assert await keys.begin(ANNA, "k-lost", "fp-a") is Refusal.WITHHELD
    said = [r.getMessage() for r in caplog.records]
    assert any("keeping the answer" in m and "may have been kept" in m for m in said), said


async def test_keeping_an_answer_is_tried_again_while_the_store_is_busy(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review s27 (suspicion): one locked write keeping the answer left the key running
    until its lease lapsed, and a retry then ran the mutation again. It is tried again a
    few times; only a store failing all of them leaves it to lapse (not raised)."""
    keys = service(store, Clock())
    monkeypatch.setattr("domain.services.idempotency.FINISH_PAUSES_S", (0.0, 0.0))
    write = store.write
    busy: list[StoreBusy] = []

    async def locked(*args: Any, **kwargs: Any) -> Any:
        if busy:
            raise busy.pop()
        return await write(*args, **kwargs)

    monkeypatch.setattr(store, "write", locked)
    claim = await keys.begin(ANNA, "k-busy", "fp-a")
    assert isinstance(claim, Claim)
    busy.extend(StoreBusy("the database is locked") for _ in range(2))
    await keys.finish(claim, ANSWER)
    assert await keys.begin(ANNA, "k-busy", "fp-a") == Replay(ANSWER)

    claim = await keys.begin(ANNA, "k-down", "fp-a")
    assert isinstance(claim, Claim)
    busy.extend(StoreBusy("the database is locked") for _ in range(3))
    await keys.finish(claim, ANSWER)  # logged: what remains is the lease's lapse
    assert await keys.begin(ANNA, "k-down", "fp-a") == InProgress(SOON)


async def test_keeping_an_answer_in_a_locked_database_holds_the_answer_a_second_at_most(
        tmp_path: Path) -> None:
    """Review r27-idem2: each try of keeping the answer waits the store's own timeout
    (SQLite's ``busy_timeout``, 5 s by default) before it fails, so four tries and their
    pauses held the caller's answer (a charger command's, a refund's) some 21 s. It waits
    ``FINISH_WAIT_S`` at most; the keeping goes on in the background, the key running
    meanwhile (a retry is told so), and once the database is free the answer is kept.
    Told by order, not by a bound on seconds (session 31): the store waits an hour for
    the lock, which is let go only once ``finish`` has returned, so a ``finish`` waiting
    for its write would never return (the 60 s only end such a test)."""
    path = str(tmp_path / "locked.db")
    store = SqliteStore(path, busy_timeout=3600)
    await store.start()
    try:
        keys = service(store, Clock())
        claim = await keys.begin(ANNA, "k", "fp-a")
        assert isinstance(claim, Claim)
        other = sqlite3.connect(path, timeout=0, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process (a shell, a backup) writes
        try:
            # Returned with the lock still held: the answer is kept once it is let go.
            await asyncio.wait_for(keys.finish(claim, ANSWER), 60)
        finally:
            other.execute("ROLLBACK")
            other.close()
        await keys.settled()
        assert await keys.begin(ANNA, "k", "fp-a") == Replay(ANSWER)
    finally:
        await store.close()


async def test_an_answer_the_store_refuses_for_good_is_not_tried_again(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """``StoreRefused`` (an answer past MongoDB's document size) fails the same way on
    every try: it is logged once, and the key lapses."""
    keys = service(store, Clock())
    write = store.write
    tries: list[int] = []

    async def refusing(*args: Any, **kwargs: Any) -> Any:
        [change] = args[0]
        if isinstance(change, Update) and "response" in (change.fields or ()):
            tries.append(1)
            raise StoreRefused("too large", reason="document too large")
        return await write(*args, **kwargs)

    monkeypatch.setattr(store, "write", refusing)
    claim = await keys.begin(ANNA, "k-big", "fp-a")
    assert isinstance(claim, Claim)
    await keys.finish(claim, ANSWER)
    await keys.settled()
    assert tries == [1]
    assert await keys.begin(ANNA, "k-big", "fp-a") == InProgress(SOON)
