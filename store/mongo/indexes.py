"""The indexes the MongoDB store needs, and which uniqueness rule a duplicate-key error broke.

Unique rules (``domain.ports.UNIQUE_RULES``) are enforced by unique indexes named
``uniq_<kind>_<fields>`` (over the documents with a value, where a rule's field may be
null: ``held_among``); the partial "one ACTIVE session per connector" rule by a partial
unique index (``partialFilterExpression``), which mongomock 4.3 enforces too (on insert,
update and replace), so no read-then-write emulation is needed for tests.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.errors import OperationFailure

from domain.entities import ENTITY_BY_KIND
from domain.ports import PARTIAL_UNIQUE_RULES, UNIQUE_RULES
from store.mongo.codec import spec_of, storage_name
from store.mongo.journal import JOURNAL, JOURNAL_PARTS

#: Lookup indexes besides the unique ones: foreign keys, the policy's sub-selects and the
#: time series (newest first where screens list them that way). Every index of the SQLite
#: schema has one here starting with the same fields (tests/store/test_index_parity.py).
INDEXES: dict[str, list[list[tuple[str, int]]]] = {
    # NAME order (``name_key``, with the ``_id`` tie-breaker) of the long lists.
    # And by when erased (the keeping of an idempotency key's answer, migration 81).
    "user": [[("company_id", ASCENDING)], [("name_key", ASCENDING), ("_id", ASCENDING)],
             [("erased_at", ASCENDING)]],
    "vehicle": [[("owner_id", ASCENDING)]],
    "id_tag": [[("user_id", ASCENDING)], [("vehicle_id", ASCENDING)],
               [("parent_tag", ASCENDING)], [("expires_at", ASCENDING)]],
    # The lists holding a card (one withdrawn: by its id, not its tag string); a
    # station's list by station and tag is the unique rule's index.
    # And a removed card's entries by its holder (one issued again: QA s26).
    # And a station's entries marked wanted (every push; each expiry sweep, for the
    # stations connected to its instance).
    "local_list_entry": [[("card_id", ASCENDING)], [("holder_id", ASCENDING)],
                         [("station_id", ASCENDING), ("wanted", ASCENDING)]],
    "station": [[("company_id", ASCENDING)], [("owner_id", ASCENDING)],
                [("lat", ASCENDING)], [("online", ASCENDING)],
                [("connected_instance", ASCENDING)], [("site_id", ASCENDING)],
                [("name_key", ASCENDING), ("_id", ASCENDING)],
                # A charger connecting under its cpId in other case (``cp_id_key``).
                [("cp_id_key", ASCENDING)]],
    # A company's sites (the policy's scope); a site's sessions' shares.
    "site": [[("company_id", ASCENDING)]],
    "site_allocation": [[("site_id", ASCENDING)], [("company_id", ASCENDING)]],
    # The per-key loads of a nested page (a station's connectors, active sessions, newest
    # sessions; a driver's or a car's sessions) end with the sort and the ``_id``
    # tie-breaker every ordering ends with: each key's first rows come out of the index in
    # order, and the read stops at the limit instead of sorting the key's whole history.
    "connector": [[("station_id", ASCENDING), ("connector_id", ASCENDING), ("_id", ASCENDING)]],
    "session": [[("station_id", ASCENDING), ("start_time", DESCENDING), ("_id", ASCENDING)],
                [("user_id", ASCENDING), ("start_time", DESCENDING), ("_id", ASCENDING)],
                [("vehicle_id", ASCENDING), ("start_time", DESCENDING), ("_id", ASCENDING)],
                [("cp_id", ASCENDING), ("state", ASCENDING)],
                [("id_tag", ASCENDING), ("state", ASCENDING)],
                [("station_id", ASCENDING), ("state", ASCENDING), ("_id", ASCENDING)],
                [("company_id", ASCENDING), ("start_time", DESCENDING)],
                [("station_owner_id", ASCENDING), ("start_time", DESCENDING)],
                # An admin's analytics range over all sessions by start or end.
                [("start_time", ASCENDING)], [("end_time", ASCENDING)]],
    # A session's samples by time (not ``_id`` too: every MeterValues writes this index,
    # and its ties are a sample's few siblings); a connector's status history and a
    # station's connection history newest first (``at`` and ``_id`` both descending: the
    # index walked backwards).
    "meter_sample": [[("session_id", ASCENDING), ("at", ASCENDING)],
                     [("cp_id", ASCENDING), ("at", ASCENDING)], [("at", ASCENDING)]],
    # A session's signed meter values oldest first (``_id`` too: they are few, written
    # rarely), and those of unknown transactions by charger (the policy's cpId scope).
    "signed_meter_value": [[("session_id", ASCENDING), ("at", ASCENDING), ("_id", ASCENDING)],
                           [("cp_id", ASCENDING), ("at", ASCENDING)]],
    "status_event": [[("cp_id", ASCENDING), ("connector_id", ASCENDING), ("at", ASCENDING)],
                     [("station_id", ASCENDING), ("at", ASCENDING)],
                     [("station_id", ASCENDING), ("connector_id", ASCENDING),
                      ("at", ASCENDING), ("_id", ASCENDING)], [("at", ASCENDING)],
                     # An operator's (and a ``companyId`` filter's) by their books.
                     [("company_id", ASCENDING), ("at", ASCENDING)],
                     [("station_owner_id", ASCENDING), ("at", ASCENDING)]],
    # By charger too: lists and analytics filtered by cpId.
    "connection_event": [[("station_id", ASCENDING), ("at", ASCENDING), ("_id", ASCENDING)],
                         [("cp_id", ASCENDING), ("at", ASCENDING)],
                         # An operator's by their books.
                         [("company_id", ASCENDING), ("at", ASCENDING)],
                         [("station_owner_id", ASCENDING), ("at", ASCENDING)],
                         # Their retention's sweep, oldest first (SQLite migration 86).
                         [("at", ASCENDING)]],
    # The open unknown ones (``settle_outages``, every lease round): few ever are unknown.
    "connector_interval": [[("station_id", ASCENDING), ("start", ASCENDING)],
                           [("cp_id", ASCENDING), ("connector_id", ASCENDING),
                            ("end", ASCENDING)], [("start", ASCENDING)],
                           [("known", ASCENDING), ("end", ASCENDING), ("start", ASCENDING)],
                           [("company_id", ASCENDING), ("start", ASCENDING)],
                           [("station_owner_id", ASCENDING), ("start", ASCENDING)]],
    # A new reservation looks for live ones on its connector (expires_at > now); an
    # operator reads those in their books.
    "reservation": [[("station_id", ASCENDING)], [("user_id", ASCENDING)],
                    [("cp_id", ASCENDING), ("connector_id", ASCENDING),
                     ("expires_at", ASCENDING)],
                    [("company_id", ASCENDING)], [("station_owner_id", ASCENDING)]],
    "tariff": [[("station_id", ASCENDING), ("valid_from", DESCENDING)],
               [("company_id", ASCENDING), ("valid_from", DESCENDING)]],
    # Payments by when they were opened within each viewer's scope (revenue is booked
    # then: an operator's books, a driver's own, an admin's all), as refunds by ``at``.
    "payment": [[("station_id", ASCENDING)], [("created_at", ASCENDING)],
                [("user_id", ASCENDING), ("created_at", ASCENDING)],
                [("company_id", ASCENDING), ("created_at", ASCENDING)],
                [("station_owner_id", ASCENDING), ("created_at", ASCENDING)],
                # Those being refunded: the sweep settling claims a crash left.
                [("refunding_minor", ASCENDING)]],
    # Refunds by time within each viewer's scope (analytics: an operator's books, a
    # driver's own, an admin's all), and a payment's.
    "refund": [[("payment_id", ASCENDING)], [("at", ASCENDING)],
               [("user_id", ASCENDING), ("at", ASCENDING)],
               [("company_id", ASCENDING), ("at", ASCENDING)],
               [("station_owner_id", ASCENDING), ("at", ASCENDING)]],
    # The audit log in either order (``AuditOrder``: at, newest or oldest first; paged
    # back too), with the ``_id`` tie-breaker: a scope with sub-selects is an aggregation
    # that joins documents in sort order up to the page's limit, so the index must give
    # that order, or the server sorts every entry first (``query.Query.pipeline``). Both
    # orders are (at, _id) one way or the other (newest first: ``query.newest_first``),
    # so ``(at 1, _id 1)`` read either way serves them.
    "audit_entry": [[("entity_id", ASCENDING), ("at", DESCENDING)],
                    # What a person did, and (``holder_id``, below) what was theirs,
                    # newest first with the tie-breaker (``query.newest_first``: the last
                    # written of an instant first): a person's copy of their data pages
                    # through both (``personal_data.AuditLog``), and without ``_id`` the
                    # server sorted every entry of an admin's for each page.
                    [("actor", ASCENDING), ("at", DESCENDING), ("_id", DESCENDING)],
                    [("at", ASCENDING), ("_id", ASCENDING)],
                    [("company_id", ASCENDING), ("at", DESCENDING)],
                    [("station_owner_id", ASCENDING), ("at", DESCENDING)],
                    # A driver's audit log: what was theirs (``holder_id``).
                    [("holder_id", ASCENDING), ("at", DESCENDING), ("_id", DESCENDING)],
                    # A station's commands of a few kinds (``SiteLoad._overridden``).
                    [("entity_id", ASCENDING), ("command", ASCENDING), ("at", DESCENDING)],
                    # A command's entries by its id (``auditLog(filter: {commandId})``).
                    [("command_id", ASCENDING)]],
    # A company's webhooks (the policy's scope), an admin's own, and the enabled ones
    # every instance routes events to.
    "webhook": [[("company_id", ASCENDING)], [("owner_id", ASCENDING)],
                [("active", ASCENDING)]],
    # The outages whose offline webhook is due (every instance looks, often), and a
    # station's open ones (each connection of a charger looks).
    "offline_notice": [[("state", ASCENDING), ("offline_at", ASCENDING)],
                       [("station_id", ASCENDING), ("state", ASCENDING)]],
    # Webhook deliveries waiting: the oldest, then all of its webhook's, in order (one
    # instance claims a webhook's together), and an instance's (migration 72's index).
    "pending_delivery": [[("queued_at", ASCENDING), ("_id", ASCENDING)],
                         [("webhook_id", ASCENDING), ("queued_at", ASCENDING),
                          ("_id", ASCENDING)],
                         [("instance_id", ASCENDING)]],
    # A user's expired refresh tokens and families, deleted at their next sign-in (the
    # token's hash has its unique index from ``UNIQUE_RULES``).
    "refresh_family": [[("user_id", ASCENDING), ("expires_at", ASCENDING)]],
    "refresh_token": [[("user_id", ASCENDING), ("expires_at", ASCENDING)]],
    # Clients' idempotency keys: a user's (an erasure forgets them), the expired (the
    # sweep). The claim is the ``_id``, derived from the user and the key.
    "idempotency_key": [[("user_id", ASCENDING)], [("expires_at", ASCENDING)]],
    # Where stations' chargers passed their password check from (SQLite migration 82):
    # a station's (its removal deletes them), by when (the sweep, and the newest read at
    # a start). The pair is the ``_id``, derived from it.
    "known_charger_address": [[("station_id", ASCENDING)], [("passed_at", ASCENDING)]],
    # Card numbers freed lately (SQLite migration 85): a tag's latest freeing (an issue's
    # hold-back), the old ones (the sweep).
    "freed_id_tag": [[("tag_digest", ASCENDING), ("freed_at", ASCENDING)],
                     [("freed_at", ASCENDING)]],
    # Remote starts awaiting their StartTransaction: by card (a start's checks and the
    # StartTransaction consuming it), by station (the plug checks), by expiry (the sweep).
    "pending_start": [[("id_tag", ASCENDING), ("expires_at", ASCENDING)],
                      [("station_id", ASCENDING), ("expires_at", ASCENDING)],
                      [("expires_at", ASCENDING)]],
    # The sweep looks for batches whose writer died; a large batch's journal is read
    # and deleted with its parts.
    JOURNAL: [[("at", ASCENDING)]],
    JOURNAL_PARTS: [[("journal", ASCENDING), ("seq", ASCENDING)]],
}

#: Indexes an earlier version created that are covered by others now (the per-key loads'
#: indexes gained the ``_id`` tie-breaker) or no longer wanted, by their names.
#: ``create_index`` only adds: a database made before would keep them and pay for them on
#: every write, or keep enforcing a rule that changed.
SUPERSEDED: dict[str, tuple[str, ...]] = {
    "connector": ("station_id_1_connector_id_1",),
    "session": ("station_id_1_state_1", "station_id_1_start_time_-1",
                "user_id_1_start_time_-1", "vehicle_id_1"),
    # License plates became unique per owner (a shared car), then per owner on the
    # plate's key (its letters and digits), the plate itself kept as entered, then among
    # the cars kept only (a removed car stays as its sessions' car, ``removed_at``).
    "vehicle": ("uniq_vehicle_license_plate", "uniq_vehicle_license_plate_owner_id",
                "uniq_vehicle_plate_key_owner_id"),
    # The connection history's index gained the ``_id`` tie-breaker.
    "connection_event": ("station_id_1_at_1",),
    # So did the audit log's (in both orders).
    "audit_entry": ("at_-1",
                    # And by actor and by holder (a person's copy of their data); then
                    # their ties turned newest first (``query.newest_first``, session 30).
                    "actor_1_at_-1", "holder_id_1_at_-1",
                    "actor_1_at_-1__id_1", "holder_id_1_at_-1__id_1",
                    # Newest first with ties oldest first, an order no audit read asks
                    # since session 30 (``(at 1, _id 1)`` serves both that are asked).
                    "at_-1__id_1"),
    # Payments' scopes gained their time (revenue by ``created_at``).
    "payment": ("user_id_1", "company_id_1", "station_owner_id_1"),
    # A session's samples were indexed with the ``_id`` tie-breaker, and by measurand for
    # the State of Charge, which the session keeps now (every MeterValues paid for both).
    "meter_sample": ("session_id_1_at_1__id_1", "session_id_1_measurand_1_at_1__id_1"),
    # List entries were found by their tag string, now by their card (``card_id``).
    "local_list_entry": ("tag_1",),
}

#: The field a partial rule reports: for one ACTIVE session per connector, the connector is
#: what is taken (the contract suite expects ``connector_id``).
PARTIAL_RULE_FIELD = "connector_id"


def partial_rule_field(kind: str, fields: Sequence[str]) -> str:
    """The field a partial rule's violation names (``ports.PARTIAL_UNIQUE_RULES``): its
    first, as a rule's, but the session's connector."""
    return PARTIAL_RULE_FIELD if kind == "session" else fields[0]


def index_name(kind: str, fields: Sequence[str], partial: bool = False) -> str:
    return f"uniq_{kind}_{'_'.join(fields)}{'_active' if partial else ''}"


_FIELD_BY_INDEX: dict[str, str] = {"_id_": "id"}
_FIELD_BY_PATTERN: dict[tuple[str, tuple[str, ...]], str] = {}
for _kind, _rules in UNIQUE_RULES.items():
    for _fields in _rules:
        _FIELD_BY_INDEX[index_name(_kind, _fields)] = _fields[0]
        _FIELD_BY_PATTERN[(_kind, tuple(_fields))] = _fields[0]
for _kind, _partials in PARTIAL_UNIQUE_RULES.items():
    for _fields, _condition in _partials:
        _FIELD_BY_INDEX[index_name(_kind, _fields, True)] = partial_rule_field(_kind, _fields)
        _FIELD_BY_PATTERN.setdefault((_kind, tuple(_fields)),
                                     partial_rule_field(_kind, _fields))

#: The server's code for dropping an index that is not there (any more).
_INDEX_NOT_FOUND = 27

# "E11000 duplicate key error collection: db.user index: uniq_user_email dup key: {...}"
_INDEX_IN_MESSAGE = re.compile(r"index:\s+(\S+)")


def violated_field(kind: str, details: Mapping[str, Any] | None) -> str | None:
    """``UniqueViolation.field`` for a duplicate-key error on ``kind``, read from the
    server's error details: the index name in the message, else the ``keyPattern``.
    ``None`` when the details say neither (mongomock gives no details at all)."""
    details = details or {}
    found = _INDEX_IN_MESSAGE.search(str(details.get("errmsg") or ""))
    if found and found.group(1) in _FIELD_BY_INDEX:
        return _FIELD_BY_INDEX[found.group(1)]
    pattern = tuple(details.get("keyPattern") or ())
    if pattern == ("_id",):
        return "id"
    return _FIELD_BY_PATTERN.get((kind, pattern)) if pattern else None


#: The BSON type of a value of a field category that may be null in a unique rule.
_BSON_TYPES = {"str": "string"}


def held_among(kind: str, fields: Sequence[str]) -> dict[str, Any] | None:
    """The documents a unique rule holds among, as a partial index's filter: those with a
    value in each of its fields that may be null (``Company.name_identity``), as SQL's
    NULLs never clash, where a unique index here counts every null as one value.
    ``None``: all of them."""
    specs = [spec_of(ENTITY_BY_KIND[kind], field) for field in fields]
    present = {storage_name(spec.name): {"$type": _BSON_TYPES[spec.category]}
               for spec in specs if spec.nullable}
    return present or None


async def ensure_indexes(db: Any) -> None:
    """Creates every index; idempotent (an existing index with the same name and options is
    left alone). Safe to run from several instances at once."""
    for kind, rules in UNIQUE_RULES.items():
        for fields in rules:
            held = held_among(kind, fields)
            await db[kind].create_index([(f, ASCENDING) for f in fields], unique=True,
                                        name=index_name(kind, fields),
                                        **({"partialFilterExpression": held} if held else {}))
    for kind, partials in PARTIAL_UNIQUE_RULES.items():
        for fields, (cond_field, cond_value) in partials:
            await db[kind].create_index(
                [(f, ASCENDING) for f in fields], unique=True,
                name=index_name(kind, fields, True),
                partialFilterExpression={cond_field: cond_value})
    for kind, keys_list in INDEXES.items():
        for keys in keys_list:
            await db[kind].create_index(keys)
    for kind, names in SUPERSEDED.items():
        existing = await db[kind].index_information()
        for name in names:
            if name in existing:
                try:
                    await db[kind].drop_index(name)
                except OperationFailure as error:  # another instance dropped it first
                    if error.code != _INDEX_NOT_FOUND:
                        raise
