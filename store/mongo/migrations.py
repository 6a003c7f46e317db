"""Data changes the MongoDB store makes when the model changes (SQLite makes the same in its
schema migrations, ``store/sqlite/migrations.py``: versions 7, 8, 10, 14, 16, 18, 23,
24, 26, 27, 29, 32, 34, 37, 40, 41, 42, 47, 55, 60, 61, 64, 66, 76, 80, 83, 84, 87 and 88).

MongoDB has no schema to migrate, only documents written under older rules. Each step
here runs at every start (or until one start recorded it done: ``_once``), is
idempotent, and is safe from several instances at once: it only changes a document that
still lacks the step's mark, with that absence in the update's own filter, so a
document is changed once whoever gets there first. Like every write, a step gives the
document a new version (``journal.MARK``), so a batch of another instance writing it
meanwhile journals the migrated image, not the one from before.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, cast

from bson import Decimal128, ObjectId
from pymongo import ReadPreference, ReturnDocument
from pymongo.errors import ConfigurationError, DuplicateKeyError
from pymongo.read_concern import ReadConcern

from domain.entities import ENTITY_BY_KIND, Payment, Refund, Session
from domain.query import FOLD_VERSION, SEARCHED
from domain.services.configuration import MAX_KEYS
from domain.validation import cp_id_key, name_identity, name_key, plate_key, plate_shown
from store.mongo.codec import (
    compared,
    constant_default,
    encode,
    folded,
    folded_name,
    from_doc,
    shadow,
    spec_of,
    storage_name,
    to_doc,
)
from store.mongo.journal import MARK, in_flight
from store.sqlite.migrations import MIGRATIONS as SQLITE_MIGRATIONS

log = logging.getLogger("chargegraph.store")

#: Where a step that must not touch documents written after it began records when that was.
MIGRATIONS = "schema_migrations"
#: Documents are read in pages of this many.
BATCH = 1_000

#: The record in ``MIGRATIONS`` of the newest schema a build that migrated or ran on this
#: database knows (``version``), so an older build refuses it as it refuses a newer
#: SQLite file (``claim_schema``).
SCHEMA = "schema"
#: This build's schema: SQLite's number, since both stores keep one model and every
#: change of it is a SQLite migration (MongoDB's steps here follow those).
SCHEMA_VERSION = SQLITE_MIGRATIONS[-1][0]


def from_primary(db: Any) -> Any:
    """``db`` read from the primary, whatever the URL's read preference: what a start
    reads decides whether a build may start, claims the database, runs a step, and what
    each back-fill step fills (review s31: with ``readPreference=secondaryPreferred`` a
    secondary behind the primary could show a build its own schema number where a newer
    build had put its own, its claim, read first, was then not written, and it served a
    database the newer one had claimed; a step reading a stale secondary could miss the
    documents it fills). Not majority-committed: a step's loop ("find what still lacks
    the field, fill it, find again") must read its own writes, which the client's write
    concern (w:1 by default) does not make majority-committed; with a secondary down the
    majority point stops, and such a loop would find the same documents for ever. Writes
    go to the primary whatever the read preference."""
    return db.with_options(read_preference=ReadPreference.PRIMARY)


def _migrations(db: Any) -> Any:
    """``MIGRATIONS`` from the primary (``from_primary``; the check and the claim are
    also called on their own, by tests and tools, with the URL's database), majority-
    committed: a claim seen is one no election rolls back. No loop reads its own writes
    there within a start (a step's done mark is read once, before it runs); the heals'
    marks, read round after round, are read as written (``heal_search_shadows``)."""
    return from_primary(db)[MIGRATIONS].with_options(read_concern=ReadConcern("majority"))


class NewerSchema(ConfigurationError):
    """A newer ChargeGraph started on the database. A configuration error (PyMongo's), so
    a start fails with one line naming it (``chargegraph/startup.py``)."""


def schema_number(value: object) -> Decimal | None:
    """The schema number a ``version`` holds, whatever numeric type it was written as
    (mongosh writes a double, ``NumberLong`` an Int64, ``NumberDecimal`` a Decimal128);
    ``None`` for anything else."""
    if isinstance(value, Decimal128):
        value = value.to_decimal()
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return None
    number = Decimal(value)
    return number if number.is_finite() else None


def _refuse_newer(found: dict[str, Any] | None, known: int) -> None:
    """Raises ``NewerSchema`` when the record ``found`` holds a schema newer than ``known``
    (read back from a ``$max``, which left it as it was: nothing was written)."""
    version = schema_number(found.get("version")) if found else None
    if version is not None and version > known:
        shown = int(version) if version == version.to_integral_value() else version
        raise NewerSchema(f"the database has schema version {shown}, written by a newer "
                          f"ChargeGraph (this one knows up to {known}): run that version, "
                          "or restore a backup made with this one")


async def check_schema(db: Any, known: int = SCHEMA_VERSION) -> None:
    """Refuses, before anything is written, a database a build knowing a newer schema
    claimed (``claim_schema``): going back to an older build means restoring a backup
    made with it (QA s28: an older build started, and wrote documents without the fields
    the newer one relies on, which its steps, recorded done, never fill). Writes nothing:
    a start that fails before it migrates anything leaves the database to the build
    that had it (session 30)."""
    _refuse_newer(await _schema_record(db), known)


async def _schema_record(db: Any) -> dict[str, Any] | None:
    found: dict[str, Any] | None = await _migrations(db).find_one({"_id": SCHEMA},
                                                                 {"version": 1})
    return found


async def claim_schema(db: Any, known: int = SCHEMA_VERSION) -> None:
    """Records that a build knowing schema ``known`` has the database (never lowering the
    number: of two builds, the newer one's stays), and refuses one a newer build claimed
    meanwhile (two starting at once: the older one stops before it writes). One atomic
    ``$max``, read back as it was; only when the record, read first, holds less than
    ``known`` (a new database, a newer build's first step): one holding it already is
    what the ``$max`` would leave as it is, so reading it tells as much (session 31: a
    first start on a new database wrote the record before each of its some 40 steps).

    Made before each step a start runs that was not done yet (``_once``) and at the end
    of every start, from which the build serves: an older build never
    starts on a database a newer one began to migrate or ran on (review r28-upgrade, its
    steps done under the older number), as a SQLite file is the newer build's from its
    first migration committed. Not at the start's first line (as until session 30): a
    newer build that failed before migrating anything (an index it could not build, a
    crash) left the database claimed, and the older build, the natural rollback, was
    refused though nothing of the newer schema was there. What a start does before a
    step (the indexes, the steps of every start) only adds what an older build's own
    start adds or ignores: a step that changes what an older build reads runs under
    ``_once``, or claims first."""
    found = await _schema_record(db)
    _refuse_newer(found, known)
    if found is not None and schema_number(found.get("version")) == known:
        return
    _refuse_newer(await _migrations(db).find_one_and_update(
        {"_id": SCHEMA}, {"$max": {"version": known}}, upsert=True,
        return_document=ReturnDocument.BEFORE), known)


async def before_indexes(db: Any, steps: Steps | None = None) -> None:
    """What must hold before the unique indexes are built: vehicles have their plate's
    key (``_plate_keys``), and company names are unique (``_unique_company_names``)."""
    await _once(db, "plate_keys", _plate_keys, steps=steps)
    await _unique_company_names(db)


async def _plate_keys(db: Any) -> None:
    """Plates are kept as entered and compared by their key (``Vehicle.plate_key``),
    unique per owner. A vehicle written before has its plate stored as its key, which
    therefore is both (as SQLite's migration 28 copies it). Before the unique index on
    the key: without it, two cars of one driver would clash as (null, owner) there.
    Marked by the field itself: new documents always carry ``plate_key``."""
    while True:
        docs = await db["vehicle"].find({"plate_key": {"$exists": False}},
                                        {"license_plate": 1}).limit(BATCH).to_list()
        if not docs:
            break
        for doc in docs:
            plate = doc["license_plate"]
            await db["vehicle"].update_one(
                {"_id": doc["_id"], "plate_key": {"$exists": False}},
                {"$set": {"plate_key": plate, folded_name("plate_key"): folded(plate),
                          MARK: ObjectId()}})


async def _plate_forms(db: Any) -> None:
    """Plates are kept and compared in their compatibility form (``validation.
    plate_shown``, NFKC: full-width "ＢＭＩ２０２４" is "BMI2024"), by the rule of SQLite's
    migration 61: every car from before takes that form and its key, with their folded
    copies. Where one owner kept several cars of one key, the oldest (``created_at``,
    then ``id``) is kept and the others are removed first (``_one_kept_per_plate``), so
    the unique index takes the kept one's new key; removed cars all take the form.
    Idempotent, and safe from several instances at once: a car is converted only while
    it holds the plate read, removed only while kept."""
    started = datetime.now(UTC)  # kept to the millisecond, as the domain keeps times
    now = started.replace(microsecond=started.microsecond // 1000 * 1000)
    last: Any = None
    while True:
        query: dict[str, Any] = {} if last is None else {"_id": {"$gt": last}}
        docs = await db["vehicle"].find(
            query, {"license_plate": 1, "plate_key": 1, "owner_id": 1, "removed_at": 1}
        ).sort([("_id", 1)]).limit(BATCH).to_list()
        if not docs:
            break
        last = docs[-1]["_id"]
        for doc in docs:
            plate = doc.get("license_plate")
            if not isinstance(plate, str) or (plate == plate_shown(plate)
                                              and doc.get("plate_key") == plate_key(plate)):
                continue
            shown = plate_shown(plate)
            key = plate_key(shown)
            for attempt in (1, 2):
                if doc.get("removed_at") is None:
                    await _one_kept_per_plate(db, doc["owner_id"], key, now)
                try:
                    await db["vehicle"].update_one(
                        {"_id": doc["_id"], "license_plate": plate},
                        {"$set": {"license_plate": shown, "plate_key": key,
                                  folded_name("license_plate"): folded(shown),
                                  folded_name("plate_key"): folded(key), MARK: ObjectId()}})
                    break
                except DuplicateKeyError:
                    # A car of that key added meanwhile by an instance of the version
                    # before (a rolling upgrade): one of the two is removed, once more.
                    if attempt == 2:
                        raise


async def _one_kept_per_plate(db: Any, owner_id: Any, key: str, now: datetime) -> None:
    """Of ``owner_id``'s kept cars whose plates have compatibility key ``key``, the
    oldest (``created_at``, then ``id``) stays; each other is removed as ``removeVehicle``
    removes a car (``removed_at``, stamped by the system at ``now``), logged, its cards
    linked to the car kept (the same car). SQLite's migration 61 (``_TWINS``) alike."""
    cars = [car for car in await db["vehicle"].find(
        {"owner_id": owner_id, "removed_at": None}, {"license_plate": 1, "created_at": 1}
    ).to_list() if isinstance(car.get("license_plate"), str)
        and plate_key(car["license_plate"]) == key]
    if len(cars) < 2:
        return
    kept, *others = sorted(cars, key=lambda car: (car["created_at"], str(car["_id"])))
    stamps = {"updated_at": now, "updated_by": "system"}
    for car in others:
        removed = await db["vehicle"].update_one(
            {"_id": car["_id"], "removed_at": None},
            {"$set": {"removed_at": now, **stamps, MARK: ObjectId()}})
        if removed.modified_count:
            log.warning("vehicle %s (%r) was another car of its owner with the plate of "
                        "vehicle %s: removed, that older one kept, its cards linked to it",
                        car["_id"], car["license_plate"], kept["_id"])
        for card in await db["id_tag"].find({"vehicle_id": car["_id"]}, {"_id": 1}).to_list():
            await db["id_tag"].update_one(
                {"_id": card["_id"], "vehicle_id": car["_id"]},
                {"$set": {"vehicle_id": kept["_id"], **stamps, MARK: ObjectId()}})


async def _charger_registrations(db: Any) -> None:
    """What SQLite's migration 60 does: a station from before ``charger_registration``
    with a session open (ACTIVE, or awaiting its late stop) whose charger booted was
    charging, so its charger was told Accepted at its last boot, and acts on it until
    its next: it gets ``Accepted``. Without the field it reads as the station's
    registration, and one made Pending or Rejected mid-session had its stop refused
    after the upgrade, the session left open and unbilled (review s25). Also when it
    booted after the session started: that answer is not known, and Accepted taken
    wrongly lasts until its next boot, within the retry interval, where the station's
    Rejected taken wrongly refuses its stop for as long as it stays Accepted (migration
    60's comment). Not a station whose charger never booted: it was told nothing, and
    would keep Accepted for good (review s26). Others stay without it (null: the
    station's registration). Only a document still lacking the field: a boot since wrote
    what it was told."""
    open_sessions = {"$or": [{"state": "ACTIVE"},
                             {"state": "COMPLETED", "stop_reason": None}]}
    station_ids = await db["session"].distinct("station_id", open_sessions)
    for station_id in station_ids:
        if station_id is None:
            continue
        await db["station"].update_one(
            {"_id": station_id, "charger_registration": {"$exists": False},
             "booted_at": {"$ne": None}},
            {"$set": {"charger_registration": "Accepted", MARK: ObjectId()}})


async def _unique_company_names(db: Any) -> None:
    """Company names became unique in the store: duplicates made before keep their
    history, every one but the oldest with its id appended, for an admin to rename."""
    duplicates = await (await db["company"].aggregate([
        {"$group": {"_id": "$name", "ids": {"$push": "$_id"}, "n": {"$sum": 1}}},
        {"$match": {"n": {"$gt": 1}}}])).to_list(None)
    for group in duplicates:
        for extra in sorted(group["ids"])[1:]:
            name = f"{group['_id']} ({extra})"
            await db["company"].update_one(
                {"_id": extra}, {"$set": {"name": name, folded_name("name"): folded(name),
                                          MARK: ObjectId()}})


async def migrate(db: Any, steps: Steps | None = None) -> None:
    """The steps after the indexes, those not done yet (counted in ``steps``), and the
    heals every start runs."""
    once = functools.partial(_once, steps=steps)
    await once(db, "books", _books)
    # Under ``_once`` for its claim; it keeps its own record of when it began.
    await once(db, "minor_units", _minor_units)
    await _blockers(db)
    await once(db, "expiry_setters", _expiry_setters)
    await once(db, "audit_books", _audit_books)
    await once(db, "audit_holders", _audit_holders)
    await once(db, "audit_commands", _audit_commands)
    await once(db, "audit_command_ids", _audit_command_ids)
    await once(db, "reservation_books", _reservation_books)
    await once(db, "state_history_books", _state_history_books)
    await once(db, "refunded_whole", _refunded_whole)
    await once(db, "name_keys", _name_keys)
    # At every start, not once: see ``heal_cp_id_keys``.
    await heal_cp_id_keys(db)
    await once(db, "name_identities", _name_identities)
    # Before the defaults: a station holding more keys than are kept is flagged, not
    # given false.
    await once(db, "configuration_truncated", _configuration_truncated)
    # Before the defaults: a session closed without its stop is flagged, not given false.
    await once(db, "sessions_closed_without_stop", _sessions_closed_without_stop)
    # After ``refunded_whole``: a refunded payment without the field was refunded whole,
    # not by the default 0.
    for kind, name in ADDED_WITH_DEFAULT:
        await once(db, f"default_{kind}_{name}", _filling_default(kind, name))
    # After the books and ``refunded_minor`` are filled in: a refund copies them.
    await once(db, "refund_records", _refund_records)
    await once(db, "voided_zero_payments", _voided_zero_payments)
    # After ``refund_records``: the refunds it made copied their payments' books.
    await once(db, "company_books_without_owner", _company_books_without_owner)
    await once(db, "payment_plugs", _payment_plugs)
    # After ``refund_records``: the refunds it made take their payment's provider too.
    await once(db, "refund_providers", _refund_providers)
    await once(db, "replaced_tariffs_ended", _replaced_tariffs_ended)
    # At every start, not once: see ``heal_open_tariffs``.
    await heal_open_tariffs(db)
    await once(db, "charger_registrations", _charger_registrations)
    await once(db, "local_list_holders", _local_list_holders)
    # After ``plate_keys`` (``before_indexes``), with the unique index on the key built:
    # an owner's twins are removed before the car kept takes its new key.
    await once(db, "plate_forms", _plate_forms)
    # After ``plate_keys`` (``before_indexes``), which fills a field searched.
    for kind, fields in sorted(SEARCHED.items()):
        for name in sorted(fields):
            await once(db, f"search_folded_{kind}_{name}", _search_folding(kind, name))
    # After the shadows are there: those folded by an earlier rule, once per rule.
    for kind, fields in sorted(SEARCHED.items()):
        for name in sorted(fields):
            await once(db, _refold_step(kind, name), _search_refolding(kind, name))
    # And those an instance of the version before wrote since (a rolling upgrade).
    await heal_search_shadows(db)


def _search_folding(kind: str, name: str) -> Callable[[Any], Awaitable[None]]:
    async def fill(db: Any) -> None:
        await _search_folded(db, kind, name)
    return fill


async def _search_folded(db: Any, kind: str, name: str) -> None:
    """Searched fields carry their folded text beside them (``codec.folded_name``), which
    ``Search`` matches: documents stored before get it here, else no search would find
    them. One step per field, so a field searched later gets its own. Marked by the
    shadow itself: new documents always carry it, possibly null. Each is written only
    while it still lacks the shadow and holds the text it was folded from (an instance
    of a version before the shadows may rename it meanwhile, in a rolling upgrade; a
    record it inserts after the step gets its shadow from ``heal_search_shadows`` where
    its text is not ASCII, else from the next write of the field)."""
    shadow_name = folded_name(name)
    last: Any = None
    while True:
        query: dict[str, Any] = {shadow_name: {"$exists": False}}
        if last is not None:
            query["_id"] = {"$gt": last}
        docs = await db[kind].find(query, {name: 1}).sort([("_id", 1)]).limit(
            BATCH).to_list()
        if not docs:
            break
        # On by id: one skipped (renamed meanwhile) is not read again and again.
        last = docs[-1]["_id"]
        for doc in docs:
            value = doc.get(name)
            await db[kind].update_one(
                {"_id": doc["_id"], shadow_name: {"$exists": False}, name: value},
                {"$set": {shadow_name: folded(value), MARK: ObjectId()}})


def _refold_step(kind: str, name: str, version: int = FOLD_VERSION) -> str:
    """The name of the step folding ``kind.name``'s shadows again by rule ``version``
    (``domain.query.FOLD_VERSION``); version 2's kept the name it had."""
    prefix = "search_unaccented" if version == 2 else f"search_fold{version}"
    return f"{prefix}_{kind}_{name}"


def _search_refolding(kind: str, name: str) -> Callable[[Any], Awaitable[None]]:
    async def refold(db: Any) -> None:
        after: Any = None
        while True:
            after = await _search_refolded(db, kind, name, after, BATCH)
            if after is None:
                break
    return refold


#: Text with a character outside ASCII, the only text ``search_folded`` folds otherwise
#: than lower-casing it (a server-side regex: PCRE2 and Python's ``re`` read it alike).
_NOT_ASCII = {"$regex": "[^\\x00-\\x7f]"}

#: The most documents of one searched field ``heal_search_shadows`` reads in one round.
HEAL_ROUND = 5 * BATCH
#: Where ``heal_search_shadows`` records how far its rounds have read, by field.
_HEAL = "search_heal_{kind}_{name}"


async def _search_refolded(db: Any, kind: str, name: str, after: Any, limit: int) -> Any:
    """Folds again the shadows of non-ASCII text that its fold by the current rule
    (``domain.query.search_folded``) no longer gives, in the first ``limit`` such
    documents after id ``after``; returns the last id read (``None``: none are left).
    A shadow folded by an earlier rule keeps what it no longer drops ("münchen", when
    searches came to drop accents: QA s27), which no needle folded now matches, so the
    document would be found by no spelling at all. ASCII text folds as it always did.
    Each is written only while the document still holds the text it was folded from,
    as ``_search_folded`` writes. Compared, not marked: an instance of the version
    before writes the old fold with no mark of the new one, and a later partial write
    (a heartbeat) leaves the shadow of a field it does not write (review r27-lists)."""
    shadow_name = folded_name(name)
    query: dict[str, Any] = {name: _NOT_ASCII}
    if after is not None:
        query["_id"] = {"$gt": after}
    docs = await db[kind].find(query, {name: 1, shadow_name: 1}).sort(
        [("_id", 1)]).limit(limit).to_list()
    for doc in docs:
        value = doc.get(name)
        if doc.get(shadow_name) == folded(value):
            continue
        await db[kind].update_one(
            {"_id": doc["_id"], name: value},
            {"$set": {shadow_name: folded(value), MARK: ObjectId()}})
    return docs[-1]["_id"] if len(docs) == limit else None


async def heal_search_shadows(db: Any) -> None:
    """One round of folding again the shadows an instance of an earlier version wrote
    after this version's one-time step (``_refold_step``) passed them: in a rolling
    upgrade it still folds by its own rule, and no later write of another field
    rewrites the shadow. Run at every start and hourly (``MongoStore``); each round
    reads at most ``HEAL_ROUND`` documents of non-ASCII text per searched field, on
    from where the last round of any instance stopped (kept in ``MIGRATIONS``), and
    starts over past the last. Several instances may run it at once (each write is
    guarded by the text it folds)."""
    for kind, fields in sorted(SEARCHED.items()):
        for name in sorted(fields):
            mark = _HEAL.format(kind=kind, name=name)
            # Not majority: the mark is this round's own (w:1) write of the last round
            # (review s31: with the majority point stalled, each round read the old mark
            # and healed the same window again).
            state = await from_primary(db)[MIGRATIONS].find_one({"_id": mark}) or {}
            last = await _search_refolded(db, kind, name, state.get("after"), HEAL_ROUND)
            await _migrations(db).update_one({"_id": mark}, {"$set": {"after": last}},
                                            upsert=True)


#: The fields added with a default to a kind that had documents already: (kind, field).
#: SQLite's ``ADD COLUMN … NOT NULL DEFAULT`` stored the default in every older row
#: (migrations 7, 24, 26, 27, 32, 42, 51, 68, 72 and 75); here older documents lack the field. They
#: read as the default (``fields.build``), but a filter or a guard compares what is
#: stored: a user without ``token_epoch`` matched no guard ``token_epoch == 0`` and could
#: never be deactivated. ``vehicle.plate_key`` (migration 29) is ``_plate_keys``'s: its value is
#: the plate's; ``name_key`` (migration 34) is ``_name_keys``'s, the name's key.
#: ``tests/store/test_mongo_specific.py`` checks the list against SQLite's.
ADDED_WITH_DEFAULT: tuple[tuple[str, str], ...] = (
    ("user", "token_epoch"),
    ("payment", "refunded_minor"),
    ("payment", "refunding_minor"),
    ("tariff", "idle_price_per_minute"),
    ("tariff", "idle_grace_minutes"),
    ("tariff", "energy_bands"),
    ("session", "meter_offset_wh"),
    ("session", "start_clock_behind"),
    ("session", "closed_without_stop"),
    ("connector_interval", "known"),
    ("connection_event", "server_outage"),
    ("station", "configuration_truncated"),
    ("station", "diagnostics_previous_uploading"),
    ("station", "sight"),
    ("instance_lease", "serves_chargers"),
    ("pending_start", "outcome_unknown"),
)


def _filling_default(kind: str, name: str) -> Callable[[Any], Awaitable[None]]:
    async def fill(db: Any) -> None:
        await _fill_default(db, kind, name)
    return fill


async def _fill_default(db: Any, kind: str, name: str) -> None:
    """Stores ``kind``'s default ``name`` (and a decimal's numeric shadow) in the documents
    without it, as SQLite's column default did. One ``update_many``: each document is
    changed once, with the field's absence in its filter."""
    entity = ENTITY_BY_KIND[kind]
    spec = spec_of(entity, name)
    field = next(f for f in dataclasses.fields(entity) if f.name == name)
    default = field.default if field.default is not dataclasses.MISSING else (
        field.default_factory())  # type: ignore[operator]  # one or the other is set
    values = {storage_name(name): encode(spec, default), shadow(spec): compared(spec, default)}
    await db[kind].update_many({storage_name(name): {"$exists": False}},
                               {"$set": {**values, MARK: ObjectId()}})


@dataclasses.dataclass
class Steps:
    """What one start's ``_once`` steps did (``MongoStore.start``): how many this start
    ran, not how many are marked done (review r32-f: counting the marks, a start while
    another instance migrated said "migrated" though it ran nothing, and read them
    majority-committed right after its own writes); and whether each is said as it
    ends: on an upgrade, not on a new database (review r32-f: some 40 lines before
    create-user's one useful line)."""

    say: bool = True
    ran: int = 0


async def new_database(db: Any) -> bool:
    """Whether no start has run on ``db`` yet (no step's mark, no claim): read once, as a
    start begins, before it writes."""
    return await _migrations(db).find_one({}, {"_id": 1}) is None


async def _once(db: Any, name: str, step: Callable[[Any], Awaitable[None]],
                known: int = SCHEMA_VERSION, steps: Steps | None = None) -> None:
    """Runs ``step`` until one start has finished it, which records that in
    ``MIGRATIONS``; before it first writes, the build knowing ``known`` claims the
    database (``claim_schema``). For steps marked by a field new documents always carry,
    found by its absence: no index tells absent from null, so each start read every
    document whose field is null (sessions of a station of no company, most audit
    entries) to find none. Several instances may run it at once until then (each step is
    idempotent). An instance of a version from before the field, still writing after the
    mark (a rolling upgrade), leaves its documents without it: they read as null (no
    books). Run here, it is counted in ``steps`` (``Steps``)."""
    if await _migrations(db).find_one({"_id": name, "done": True}, {"_id": 1}) is not None:
        return
    await claim_schema(db, known)
    began = time.monotonic()
    await step(db)
    await _migrations(db).update_one({"_id": name}, {"$set": {"done": True}}, upsert=True)
    steps = steps or Steps()
    steps.ran += 1
    if steps.say:
        # Each step and its time, as SQLite's migrations (QA s32: an upgrade said
        # nothing until ready).
        log.info("migration step %s done in %.2f s", name, time.monotonic() - began)


async def _refunded_whole(db: Any) -> None:
    """Payments refunded before refunds could be partial were refunded whole
    (``Payment.refunded_minor``); the others read 0 without the field."""
    while True:
        docs = await db["payment"].find(
            {"status": "REFUNDED", "refunded_minor": {"$exists": False}},
            {"amount_minor": 1}).limit(BATCH).to_list()
        if not docs:
            break
        for doc in docs:
            await db["payment"].update_one(
                {"_id": doc["_id"], "refunded_minor": {"$exists": False}},
                {"$set": {"refunded_minor": doc["amount_minor"], MARK: ObjectId()}})


async def _refund_records(db: Any) -> None:
    """Refunds became records of their own (``Refund``, SQLite migration 37). A payment
    refunded before kept only how much (``refunded_minor``): that sum is one refund,
    dated by the payment's last write, its id the payment's, so a second instance
    running the step at once upserts the same document (``$setOnInsert``). Less what
    was recorded meanwhile: an instance that finished the step serves (and refunds)
    while another still runs it."""
    last: Any = None
    while True:
        query: dict[str, Any] = {"refunded_minor": {"$gt": 0}}
        if last is not None:
            query["_id"] = {"$gt": last}
        docs = await db["payment"].find(query).sort([("_id", 1)]).limit(BATCH).to_list()
        if not docs:
            break
        last = docs[-1]["_id"]
        payments = [cast(Payment, from_doc(Payment, doc)) for doc in docs]
        sessions = {str(s["_id"]): cast(Session, from_doc(Session, s)) for s in await db[
            "session"].find({"_id": {"$in": [doc["session_id"] for doc in docs]}}).to_list()}
        for payment in payments:
            session = sessions.get(payment.session_id)
            if session is None:
                continue  # sessions are never removed: none to report it by
            # Refunds an upgraded instance already recorded while this step ran (it
            # serves before a slower instance's step ends) are not counted again
            # (reviewer s18: a full refund made then was booked twice).
            recorded = sum(doc["amount_minor"] for doc in await db["refund"].find(
                {"payment_id": payment.id, "_id": {"$ne": payment.id}}).to_list())
            if recorded >= payment.refunded_minor:
                continue
            payment.refunded_minor -= recorded
            refund = to_doc(refund_of(payment, session))
            await db["refund"].update_one({"_id": refund.pop("_id")},
                                          {"$setOnInsert": {**refund, MARK: ObjectId()}},
                                          upsert=True)


def refund_of(payment: Payment, session: Session) -> Refund:
    """The one refund a payment refunded before refunds were records stands for."""
    return Refund(id=payment.id, created_at=payment.updated_at,
                  updated_at=payment.updated_at, created_by=payment.updated_by,
                  updated_by=payment.updated_by, payment_id=payment.id,
                  session_id=payment.session_id, station_id=payment.station_id,
                  cp_id=session.cp_id, connector_id=session.connector_id,
                  user_id=payment.user_id, vehicle_id=session.vehicle_id,
                  amount_minor=payment.refunded_minor, currency=payment.currency,
                  at=payment.updated_at, provider=payment.provider,
                  provider_ref=payment.provider_ref,
                  company_id=payment.company_id,
                  station_owner_id=payment.station_owner_id)


async def _company_books_without_owner(db: Any) -> None:
    """A company station's sessions and payments (and the refunds made of them) are in
    its company's books alone (``books_of``), as SQLite's migration 40 makes them: before
    that rule (c3adce4) the station's owner was recorded too, and one who left the
    company still saw them (reviewer s18). Only documents with both: a no-op elsewhere."""
    for kind in ("session", "payment", "refund"):
        await db[kind].update_many(
            {"company_id": {"$ne": None}, "station_owner_id": {"$ne": None}},
            {"$set": {"station_owner_id": None, MARK: ObjectId()}})


async def _configuration_truncated(db: Any) -> None:
    """Stations holding more configuration keys than are kept (every key was, before
    ``configuration.MAX_KEYS``) are flagged, as SQLite's migration 42 flags them: their
    list shows the first by key, and their next read keeps only those."""
    over = await (await db["configuration_key"].aggregate([
        {"$group": {"_id": "$station_id", "n": {"$sum": 1}}},
        {"$match": {"n": {"$gt": MAX_KEYS}}}])).to_list(None)
    if over:
        await db["station"].update_many(
            {"_id": {"$in": [group["_id"] for group in over]}},
            {"$set": {"configuration_truncated": True, MARK: ObjectId()}})


async def _sessions_closed_without_stop(db: Any) -> None:
    """Sessions the CSMS closed without their StopTransaction (as lost, or by an
    operator) are flagged (``Session.closed_without_stop``), as SQLite's migration 66
    flags them: written before the flag, they are those with a null meterStop and the
    reason ``Other``, save a charger's stop of -1 (no register, recorded null), which
    always set ``IMPLAUSIBLE_STOP`` (review r26: its resend was taken for a correction).
    Only documents still without the field: one written since carries it."""
    await db["session"].update_many(
        {"closed_without_stop": {"$exists": False}, "state": "COMPLETED",
         "meter_stop_wh": None, "stop_reason": "Other",
         "meter_anomaly": {"$ne": "IMPLAUSIBLE_STOP"}},
        {"$set": {"closed_without_stop": True, MARK: ObjectId()}})


async def _payment_plugs(db: Any) -> None:
    """Payments written before they recorded their session's charger, connector and
    vehicle (``Payment.cp_id``, SQLite migration 41) take them from their session
    (sessions are never removed), so revenue groups and filters them as SQLite's do.
    Marked by the field itself: new documents always carry ``cp_id``, possibly null.
    Those an instance of the version before opens after this step (a rolling upgrade)
    get them from housekeeping (``PaymentService.fill_charger_fields``)."""
    while True:
        docs = await db["payment"].find({"cp_id": {"$exists": False}},
                                        {"session_id": 1}).limit(BATCH).to_list()
        if not docs:
            break
        sessions = {s["_id"]: s for s in await db["session"].find(
            {"_id": {"$in": [doc["session_id"] for doc in docs]}},
            {"cp_id": 1, "connector_id": 1, "vehicle_id": 1}).to_list()}
        for doc in docs:
            found = sessions.get(doc["session_id"], {})
            await db["payment"].update_one(
                {"_id": doc["_id"], "cp_id": {"$exists": False}},
                {"$set": {"cp_id": found.get("cp_id"),
                          "connector_id": found.get("connector_id"),
                          "vehicle_id": found.get("vehicle_id"), MARK: ObjectId()}})


_MANUAL = constant_default(Refund, "provider")


async def _refund_providers(db: Any) -> None:
    """Refunds recorded before they kept the provider that paid them back
    (``Refund.provider``, SQLite migration 84) take their payment's; one whose payment is
    gone (or none kept: indexed, a missing field stopped the step, and every start with
    it, review r32-b) the default, ``manual``, as SQLite's column default gives it.
    Marked by the field itself: new documents always carry it."""
    await _fill_from_referenced(db, "refund", "provider", "payment_id",
                                ("payment", "provider"), _MANUAL)


async def _local_list_holders(db: Any) -> None:
    """List entries written before they kept the holder of the card they name
    (``LocalListEntry.holder_id``, SQLite migration 64) take it from that card where it
    is still there, so a removed card issued again to its holder is put back (QA s26).
    Marked by the field itself: new documents always carry ``holder_id``, possibly
    null, as do those whose card is gone (its holder is not known)."""
    await _fill_from_referenced(db, "local_list_entry", "holder_id", "card_id",
                                ("id_tag", "user_id"))


async def _fill_from_referenced(db: Any, collection: str, field: str, reference: str,
                                source: tuple[str, str], default: Any = None) -> None:
    """Documents of ``collection`` without ``field`` take it from the document their
    ``reference`` names (``source``: its collection and field), ``default`` where that is
    gone, names none or has none; in batches, each document marked."""
    referenced, source_field = source
    while True:
        docs = await db[collection].find({field: {"$exists": False}},
                                         {reference: 1}).limit(BATCH).to_list()
        if not docs:
            break
        # The reference is kept as text, the ``_id`` it names as an ObjectId.
        ids = [id_ for doc in docs if (id_ := _as_id(doc.get(reference))) is not None]
        values = {str(found["_id"]): found.get(source_field)
                  for found in await db[referenced].find(
                      {"_id": {"$in": ids}}, {source_field: 1}).to_list()} if ids else {}
        for doc in docs:
            await db[collection].update_one(
                {"_id": doc["_id"], field: {"$exists": False}},
                {"$set": {field: values.get(doc.get(reference)) or default,
                          MARK: ObjectId()}})


async def _voided_zero_payments(db: Any) -> None:
    """Payments left PENDING at 0 (a late stop corrected their session to cost nothing)
    are VOIDED, as SQLite's migration 37 voids them: nothing is left to collect."""
    await db["payment"].update_many({"status": "PENDING", "amount_minor": 0},
                                    {"$set": {"status": "VOIDED", MARK: ObjectId()}})


#: What decides a price list version's chain: its owner and its scope.
TARIFF_CHAIN = ("station_id", "company_id", "connector_type", "power_type")


async def _tariff_docs(db: Any, where: dict[str, Any]) -> list[dict[str, Any]]:
    """The price list versions matching ``where``, with what ``_successive`` orders by
    and the batch that wrote each last (``MARK``)."""
    return cast(list[dict[str, Any]], await db["tariff"].find(where, {
        **dict.fromkeys(TARIFF_CHAIN, 1), "valid_from": 1, "created_at": 1,
        "valid_until": 1, MARK: 1}).to_list(None))


def _successive(docs: list[dict[str, Any]]
                ) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """Each of ``docs`` and the next of its owner's versions of its scope among them, in
    ``tariffs.LATEST_VERSION_FIRST``'s order reversed (start, creation, id)."""
    chains: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for doc in docs:
        chains.setdefault(tuple(doc.get(f) for f in TARIFF_CHAIN), []).append(doc)
    for chain in chains.values():
        chain.sort(key=lambda doc: (doc["valid_from"], doc["created_at"], str(doc["_id"])))
        yield from itertools.pairwise(chain)


async def _replaced_tariffs_ended(db: Any) -> None:
    """A price list version a later one replaced ends where that one begins, as SQLite's
    migration 83 ends it (its comment has the why): of each owner's versions of one
    scope, in ``tariffs.LATEST_VERSION_FIRST``'s order, each but the latest ends no later
    than the next one's start. Written only while it still ends as read."""
    for doc, after in _successive(await _tariff_docs(db, {})):
        end = doc.get("valid_until")
        if end is None or after["valid_from"] < end:
            await db["tariff"].update_one(
                {"_id": doc["_id"], "valid_until": end},
                {"$set": {"valid_until": after["valid_from"], MARK: ObjectId()}})


async def heal_open_tariffs(db: Any) -> None:
    """Of each owner's versions of one scope left open (no ``valid_until``), each but the
    latest (``_replaced_tariffs_ended``'s order) ends where the next open one begins, as
    ``setTariff`` ends the version it replaces. Not once: in a rolling upgrade an
    instance of a build from before ends none, and a price it set after this build's
    start left the one it replaced open, listed and given back by no removal (review
    s31). This build leaves one open version per scope at most, so it reads only the
    open ones (few: one per scope) and writes only where an old build set a price. A
    version ended meanwhile is left as it is (written only while still open).

    Only versions written for good: one a batch still in flight wrote (a price set on
    another instance, the version it replaces not ended yet) is left out, as is its
    chain's pairing with it: healed, the one it replaces kept that end when the batch
    rolled back and its version went (review s31). Read again after that check, and
    kept only as written then: a batch closed meanwhile had deleted what it rolled back
    before its journal went."""
    first = await _tariff_docs(db, {"valid_until": None})
    busy = await in_flight(db, first)
    settled = {(doc["_id"], doc.get(MARK)) for doc in first if doc.get(MARK) not in busy}
    docs = [doc for doc in await _tariff_docs(db, {"valid_until": None})
            if (doc["_id"], doc.get(MARK)) in settled]
    for doc, after in _successive(docs):
        await db["tariff"].update_one(
            # As read: a batch that wrote it since (its mark) is left to its writer.
            {"_id": doc["_id"], "valid_until": None, MARK: doc.get(MARK)},
            {"$set": {"valid_until": after["valid_from"], MARK: ObjectId()}})


#: The kinds whose NAME order sorts by a key stored beside the name.
NAME_KEYED = ("company", "user", "station")


async def _name_keys(db: Any) -> None:
    """A list in NAME order sorts by the name's key (``validation.name_key``: case
    folded, accents dropped), which the domain writes with every name; documents from
    before get theirs computed here, as SQLite's migration 34 does. Without it they read
    as an empty key and would sort first. Marked by the field itself: new documents
    always carry ``name_key``."""
    for kind in NAME_KEYED:
        while True:
            docs = await db[kind].find({"name_key": {"$exists": False}},
                                       {"name": 1}).limit(BATCH).to_list()
            if not docs:
                break
            for doc in docs:
                await db[kind].update_one(
                    {"_id": doc["_id"], "name_key": {"$exists": False}},
                    {"$set": {"name_key": name_key(doc["name"]), MARK: ObjectId()}})


async def heal_cp_id_keys(db: Any, most: int | None = None) -> None:
    """A station's cpId without regard to case (``Station.cp_id_key``), as SQLite's
    migration 78 computes it, for stations without it; without it they read as an empty
    key, and a charger connecting under their cpId in other case would not find them.
    Not once: in a rolling upgrade an instance of a build from before the field still
    registers and creates stations without it after this build's start passed (review
    r28-leftocpp), so it runs at every start (all of them) and at every sweep
    (``MongoStore._sweep_forever``, at most ``most``). Cheap when there is none: the
    field is never null where it is written, so ``null`` (absent) is one bound of its
    index (``station_cp_id_key``), which holds only such stations."""
    left = most
    while left is None or left > 0:
        size = BATCH if left is None else min(BATCH, left)
        docs = await db["station"].find({"cp_id_key": None}, {"cp_id": 1}
                                        ).limit(size).to_list()
        if not docs:
            break
        for doc in docs:
            await db["station"].update_one(
                {"_id": doc["_id"], "cp_id_key": None},
                {"$set": {"cp_id_key": cp_id_key(doc["cp_id"]), MARK: ObjectId()}})
        if left is not None:
            left -= len(docs)


async def _name_identities(db: Any) -> None:
    """Company names are unique by their identity (``Company.name_identity``:
    ``validation.name_identity``), as SQLite's migration 55 makes them: companies from
    before get theirs, oldest first. Once the unique index is built (it holds among the
    documents with one, ``indexes.held_among``), so two instances at once never give one
    identity twice. A company whose name was an older one's this way is left without
    one (null, under no rule) and logged for an admin to rename, as there. Marked by the
    field itself: new documents always carry ``name_identity``, possibly null."""
    last: Any = None
    while True:
        query: dict[str, Any] = {"name_identity": {"$exists": False}}
        if last is not None:
            query["_id"] = {"$gt": last}
        docs = await db["company"].find(query, {"name": 1}).sort([("_id", 1)]).limit(
            BATCH).to_list()
        if not docs:
            break
        last = docs[-1]["_id"]
        for doc in docs:
            unmarked = {"_id": doc["_id"], "name_identity": {"$exists": False}}
            try:
                await db["company"].update_one(unmarked, {"$set": {
                    "name_identity": name_identity(doc["name"]), MARK: ObjectId()}})
            except DuplicateKeyError:
                log.warning("company %s (%r) has the name of an older company, told apart "
                            "only by case or how its letters were typed: rename it "
                            "(updateCompany)", doc["_id"], doc["name"])
                await db["company"].update_one(unmarked, {"$set": {
                    "name_identity": None, MARK: ObjectId()}})


async def _blockers(db: Any) -> None:
    """Blocked cards written before they recorded who blocked them (``IdTag.blocked_by``)
    take their last writer, who stood for that until then. Marked by the field itself:
    new documents always carry ``blocked_by``, possibly null."""
    while True:
        docs = await db["id_tag"].find(
            {"status": "Blocked", "blocked_by": {"$exists": False}},
            {"updated_by": 1}).limit(BATCH).to_list()
        if not docs:
            break
        for doc in docs:
            await db["id_tag"].update_one(
                {"_id": doc["_id"], "blocked_by": {"$exists": False}},
                {"$set": {"blocked_by": doc.get("updated_by"), MARK: ObjectId()}})


async def _expiry_setters(db: Any) -> None:
    """Cards with an expiry written before they recorded who set it
    (``IdTag.expiry_set_by``) take their creator, or their last writer when the creator
    is their holder (SQLite migration 80 says why). Marked by the field itself: new
    documents always carry ``expiry_set_by``, possibly null."""
    while True:
        docs = await db["id_tag"].find(
            {"expires_at": {"$ne": None}, "expiry_set_by": {"$exists": False}},
            {"created_by": 1, "updated_by": 1, "user_id": 1}).limit(BATCH).to_list()
        if not docs:
            break
        for doc in docs:
            creator = doc.get("created_by")  # an actor's text; the holder an ObjectId
            setter = doc.get("updated_by") if creator == str(doc.get("user_id")) \
                else creator
            await db["id_tag"].update_one(
                {"_id": doc["_id"], "expiry_set_by": {"$exists": False}},
                {"$set": {"expiry_set_by": setter, MARK: ObjectId()}})


async def _audit_books(db: Any) -> None:
    """Audit entries of a station or a reservation written before they recorded whose
    books they are (``AuditEntry.company_id``) take their station's books now, where it
    still exists (what they were read by until then), else none. Marked by the field
    itself: new documents always carry ``company_id``, possibly null."""
    while True:
        docs = await db["audit_entry"].find(
            {"entity": {"$in": ["station", "reservation"]}, "company_id": {"$exists": False}},
            {"entity": 1, "entity_id": 1}).limit(BATCH).to_list()
        if not docs:
            break
        # ``entity_id`` is text (it may name records of any kind); record ids are ObjectIds.
        entity = {d["_id"]: ObjectId(d["entity_id"]) if ObjectId.is_valid(d["entity_id"])
                  else None for d in docs}
        reservations = {r["_id"]: r["station_id"] for r in await db["reservation"].find(
            {"_id": {"$in": [entity[d["_id"]] for d in docs
                             if d["entity"] == "reservation"]}},
            {"station_id": 1}).to_list()}
        station_of = {d["_id"]: entity[d["_id"]] if d["entity"] == "station"
                      else reservations.get(entity[d["_id"]]) for d in docs}
        books = await _station_books(db, [i for i in station_of.values() if i is not None])
        for doc in docs:
            await _write_books(db, "audit_entry", doc["_id"], books.get(station_of[doc["_id"]]))


async def _audit_commands(db: Any) -> None:
    """What SQLite migration 56 does: command entries written before they carried their
    command beside the image (``AuditEntry.command``) take the image's."""
    await db["audit_entry"].update_many(
        {"action": "COMMAND", "command": {"$exists": False}},
        [{"$set": {"command": "$after.command"}}])


async def _audit_command_ids(db: Any) -> None:
    """What SQLite migration 88 does: command entries written before they carried their
    command's id beside the image (``AuditEntry.command_id``) take the image's."""
    await db["audit_entry"].update_many(
        {"action": "COMMAND", "command_id": {"$exists": False}},
        [{"$set": {"command_id": "$after.commandId"}}])


#: The field of an audit image naming the person the record belongs to, by kind (a
#: user's entries are about the user themself).
_HOLDER_FIELDS = {"vehicle": "owner_id", "id_tag": "user_id", "session": "user_id",
                  "reservation": "user_id", "payment": "user_id", "refund": "user_id"}


async def _audit_holders(db: Any) -> None:
    """What SQLite migration 47 does: audit entries written before they recorded whose
    their record was (``AuditEntry.holder_id``, and the books of a company's people,
    cards, cars, connectors, tariffs, sessions and payments) take what their images
    say, before the change, else after it; what they do not say as it stands now: a
    card's or a car's company its holder's, a connector's or a station tariff's books
    its station's (none when it is gone). Books already recorded (a station's, a
    reservation's, a site's, a webhook's) stay. Marked by the field itself: new
    documents always carry ``holder_id``, possibly null."""
    while True:
        docs = await db["audit_entry"].find(
            {"holder_id": {"$exists": False}},
            {"entity": 1, "entity_id": 1, "before": 1, "after": 1, "company_id": 1,
             "station_owner_id": 1, "action": 1, "actor": 1}).limit(BATCH).to_list()
        if not docs:
            break
        holders = {doc["_id"]: _audit_holder(doc) for doc in docs}
        companies = {u["_id"]: u.get("company_id") for u in await db["user"].find(
            {"_id": {"$in": [holders[doc["_id"]] for doc in docs
                             if doc["entity"] in ("id_tag", "vehicle")]}},
            {"company_id": 1}).to_list()}
        stations = await _station_books(db, [
            _as_id(_image_value(doc, "station_id")) for doc in docs
            if doc["entity"] in ("connector", "tariff")])
        for doc in docs:
            holder = holders[doc["_id"]]
            update: dict[str, Any] = {"holder_id": holder, MARK: ObjectId()}
            entity = doc["entity"]
            books: tuple[Any, Any] | None = None
            if entity == "company":
                books = (_as_id(doc["entity_id"]), None)
            elif entity == "user" or (entity == "tariff"
                                      and _image_value(doc, "company_id") is not None):
                books = (_as_id(_image_value(doc, "company_id")), None)
            elif entity in ("id_tag", "vehicle"):
                books = (None, None) if _holder_private(doc, holder) \
                    else (companies.get(holder), None)
            elif entity in ("connector", "tariff"):
                books = stations.get(_as_id(_image_value(doc, "station_id")), (None, None))
            elif entity in ("session", "payment", "refund"):
                image = _booked_image(doc)
                books = (_as_id(image.get("company_id")), _as_id(image.get("station_owner_id")))
            elif entity == "station" and doc.get("company_id") is None \
                    and doc.get("station_owner_id") is None:
                # A station removed before its entries recorded books (``_audit_books``
                # found none to read): the books its images name.
                image = doc.get("before") or doc.get("after") or {}
                company = _as_id(image.get("company_id"))
                books = (company, None if company else _as_id(image.get("owner_id")))
            if books is not None:
                update["company_id"], update["station_owner_id"] = books
            await db["audit_entry"].update_one(
                {"_id": doc["_id"], "holder_id": {"$exists": False}}, {"$set": update})


def _holder_private(doc: dict[str, Any], holder: ObjectId | None) -> bool:
    """A car's update by its owner that changed none of what its company's operators see
    (plate, make, model, owner): its battery, theirs alone (``base._holder_private_change``,
    SQLite migration 47)."""
    before, after = doc.get("before"), doc.get("after")
    return doc["entity"] == "vehicle" and doc.get("action") == "UPDATE" \
        and holder is not None and str(doc.get("actor")) == str(holder) \
        and isinstance(before, dict) and isinstance(after, dict) \
        and all(before.get(key) == after.get(key)
                for key in ("owner_id", "license_plate", "make", "model"))


def _audit_holder(doc: dict[str, Any]) -> ObjectId | None:
    """The person an audit entry's record belonged to, as its images say."""
    if doc["entity"] == "user":
        return _as_id(doc["entity_id"])
    field = _HOLDER_FIELDS.get(doc["entity"])
    return _as_id(_image_value(doc, field)) if field is not None else None


def _image_value(doc: dict[str, Any], field: str) -> Any:
    """``field`` of an audit entry's record before the change, else after it."""
    for image in (doc.get("before"), doc.get("after")):
        if isinstance(image, dict) and image.get(field) is not None:
            return image[field]
    return None


def _booked_image(doc: dict[str, Any]) -> dict[str, Any]:
    """The image of a session, payment or refund whose books an entry takes: before the
    change if it had books then, else after it."""
    before, after = doc.get("before"), doc.get("after")
    if isinstance(before, dict) and (before.get("company_id") is not None
                                     or before.get("station_owner_id") is not None):
        return before
    return after if isinstance(after, dict) else {}


def _as_id(value: Any) -> ObjectId | None:
    """A record id as MongoDB stores it; text that is no id (or none) is ``None``."""
    if isinstance(value, ObjectId):
        return value
    return ObjectId(value) if isinstance(value, str) and ObjectId.is_valid(value) else None


async def _reservation_books(db: Any) -> None:
    """Reservations written before they recorded whose books they are
    (``Reservation.company_id``) take their station's books now, where it still exists
    (who read them until then), else none. Marked by the field itself: new documents
    always carry ``company_id``, possibly null."""
    await _fill_books(db, "reservation")


async def _state_history_books(db: Any) -> None:
    """Status reports, state intervals and connection events written before they recorded
    whose books they are (``StatusEvent.company_id``, SQLite migration 76) take their
    station's books now, where it still exists (who read them until then), else none: one update per
    station, as there are many of them to few stations. Marked by the field itself: new
    documents always carry ``company_id``, possibly null."""
    for kind in ("status_event", "connector_interval", "connection_event"):
        unmarked = {"company_id": {"$exists": False}}
        station_ids = await db[kind].distinct("station_id", unmarked)
        for first in range(0, len(station_ids), BATCH):
            part = station_ids[first:first + BATCH]
            books = await _station_books(db, part)
            for station_id in part:
                company, owner = books.get(station_id) or (None, None)
                await db[kind].update_many(
                    {"station_id": station_id, **unmarked},
                    {"$set": {"company_id": company, "station_owner_id": owner,
                              MARK: ObjectId()}})


async def _books(db: Any) -> None:
    """Sessions and payments written before they recorded whose books they are get the
    company of their station, or for a station of no company its owner (``books_of``).
    Marked by the field itself: new documents always carry ``company_id``, possibly null."""
    for kind in ("session", "payment"):
        await _fill_books(db, kind)


async def _fill_books(db: Any, kind: str) -> None:
    """The documents of ``kind`` (each naming its ``station_id``) without books take
    their station's, in batches."""
    while True:
        docs = await db[kind].find({"company_id": {"$exists": False}},
                                   {"station_id": 1}).limit(BATCH).to_list()
        if not docs:
            break
        books = await _station_books(db, [doc["station_id"] for doc in docs])
        for doc in docs:
            await _write_books(db, kind, doc["_id"], books.get(doc["station_id"]))


async def _station_books(db: Any, station_ids: list[Any]
                         ) -> dict[Any, tuple[Any, Any]]:
    """Each existing station's books, by its id: its company, or for a station of no
    company its owner (``books_of``)."""
    found = await db["station"].find({"_id": {"$in": list(set(station_ids))}},
                                     {"company_id": 1, "owner_id": 1}).to_list()
    return {s["_id"]: (s.get("company_id"),
                       s.get("owner_id") if s.get("company_id") is None else None)
            for s in found}


async def _write_books(db: Any, kind: str, doc_id: Any,
                       books: tuple[Any, Any] | None) -> None:
    """Only onto a document still without books (another instance may be there too)."""
    company, owner = books or (None, None)
    await db[kind].update_one(
        {"_id": doc_id, "company_id": {"$exists": False}},
        {"$set": {"company_id": company, "station_owner_id": owner, MARK: ObjectId()}})


#: Currencies whose minor unit is not a hundredth, when amounts started counting it.
_SCALE = {**{code: Decimal("0.01") for code in (
    "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI",
    "VND", "VUV", "XAF", "XOF", "XPF")},
          **{code: Decimal(10) for code in ("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND")},
          "CLF": Decimal(100), "UYW": Decimal(100)}
_RESCALED = "_minor_units_rescaled"


async def _minor_units(db: Any) -> None:
    """Amounts count each currency's own minor unit (whole yen, fils); before, every
    currency counted hundredths. Amounts written before the first instance got here are
    rescaled, once each: a payment's amount is set when it is created, a session's cost
    when it completes (it is not written again)."""
    claim = await _migrations(db).find_one_and_update(
        {"_id": "minor_units"}, {"$setOnInsert": {"at": datetime.now(UTC), "done": False}},
        upsert=True, return_document=ReturnDocument.AFTER)
    if claim.get("done"):
        # Finished once: never again, since a later full write of a document drops the
        # per-document mark (it is not an entity field).
        return
    began: datetime = claim["at"]
    for kind, field, written in (("session", "cost_minor", "updated_at"),
                                 ("payment", "amount_minor", "created_at")):
        while True:
            docs = await db[kind].find({
                "currency": {"$in": list(_SCALE)}, field: {"$ne": None},
                _RESCALED: {"$exists": False}, written: {"$lt": began},
            }, {field: 1, "currency": 1}).limit(BATCH).to_list()
            if not docs:
                break
            for doc in docs:
                await db[kind].update_one(
                    {"_id": doc["_id"], _RESCALED: {"$exists": False}},
                    {"$set": {field: _rescaled(doc[field], doc["currency"]),
                              _RESCALED: True, MARK: ObjectId()}})
    # Marked done by ``_once``, which runs it.


def _rescaled(amount: int, currency: str) -> int:
    """``amount`` in hundredths as ``currency``'s minor units, rounded as SQLite's migration
    10 rounds (``ROUND``: half away from zero; Python's ``round`` goes half to even, which
    made 50 hundredths of a yen 0 yen here and 1 there). Exact in decimal arithmetic."""
    scaled = Decimal(amount) * _SCALE[currency]
    return int(scaled.quantize(Decimal(1), rounding=ROUND_HALF_UP))
