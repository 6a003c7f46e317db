"""The undo journal: how a write batch is all-or-nothing without multi-document transactions.

Before a batch touches anything, one ``_journal`` document records how to put back every
document the batch will change (its before-image; for a partial update only the fields it
writes) and the ids of the batch's audit entries. Then the changes and the audit entries
are written, and the journal document is deleted. When a change fails, the writer rolls the
batch back at once; when the writer dies half-way, a sweep rolls it back later.

Why not an outbox (each changed document carrying its pending audit entries, flushed to
``audit_entry`` after the batch)? An outbox makes the audit of *applied* changes reliable,
but a crash after the first of two changes leaves the batch half-written for good, and
recovery then completes the audit of the half. The journal rolls such a batch back, which
is what "all or nothing" asks for; it costs two writes per batch (journal insert and
delete) instead of one extra update per changed document, and deletes need no special
case. Without transactions readers may still glimpse a batch in flight; no half-written
batch stays.

Several instances may share one database, and one instance starting must not roll back a
batch another is still writing. So a writer gives up on its batch (and rolls it back) once
``BATCH_DEADLINE_S`` has passed, and sweeps only roll back journal documents older than
``STALE_AFTER``, long past any live writer's deadline. A sweeper first claims a document
(compare-and-set of its ``at``), so two instances never roll back the same batch twice
(a second restore could clobber a write that landed in between). ``at`` is the writer's
clock: instances' clocks must agree to well within ``STALE_AFTER - BATCH_DEADLINE_S``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bson import ObjectId

from domain.ports import Change, InsertIfAbsent, Update
from store.mongo.codec import written_names

log = logging.getLogger("chargegraph.store.mongo")

JOURNAL = "_journal"
#: A batch not finished after this long gives up and rolls itself back...
BATCH_DEADLINE_S = 30.0
#: ...so a journal document this old belongs to a writer that died.
STALE_AFTER = timedelta(minutes=2)
#: How often an open store sweeps for batches a dead writer (of any instance) left behind.
SWEEP_EVERY_S = 60.0


@dataclass(slots=True)
class _Touched:
    kind: str
    id: ObjectId
    before: dict[str, Any] | None
    #: Stored names to restore; ``None`` restores the whole document.
    fields: set[str] | None = field(default_factory=set)


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
        if isinstance(change, Update) and change.fields is not None:
            if entry.fields is not None:
                entry.fields |= written_names(change.record, change.fields)
        else:
            entry.fields = None
    return [{"kind": t.kind, "id": t.id, "before": t.before,
             "fields": None if t.fields is None else sorted(t.fields)}
            for t in touched.values() if t.before is None or t.fields != set()]


async def open_batch(db: Any, undo: list[dict[str, Any]], audit_ids: list[ObjectId]
                     ) -> ObjectId:
    journal_id = ObjectId()
    await db[JOURNAL].insert_one({"_id": journal_id, "at": datetime.now(UTC),
                                  "undo": undo, "audit": audit_ids})
    return journal_id


async def close_batch(db: Any, journal_id: ObjectId) -> None:
    await db[JOURNAL].delete_one({"_id": journal_id})


async def roll_back(db: Any, undo: list[dict[str, Any]], audit_ids: list[ObjectId]) -> None:
    """Puts every listed document back (idempotent), newest change first.

    A partial update restores only the fields it wrote, so a concurrent write to other
    fields of the same document (a heartbeat's ``last_seen``) survives the rollback.
    """
    if audit_ids:
        await db["audit_entry"].delete_many({"_id": {"$in": audit_ids}})
    for entry in reversed(undo):
        collection = db[entry["kind"]]
        before = entry["before"]
        if before is None:
            await collection.delete_one({"_id": entry["id"]})  # the batch inserted it
        elif entry.get("fields") is None:
            await collection.replace_one({"_id": entry["id"]}, before, upsert=True)
        else:
            restore = {name: before[name] for name in entry["fields"] if name in before}
            drop = {name: "" for name in entry["fields"] if name not in before}
            update = {op: values for op, values in (("$set", restore), ("$unset", drop))
                      if values}
            if update:
                await collection.update_one({"_id": entry["id"]}, update)


async def sweep(db: Any, now: datetime | None = None,
                stale_after: timedelta = STALE_AFTER) -> int:
    """Rolls back the batches whose writers died; returns how many. Journal documents
    without ``at`` (older versions) count as stale."""
    now = now or datetime.now(UTC)
    cutoff = now - stale_after
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
        log.warning("rolling back a write batch its writer left unfinished (%d documents)",
                    len(journal.get("undo", [])))
        await roll_back(db, journal.get("undo", []), journal.get("audit", []))
        await db[JOURNAL].delete_one({"_id": journal["_id"]})
        rolled_back += 1
    return rolled_back
