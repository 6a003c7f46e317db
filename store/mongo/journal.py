"""The undo journal: how a write batch is all-or-nothing without multi-document transactions.

Before a batch touches anything, one ``_journal`` document records how to put back every
document the batch will change (its before-image; for a partial update only the fields it
writes; for a document it inserts only its id) and the batch's audit entries. Then the
changes and the audit entries are written, and the journal document is deleted. When a
change fails, the writer rolls the batch back at once; when the writer dies half-way, a
sweep rolls it back later.

A server refuses a document over 16 MiB, and a batch may journal tens of thousands of
documents (a week of samples in one StopTransaction, a local list of 100,000 entries
replaced by another): a journal past ``JOURNAL_DOC_BYTES`` goes in several documents, a
head in ``_journal`` and parts in ``JOURNAL_PARTS``, all written before the batch writes
and read in order by a recovery (``open_batch``, ``journal_lists``). The head is what
says a batch is in flight, and it is deleted first when the batch ends.

Why not an outbox (each changed document carrying its pending audit entries, flushed to
``audit_entry`` after the batch)? An outbox makes the audit of *applied* changes reliable,
but a crash after the first of two changes leaves the batch half-written for good, and
recovery then completes the audit of the half. The journal rolls such a batch back, which
is what "all or nothing" asks for; it costs two writes per batch (journal insert and
delete) instead of one extra update per changed document, and deletes need no special
case. Without transactions readers may still glimpse a batch in flight; no half-written
batch stays.

Other requests keep writing while a batch runs, so an undo must never put an image back
over what someone else committed since, nor delete a record someone else inserted. Every
write stores its id in the document's ``MARK`` (``store/mongo/writes.py``), which makes
the mark a version: a batch writes a document only while it is the version the journal
holds the image of (else the batch reads it again and records the new image first), and
an undo applies only while the document still carries the batch's mark. A document
another writer changed since the batch wrote it gets back only the fields the batch
changed that still hold what it wrote (the journal keeps what it writes, ``after``):
the committed write wins, and nothing of the failed batch stays (``_undo_own_fields``).
One deleted since, or inserted in the batch's stead (an ``InsertIfAbsent`` that found
it there), is left alone and logged; one the batch inserted and another writer changed
since stays, with the batch's audit entry about it. The sweep, not knowing how far a
dead writer got, leaves every document another writer changed since. A restore a unique
rule refuses leaves its document as the batch wrote it, with its audit entry, and what the
batch created as its companion (a stop's payment: ``COMPANIONS``) stays, or comes back,
with it.

That rule needs every image a journal holds to be committed: a batch that took another
batch's uncommitted write as its image would, on failing, put that write back after its
writer had rolled it back (the writer, finding the second batch's mark, left the document
alone), so two failed batches left the first one's change with no audit. A batch
therefore never builds on a batch in flight: when a document it is about to journal
carries the mark of a batch whose journal is still there, it waits for that batch to
commit or roll back (``SETTLE_WAIT_S``, polling the journal; a stale journal is swept at
once; a batch without audit entries, charger telemetry, waits ``UNAUDITED_SETTLE_WAIT_S``
only), reads the document again, and fails with ``CHANGED`` if it waited in vain (two
batches waiting on each other, a writer that died recently). Locks or versions per
document would serialise the same way; the journal is what already says which batches
are in flight. Changes written alone are single-document writes and do not wait: they
are committed the moment they land. A deleted
document is the one undo the mark cannot guard (nothing is left to carry it): the writer
re-inserts only what it deleted itself, the sweep each deletion of the batch it finds
missing. One it finds there without the batch's mark was not deleted by the batch (its
writer died first) or was put back already (a rollback cut short before closing the
journal): it stays, and so does no entry about its deletion. Every undo is so
idempotent: a sweep finishing a rollback changes nothing that rollback did.

Several instances may share one database, and one instance starting must not roll back a
batch another is still writing. So a writer gives up on its batch (and rolls it back) once
``BATCH_DEADLINE_S`` has passed, and sweeps only roll back journal documents older than
``STALE_AFTER``, long past any live writer's deadline. The deadline starts before the
journal's ``at`` is taken and bounds the journal's writes too, and a writer that split
its journal reads the head back before its batch writes (``_still_open``): stalled
between head and parts, it may find the head swept, and would write with no journal.
A sweeper first claims a document (compare-and-set of its ``at``), so two instances
never roll back the same batch twice (a second restore could clobber a write that landed
in between). ``at`` is the writer's clock: instances' clocks must agree to well within
``STALE_AFTER - BATCH_DEADLINE_S``.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import enum
import logging
import time
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import bson
import pymongo
from bson import ObjectId
from pymongo.errors import DuplicateKeyError

from domain.clock import utcnow
from domain.entities import ENTITY_BY_KIND, AuditAction
from domain.errors import StoreUnavailable
from domain.ports import Change, Delete, Insert, InsertIfAbsent, Update
from store.fields import from_snapshot
from store.mongo.codec import to_doc, written_names

log = logging.getLogger("chargegraph.store.mongo")

JOURNAL = "_journal"
#: The field holding the id of the write that last stored a document: its version (a
#: batch's journal id, or a fresh id for an update written alone; see ``writes.py``).
MARK = "_w"
#: Set on journal documents whose batch marks what it writes. One without it was written
#: by a version before the marks: its batch is rolled back as then, unconditionally.
MARKED = "marked"
#: The batch's audit entries as stored (with their ids in ``audit``).
ENTRIES = "entries"
#: Where a journal too large for one document keeps the rest of its lists, in parts:
#: ``{"journal": <its id>, "seq": 1.., "at", "undo", "audit", "entries"}``, each a slice
#: of the journal's lists following the head's (``_journal`` document) and the parts
#: before it. The head says how many (``PARTS``; none: it holds everything).
JOURNAL_PARTS = "_journal_part"
PARTS = "parts"
#: The lists a journal splits across its documents, in the order they are filled.
_LISTS = ("undo", "audit", ENTRIES)
#: The most BSON bytes of undo and audit entries one journal document takes before the
#: rest goes to the next part. A server refuses documents over 16 MiB; a document of
#: the journal grows when an image is recorded in it later (``record_image``: one
#: document's image, a few KiB), so this keeps far below.
JOURNAL_DOC_BYTES = 4 * 1024 * 1024
#: Set on journal documents whose batch marks its audit entries too: a rollback deletes
#: only those (an entry of another write with one of their ids is not the batch's).
#: Journals of older versions delete them by id.
AUDIT_MARKED = "audit_marked"
#: A batch not finished after this long gives up and rolls itself back...
BATCH_DEADLINE_S = 30.0
#: ...so a journal document this old belongs to a writer that died.
STALE_AFTER = timedelta(minutes=2)
#: How often an open store sweeps for batches a dead writer (of any instance) left behind.
SWEEP_EVERY_S = 60.0
#: How long a batch waits for another batch in flight, whose write it found on a document
#: it is about to write, to finish (a batch takes milliseconds) before failing ``CHANGED``.
SETTLE_WAIT_S = 2.0
#: The same for a batch without audit entries: charger telemetry, written through the
#: group committer, where every second waited holds every charger's frames behind it (a
#: batch that does not settle in this time is most likely stuck: a dead writer's).
UNAUDITED_SETTLE_WAIT_S = 0.25
#: The longest pause between two looks at whether such a batch has finished.
SETTLE_POLL_MAX_S = 0.1
#: What a batch creates as the companion of its change to another record, by kind: (the
#: field naming that record, its kind). A stop completes and prices its session and
#: opens the session's payment; a priced session without its payment is money nobody
#: collects. When a unique rule keeps the record as the batch wrote it (``REFUSED``), its
#: companion is kept too (``_keep_companions``).
COMPANIONS: dict[str, tuple[str, str]] = {"payment": ("session_id", "session")}


@dataclass(slots=True)
class _Touched:
    kind: str
    id: ObjectId
    before: dict[str, Any] | None
    #: Stored names to restore; ``None`` restores the whole document.
    fields: set[str] | None = field(default_factory=set)
    #: Whether the batch's last change of the document deletes it.
    deleted: bool = False
    #: What the batch writes of it, by stored name (the whole document for a whole
    #: write; a name of ``fields`` missing here is one the batch removes): so a rollback
    #: can tell its own fields from another writer's (``_undo_own_fields``).
    after: dict[str, Any] = field(default_factory=dict)
    #: Whether the batch only inserts it (its every change an insert of a document that
    #: was not there): its undo is a delete by id, so its journal entry needs no image.
    only_inserted: bool = True


def key_of(entry: dict[str, Any]) -> tuple[str, ObjectId]:
    """The document an undo entry puts back, as (collection, ``_id``)."""
    return entry["kind"], entry["id"]


async def plan(db: Any, changes: Sequence[Change]) -> list[dict[str, Any]]:
    """The undo entries of a batch, from one read of the before-images per collection.

    A document changed several times gets one entry with its image from before the batch;
    an ``InsertIfAbsent`` of a document that exists changes nothing and needs none.
    """
    ids: dict[str, list[ObjectId]] = {}
    for change in changes:
        ids.setdefault(change.record.kind, []).append(ObjectId(change.record.id))
    images: dict[tuple[str, ObjectId], dict[str, Any]] = {}
    for kind, wanted in ids.items():
        for doc in await db[kind].find({"_id": {"$in": wanted}}).to_list(None):
            images[(kind, doc["_id"])] = doc
    touched: dict[tuple[str, ObjectId], _Touched] = {}
    for change in changes:
        key = (change.record.kind, ObjectId(change.record.id))
        entry = touched.get(key)
        if entry is None:
            entry = touched[key] = _Touched(key[0], key[1], images.get(key))
        if isinstance(change, InsertIfAbsent) and entry.before is not None:
            continue  # already there: the insert is a no-op
        entry.only_inserted &= isinstance(change, Insert | InsertIfAbsent)
        entry.deleted = isinstance(change, Delete)
        doc = to_doc(change.record)
        if isinstance(change, Update) and change.fields is not None:
            names = written_names(change.record, change.fields)
            if entry.fields is not None:
                entry.fields |= names
            entry.after.update({name: doc[name] for name in names if name in doc})
            entry.after = {name: value for name, value in entry.after.items()
                           if name in doc or name not in names}
        else:
            entry.fields = None
            entry.after = {} if entry.deleted else doc
    return [{"kind": t.kind, "id": t.id, "before": t.before,
             "fields": None if t.fields is None else sorted(t.fields), "deleted": t.deleted,
             "after": _after_kept(t)}
            for t in touched.values() if t.before is None or t.fields != set()]


def _after_kept(touched: _Touched) -> dict[str, Any]:
    """What the journal keeps of what the batch writes of a document.

    ``after`` tells the batch's own fields from another writer's when the rollback finds
    a document changed since (``_undo_own_fields``). Of a document the batch only
    inserted, that needs nothing but its presence: the batch's part cannot be told from
    the other writer's (it is the whole document), so the document stays (``LEFT``) and
    only whether ``after`` is there at all (journals of older versions have none) is
    read. So such an entry keeps none of it: a StopTransaction's samples kept a copy of
    every sample, and a week of them made the journal pass the 16 MiB a server accepts.
    A document first updated or deleted keeps it: its image may become one
    (``record_image``), and then the fields matter."""
    return {} if touched.before is None and touched.only_inserted else touched.after


@dataclass(frozen=True, slots=True)
class Layout:
    """Where a journal is stored: its id (the ``MARK`` its batch's writes carry) and the
    index of the first undo entry each of its documents holds (the head's, 0, then each
    part's in order)."""

    id: ObjectId
    starts: tuple[int, ...] = (0,)

    @property
    def parts(self) -> int:
        return len(self.starts) - 1

    def locate(self, index: int) -> tuple[int, int]:
        """(the document, 0 for the head, else a part's ``seq``; the position in its
        ``undo``) of undo entry ``index``."""
        seq = bisect.bisect_right(self.starts, index) - 1
        return seq, index - self.starts[seq]


async def open_batch(db: Any, undo: list[dict[str, Any]], audit: list[dict[str, Any]],
                     journal_id: ObjectId | None = None, within: float | None = None
                     ) -> Layout:
    """Records the batch's undo entries and its audit entries (as stored: a rollback
    writes those about a document it must leave as the batch wrote it, see
    ``roll_back``); returns where, with its id, the ``MARK`` its writes carry:
    ``journal_id`` for a batch written again after it yielded and rolled back
    (``batch.write``), else new. ``within``: the seconds left of the batch's deadline,
    which bound these writes as they bound the batch's (the server aborts one past it).

    A journal past ``JOURNAL_DOC_BYTES`` is split: the head first, holding the start of
    each list and the number of parts, then the parts, all before the batch writes
    anything. A writer that dies in between leaves a head with fewer parts than it says,
    of a batch that wrote nothing: the sweep rolls back what the parts found hold (none
    of it was written) and deletes it. A writer stalled in between past ``STALE_AFTER``
    finds its head swept (``_still_open``): it deletes its parts and fails, having
    written nothing; its batch, going on, would have written with no journal at all.
    Whatever fails, the journal goes, as nothing of the batch is written yet (else the
    sweep takes it)."""
    journal_id = journal_id or ObjectId()
    # Milliseconds, as BSON keeps them: the head read back compares equal to it
    # (``_still_open``).
    at = utcnow()
    lists: dict[str, list[Any]] = {"undo": undo, "audit": [entry["_id"] for entry in audit],
                                   ENTRIES: audit}
    head: dict[str, Any] = {"_id": journal_id, "at": at, **lists, MARKED: True,
                            AUDIT_MARKED: True}
    pieces = [lists] if len(bson.encode(head)) <= JOURNAL_DOC_BYTES else \
        _split(lists, JOURNAL_DOC_BYTES)
    parts = len(pieces) - 1
    try:
        # Not the cleanup below: a deadline past would fail it at once.
        with pymongo.timeout(within):
            if not parts:
                await db[JOURNAL].insert_one(head)  # the usual batch: one document
                return Layout(journal_id)
            await db[JOURNAL].insert_one({**head, **pieces[0], PARTS: parts})
            await db[JOURNAL_PARTS].insert_many(
                [{"journal": journal_id, "seq": seq, "at": at, **piece}
                 for seq, piece in enumerate(pieces[1:], start=1)], ordered=True)
            await _still_open(db, journal_id, at)
    except BaseException:
        with contextlib.suppress(Exception):
            await close_batch(db, journal_id, parts)
        raise
    starts = [0]
    for piece in pieces[:-1]:
        starts.append(starts[-1] + len(piece["undo"]))
    return Layout(journal_id, tuple(starts))


class JournalSwept(StoreUnavailable):
    """The batch's journal was swept while it was being written: its writer stalled
    between the head and the parts past ``STALE_AFTER`` (a process paused, a server not
    answering), so another instance took it for a dead writer's. Nothing of the batch
    was written; the same request may be sent again."""

    def __init__(self) -> None:
        super().__init__("the write stalled and was abandoned; nothing was written: try "
                         "again later",
                         reason="the write batch's journal was swept as stale while its "
                                "parts were being written")


async def _still_open(db: Any, journal_id: ObjectId, at: datetime) -> None:
    """Raises ``JournalSwept`` unless the head is there as written: not deleted, nor
    claimed (a sweeper sets its ``at``). The parts were written after the head, with the
    head's ``at``: a writer stalled in between past ``STALE_AFTER`` had its head swept
    by another instance meanwhile, and its batch would write with no journal (nothing
    marks it in flight, and no sweep rolls it back if it dies). Past this check the
    batch writes within its deadline, which ends long before the head can be stale."""
    if await db[JOURNAL].find_one({"_id": journal_id, "at": at}, {"_id": 1}) is None:
        log.warning("a write batch's journal was swept while it was being written (its "
                    "writer stalled past %s); the batch is abandoned, nothing written",
                    STALE_AFTER)
        raise JournalSwept()


def _split(lists: dict[str, list[Any]], limit: int) -> list[dict[str, list[Any]]]:
    """``lists`` cut into consecutive slices of about ``limit`` encoded bytes each (one
    item larger than that alone), in ``_LISTS`` order: the first for the head."""
    pieces: list[dict[str, list[Any]]] = [{name: [] for name in _LISTS}]
    size = 0
    for name in _LISTS:
        for item in lists[name]:
            item_size = _encoded_size(item)
            if size + item_size > limit and size:
                pieces.append({name: [] for name in _LISTS})
                size = 0
            pieces[-1][name].append(item)
            size += item_size
    return pieces


def _encoded_size(item: Any) -> int:
    """About what ``item`` takes as an array element (a little more: a longer key)."""
    return len(bson.encode({"0000000": item}))


async def journal_lists(db: Any, journal: dict[str, Any]) -> dict[str, list[Any]]:
    """The undo entries, audit ids and audit entries of a stored journal, its parts'
    appended in order to its head's."""
    lists = {name: list(journal.get(name) or []) for name in _LISTS}
    if journal.get(PARTS):
        parts = await db[JOURNAL_PARTS].find({"journal": journal["_id"]}).sort(
            [("seq", 1)]).to_list(None)
        for part in parts:
            for name in _LISTS:
                lists[name] += part.get(name) or []
    return lists


async def record_image(db: Any, layout: Layout, index: int,
                       image: dict[str, Any] | None) -> None:
    """Replaces the image of undo entry ``index``: its document changed before the batch
    wrote it. Recorded before the batch's write, like the journal itself."""
    seq, position = layout.locate(index)
    update = {"$set": {f"undo.{position}.before": image}}
    if seq == 0:
        await db[JOURNAL].update_one({"_id": layout.id}, update)
    else:
        await db[JOURNAL_PARTS].update_one({"journal": layout.id, "seq": seq}, update)


async def in_flight(db: Any, images: Iterable[dict[str, Any] | None],
                    own: ObjectId | None = None) -> set[ObjectId]:
    """The batches still in flight (their journal is there) that wrote one of ``images``
    last, other than ``own``: those images are uncommitted writes, not to build on."""
    marks = {image.get(MARK) for image in images if image is not None} - {None, own}
    if not marks:
        return set()
    found = await db[JOURNAL].find({"_id": {"$in": list(marks)}}, {"_id": 1}).to_list(None)
    return {doc["_id"] for doc in found}


def settle_wait(audited: bool) -> float:
    """How long a batch waits for another in flight (``SETTLE_WAIT_S``). A batch without
    audit entries is charger telemetry (sample inserts, guarded field updates): it gives
    up sooner, as failing it costs little (the charger sends the frame again, and its
    samples are idempotent) while waiting holds the telemetry of every other charger."""
    return SETTLE_WAIT_S if audited else UNAUDITED_SETTLE_WAIT_S


async def wait_settled(db: Any, batches: set[ObjectId], within: float) -> bool:
    """Waits up to ``within`` seconds for ``batches`` to commit or roll back (their
    journals to go); False when one is still there. A batch whose journal is already
    stale (its writer died) is swept at once rather than waited for."""
    deadline = time.monotonic() + within
    pause = 0.005
    while True:
        left = await db[JOURNAL].find({"_id": {"$in": list(batches)}}, {"at": 1}
                                      ).to_list(None)
        if not left:
            return True
        cutoff = datetime.now(UTC) - STALE_AFTER
        if any(doc.get("at") is None or doc["at"] < cutoff for doc in left):
            await sweep(db)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        await asyncio.sleep(min(pause, remaining))
        pause = min(pause * 2, SETTLE_POLL_MAX_S)


async def close_batch(db: Any, journal_id: ObjectId, parts: int = 0) -> None:
    """Deletes the journal (with its ``parts``): the head first, which ends the batch
    (committed, or rolled back); parts left by a writer that died next are deleted by a
    later sweep (``_drop_orphan_parts``)."""
    await db[JOURNAL].delete_one({"_id": journal_id})
    if parts:
        await db[JOURNAL_PARTS].delete_many({"journal": journal_id})


async def _drop_orphan_parts(db: Any, cutoff: datetime) -> None:
    """Deletes the parts, older than ``cutoff``, of journals whose head is gone (their
    writer died while closing them). A part is written after its head, with its ``at``,
    so a part without one that old is of no batch still being opened, but one whose
    writer stalled past ``STALE_AFTER`` after writing the head: that writer finds its
    head gone and abandons the batch (``_still_open``)."""
    parts = await db[JOURNAL_PARTS].find({"at": {"$lt": cutoff}}, {"journal": 1}
                                         ).to_list(None)
    journals = list({part["journal"] for part in parts})
    if not journals:
        return
    heads = await db[JOURNAL].find({"_id": {"$in": journals}}, {"_id": 1}).to_list(None)
    orphans = set(journals) - {head["_id"] for head in heads}
    if orphans:
        await db[JOURNAL_PARTS].delete_many({"journal": {"$in": list(orphans)}})


class Undone(enum.Enum):
    """What undoing one entry did."""

    #: Put back as it was before the batch.
    DONE = "done"
    #: Not the batch's to undo: another writer changed it since, the batch never
    #: reached it, or it was undone already.
    NOT_OURS = "not ours"
    #: Left as the batch wrote it: putting it back would break a unique rule.
    REFUSED = "refused"
    #: Left as the batch wrote it, with another writer's change since: the batch's own
    #: part could not be put back alone (it inserted the document, or the document kept
    #: changing under ``OWN_FIELDS_ATTEMPTS``).
    LEFT = "left"


#: How often a rollback tries to put back a document's own fields while other writers
#: keep changing it (each try reads it and writes only if it is still that version).
OWN_FIELDS_ATTEMPTS = 3
#: A stored name a document does not have.
_ABSENT = object()


async def roll_back(db: Any, journal_id: ObjectId, undo: list[dict[str, Any]],
                    audit_ids: list[ObjectId], *, marked: bool = True,
                    entries: Sequence[dict[str, Any]] = (),
                    written: Collection[tuple[str, ObjectId]] = (),
                    audit_marked: bool = False) -> list[dict[str, Any]]:
    """Puts back, newest change first, every listed document that still carries the
    batch's mark (idempotent); returns the entries left alone. ``marked=False`` is for
    journals of versions that did not mark their writes: those are put back regardless.

    A partial update restores only the fields it wrote (and the mark the document had):
    what the batch did not write is not its to undo. A document the batch certainly
    wrote (``written``: the writer's own rollback knows; a sweep does not) that another
    writer changed since gets back only what the batch changed and still holds
    (``_undo_own_fields``): the other writer's change stays, and none of the batch's,
    as on SQLite, where that writer would have waited for the rollback. The batch's
    audit entries go, but those about a document kept as the batch wrote it: a unique
    rule refused it back (``Undone.REFUSED``), or its own part could not be told apart
    (``Undone.LEFT``); its change stays, so its entry must, or it would stand unaudited.
    Only the entries the batch inserted go (``audit_marked``: they carry its mark; an
    entry of another write holding one of their ids is not the batch's), journals of
    older versions delete them by id. The batch writes
    its entries last, so it usually failed before: they are written from the journal's
    copy (``entries``; journals of older versions have none). What the batch created as
    the companion of such a document (``COMPANIONS``: a stop's payment) stays with it, or
    comes back, with its entry (``_keep_companions``). Entries are dealt with after the
    documents: a rollback cut short is finished by a sweep, which finds such a document
    still refusing.
    """
    left = []
    refused: list[dict[str, Any]] = []
    for entry in reversed(undo):
        ours: dict[str, Any] = {"_id": entry["id"]}
        if marked:
            ours[MARK] = journal_id
        outcome = await _undo(db[entry["kind"]], entry, ours, marked,
                              certain=key_of(entry) in written)
        if outcome is not Undone.DONE:
            left.append(entry)
        if outcome in (Undone.REFUSED, Undone.LEFT):
            refused.append(entry)
    refused += await _keep_companions(db, refused, entries)
    for entry in entries:
        if any(_about(entry, kept) for kept in refused):
            await db["audit_entry"].replace_one({"_id": entry["_id"]}, entry, upsert=True)
    if audit_ids:
        drop = _audit_to_drop(audit_ids, refused)
        if audit_marked:
            drop[MARK] = journal_id
        await db["audit_entry"].delete_many(drop)
    return left


async def _keep_companions(db: Any, refused: list[dict[str, Any]],
                           entries: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Puts back what the batch created as the companion of a ``refused`` document (a
    stop's payment, whose session a unique rule kept completed and priced): undone with
    the rest, or never written (the writer died first), it is inserted again as the
    batch created it, from the after-image of its CREATE entry. Returns them as the undo
    entries of documents kept, so their audit entries stay too.

    Undoing all or none of the stop is not possible (the session cannot go back), so the
    journal rolls its payment forward instead. Exactly once: a payment's identity is its
    session (the unique rule on ``payment.session_id``) and its id the batch's, so a
    second recovery (a sweep finishing a rollback cut short) finds it there, and a payment
    another writer opened for the session meanwhile refuses this one (that one stands,
    and this one's entry goes)."""
    kept = {(entry["kind"], str(entry["id"])) for entry in refused}
    companions = []
    for audit in entries:
        link = COMPANIONS.get(audit.get("entity", ""))
        image = audit.get("after")
        if link is None or audit.get("action") != AuditAction.CREATE.value or not image:
            continue
        field_name, owner = link
        if (owner, image.get(field_name)) not in kept:
            continue
        collection = db[audit["entity"]]
        doc = to_doc(from_snapshot(ENTITY_BY_KIND[audit["entity"]], image))
        try:
            await collection.insert_one(doc)
        except DuplicateKeyError:
            if await collection.find_one({"_id": doc["_id"]}, {"_id": 1}) is None:
                continue  # another one holds its identity
        log.warning("kept %s %s with the %s a unique rule kept as the failed batch wrote it",
                    audit["entity"], doc["_id"], owner)
        companions.append({"kind": audit["entity"], "id": doc["_id"]})
    return companions


def _about(audit: dict[str, Any], entry: dict[str, Any]) -> bool:
    """Whether the stored audit entry ``audit`` is about undo ``entry``'s document (an
    entry names its record by kind and id, as text)."""
    return bool(audit.get("entity") == entry["kind"]
                and audit.get("entity_id") == str(entry["id"]))


def _audit_to_drop(audit_ids: list[ObjectId], kept: list[dict[str, Any]]) -> dict[str, Any]:
    """The batch's audit entries, but those about the documents ``kept`` as it wrote them
    (an entry names its record by kind and id, as text)."""
    drop: dict[str, Any] = {"_id": {"$in": audit_ids}}
    if kept:
        drop["$nor"] = [{"entity": entry["kind"], "entity_id": str(entry["id"])}
                        for entry in kept]
    return drop


async def _undo(collection: Any, entry: dict[str, Any], ours: dict[str, Any],
                marked: bool, *, certain: bool = False) -> Undone:
    """Undoes one entry on the document ``ours`` selects; one the batch ``certain``ly
    wrote and another writer changed since, by its own fields (``_undo_own_fields``).

    Putting it back may break a unique rule: another writer's committed record holds the
    key the batch gave up (a new ACTIVE session on the connector a failed stop had freed).
    That record wins, as any committed write does, and the document stays as the batch
    left it (``REFUSED``). Raising instead would leave the journal behind, and every sweep
    (every start) would fail on it."""
    try:
        outcome = await _undo_ours(collection, entry, ours, marked)
        if outcome is Undone.NOT_OURS and certain:
            outcome = await _undo_own_fields(collection, entry)
        return outcome
    except DuplicateKeyError:
        # A deleted record that cannot come back stays deleted: that too is the batch's
        # change standing, so its entry stays.
        log.warning("could not put back %s %s: another record now holds one of its unique "
                    "keys; left as the failed batch wrote it, with its audit entry",
                    entry["kind"], entry["id"])
        return Undone.REFUSED


async def _undo_ours(collection: Any, entry: dict[str, Any], ours: dict[str, Any],
                     marked: bool) -> Undone:
    """Puts the entry's image back while the document is the batch's version."""
    before = entry["before"]
    if before is None:  # the batch inserted it
        return _done((await collection.delete_one(ours)).deleted_count)
    if entry.get("fields") is None:
        # Gone is "changed since" too, unless the batch deleted it itself; then it
        # comes back, unless a record with its id is there (below).
        upsert = bool(entry.get("deleted")) or not marked
        try:
            result = await collection.replace_one(ours, before, upsert=upsert)
        except DuplicateKeyError:
            if upsert and marked and await _there_unmarked(collection, ours):
                return Undone.NOT_OURS
            raise
        return _done(result.matched_count or result.upserted_id is not None)
    return _done((await collection.update_one(
        ours, _restoring(before, entry["fields"]))).matched_count)


async def _there_unmarked(collection: Any, ours: dict[str, Any]) -> bool:
    """Whether the document a deletion's undo would put back is there without the
    batch's mark: the upsert then clashes on its id, no unique rule of another record.
    The batch did not delete it (its writer died first: a sweep does not know how far it
    got), or its deletion was undone already (a rollback cut short before closing the
    journal, finished by a sweep): either way nothing of the batch is there to undo, so
    running the undo again changes nothing, and the batch's entry about the deletion
    goes (``REFUSED`` kept it, for a deletion that never stood)."""
    there = await collection.find_one({"_id": ours["_id"], MARK: {"$ne": ours[MARK]}},
                                      {"_id": 1})
    return there is not None


async def _undo_own_fields(collection: Any, entry: dict[str, Any]) -> Undone:
    """Undoes the batch's change of a document another writer changed since it wrote it
    (a heartbeat's ``last_seen`` after a failed rename): the names the batch changed
    that still hold what it wrote go back to the image, in one update guarded by those
    values and the version read, so nothing another writer wrote is overwritten. Names
    another writer wrote since are theirs: a rollback on SQLite would have put the
    batch's back before that writer wrote them. A deleted document, or one the batch
    inserted (gone when undone, the other writer's change with it), cannot be undone in
    part: an insert still there is ``LEFT``; so is a document that kept changing under
    ``OWN_FIELDS_ATTEMPTS`` tries. Journals of older versions hold no ``after``."""
    before, after = entry["before"], entry.get("after")
    if after is None or entry.get("deleted"):
        return Undone.NOT_OURS
    if before is None:
        there = await collection.find_one({"_id": entry["id"]}, {"_id": 1})
        return Undone.NOT_OURS if there is None else Undone.LEFT
    names = (set(before) | set(after) if entry.get("fields") is None
             else set(entry["fields"])) - {"_id", MARK}
    changed = [name for name in sorted(names)
               if not _same(before.get(name, _ABSENT), after.get(name, _ABSENT))]
    for _ in range(OWN_FIELDS_ATTEMPTS):
        current = await collection.find_one({"_id": entry["id"]})
        if current is None:
            return Undone.NOT_OURS  # deleted since: nothing of the batch is left
        own = [name for name in changed
               if _same(current.get(name, _ABSENT), after.get(name, _ABSENT))]
        if not own:
            return Undone.DONE  # every name it changed was written again since
        guard = {"_id": entry["id"], MARK: current.get(MARK),
                 **{name: _equal_to(after.get(name, _ABSENT)) for name in own}}
        restore = _restoring({**before, MARK: ObjectId()}, own)
        if (await collection.update_one(guard, restore)).matched_count:
            return Undone.DONE
    return Undone.LEFT


def _same(stored: Any, written: Any) -> bool:
    """Whether a value read back is the one written (a driver without ``tz_aware``
    reads dates naive, in UTC)."""
    if isinstance(stored, datetime) and stored.tzinfo is None:
        stored = stored.replace(tzinfo=UTC)
    if isinstance(written, datetime) and written.tzinfo is None:
        written = written.replace(tzinfo=UTC)
    return bool(stored == written)


def _equal_to(value: Any) -> dict[str, Any]:
    """The filter condition "holds ``value``" (``_ABSENT``: has no such field). ``$eq``: an
    embedded document or a list is compared whole, never read as operators."""
    return {"$exists": False} if value is _ABSENT else {"$eq": value}


def _done(matched: Any) -> Undone:
    return Undone.DONE if matched else Undone.NOT_OURS


def _restoring(before: dict[str, Any], names: Sequence[str]) -> dict[str, Any]:
    """The update putting ``names`` (and the mark) back as ``before`` had them."""
    names = [*names, MARK]
    restore = {name: before[name] for name in names if name in before}
    drop = {name: "" for name in names if name not in before}
    return {op: values for op, values in (("$set", restore), ("$unset", drop)) if values}


async def sweep(db: Any, now: datetime | None = None,
                stale_after: timedelta | None = None) -> int:
    """Rolls back the batches whose writers died (older than ``stale_after``,
    ``STALE_AFTER`` as it is at the call: tests on mongomock scale it with the deadline);
    returns how many. Journal documents without ``at`` (older versions) count as stale."""
    now = now or datetime.now(UTC)
    cutoff = now - (STALE_AFTER if stale_after is None else stale_after)
    rolled_back = 0
    stale = await db[JOURNAL].find({"$or": [{"at": {"$lt": cutoff}}, {"at": None}]}
                                   ).to_list(None)
    for journal in stale:
        # Claim it: only the sweeper whose compare-and-set of ``at`` wins rolls it back. If
        # that sweeper dies too, the document goes stale again and is claimed anew.
        claimed = await db[JOURNAL].find_one_and_update(
            {"_id": journal["_id"], "at": journal.get("at")}, {"$set": {"at": now}})
        if claimed is None:
            continue
        try:
            lists = await journal_lists(db, journal)
            undo = lists["undo"]
            log.warning("rolling back a write batch its writer left unfinished (%d "
                        "documents)", len(undo))
            left = await roll_back(db, journal["_id"], undo, lists["audit"],
                                   marked=bool(journal.get(MARKED)),
                                   audit_marked=bool(journal.get(AUDIT_MARKED)),
                                   entries=lists[ENTRIES])
        except Exception:
            # Claimed, so it goes stale again and a later sweep retries it; the other
            # batches need not wait for that one.
            log.exception("rolling back an unfinished write batch failed; retrying later")
            continue
        if left:
            # Not knowing how far the writer got, these are documents it never reached
            # as well as ones another writer changed since.
            log.info("left %d documents of that batch as they are (not written by it, or "
                     "changed by another writer since): %s", len(left),
                     ", ".join(f"{e['kind']} {e['id']}" for e in left))
        await close_batch(db, journal["_id"], int(journal.get(PARTS) or 0))
        rolled_back += 1
    await _drop_orphan_parts(db, cutoff)
    return rolled_back
