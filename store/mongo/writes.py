"""Applying changes to MongoDB, one single-document operation each (runs of inserts into
one collection go as one ``insert_many``), and turning duplicate-key errors into
``UniqueViolation`` with the rule's field."""

from __future__ import annotations

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
from store.mongo.codec import compared, partial_update, shadow, to_doc
from store.mongo.indexes import PARTIAL_RULE_FIELD, violated_field

DUPLICATE_KEY = 11000

Step = Change | list[Insert | InsertIfAbsent]


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


async def apply(db: Any, step: Step) -> bool:
    """Writes one step; False when it was a guarded update whose guard no longer held
    (nothing written)."""
    if isinstance(step, list):
        await insert(db, step)
    elif isinstance(step, Insert | InsertIfAbsent):
        await insert(db, [step])
    elif isinstance(step, Update):
        return await update(db, step)
    elif isinstance(step, Delete):
        await delete(db, step)
    else:
        raise TypeError(f"not a change: {step!r}")
    return True


async def insert(db: Any, run: Sequence[Insert | InsertIfAbsent]) -> None:
    """Ordered ``insert_many``; an ``InsertIfAbsent`` whose id exists is skipped and the
    rest of the run resumes after it."""
    collection = db[run[0].record.kind]
    docs = [to_doc(change.record) for change in run]
    start = 0
    while start < len(docs):
        try:
            await collection.insert_many(docs[start:], ordered=True)
            return
        except BulkWriteError as exc:
            errors = (exc.details or {}).get("writeErrors") or []
            if not errors or errors[0].get("code") != DUPLICATE_KEY:
                raise
            error = errors[0]
            failed = start + int(error["index"])
            change = run[failed]
            if isinstance(change, InsertIfAbsent) and await _id_taken(
                    collection, change.record, error):
                start = failed + 1
                continue
            raise await explain(db, change.record, error, inserting=True) from exc


async def _id_taken(collection: Any, record: Record, error: Mapping[str, Any]) -> bool:
    """Whether the duplicate key is the record's id (so an ``InsertIfAbsent`` is a no-op)."""
    field = violated_field(record.kind, error)
    if field is not None and field != "id":
        return False
    return await collection.find_one({"_id": ObjectId(record.id)}, {"_id": 1}) is not None


async def update(db: Any, change: Update) -> bool:
    record = change.record
    target: dict[str, Any] = {"_id": ObjectId(record.id)}
    if change.required and change.only_if is None:
        raise ValueError("required needs only_if")
    if change.only_if is not None:
        if change.fields is None:
            raise ValueError("only_if needs the fields to write")
        field, value = change.only_if
        spec = spec_by_name(type(record))[field]
        target[shadow(spec)] = compared(spec, value)
    try:
        if change.fields is None:
            result = await db[record.kind].replace_one(target, to_doc(record))
        else:
            result = await db[record.kind].update_one(
                target, partial_update(record, change.fields))
    except DuplicateKeyError as exc:
        raise await explain(db, record, exc.details, inserting=False) from exc
    if result.matched_count == 0:
        if change.only_if is None:
            raise _not_found(record)
        if change.required:
            raise changed_meanwhile(record.kind)
        return False
    return True


async def delete(db: Any, change: Delete) -> None:
    record = change.record
    result = await db[record.kind].delete_one({"_id": ObjectId(record.id)})
    if result.deleted_count == 0:
        raise _not_found(record)


def _not_found(record: Record) -> NotFound:
    return NotFound(f"no such {record.kind.replace('_', ' ')}: {record.id}", field="id")


def violation(kind: str, field: str) -> UniqueViolation:
    if field == "id":
        return UniqueViolation("a record with this id exists", field="id")
    rule = next((r for r in UNIQUE_RULES.get(kind, ()) if r[0] == field), (field,))
    return UniqueViolation(duplicate_message(kind, rule), field=field)


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
        if await collection.find_one({**others, **{f: doc[f] for f in fields}}, {"_id": 1}):
            return violation(record.kind, fields[0])
    for fields, (cond_field, cond_value) in PARTIAL_UNIQUE_RULES.get(record.kind, ()):
        if doc.get(cond_field) == cond_value and await collection.find_one(
                {**others, cond_field: cond_value, **{f: doc[f] for f in fields}}, {"_id": 1}):
            return violation(record.kind, PARTIAL_RULE_FIELD)
    return UniqueViolation("a unique rule rejected the change")
