"""Applying changes to MongoDB, one single-document operation each (runs of inserts into
one collection go as one ``insert_many``), and turning duplicate-key errors into
``UniqueViolation`` with the rule's field.

Every write stores its id in ``journal.MARK``: a journaled batch's id for the documents the
batch writes, a fresh one for an update or replacement written alone (a document inserted
alone has none, which reads as its first version). The mark is thus a document's version,
and the undo journal relies on it (``store/mongo/journal.py``): a batch's write is made
only on the version whose image its journal holds (``expected``; ``Stale`` otherwise),
and an undo only while the document still holds the batch's own mark."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import Any

from bson import ObjectId
from pymongo.errors import BulkWriteError, DuplicateKeyError

from domain.entities import Record
from domain.errors import NotFound, UniqueViolation
from domain.ports import (
    PARTIAL_UNIQUE_RULES,
    UNIQUE_RULES,
    Change,
    Delete,
    Insert,
    InsertIfAbsent,
    Update,
)
from store.fields import changed_meanwhile, duplicate_message, spec_by_name
from store.mongo.codec import (
    NO_DEFAULT,
    compared,
    constant_default,
    partial_update,
    shadow,
    to_doc,
)
from store.mongo.indexes import PARTIAL_RULE_FIELD, partial_rule_field, violated_field
from store.mongo.journal import MARK, in_flight

DUPLICATE_KEY = 11000

Step = Change | list[Insert | InsertIfAbsent]


class Expect(enum.Enum):
    #: Whatever version is stored (a change written alone).
    ANY = "any"
    #: No document: the batch's journal has none to put back.
    ABSENT = "absent"


#: The version an update or delete is made on: a mark, ``None`` for a document that has
#: none, or an ``Expect``.
Version = ObjectId | None | Expect


class Stale(Exception):
    """The document is no longer the version the batch's journal holds the image of:
    another writer changed (or inserted) it since the batch read it."""

    def __init__(self, record: Record) -> None:
        super().__init__(f"{record.kind} {record.id} changed since the batch read it")
        self.record = record


def steps(changes: Sequence[Change]) -> list[Step]:
    """The changes in order, consecutive inserts into one collection grouped (telemetry
    batches are mostly samples: one round trip instead of one per sample)."""
    out: list[Step] = []
    for change in changes:
        if isinstance(change, Insert | InsertIfAbsent):
            last = out[-1] if out else None
            if isinstance(last, list) and last[0].record.kind == change.record.kind:
                last.append(change)
                continue
            out.append([change])
        else:
            out.append(change)
    return out


async def apply(db: Any, step: Step, mark: ObjectId | None = None,
                expected: Version = Expect.ANY) -> list[Record]:
    """Writes one step with ``mark`` (``None``: written alone); returns the records it wrote
    (not a guarded update whose guard no longer held, nor an ``InsertIfAbsent`` of a
    record that was there). ``expected``: the version an update or delete is made on."""
    if isinstance(step, list):
        return await insert(db, step, mark)
    if isinstance(step, Insert | InsertIfAbsent):
        return await insert(db, [step], mark)
    if isinstance(step, Update):
        return [step.record] if await update(db, step, mark, expected) else []
    if isinstance(step, Delete):
        await delete(db, step, expected)
        return [step.record]
    raise TypeError(f"not a change: {step!r}")


def marked(doc: dict[str, Any], mark: ObjectId | None) -> dict[str, Any]:
    """``doc`` as a whole-document write stores it (with its mark, if any)."""
    if mark is not None:
        doc[MARK] = mark
    return doc


async def insert(db: Any, run: Sequence[Insert | InsertIfAbsent],
                 mark: ObjectId | None = None) -> list[Record]:
    """One unordered ``insert_many``; an ``InsertIfAbsent`` whose id exists is skipped.
    Returns the records inserted.

    Unordered, so one round trip reports every clash at once: ordered, each clash of an
    ``InsertIfAbsent`` stopped the run and the rest was sent again, N clashes costing N
    round trips and N(N+1)/2 documents (a StopTransaction repeating the session's stored
    samples: 1,440 readings, 4.1M documents sent). A clash that is no such skip (a plain
    ``Insert``'s: a unique rule) still fails the run; the rest of the run may have been
    written meanwhile, which a batch undoes with the failed run (``Batch.run`` undoes a
    failed run of inserts whole), and a change written alone is a run of one."""
    collection = db[run[0].record.kind]
    docs = [marked(to_doc(change.record), mark) for change in run]
    skipped: set[int] = set()
    todo = list(range(len(run)))
    # A second pass for the records gone since they clashed (the batch that had inserted
    # them undid that); once only: clashing again, the record is explained as a rule's.
    for last in (False, True):
        clashed = await _insert_reporting_clashes(db, collection, run, docs, todo)
        present = await _keep_existing(db, collection, [run[i].record for i in clashed],
                                       mark)
        skipped.update(i for i in clashed if ObjectId(run[i].record.id) in present)
        todo = [i for i in clashed if ObjectId(run[i].record.id) not in present]
        if not todo:
            break
        if last:
            raise await explain(db, run[todo[0]].record, clashed[todo[0]], inserting=True)
    return [change.record for i, change in enumerate(run) if i not in skipped]


async def _insert_reporting_clashes(db: Any, collection: Any,
                                    run: Sequence[Insert | InsertIfAbsent],
                                    docs: Sequence[dict[str, Any]], todo: Sequence[int]
                                    ) -> dict[int, Mapping[str, Any]]:
    """Inserts the documents at ``todo`` unordered; returns the positions (in ``run``) of
    the ``InsertIfAbsent``s whose id was taken, with their errors. Any other failure is
    raised: a clash with a unique rule as its ``UniqueViolation``, anything else (a
    server out of disk) as it is."""
    try:
        await collection.insert_many([docs[i] for i in todo], ordered=False)
    except BulkWriteError as exc:
        errors = sorted((exc.details or {}).get("writeErrors") or [],
                        key=lambda error: int(error["index"]))
        if not errors or any(error.get("code") != DUPLICATE_KEY for error in errors):
            raise
        clashed: dict[int, Mapping[str, Any]] = {}
        for error in errors:
            position = todo[int(error["index"])]
            change = run[position]
            if not (isinstance(change, InsertIfAbsent)
                    and _maybe_the_id(change.record, error)):
                raise await explain(db, change.record, error, inserting=True) from exc
            clashed[position] = error
        return clashed
    return {}


def _maybe_the_id(record: Record, error: Mapping[str, Any]) -> bool:
    """Whether the duplicate key may be the record's id (mongomock does not say)."""
    return violated_field(record.kind, error) in (None, "id")


async def _keep_existing(db: Any, collection: Any, records: Sequence[Record],
                         mark: ObjectId | None) -> set[ObjectId]:
    """The ids of ``records`` that are there, which makes their ``InsertIfAbsent`` a
    no-op: a fixed number of round trips however many there are.

    One may be another batch's insert, still in flight: that batch's mark is replaced, so
    its rollback leaves the record this write now counts as stored (SQLite would have
    waited for the other batch instead). This write's own mark stays: its own rollback
    is to undo its own insert. A record of a batch that finished between the two reads
    (its journal gone) is read again: a rollback deletes it before closing its journal."""
    if not records:
        return set()
    ids = list({ObjectId(record.id) for record in records})
    found = await collection.find({"_id": {"$in": ids}}, {MARK: 1}).to_list(None)
    foreign = [doc for doc in found if doc.get(MARK) not in (None, mark)]
    if not foreign:
        return {doc["_id"] for doc in found}
    busy = await in_flight(db, foreign, own=mark)
    if busy:
        await collection.update_many({"_id": {"$in": ids}, MARK: {"$in": list(busy)}},
                                     {"$set": {MARK: ObjectId()}})
    there = await collection.find({"_id": {"$in": ids}}, {"_id": 1}).to_list(None)
    return {doc["_id"] for doc in there}


async def update(db: Any, change: Update, mark: ObjectId | None = None,
                 expected: Version = Expect.ANY) -> bool:
    """False when a guarded update's guard no longer held (nothing written)."""
    record = change.record
    collection = db[record.kind]
    target = _target(change)
    version = _version_filter(expected)
    matched = False
    if version is not None:
        mark = mark if mark is not None else ObjectId()
        try:
            if change.fields is None:
                result = await collection.replace_one({**target, **version},
                                                      marked(to_doc(record), mark))
            else:
                result = await collection.update_one(
                    {**target, **version}, _marking(partial_update(record, change.fields), mark))
        except DuplicateKeyError as exc:
            raise await explain(db, record, exc.details, inserting=False) from exc
        matched = bool(result.matched_count)
    if matched:
        return True
    await _raise_if_stale(collection, record, expected)
    if change.only_if is None:
        raise _not_found(record)
    if change.required:
        raise changed_meanwhile(record.kind)
    return False


def _target(change: Update) -> dict[str, Any]:
    """The filter of the updated document, with the update's guard."""
    record = change.record
    target: dict[str, Any] = {"_id": ObjectId(record.id)}
    if change.required and change.only_if is None:
        raise ValueError("required needs only_if")
    if change.only_if is not None:
        if change.fields is None:
            raise ValueError("only_if needs the fields to write")
        for field, value in change.conditions():
            target[shadow(spec_by_name(type(record))[field])] = _guard(type(record), field,
                                                                       value)
    return target


def _guard(kind: type[Record], field: str, value: Any) -> Any:
    """The filter value of a guard ``field == value``. A document written before the field
    existed lacks it and reads as its default (``fields.build``), so a guard on the
    default must match the missing field too: else a user stored before ``token_epoch``
    could never be deactivated (SQLite's ``ADD COLUMN … DEFAULT`` stored the value). The
    start-up back-fill (``migrations.ADDED_WITH_DEFAULT``) leaves no such document, but
    an instance of an older version may still write one during a rolling upgrade."""
    spec = spec_by_name(kind)[field]
    stored = compared(spec, value)
    default = constant_default(kind, field)
    if value is not None and default is not NO_DEFAULT and value == default:
        # ``None`` matches a missing field (and a null, which reads as the default too).
        return {"$in": [stored, None]}
    return stored


def _marking(update: dict[str, Any], mark: ObjectId) -> dict[str, Any]:
    update["$set"][MARK] = mark
    return update


def _version_filter(expected: Version) -> dict[str, Any] | None:
    """The filter part making a write apply to the ``expected`` version only; ``None``
    when no stored document can be it."""
    if expected is Expect.ANY:
        return {}
    if expected is Expect.ABSENT:
        return None
    return {MARK: expected}  # ``None`` matches a document without a mark too


async def _raise_if_stale(collection: Any, record: Record, expected: Version) -> None:
    """After a write matched nothing: raises ``Stale`` when the document is there in
    another version than ``expected`` (so it is neither missing nor failing a guard)."""
    if expected is Expect.ANY:
        return
    doc = await collection.find_one({"_id": ObjectId(record.id)}, {MARK: 1})
    if doc is not None and (expected is Expect.ABSENT or doc.get(MARK) != expected):
        raise Stale(record)


async def delete(db: Any, change: Delete, expected: Version = Expect.ANY) -> None:
    record = change.record
    collection = db[record.kind]
    version = _version_filter(expected)
    target: dict[str, Any] = {"_id": ObjectId(record.id)}
    for field, value in change.conditions():
        target[shadow(spec_by_name(type(record))[field])] = _guard(type(record), field, value)
    if version is not None:
        result = await collection.delete_one({**target, **version})
        if result.deleted_count:
            return
    await _raise_if_stale(collection, record, expected)
    if change.only_if is not None:  # changed, or gone, since it was read
        raise changed_meanwhile(record.kind)
    raise _not_found(record)


def _not_found(record: Record) -> NotFound:
    return NotFound(f"no such {record.kind.replace('_', ' ')}: {record.id}", field="id")


#: Messages of the rules that are no domain rule, in SQLite's words
#: (``store/sqlite/constraints.py``): a client sees the same on either store.
_MESSAGES = {("session", PARTIAL_RULE_FIELD): "the connector already has an active session"}


def violation(kind: str, field: str) -> UniqueViolation:
    """The error of ``kind``'s rule on ``field``, worded as SQLite's (``id``: "another
    station has the same id")."""
    rules = (*UNIQUE_RULES.get(kind, ()), *(r for r, _ in PARTIAL_UNIQUE_RULES.get(kind, ())))
    rule = next((r for r in rules if r[0] == field), (field,))
    message = _MESSAGES.get((kind, field)) or duplicate_message(kind, rule)
    return UniqueViolation(message, field=field)


async def explain(db: Any, record: Record, details: Mapping[str, Any] | None, *,
                  inserting: bool) -> UniqueViolation:
    """Which rule a unique index enforced. A server names the index (and its key pattern)
    in the error; mongomock names neither, so then the clashing record is looked up —
    to report the rule, not to enforce it (the index already refused the write)."""
    field = violated_field(record.kind, details)
    if field is not None:
        return violation(record.kind, field)
    doc = to_doc(record)
    collection = db[record.kind]
    if inserting and await collection.find_one({"_id": doc["_id"]}, {"_id": 1}) is not None:
        return violation(record.kind, "id")
    others = {"_id": {"$ne": doc["_id"]}}
    for fields in UNIQUE_RULES.get(record.kind, ()):
        if any(doc[f] is None for f in fields):
            continue  # under no rule (``indexes.held_among``)
        if await collection.find_one({**others, **{f: doc[f] for f in fields}}, {"_id": 1}):
            return violation(record.kind, fields[0])
    for fields, (cond_field, cond_value) in PARTIAL_UNIQUE_RULES.get(record.kind, ()):
        if doc.get(cond_field) == cond_value and await collection.find_one(
                {**others, cond_field: cond_value, **{f: doc[f] for f in fields}}, {"_id": 1}):
            return violation(record.kind, partial_rule_field(record.kind, fields))
    return UniqueViolation("a unique rule rejected the change")
