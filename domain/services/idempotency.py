"""Idempotency keys: a client's retry of a mutation whose answer it never got (a bad
network) gets the first answer again instead of running the mutation twice (two cars
registered, two RemoteStarts sent to a charger, a refund paid twice).

A key is the client's (``Idempotency-Key`` on the HTTP request, ``graph.http``), kept per
signed-in user for ``DEFAULT_TTL``. The first request with it claims it: one insert of an
``IdempotencyKey`` whose id is derived from the user and the key, which any other
instance's insert fails on, so two requests with one key (on one instance or on two
behind a load balancer, on either store) run the mutation once. What comes of it:

- answered: the record keeps the answer (``finish``); a request with the key and the same
  operation and variables (``fingerprint``) gets it again without running anything, one
  with anything else is a reuse (``Reused``), refused; so is the answer to a user whose
  access changed since it ran (``ACCESS_CHANGED``: demoted, moved to another company),
  since it may hold what they may no longer see (a webhook's secret), and it is not run
  again either; nor is one whose answer was withheld, an account erased while it ran
  (``WITHHELD``, ``_unless_erased_since``): a replay checks that too, should the
  withholding have failed to be written (``_erased_while_kept``);
- a failure of the service (an outage, an unexpected error: the caller decides which,
  ``release``): the claim is deleted, so the retry runs the mutation;
- still running: another request with the key is told so (``InProgress``) rather than
  waiting (across instances it could only poll), and when to ask again: in a moment
  while the claim is younger than a request runs (``RUNS_WITHIN``), else when its lease
  lapses. A claim whose instance died lapses after ``LEASE``, and then a retry runs the
  mutation (again, should it have run: a charger may have acted on its command).

Expired keys are forgotten: a claim finds one as a fresh key, and the sweep deletes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum

from domain.entities import IdempotencyKey, IdempotencyState, User
from domain.errors import Conflict, NotFound, StoreRefused, UniqueViolation, retry_after_seconds
from domain.ids import new_id
from domain.policy import Viewer
from domain.ports import Delete, Insert, Update
from domain.query import ALL, Eq, Range
from domain.services.background import Background
from domain.services.base import (
    Service,
    ServiceContext,
    pages,
    patch,
    stamp_new,
    sweep_expired,
)

log = logging.getLogger("chargegraph.idempotency")

#: How long a key is remembered after its first request (Stripe's 24 hours).
DEFAULT_TTL = timedelta(hours=24)
#: How long a claim holds while its request runs: longer than any mutation takes (a charger
#: command waits ``command_timeout``, 30 s by default). One whose instance died mid-request
#: lapses then.
LEASE = timedelta(minutes=5)
#: The longest a keyed request is taken to run, its answer's keeping included: a charger
#: command answers within twice ``command_timeout`` (30 s by default; queued behind
#: another to the same charger), the keeping ends within ``KEEPING_ENDS_WITHIN_S``. A
#: claim older than that is most likely one whose instance died: a retry is told to come
#: back when its lease lapses, not every second for the rest of it (QA s32: five
#: minutes of ``Retry-After: 1`` after a crash). A longer configured timeout only makes
#: such a retry wait longer than it had to: it gets the kept answer all the same.
RUNS_WITHIN = timedelta(minutes=2)
#: When a retry of a younger claim is told to ask again.
SOON = timedelta(seconds=1)
#: Expired keys deleted per store write by the sweep.
SWEEP_BATCH = 500
#: Claims tried before a request is told its key is busy (each lost race re-reads).
CLAIM_TRIES = 3
#: The most a request's answer waits for the store to keep it (``finish``). The keeping
#: goes on in the background past it: each try of a store's write may take the store's
#: own timeout (SQLite's ``busy_timeout`` while another process holds the database,
#: MongoDB's ``serverSelectionTimeoutMS`` while it elects or is away: 5 s each by
#: default), and a request's answer (a charger command's, a refund's) was held for all of
#: them (review r27-idem2: some 21 s).
FINISH_WAIT_S = 1.0
#: The pauses before each further try of keeping an answer the store failed to take, in
#: the background (a locked SQLite database frees within moments, a MongoDB election
#: takes seconds): with the tries' own timeouts, the keeping ends within half a minute
#: whatever the store does, while the key stays running (a retry meanwhile is told it
#: is in progress, 409, then gets the answer). Not for a write the store refuses for
#: good (``StoreRefused``: the same write fails again).
FINISH_PAUSES_S: tuple[float, ...] = (0.25, 1.0, 2.0)
#: How long an erasure waits for the answers being kept when it starts: the keeping of
#: each ends within about half a minute (``FINISH_PAUSES_S``), whatever the store does.
KEEPING_ENDS_WITHIN_S = 30.0
#: How much earlier than its request's claim an erasure's ``User.erased_at`` may read and
#: still be one the request may have read the person before (``_unless_erased_since``):
#: the erasure takes it before its write, tried again should it meet changes, on its
#: own instance's clock. A replay's check allows as much after the answer was written
#: (``_erased_while_kept``).
ERASED_BEFORE_CLAIM = timedelta(minutes=1)
#: How much later than its answer's time (taken as its write is sent) that write may land
#: (``_erased_while_kept``): a try of it may stall for the store's own timeout, within the
#: keeping's bound (``KEEPING_ENDS_WITHIN_S``), and an erasure in the stall is checked by
#: the keeping after it lands (review s31: with only ``ERASED_BEFORE_CLAIM`` after it, a
#: try stalled past a minute left such an erasure out of a replay's check, should the
#: withholding's write have failed too). A try stalling past that bound is past the
#: erasure's own wait for the keeping as well.
ANSWER_LANDS_WITHIN = timedelta(seconds=KEEPING_ENDS_WITHIN_S)


def access_of(viewer: Viewer) -> str:
    """What ``viewer`` may do, as a key keeps it (``IdempotencyKey.access``): their role
    and company. A token of another epoch (a password change) is the same access; a
    revoked one never gets this far (``AccountService.viewer_for``)."""
    return f"{viewer.role.value if viewer.role else ''} {viewer.company_id or ''}"


def key_id(user_id: str, key: str) -> str:
    """The record id of ``user_id``'s ``key``: 24 hex digits (a store id) of their
    SHA-256, so the key's first insert is the claim another instance's fails on."""
    return hashlib.sha256(f"{user_id}\n{key}".encode()).hexdigest()[:24]


@dataclass(frozen=True, slots=True)
class Claim:
    """The key is this request's: run the mutation, then ``finish`` or ``release``."""

    record: IdempotencyKey


@dataclass(frozen=True, slots=True)
class Replay:
    """The key was answered already, for this very request: answer ``response`` again."""

    response: str


@dataclass(frozen=True, slots=True)
class InProgress:
    """A request with the key is running still, or its instance died and the claim holds
    until its lease lapses: ask again after ``retry_after`` (``SOON`` at least)."""

    retry_after: timedelta

    @property
    def retry_after_s(self) -> int:
        return retry_after_seconds(self.retry_after)


class Refusal(Enum):
    #: The key was sent with another operation or other variables.
    REUSED = "reused"
    #: The key's request ran, but the user's access (``access_of``) changed since: its
    #: answer is not given them, and it is not run again.
    ACCESS_CHANGED = "access changed"
    #: The key's request ran, but its answer is not given: an account it may name was
    #: erased while it ran, or before its answer was written (``_unless_erased_since``,
    #: ``_erased_while_kept``). It is not run again either.
    WITHHELD = "withheld"


Begun = Claim | Replay | InProgress | Refusal


class IdempotencyService(Service):
    def __init__(self, ctx: ServiceContext, ttl: timedelta = DEFAULT_TTL,
                 lease: timedelta = LEASE) -> None:
        super().__init__(ctx)
        self.ttl = ttl
        self.lease = lease
        #: The answers being kept past ``FINISH_WAIT_S`` (``finish``).
        self._keeping = Background()

    async def begin(self, viewer: Viewer, key: str, fingerprint: str) -> Begun:
        """Claims ``key`` of ``viewer`` (signed in) for a request of ``fingerprint``, or
        says why not: answered already (``Replay``), running (``InProgress``), or
        ``Refusal``."""
        assert viewer.user_id is not None, "keys are kept per signed-in user"
        now = self.now()
        fresh = stamp_new(IdempotencyKey(
            id=key_id(viewer.user_id, key), user_id=viewer.user_id, key=key,
            fingerprint=fingerprint, state=IdempotencyState.RUNNING, claimant=new_id(),
            access=access_of(viewer), lease_until=now + self.lease,
            expires_at=now + self.ttl), viewer, now)
        for _ in range(CLAIM_TRIES):
            try:
                await self.store.write([Insert(fresh)], [])
                return Claim(fresh)
            except UniqueViolation:
                pass
            found = (await self.store.get_many(IdempotencyKey, [fresh.id]))[0]
            if found is None:
                continue  # released or swept since the insert failed: claim it again
            lapsed = found.state is IdempotencyState.RUNNING and found.lease_until <= now
            if found.expires_at > now and not lapsed:
                if found.fingerprint != fingerprint:
                    return Refusal.REUSED
                if found.state is IdempotencyState.RUNNING:
                    return self._in_progress(found, now)
                if found.response is None:
                    return Refusal.WITHHELD
                if found.access != fresh.access:
                    return Refusal.ACCESS_CHANGED
                # Its keeping withholds an answer overlapping an erasure, but that write
                # may have failed every try (the answer left kept): checked again here,
                # so it is never given. A failed read raises as the claim's own (503, a
                # retry asks again): never the answer, never run again.
                if await self._erased_while_kept(found):
                    return Refusal.WITHHELD
                return Replay(found.response)
            # Forgotten (expired, not swept yet), or its request's instance died: taken
            # over as a fresh key, only while it is still as read (another request may
            # be taking it over too: one wins, the other reads again).
            taken = patch(found, viewer, only_if=("claimant", found.claimant),
                          required=True, fingerprint=fingerprint, key=key,
                          state=IdempotencyState.RUNNING, claimant=fresh.claimant,
                          access=fresh.access, lease_until=fresh.lease_until, response=None,
                          expires_at=fresh.expires_at)
            try:
                await self.store.write([taken], [])
            except (Conflict, NotFound):
                continue
            return Claim(taken.record)  # type: ignore[arg-type]
        return InProgress(SOON)

    def _in_progress(self, running: IdempotencyKey, now: datetime) -> InProgress:
        """``running``'s claim held at ``now``: ask again in a moment while it is younger
        than a request runs, else when its lease lapses."""
        if now - self._claimed_at(running) < RUNS_WITHIN:
            return InProgress(SOON)
        return InProgress(max(SOON, running.lease_until - now))

    async def settled(self) -> None:
        """Waits for the answers still being kept in the background (tests, shutdown)."""
        await self._keeping.settled()

    async def finish(self, claim: Claim, response: str) -> None:
        """Keeps ``response`` as the key's answer, waiting for it at most
        ``FINISH_WAIT_S``: the keeping goes on in the background past that (``_keep``:
        tried again after each of ``FINISH_PAUSES_S`` should the store fail, a locked
        database, a moment's outage; left running, the claim would lapse and a retry
        then run the mutation again). Never raised: the mutation ran and its caller gets
        its answer at once; until the answer is kept, a retry is told the key is in
        progress, and should every try fail (logged), the claim lapses after ``LEASE``
        (a retry then runs again)."""
        keeping = self._keeping.run(self._keep(claim, response),
                                    f"idempotency-finish-{claim.record.id}",
                                    f"keeping the answer for idempotency key "
                                    f"{claim.record.key!r} failed")
        await asyncio.wait({keeping}, timeout=FINISH_WAIT_S)  # never cancels it

    async def _keep(self, claim: Claim, response: str) -> None:
        record = claim.record
        # Each try stamps its own time: the replay's check (``_erased_while_kept``)
        # reads erasures up to the try that landed.
        kept = _done(lambda: self.store.write([_answered(record, response, self.now())],
                                              []))
        try:
            # Every try failing, the answer may have landed all the same (a MongoDB
            # reply lost): the check below runs then too, as it would after a write
            # known to land (its withholding is guarded on the claim as well).
            if await self._tried(kept, record, "keeping the answer",
                                 f"the key lapses in {self.lease}",
                                 unknown=f"it may have been kept all the same: whether "
                                         f"an account was erased is checked; else the "
                                         f"key lapses in {self.lease}") is None:
                return
        except (Conflict, NotFound):
            # Taken over after its lease lapsed (a request longer than LEASE), or the
            # user was erased meanwhile: the answer is kept no longer.
            log.warning("the answer for idempotency key %r of user %s was not kept: "
                        "the claim lapsed while the request ran", record.key,
                        record.user_id)
            return
        # Once the answer is stored, only the check is tried again: writing the answer
        # again could store one the check withheld meanwhile.
        await self._unless_erased_since(record)

    async def _unless_erased_since(self, record: IdempotencyKey) -> None:
        """Withholds the answer just kept for ``record`` should anyone have been erased
        since its request claimed the key: it may name them, and the erasure may have
        looked for such answers (``forget``) before it was kept, on another instance,
        whose keeping it does not wait for, and missed it (the person's data kept for a
        day). Read after the answer's write, as the erasure looks after its own: one of
        the two sees the other's write. Any erasure, not only one the answer names: what
        named the person is gone from the store by now. So the answer is dropped, not
        the key: a retry with it is told it ran (``Refusal.WITHHELD``), never run again
        (a refund paid twice), and the store's files are scrubbed of the answer as the
        erasure's were (``Store.scrub``). Should that write fail every try, the answer
        stays, but a retry makes the check before it is given (``begin``,
        ``_erased_while_kept``). One
        read of the ``erased_at`` index; when it cannot be read (review s30), the answer
        is withheld all the same: a retry told it ran is the safe side of one given a
        person's data."""
        found = await self._tried(lambda: self._erased_since(record), record,
                                  "reading whether an account was erased "
                                  "while the request ran", "its answer is withheld")
        if found is False:
            return
        if found:
            log.info("the answer for idempotency key %r of user %s is withheld: an "
                     "account was erased while its request ran", record.key,
                     record.user_id)
        withheld = _answered(record, None, self.now())
        withhold = _done(lambda: self.store.write([withheld], []))
        try:
            if not await self._tried(withhold, record, "withholding the answer",
                                     "the answer stays kept, a retry is refused it "
                                     "by its own check (begin)"):
                return
        except (Conflict, NotFound):  # taken over, or forgotten by the erasure already
            return
        await self._tried(_done(self.store.scrub), record,
                          "scrubbing the store's files of the answer",
                          "they may hold it until the next erasure's scrub")

    async def _erased_since(self, record: IdempotencyKey) -> bool:
        """Whether anyone was erased since ``record``'s request claimed its key
        (``ERASED_BEFORE_CLAIM`` allowing for the erasure's clock): its answer may name
        them. One read of the ``erased_at`` index."""
        return await self._erased(Range("erased_at", gte=self._claimed(record)))

    async def _erased_while_kept(self, record: IdempotencyKey) -> bool:
        """Whether anyone was erased while ``record``'s answer was being kept: since
        its request claimed the key until the answer was written (its ``lease_until``,
        ``_answered``), ``ERASED_BEFORE_CLAIM`` allowing for clocks on either side: the
        window its keeping's own check (``_unless_erased_since``) withholds it for,
        should that withholding's write have failed. Not after: an erasure then finds
        the answers naming the person and deletes them (``forget``), and one that names
        no one erased is given (session 31: a replay was refused after any erasure
        anywhere for the key's whole day, telling a client that someone was erased).
        The answer's time is taken as its write is sent: ``ANSWER_LANDS_WITHIN`` more for
        it to land. One read of the ``erased_at`` index."""
        return await self._erased(Range(
            "erased_at", gte=self._claimed(record),
            lte=record.lease_until + ANSWER_LANDS_WITHIN + ERASED_BEFORE_CLAIM))

    def _claimed(self, record: IdempotencyKey) -> datetime:
        """When ``record``'s request claimed its key, ``ERASED_BEFORE_CLAIM`` earlier."""
        return self._claimed_at(record) - ERASED_BEFORE_CLAIM

    def _claimed_at(self, record: IdempotencyKey) -> datetime:
        """When ``record``'s request claimed its key: from its expiry, which a claim sets
        and nothing else changes (its ``lease_until`` is the answer's time once it is
        kept)."""
        return record.expires_at - self.ttl

    async def _erased(self, when: Range) -> bool:
        return await self.store.find_one(User, when) is not None

    async def _tried(self, step: Callable[[], Awaitable[bool]], record: IdempotencyKey,
                     what: str, then: str, unknown: str | None = None) -> bool | None:
        """``step``'s answer, tried again after each of ``FINISH_PAUSES_S`` should the
        store fail (a locked database, a moment's outage); ``None`` when it could not
        be had, logged with what follows (``then``). Not tried again when the store
        refuses it for good (``StoreRefused``: the same write fails again, nothing
        written). A guarded write's ``Conflict`` or ``NotFound`` is raised: the caller
        tells what it means. ``unknown``: for a write, what follows when its last try
        failed otherwise, which may have landed (a reply lost): logged with it, and
        ``False`` is returned instead of ``None`` (review s30: an answer written but
        not known to be was left unchecked for erasures, logged as lapsing)."""
        for pause in (*FINISH_PAUSES_S, None):
            try:
                return await step()
            except (Conflict, NotFound):
                raise
            except StoreRefused:
                log.exception("the store refused %s for idempotency key %r of user %s; %s",
                              what, record.key, record.user_id, then)
                return None
            except Exception:
                if pause is None:
                    log.exception("%s for idempotency key %r of user %s failed; %s", what,
                                  record.key, record.user_id, unknown or then)
                    return None if unknown is None else False
                log.warning("%s for idempotency key %r of user %s failed; trying again "
                            "in %ss", what, record.key, record.user_id, pause,
                            exc_info=True)
                await asyncio.sleep(pause)
        return None  # not reached: the last try's pause is None

    async def release(self, claim: Claim) -> None:
        """Gives the key up (the request failed for a reason of the service's, not the
        client's): a retry with it runs the mutation. Only while it is still this claim's."""
        record = claim.record
        try:
            await self.store.write([Delete(record, only_if=("claimant", record.claimant))],
                                   [])
        except (Conflict, NotFound):
            return
        except Exception:
            log.warning("releasing idempotency key %r of user %s failed; it lapses in %s",
                        record.key, record.user_id, self.lease, exc_info=True)

    async def sweep(self) -> int:
        """Deletes the keys past their expiry (each only while unchanged: one taken over
        as a fresh key meanwhile stays); how many."""
        return await sweep_expired(self.store, IdempotencyKey,
                                   Range("expires_at", lte=self.now()), "claimant",
                                   SWEEP_BATCH, oldest_by="expires_at")

    async def forget(self, user_id: str, mentioning: Sequence[str] = ()) -> None:
        """Deletes every key of the user, and every other user's whose kept answer holds
        one of the texts ``mentioning`` (an erasure: the person's email, name and plates,
        which an admin's ``updateUser`` or an operator's answer listing their car holds
        as well). An answer is JSON text: each is looked for as JSON writes it. All the
        keys are read for it (24 hours of keyed mutations, a page at a time): erasures
        are rare. One that merely shares a text (a common name) goes too, which costs
        only that a retry with its key runs again.

        The answers this instance is still keeping (``finish`` past ``FINISH_WAIT_S``)
        are waited for first: not stored yet, they were not found, and landed after the
        erasure holding the person's data for a day (review s29). Those under way when
        it starts only, for ``KEEPING_ENDS_WITHIN_S`` at most: others' keyed mutations
        go on meanwhile, and waiting for them too held the erasure for as long as they
        did (review r29). Those another instance keeps, which it cannot wait for, see the
        erasure after their write and withhold themselves (``_unless_erased_since``)."""
        await self._keeping.under_way(KEEPING_ENDS_WITHIN_S)
        async for page in pages(self.store, IdempotencyKey, Eq("user_id", user_id),
                                SWEEP_BATCH):
            await self._delete_each(page)
        wanted = [json.dumps(text, ensure_ascii=False)[1:-1] for text in mentioning if text]
        if not wanted:
            return
        async for page in pages(self.store, IdempotencyKey, ALL, SWEEP_BATCH):
            await self._delete_each([record for record in page if record.response and any(
                text in record.response for text in wanted)])

    async def _delete_each(self, records: Sequence[IdempotencyKey]) -> None:
        for record in records:
            with contextlib.suppress(NotFound):
                await self.store.write([Delete(record)], [])


def _answered(record: IdempotencyKey, response: str | None, at: datetime) -> Update:
    """The key's record as done with ``response`` (``None``: its answer withheld) ``at``
    (the service's clock, kept as its ``lease_until``: the claim held until then; not its
    ``updated_at``, which is the wall clock's), written only while the claim is still
    this request's."""
    return patch(record, Viewer(user_id=record.user_id), only_if=("claimant", record.claimant),
                 required=True, state=IdempotencyState.DONE, response=response,
                 lease_until=at)


def _done(step: Callable[[], Awaitable[object]]) -> Callable[[], Awaitable[bool]]:
    """``step`` as a step of ``IdempotencyService._tried`` that has no answer but done."""
    async def run() -> bool:
        await step()
        return True
    return run
