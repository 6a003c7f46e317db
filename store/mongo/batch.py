"""Writing one journaled batch: its changes in order, on the versions its journal holds the
images of, and on failure the undo of what it wrote (``journal.py`` has the why)."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pymongo
from bson import ObjectId
from pymongo.errors import PyMongoError

from domain.entities import Record
from domain.errors import DomainError, StoreBusy, StoreOutcomeUnknown
from domain.ports import Audit, Change, Delete, Insert, Update
from store.fields import audit_parts, changed_meanwhile
from store.mongo import journal, writes
from store.mongo.codec import to_doc
from store.mongo.journal import MARK, key_of
from store.mongo.outage import answer_timed_out, at_time_limit, reason_of
from store.mongo.writes import Expect, Step, Version

log = logging.getLogger("chargegraph.store.mongo")

#: A document: (collection, ``_id``).
Key = tuple[str, ObjectId]


class BatchTimeout(StoreBusy):
    """A write batch ran past ``journal.BATCH_DEADLINE_S`` and was rolled back: nothing of
    it stays, and the same request may simply be sent again, as SQLite answers a write
    its lock timed out (``STORE_BUSY``). A ``TimeoutError`` before (QA s28 mongo2): an
    internal error, logged as a bug with its traceback, and no client could tell that
    sending it again was all it took. The server stopping one of the batch's operations
    at the time the deadline leaves it (``pymongo.timeout``: MaxTimeMSExpired) is this
    too, once the batch rolled back (``write``)."""

    def __init__(self) -> None:
        super().__init__("the database did not take the write in time; nothing was "
                         "written: send it again")


class OutcomeUnknown(StoreOutcomeUnknown):
    """The driver gave up waiting for one of a batch's operations (``answer_timed_out``)
    and the batch's rollback did not finish either (the database still not answering, or
    another writer changed what the batch wrote since): what stays of the write is not
    known until a sweep finishes the rollback (its journal stays; ``journal.STALE_AFTER``).
    Said so, rather than "nothing was written" (QA s29 mongo). Until then its documents
    stand, visible: a request sent again met them (a unique rule's ``DUPLICATE``, a
    guard, ``CHANGED`` after waiting for the batch), or, committed, applied it twice;
    hence its own code, whose answer an idempotency key keeps."""

    def __init__(self, reason: str) -> None:
        super().__init__("the database did not answer in time and the write could not be "
                         "undone yet: part of it may stay; read before sending it again",
                         reason=reason)


class Yielded(Exception):
    """The batch, having written, met the uncommitted write of an older batch in flight:
    it rolled back everything it wrote, to be written again after that one (``write``)."""

    def __init__(self, kind: str) -> None:
        super().__init__(f"a {kind} is being written by an older batch")
        self.kind = kind


#: What a batch checks once it has written everything, before it closes its journal
#: (the store's ``Guard`` checks): raising, it rolls the batch back.
Check = Callable[[], Awaitable[None]]


async def write(db: Any, changes: Sequence[Change], audit: Sequence[Audit],
                check: Check | None = None) -> None:
    """Writes one journaled batch, all or nothing (``check``: see ``Check``).

    Two batches writing the same documents in opposite orders would each wait for the
    other (``Batch._committed_image``) and both fail ``CHANGED``. The older one (lower
    id: an ObjectId orders by time, then process and counter, the same on every
    instance) waits; the younger, having written, yields: it rolls back and runs again
    once the older one settled (``Batch.open`` waits for it), as SQLite's write lock
    orders them. It keeps its id, so it only grows older than the batches it meets and
    does not yield for ever; its deadline (``journal.BATCH_DEADLINE_S``, from the first
    attempt) bounds the attempts."""
    journal_id: ObjectId | None = None
    deadline = time.monotonic() + journal.BATCH_DEADLINE_S
    try:
        while True:
            batch = await Batch.open(db, changes, audit, journal_id, deadline)
            try:
                await batch.run(changes, audit, check)
                return
            except Yielded:
                journal_id = batch.id
    except (BatchTimeout, PyMongoError) as error:
        # Rolled back already (``Batch.run``; the journal of one stopped while opening,
        # by ``journal.open_batch``). The server's MaxTimeMSExpired is the deadline's
        # doing too: it is what the deadline leaves each operation (``Batch._apply``).
        # A timed-out answer here is one of ``Batch.open``'s (reading the images,
        # writing the journal): nothing of the batch was written yet.
        if isinstance(error, PyMongoError) and not (at_time_limit(error)
                                                    or answer_timed_out(error)):
            raise
        log.warning("a write batch of %d changes ran past its %g s deadline (a slow or "
                    "overloaded database) and was rolled back: answered STORE_BUSY",
                    len(changes), journal.BATCH_DEADLINE_S)
        if isinstance(error, BatchTimeout):
            raise
        raise BatchTimeout() from error


class Batch:
    """One batch between ``open`` and ``run``. Tracks the version each document is expected
    in (its image's mark until the batch writes it, then the batch's own) and what the
    batch wrote, which is all a failure undoes."""

    def __init__(self, db: Any, layout: journal.Layout, undo: list[dict[str, Any]],
                 audit: list[dict[str, Any]], settle_wait: float, deadline: float) -> None:
        self.db = db
        #: Where its journal is stored (one document, or a head and parts).
        self.layout = layout
        self.id = layout.id
        self.undo = undo
        #: The batch's audit entries as stored.
        self.audit = audit
        self.entries = {key_of(entry): index for index, entry in enumerate(undo)}
        self.versions: dict[Key, Version] = {key_of(e): _version(e["before"]) for e in undo}
        self.written: set[Key] = set()
        #: The ``id()`` of each guarded update the batch found its guard no longer held
        #: for, which wrote nothing: its ``AuditIfApplied`` entry is not written.
        self.skipped: set[int] = set()
        self.deadline = deadline
        #: How long it waits for another batch in flight (``journal.settle_wait``).
        self.settle_wait = settle_wait

    @classmethod
    async def open(cls, db: Any, changes: Sequence[Change], audit: Sequence[Audit],
                   journal_id: ObjectId | None = None, deadline: float | None = None
                   ) -> Batch:
        """Reads the images and records the journal; nothing is written yet. ``journal_id``
        and ``deadline``: those of the batch's first attempt, when it runs again after
        yielding (``write``); else the deadline starts now, so it bounds the journal's
        writes too: a writer stalled while writing its journal past the deadline is
        stopped there, as in the batch's writes (``journal.open_batch``).

        An image another batch in flight wrote is that batch's uncommitted write: put
        back by this batch's undo, it would bring back what that batch's own rollback
        undid; built upon, it makes that rollback leave the document (another writer's
        mark), so two failed batches left the first one's write with no audit. So the
        batch waits for that one to finish, as SQLite's write lock would have made it,
        and reads again; one that does not finish within ``journal.settle_wait`` (a
        deadlock of two batches, a dead writer) fails this batch with ``CHANGED`` before
        it wrote."""
        if deadline is None:
            deadline = time.monotonic() + journal.BATCH_DEADLINE_S
        settle_wait = journal.settle_wait(audited=bool(audit))
        settled_by = time.monotonic() + settle_wait
        while True:
            undo = await journal.plan(db, changes)
            busy = await journal.in_flight(db, (entry["before"] for entry in undo))
            if not busy:
                break
            if not await journal.wait_settled(db, busy, settled_by - time.monotonic()):
                raise changed_meanwhile(_written_by(undo, busy))
        # Every entry the batch may write, those of guarded updates too: an undo deletes
        # its entries by id, and one never written is no matter.
        unconditional, conditional = audit_parts(changes, audit)
        entries = [to_doc(entry) for entry in
                   [*unconditional, *(entry for entry, _ in conditional)]]
        layout = await journal.open_batch(db, undo, entries, journal_id,
                                          within=_time_left(deadline))
        return cls(db, layout, undo, entries, settle_wait, deadline)

    async def run(self, changes: Sequence[Change], audit: Sequence[Audit],
                  check: Check | None = None) -> None:
        """Writes everything, then runs ``check``; or (raising what failed either) undoes
        what it wrote. The audit entries go last: an ``AuditIfApplied`` only if its
        update applied."""
        entries, conditional = audit_parts(changes, audit)
        step: Step = []  # (none yet)
        try:
            for step in writes.steps(changes):
                await self._write(step, self.id)
            step = [Insert(entry) for entry in [
                *entries, *(entry for entry, update in conditional
                            if id(update) not in self.skipped)]]
            if step:
                # Marked too: an undo deletes the batch's audit entries by their ids and
                # its mark, never another write's entry that holds one of those ids.
                await self._write(step, self.id)
            step = []  # every step written: a failed check undoes all of them
            if check is not None:
                await check()
        except Yielded as exc:
            # Raised before the step wrote anything. Written again only if the rollback
            # left nothing of this attempt (else that would stand twice).
            if not await self.roll_back(set()):
                raise changed_meanwhile(exc.kind) from exc
            raise
        except BaseException as exc:
            undone = await self.roll_back(
                set() if _wrote_nothing(step, exc) else _keys(_records(step)))
            if answer_timed_out(exc):
                # The server's time limit (the deadline's) ends the operation no later
                # than the socket's, so nothing of it lands after this rollback: one that
                # finished leaves nothing, as the server's own time limit (QA s29 mongo:
                # STORE_UNAVAILABLE, "try again later", either way).
                if undone:
                    raise BatchTimeout() from exc
                raise OutcomeUnknown(reason_of(exc)) from exc
            raise
        try:
            await journal.close_batch(self.db, self.id, self.layout.parts)
        except PyMongoError as exc:
            # Closed (committed), or not and a sweep rolls it all back: not known.
            if answer_timed_out(exc):
                raise OutcomeUnknown(reason_of(exc)) from exc
            raise

    async def _write(self, step: Step, mark: ObjectId | None) -> None:
        while True:
            try:
                records = await self._apply(step, mark)
            except writes.Stale as stale:
                await self._read_again(stale.record)
                continue
            if isinstance(step, Update) and not records:
                self.skipped.add(id(step))
            for key in _keys(records):
                self.written.add(key)
                self.versions[key] = Expect.ABSENT if isinstance(step, Delete) else mark
            return

    async def _apply(self, step: Step, mark: ObjectId | None) -> list[Record]:
        remaining = _time_left(self.deadline)
        expected: Version = Expect.ANY
        if not isinstance(step, list):
            expected = self.versions.get(_key(step.record), Expect.ANY)
        # The server aborts an operation that would run past the deadline too, so nothing
        # of this batch lands after a sweep could consider it abandoned.
        with pymongo.timeout(remaining):
            return await writes.apply(self.db, step, mark, expected)

    async def _read_again(self, record: Record) -> None:
        """Another writer changed the document since the batch read its image: the image
        to put back is the new one (recorded before the batch writes on it)."""
        key = _key(record)
        if key in self.written:
            # Changed between two writes of this batch: neither image undoes the batch
            # without undoing the other writer too.
            raise changed_meanwhile(record.kind)
        image = await self._committed_image(record)
        index = self.entries[key]
        await journal.record_image(self.db, self.layout, index, image)
        self.undo[index]["before"] = image
        self.versions[key] = _version(image)

    async def _committed_image(self, record: Record) -> dict[str, Any] | None:
        """The document as stored, once no other batch in flight wrote it last (as in
        ``open``: never an uncommitted image to restore). Held up by an older batch, a
        batch that wrote yields instead of waiting (``Yielded``): that one may be waiting
        for a document this one wrote, and two batches waiting on each other both
        failed. One that wrote nothing holds nothing up, and waits."""
        wait = min(self.settle_wait, self.deadline - time.monotonic())
        deadline = time.monotonic() + wait
        while True:
            image: dict[str, Any] | None = await self.db[record.kind].find_one(
                {"_id": ObjectId(record.id)})
            busy = await journal.in_flight(self.db, [image], own=self.id)
            if not busy:
                return image
            if self.written and any(other < self.id for other in busy):
                raise Yielded(record.kind)
            if not await journal.wait_settled(self.db, busy, deadline - time.monotonic()):
                raise changed_meanwhile(record.kind)

    async def roll_back(self, maybe: set[Key]) -> bool:
        """Undoes what the batch wrote, or may have written when it failed (``maybe``: a
        run of inserts half done, an operation whose answer never came). Only that: a
        guarded update that wrote nothing, an ``InsertIfAbsent`` that found its record
        there, a change never reached are not the batch's to undo. True when nothing the
        batch wrote is left and its journal is closed."""
        reached = self.written | maybe
        try:
            left = await journal.roll_back(
                self.db, self.id, [e for e in self.undo if key_of(e) in reached],
                [entry["_id"] for entry in self.audit], entries=self.audit,
                written=self.written, audit_marked=True)
            await journal.close_batch(self.db, self.id, self.layout.parts)
        except Exception:
            # The journal document stays, so a sweep finishes the rollback; the caller
            # gets the error that failed the batch, not this one.
            log.exception("rolling back a failed write batch failed; a sweep will finish it")
            return False
        changed = [key_of(e) for e in left if key_of(e) in self.written]
        if changed:
            log.warning("a failed write batch left %d documents as another writer changed "
                        "them after the batch wrote them: %s", len(changed),
                        ", ".join(f"{kind} {ident}" for kind, ident in changed))
        return not changed


def _time_left(deadline: float) -> float:
    """The seconds left before ``deadline``; ``BatchTimeout`` when none are (before a
    write, so a batch that has written rolls back, and one that has not stops there)."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise BatchTimeout()
    return remaining


def _written_by(undo: list[dict[str, Any]], batches: set[ObjectId]) -> str:
    """The kind of a document one of ``batches`` wrote last (for the error's message)."""
    return next(entry["kind"] for entry in undo
                if entry["before"] is not None and entry["before"].get(MARK) in batches)


def _version(image: dict[str, Any] | None) -> Version:
    return Expect.ABSENT if image is None else image.get(MARK)


def _key(record: Record) -> Key:
    return record.kind, ObjectId(record.id)


def _keys(records: Sequence[Record]) -> set[Key]:
    return {_key(record) for record in records}


def _records(step: Step) -> list[Record]:
    return [change.record for change in step] if isinstance(step, list) else [step.record]


def _wrote_nothing(step: Step, exc: BaseException) -> bool:
    """Whether the failed step certainly wrote nothing: a single change the store refused
    (a missing record, a unique rule, a guard) fails before or instead of its one write."""
    return not isinstance(step, list) and isinstance(exc, DomainError)
