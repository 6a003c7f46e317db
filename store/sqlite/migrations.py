"""The SQLite schema, as an ordered list of migrations versioned in code.

A migration is frozen once released: never edit one, append a new version instead (a
database that already ran version N never sees version N's text again). Each runs in its
own transaction together with its row in ``schema_version``, so a failed migration leaves
no trace and the next start tries it again.

Tables are named after the entity ``kind`` and have one column per dataclass field; the
column types follow ``store.sqlite.codec``. ``STRICT`` tables make SQLite reject a value of
the wrong type instead of silently storing it, which catches codec mistakes early.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Any

import aiosqlite

from domain.validation import name_identity, name_key, plate_key, plate_shown
from store.sqlite.reconcile import SOC_FROM_SAMPLES, Stoppable, reconcile, reference

log = logging.getLogger("chargegraph.store")

Migration = tuple[int, str]

_V1 = """
CREATE TABLE "company" (
    "id" TEXT PRIMARY KEY NOT NULL,
    "created_at" INTEGER NOT NULL,
    "updated_at" INTEGER NOT NULL,
    "created_by" TEXT NOT NULL,
    "updated_by" TEXT NOT NULL,
    "name" TEXT NOT NULL
) STRICT;

CREATE TABLE "user" (
    "id" TEXT PRIMARY KEY NOT NULL,
    "created_at" INTEGER NOT NULL,
    "updated_at" INTEGER NOT NULL,
    "created_by" TEXT NOT NULL,
    "updated_by" TEXT NOT NULL,
    "email" TEXT NOT NULL,
    "name" TEXT NOT NULL,
    "role" TEXT NOT NULL,
    "company_id" TEXT,
    "password_hash" TEXT NOT NULL,
    "active" INTEGER NOT NULL
) STRICT;
CREATE UNIQUE INDEX "user_email_key" ON "user" ("email");
CREATE INDEX "user_company_idx" ON "user" ("company_id");

CREATE TABLE "vehicle" (
    "id" TEXT PRIMARY KEY NOT NULL,
    "created_at" INTEGER NOT NULL,
    "updated_at" INTEGER NOT NULL,
    "created_by" TEXT NOT NULL,
    "updated_by" TEXT NOT NULL,
    "owner_id" TEXT NOT NULL,
    "license_plate" TEXT NOT NULL,
    "make" TEXT,
    "model" TEXT,
    "battery_kwh" REAL
) STRICT;
CREATE UNIQUE INDEX "vehicle_license_plate_key" ON "vehicle" ("license_plate");
CREATE INDEX "vehicle_owner_idx" ON "vehicle" ("owner_id");

CREATE TABLE "id_tag" (
    "id" TEXT PRIMARY KEY NOT NULL,
    "created_at" INTEGER NOT NULL,
    "updated_at" INTEGER NOT NULL,
    "created_by" TEXT NOT NULL,
    "updated_by" TEXT NOT NULL,
    "tag" TEXT NOT NULL,
    "user_id" TEXT NOT NULL,
    "vehicle_id" TEXT,
    "status" TEXT NOT NULL,
    "expires_at" INTEGER,
    "parent_tag" TEXT
) STRICT;
CREATE UNIQUE INDEX "id_tag_tag_key" ON "id_tag" ("tag");
CREATE INDEX "id_tag_user_idx" ON "id_tag" ("user_id");
CREATE INDEX "id_tag_vehicle_idx" ON "id_tag" ("vehicle_id");

CREATE TABLE "station" (
    "id" TEXT PRIMARY KEY NOT NULL,
    "created_at" INTEGER NOT NULL,
    "updated_at" INTEGER NOT NULL,
    "created_by" TEXT NOT NULL,
    "updated_by" TEXT NOT NULL,
    "cp_id" TEXT NOT NULL,
    "name" TEXT NOT NULL,
    "owner_id" TEXT,
    "company_id" TEXT,
    "lat" REAL,
    "lon" REAL,
    "address" TEXT,
    "vendor" TEXT,
    "model" TEXT,
    "serial" TEXT,
    "firmware" TEXT,
    "registration" TEXT NOT NULL,
    "online" INTEGER NOT NULL,
    "last_seen" INTEGER,
    "auth_password_hash" TEXT,
    "firmware_status" TEXT,
    "diagnostics_status" TEXT
) STRICT;
CREATE UNIQUE INDEX "station_cp_id_key" ON "station" ("cp_id");
CREATE INDEX "station_owner_idx" ON "station" ("owner_id");
CREATE INDEX "station_company_idx" ON "station" ("company_id");
-- Near: the bounding-box prefilter ranges over lat first.
CREATE INDEX "station_lat_lon_idx" ON "station" ("lat", "lon");

CREATE TABLE "connector" (
    "id" TEXT PRIMARY KEY NOT NULL,
    "created_at" INTEGER NOT NULL,
    "updated_at" INTEGER NOT NULL,
    "created_by" TEXT NOT NULL,
    "updated_by" TEXT NOT NULL,
    "station_id" TEXT NOT NULL,
    "cp_id" TEXT NOT NULL,
    "connector_id" INTEGER NOT NULL,
    "status" TEXT NOT NULL,
    "error_code" TEXT NOT NULL,
    "info" TEXT,
    "status_at" INTEGER,
    "type" TEXT NOT NULL,
    "max_kw" REAL
) STRICT;
CREATE UNIQUE INDEX "connector_cp_id_connector_id_key" ON "connector" ("cp_id", "connector_id");
CREATE INDEX "connector_station_idx" ON "connector" ("station_id", "connector_id");

CREATE TABLE "session" (
    "id" TEXT PRIMARY KEY NOT NULL,
    "created_at" INTEGER NOT NULL,
    "updated_at" INTEGER NOT NULL,
    "created_by" TEXT NOT NULL,
    "updated_by" TEXT NOT NULL,
    "transaction_id" INTEGER NOT NULL,
    "station_id" TEXT NOT NULL,
    "cp_id" TEXT NOT NULL,
    "connector_id" INTEGER NOT NULL,
    "id_tag" TEXT NOT NULL,
    "start_time" INTEGER NOT NULL,
    "meter_start_wh" INTEGER NOT NULL,
    "user_id" TEXT,
    "vehicle_id" TEXT,
    "end_time" INTEGER,
    "meter_stop_wh" INTEGER,
    "energy_wh" INTEGER NOT NULL,
    "power_w" REAL,
    "stop_reason" TEXT,
    "state" TEXT NOT NULL,
    "reservation_id" INTEGER,
    "cost_minor" INTEGER,
    "currency" TEXT
) STRICT;
CREATE UNIQUE INDEX "session_transaction_id_key" ON "session" ("transaction_id");
-- One ACTIVE session per connector; completed ones are history and may repeat.
CREATE UNIQUE INDEX "session_active_connector_key" ON "session" ("cp_id", "connector_id")
    WHERE "state" = 'ACTIVE';
CREATE INDEX "session_station_start_idx" ON "session" ("station_id", "start_time");
CREATE INDEX "session_user_start_idx" ON "session" ("user_id", "start_time");
CREATE INDEX "session_vehicle_idx" ON "session" ("vehicle_id");
CREATE INDEX "session_start_idx" ON "session" ("start_time");

CREATE TABLE "meter_sample" (
    "id" TEXT PRIMARY KEY NOT NULL,
    "created_at" INTEGER NOT NULL,
    "updated_at" INTEGER NOT NULL,
    "created_by" TEXT NOT NULL,
    "updated_by" TEXT NOT NULL,
    "session_id" TEXT,
    "cp_id" TEXT NOT NULL,
    "connector_id" INTEGER NOT NULL,
    "at" INTEGER NOT NULL,
    "measurand" TEXT NOT NULL,
    "value" REAL NOT NULL,
    "unit" TEXT,
    "phase" TEXT,
    "context" TEXT,
    "transaction_id" INTEGER
) STRICT;
CREATE INDEX "meter_sample_session_at_idx" ON "meter_sample" ("session_id", "at");
CREATE INDEX "meter_sample_cp_at_idx" ON "meter_sample" ("cp_id", "at");

CREATE TABLE "status_event" (
    "id" TEXT PRIMARY KEY NOT NULL,
    "created_at" INTEGER NOT NULL,
    "updated_at" INTEGER NOT NULL,
    "created_by" TEXT NOT NULL,
    "updated_by" TEXT NOT NULL,
    "station_id" TEXT NOT NULL,
    "cp_id" TEXT NOT NULL,
    "connector_id" INTEGER NOT NULL,
    "status" TEXT NOT NULL,
    "error_code" TEXT NOT NULL,
    "info" TEXT,
    "at" INTEGER NOT NULL
) STRICT;
CREATE INDEX "status_event_cp_connector_at_idx" ON "status_event" ("cp_id", "connector_id", "at");
CREATE INDEX "status_event_station_at_idx" ON "status_event" ("station_id", "at");

CREATE TABLE "reservation" (
    "id" TEXT PRIMARY KEY NOT NULL,
    "created_at" INTEGER NOT NULL,
    "updated_at" INTEGER NOT NULL,
    "created_by" TEXT NOT NULL,
    "updated_by" TEXT NOT NULL,
    "reservation_id" INTEGER NOT NULL,
    "station_id" TEXT NOT NULL,
    "cp_id" TEXT NOT NULL,
    "connector_id" INTEGER NOT NULL,
    "id_tag" TEXT NOT NULL,
    "expires_at" INTEGER NOT NULL,
    "user_id" TEXT,
    "state" TEXT NOT NULL
) STRICT;
CREATE UNIQUE INDEX "reservation_reservation_id_key" ON "reservation" ("reservation_id");
CREATE INDEX "reservation_station_idx" ON "reservation" ("station_id", "expires_at");
CREATE INDEX "reservation_user_idx" ON "reservation" ("user_id");
CREATE INDEX "reservation_connector_idx" ON "reservation" ("cp_id", "connector_id");

CREATE TABLE "tariff" (
    "id" TEXT PRIMARY KEY NOT NULL,
    "created_at" INTEGER NOT NULL,
    "updated_at" INTEGER NOT NULL,
    "created_by" TEXT NOT NULL,
    "updated_by" TEXT NOT NULL,
    "company_id" TEXT,
    "station_id" TEXT,
    "price_per_kwh" TEXT NOT NULL,
    "currency" TEXT NOT NULL,
    "price_per_minute" TEXT NOT NULL,
    "session_fee" TEXT NOT NULL,
    "tax_rate" TEXT NOT NULL,
    "valid_from" INTEGER NOT NULL
) STRICT;
-- "The tariff in force at t": newest valid_from <= t, per station or per company.
CREATE INDEX "tariff_station_valid_idx" ON "tariff" ("station_id", "valid_from");
CREATE INDEX "tariff_company_valid_idx" ON "tariff" ("company_id", "valid_from");

CREATE TABLE "payment" (
    "id" TEXT PRIMARY KEY NOT NULL,
    "created_at" INTEGER NOT NULL,
    "updated_at" INTEGER NOT NULL,
    "created_by" TEXT NOT NULL,
    "updated_by" TEXT NOT NULL,
    "session_id" TEXT NOT NULL,
    "station_id" TEXT NOT NULL,
    "user_id" TEXT,
    "amount_minor" INTEGER NOT NULL,
    "currency" TEXT NOT NULL,
    "status" TEXT NOT NULL,
    "provider" TEXT NOT NULL,
    "provider_ref" TEXT
) STRICT;
CREATE UNIQUE INDEX "payment_session_id_key" ON "payment" ("session_id");
CREATE INDEX "payment_station_idx" ON "payment" ("station_id");
CREATE INDEX "payment_user_idx" ON "payment" ("user_id");

CREATE TABLE "audit_entry" (
    "id" TEXT PRIMARY KEY NOT NULL,
    "created_at" INTEGER NOT NULL,
    "updated_at" INTEGER NOT NULL,
    "created_by" TEXT NOT NULL,
    "updated_by" TEXT NOT NULL,
    "entity" TEXT NOT NULL,
    "entity_id" TEXT NOT NULL,
    "action" TEXT NOT NULL,
    "actor" TEXT NOT NULL,
    "at" INTEGER NOT NULL,
    "before" TEXT,
    "after" TEXT
) STRICT;
CREATE INDEX "audit_entry_entity_at_idx" ON "audit_entry" ("entity_id", "at");
CREATE INDEX "audit_entry_actor_at_idx" ON "audit_entry" ("actor", "at");
CREATE INDEX "audit_entry_at_idx" ON "audit_entry" ("at");

-- Named atomic counters (OCPP transaction and reservation ids).
CREATE TABLE "sequence" (
    "name" TEXT PRIMARY KEY NOT NULL,
    "value" INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
"""

# Version 2: the OCPP bridge records when chargers connect and disconnect (the input of
# availability analytics).
_V2 = """
CREATE TABLE "connection_event" (
    "id" TEXT PRIMARY KEY NOT NULL,
    "created_at" INTEGER NOT NULL,
    "updated_at" INTEGER NOT NULL,
    "created_by" TEXT NOT NULL,
    "updated_by" TEXT NOT NULL,
    "station_id" TEXT NOT NULL,
    "cp_id" TEXT NOT NULL,
    "online" INTEGER NOT NULL,
    "at" INTEGER NOT NULL
) STRICT;
CREATE INDEX "connection_event_station_at_idx" ON "connection_event" ("station_id", "at");
CREATE INDEX "connection_event_cp_at_idx" ON "connection_event" ("cp_id", "at");
"""

# Version 3: analytics. Meter samples carry the energy they add; connector state intervals
# (status x online) make utilization, availability and fault durations sums of overlaps.
_V3 = """
ALTER TABLE "meter_sample" ADD COLUMN "delta_wh" INTEGER;
CREATE INDEX "meter_sample_at_delta_idx" ON "meter_sample" ("at", "delta_wh");
CREATE TABLE "connector_interval" (
    "id" TEXT PRIMARY KEY NOT NULL,
    "created_at" INTEGER NOT NULL,
    "updated_at" INTEGER NOT NULL,
    "created_by" TEXT NOT NULL,
    "updated_by" TEXT NOT NULL,
    "station_id" TEXT NOT NULL,
    "cp_id" TEXT NOT NULL,
    "connector_id" INTEGER NOT NULL,
    "status" TEXT NOT NULL,
    "error_code" TEXT NOT NULL,
    "online" INTEGER NOT NULL,
    "start" INTEGER NOT NULL,
    "end" INTEGER
) STRICT;
CREATE INDEX "connector_interval_station_start_idx"
    ON "connector_interval" ("station_id", "start");
CREATE INDEX "connector_interval_cp_connector_idx"
    ON "connector_interval" ("cp_id", "connector_id", "end");
CREATE INDEX "connector_interval_start_idx" ON "connector_interval" ("start");
CREATE INDEX "session_end_idx" ON "session" ("end_time");
CREATE INDEX "status_event_at_idx" ON "status_event" ("at");
"""

# Version 4: a station's active sessions (``Connector.activeSession`` for a page of
# stations) by index, without walking the station's whole session history.
_V4 = """
CREATE INDEX "session_station_state_idx" ON "session" ("station_id", "state");
"""

# Version 5: the indexes of the per-key loads of a nested page (a page's connectors, its
# active sessions) end with ``id``, the tie-breaker every ordering ends with. Without it
# SQLite sorted each key's rows in a temporary B-tree ("RIGHT PART OF ORDER BY"): for ten
# stations the connectors took 154 us and the active sessions 114 us, with it 86 and 65
# (``python -m bench.nested_query``; the index is then also covering for the per-key
# subquery).
_V5 = """
DROP INDEX "connector_station_idx";
CREATE INDEX "connector_station_idx" ON "connector" ("station_id", "connector_id", "id");
DROP INDEX "session_station_state_idx";
CREATE INDEX "session_station_state_idx" ON "session" ("station_id", "state", "id");
"""

# Version 6: instance leases. A station records which instance holds its charger's
# websocket; when that instance's lease expires (it crashed), another one finds the
# stations it held by index and records them offline.
_V6 = """
ALTER TABLE "station" ADD COLUMN "connected_instance" TEXT;
CREATE INDEX "station_connected_instance_idx" ON "station" ("connected_instance");
CREATE TABLE "instance_lease" (
    "id" TEXT PRIMARY KEY NOT NULL,
    "created_at" INTEGER NOT NULL,
    "updated_at" INTEGER NOT NULL,
    "created_by" TEXT NOT NULL,
    "updated_by" TEXT NOT NULL,
    "host" TEXT NOT NULL,
    "started_at" INTEGER NOT NULL,
    "expires_at" INTEGER NOT NULL
) STRICT;
"""

# Version 7: a user's token epoch; tokens of an older epoch are revoked.
_V7 = """
ALTER TABLE "user" ADD COLUMN "token_epoch" INTEGER NOT NULL DEFAULT 0;
"""

# Version 8: sessions and payments keep whose books they are (the station's company, or
# for a station of no company its owner), so an operator still sees them after the
# station is removed; existing rows are filled in from their station where it still exists.
_V8 = """
ALTER TABLE "session" ADD COLUMN "company_id" TEXT;
ALTER TABLE "session" ADD COLUMN "station_owner_id" TEXT;
ALTER TABLE "payment" ADD COLUMN "company_id" TEXT;
ALTER TABLE "payment" ADD COLUMN "station_owner_id" TEXT;
UPDATE "session" SET ("company_id", "station_owner_id") = (
    SELECT "company_id", CASE WHEN "company_id" IS NULL THEN "owner_id" END FROM "station"
    WHERE "station"."id" = "session"."station_id");
UPDATE "payment" SET ("company_id", "station_owner_id") = (
    SELECT "company_id", CASE WHEN "company_id" IS NULL THEN "owner_id" END FROM "station"
    WHERE "station"."id" = "payment"."station_id");
CREATE INDEX "session_company_start_idx" ON "session" ("company_id", "start_time");
CREATE INDEX "session_station_owner_start_idx" ON "session" ("station_owner_id", "start_time");
CREATE INDEX "payment_company_idx" ON "payment" ("company_id");
CREATE INDEX "payment_station_owner_idx" ON "payment" ("station_owner_id");
"""

# Version 9: a license plate is unique per owner, not across all drivers (a shared car).
_V9 = """
DROP INDEX "vehicle_license_plate_key";
CREATE UNIQUE INDEX "vehicle_license_plate_owner_key" ON "vehicle" ("license_plate", "owner_id");
"""

# Version 10: amounts count each currency's own minor unit (whole yen, fils); before, every
# currency counted hundredths. Stored costs and payments are rescaled to keep their value.
# The codes are those of ``domain.currencies`` when this was written, frozen here.
_ZERO_DIGITS = ("'BIF', 'CLP', 'DJF', 'GNF', 'ISK', 'JPY', 'KMF', 'KRW', 'PYG', 'RWF', "
                "'UGX', 'UYI', 'VND', 'VUV', 'XAF', 'XOF', 'XPF'")
_THREE_DIGITS = "'BHD', 'IQD', 'JOD', 'KWD', 'LYD', 'OMR', 'TND'"
_FOUR_DIGITS = "'CLF', 'UYW'"


def _rescaled(table: str, column: str) -> str:
    return f"""
UPDATE "{table}" SET "{column}" = CASE
    WHEN "currency" IN ({_ZERO_DIGITS}) THEN CAST(ROUND("{column}" / 100.0) AS INTEGER)
    WHEN "currency" IN ({_THREE_DIGITS}) THEN "{column}" * 10
    WHEN "currency" IN ({_FOUR_DIGITS}) THEN "{column}" * 100
    ELSE "{column}" END
WHERE "{column}" IS NOT NULL;"""


_V10 = _rescaled("session", "cost_minor") + _rescaled("payment", "amount_minor") + "\n"

# Version 11: the charge point's own status, from its StatusNotifications for connector 0.
_V11 = """
ALTER TABLE "station" ADD COLUMN "status" TEXT;
ALTER TABLE "station" ADD COLUMN "error_code" TEXT;
ALTER TABLE "station" ADD COLUMN "status_at" INTEGER;
"""

# Version 12: when the live power was metered, so a frame flushed late does not replace it.
_V12 = """
ALTER TABLE "session" ADD COLUMN "power_at" INTEGER;
"""

# Version 13: which station metered a sample (a cpId may pass to a new station). Older
# samples keep NULL: back-filling every row would hold up the start of a large database.
_V13 = """
ALTER TABLE "meter_sample" ADD COLUMN "station_id" TEXT;
"""

# Version 14: company names are unique in the store too (the service's check alone let
# two requests at once through). Duplicates made before keep their history: every one but
# the oldest gets its id appended, for an admin to rename.
_V14 = """
UPDATE "company" SET "name" = "name" || ' (' || "id" || ')'
WHERE "id" NOT IN (SELECT MIN("id") FROM "company" GROUP BY "name");
CREATE UNIQUE INDEX "company_name_key" ON "company" ("name");
"""

# Version 15: which connection of a charger was recorded last, by a number the store
# draws (``Station.connection``): connects and disconnects of several instances are told
# apart by it, not by their clocks.
_V15 = """
ALTER TABLE "station" ADD COLUMN "connection" INTEGER;
"""

# Version 16: who blocked a card (``IdTag.blocked_by``). Its last writer stood for that,
# and any later write (a vehicle removed, unlinking it) made a block its owner's own.
# Blocked cards take their last writer, as the service read it before.
_V16 = """
ALTER TABLE "id_tag" ADD COLUMN "blocked_by" TEXT;
UPDATE "id_tag" SET "blocked_by" = "updated_by" WHERE "status" = 'Blocked';
"""

# Version 17: when a charger last booted (``Station.booted_at``): a restart of the service
# must not forget that a session open on an Available connector was lost with a reboot.
_V17 = """
ALTER TABLE "station" ADD COLUMN "booted_at" INTEGER;
"""

# Version 18: audit entries of what happens at a station (its record, commands to its
# charger, its reservations) record whose books they were written in
# (``AuditEntry.company_id``/``station_owner_id``), so a station handed to another company
# does not take its history (drivers' cards in commands) along. Older entries take their
# station's books now, where it still exists: what they were read by until then.
_V18 = """
ALTER TABLE "audit_entry" ADD COLUMN "company_id" TEXT;
ALTER TABLE "audit_entry" ADD COLUMN "station_owner_id" TEXT;
UPDATE "audit_entry" SET ("company_id", "station_owner_id") = (
    SELECT "company_id", CASE WHEN "company_id" IS NULL THEN "owner_id" END FROM "station"
    WHERE "station"."id" = "audit_entry"."entity_id")
WHERE "entity" = 'station';
UPDATE "audit_entry" SET ("company_id", "station_owner_id") = (
    SELECT "station"."company_id",
           CASE WHEN "station"."company_id" IS NULL THEN "station"."owner_id" END
    FROM "reservation" JOIN "station" ON "station"."id" = "reservation"."station_id"
    WHERE "reservation"."id" = "audit_entry"."entity_id")
WHERE "entity" = 'reservation';
CREATE INDEX "audit_entry_company_at_idx" ON "audit_entry" ("company_id", "at");
CREATE INDEX "audit_entry_station_owner_at_idx" ON "audit_entry" ("station_owner_id", "at");
"""

# Version 19: the charger's own code for an error (``StatusEvent.vendor_error_code``):
# before, it reached only the live ``faultReported`` event and was lost to fault reports.
# Older events keep NULL (their code was never stored).
_V19 = """
ALTER TABLE "status_event" ADD COLUMN "vendor_error_code" TEXT;
"""

# Version 20: the charge point's own state (connector 0) beside each connector's state
# interval. A connector's interval carries the point's status and error while the point
# is down, and fault reports could not tell that outage from the connector's own faults.
# Older intervals keep NULL: which of them were the point's is not known.
_V20 = """
ALTER TABLE "connector_interval" ADD COLUMN "point_status" TEXT;
ALTER TABLE "connector_interval" ADD COLUMN "point_error_code" TEXT;
"""

# Version 21: the telemetry history lists of the graph (``Connector.statusHistory``,
# ``Station.connectionHistory``) read each parent's first rows in order, from an index
# that ends with the ``id`` tie-breaker (as version 5 did for connectors): without it
# SQLite sorted the ties of every parent in a temporary B-tree, and a connector's history
# walked its whole station's. ``Session.meterValues`` keeps the (session, at) index:
# every MeterValues writes it, and one wider by the id cost a quarter of the store's
# sample inserts (``python -m bench.store_inserts``), while its ties are a reading's few
# sampled values, sorted on read. A session
# keeps its latest State of Charge (``Session.soc_percent``, set with its live energy),
# taken here from the samples of sessions recorded before, by the live rule (no phase,
# 0 to 100: ``metering.reading_soc``): one walk of the samples now
# rather than an index by measurand that every sample written would pay for.
_V21 = """
ALTER TABLE "session" ADD COLUMN "soc_percent" REAL;
ALTER TABLE "session" ADD COLUMN "soc_at" INTEGER;
""" + SOC_FROM_SAMPLES + """;
CREATE INDEX "status_event_station_connector_at_idx"
    ON "status_event" ("station_id", "connector_id", "at", "id");
DROP INDEX "connection_event_station_at_idx";
CREATE INDEX "connection_event_station_at_idx" ON "connection_event" ("station_id", "at", "id");
"""

# Version 22: outgoing webhooks (``Webhook``), a table of its own and its indexes.
# ``secret`` is kept in clear: each delivery's HMAC needs it (audit snapshots leave it out).
_V22 = """
CREATE TABLE "webhook" (
    "id" TEXT PRIMARY KEY NOT NULL,
    "created_at" INTEGER NOT NULL,
    "updated_at" INTEGER NOT NULL,
    "created_by" TEXT NOT NULL,
    "updated_by" TEXT NOT NULL,
    "url" TEXT NOT NULL,
    "events" TEXT NOT NULL,
    "secret" TEXT NOT NULL,
    "owner_id" TEXT NOT NULL,
    "company_id" TEXT,
    "description" TEXT,
    "active" INTEGER NOT NULL,
    "disabled_reason" TEXT,
    "last_status" INTEGER,
    "last_error" TEXT,
    "last_attempt_at" INTEGER,
    "last_success_at" INTEGER,
    "consecutive_failures" INTEGER NOT NULL,
    "dropped_events" INTEGER NOT NULL
) STRICT;
CREATE INDEX "webhook_company_idx" ON "webhook" ("company_id");
CREATE INDEX "webhook_owner_idx" ON "webhook" ("owner_id");
CREATE INDEX "webhook_active_idx" ON "webhook" ("active");
"""

# Version 23: reservations record whose books they were made in
# (``Reservation.company_id``/``station_owner_id``), as sessions do (version 8): a station
# handed to another company leaves them, drivers' cards and ids, with the old one. Older
# reservations take their station's books now, where it still exists: who read them
# until then. Operators read them by these columns.
_V23 = """
ALTER TABLE "reservation" ADD COLUMN "company_id" TEXT;
ALTER TABLE "reservation" ADD COLUMN "station_owner_id" TEXT;
UPDATE "reservation" SET ("company_id", "station_owner_id") = (
    SELECT "company_id", CASE WHEN "company_id" IS NULL THEN "owner_id" END FROM "station"
    WHERE "station"."id" = "reservation"."station_id");
CREATE INDEX "reservation_company_idx" ON "reservation" ("company_id");
CREATE INDEX "reservation_station_owner_idx" ON "reservation" ("station_owner_id");
"""

# Version 24: partial refunds. A payment counts what was paid back
# (``Payment.refunded_minor``); a payment refunded before was refunded whole.
_V24 = """
ALTER TABLE "payment" ADD COLUMN "refunded_minor" INTEGER NOT NULL DEFAULT 0;
UPDATE "payment" SET "refunded_minor" = "amount_minor" WHERE "status" = 'REFUNDED';
"""

# Version 25: refresh tokens (``RefreshFamily``, ``RefreshToken``). Self-contained (tables
# of their own), so it can be renumbered when migrations written in parallel are merged.
# A token is kept as its SHA-256 only; a user's expired ones are found by
# (user_id, expires_at) and deleted.
_V25 = """
CREATE TABLE "refresh_family" (
    "id" TEXT PRIMARY KEY NOT NULL,
    "created_at" INTEGER NOT NULL,
    "updated_at" INTEGER NOT NULL,
    "created_by" TEXT NOT NULL,
    "updated_by" TEXT NOT NULL,
    "user_id" TEXT NOT NULL,
    "token_epoch" INTEGER NOT NULL,
    "expires_at" INTEGER NOT NULL,
    "last_refreshed_at" INTEGER,
    "revoked_at" INTEGER
) STRICT;
CREATE INDEX "refresh_family_user_expires_idx" ON "refresh_family" ("user_id", "expires_at");
CREATE TABLE "refresh_token" (
    "id" TEXT PRIMARY KEY NOT NULL,
    "created_at" INTEGER NOT NULL,
    "updated_at" INTEGER NOT NULL,
    "created_by" TEXT NOT NULL,
    "updated_by" TEXT NOT NULL,
    "family_id" TEXT NOT NULL,
    "user_id" TEXT NOT NULL,
    "token_hash" TEXT NOT NULL,
    "expires_at" INTEGER NOT NULL,
    "used_at" INTEGER
) STRICT;
CREATE UNIQUE INDEX "refresh_token_token_hash_key" ON "refresh_token" ("token_hash");
CREATE INDEX "refresh_token_user_expires_idx" ON "refresh_token" ("user_id", "expires_at");
"""

# Version 26: idle fees and time-of-day energy prices. A tariff's idle price per minute,
# its grace and its optional cap (older tariffs bill no idle time: price 0, grace 0, no
# cap); a session's idle seconds as measured at its close (null for sessions closed
# before, and for those whose tariff bills no idle time). A tariff's price bands (JSON,
# none for older ones) and their time zone; a session's energy split by band at its
# close (null unless its tariff has bands). A tariff's scope, a plug standard or a power
# type (older ones price all plugs), and the plug a session was started on (unknown for
# older sessions: priced by tariffs for all plugs, as they were).
_V26 = """
ALTER TABLE "tariff" ADD COLUMN "idle_price_per_minute" TEXT NOT NULL DEFAULT '0';
ALTER TABLE "tariff" ADD COLUMN "idle_grace_minutes" INTEGER NOT NULL DEFAULT 0;
ALTER TABLE "tariff" ADD COLUMN "idle_fee_cap" TEXT;
ALTER TABLE "session" ADD COLUMN "idle_seconds" INTEGER;
ALTER TABLE "tariff" ADD COLUMN "energy_bands" TEXT NOT NULL DEFAULT '[]';
ALTER TABLE "tariff" ADD COLUMN "time_zone" TEXT;
ALTER TABLE "session" ADD COLUMN "band_energy_wh" TEXT;
ALTER TABLE "tariff" ADD COLUMN "connector_type" TEXT;
ALTER TABLE "tariff" ADD COLUMN "power_type" TEXT;
ALTER TABLE "session" ADD COLUMN "connector_type" TEXT;
"""

# Version 27: a session's energy register counted across a rollover or a reset of the
# meter (``Session.meter_offset_wh`` and the offset before, ``meter_at``, the reading
# that last moved the count, ``meter_anomaly``, flagged for review). Older sessions
# count as they did: no offset, no anomaly.
_V27 = """
ALTER TABLE "session" ADD COLUMN "meter_offset_wh" INTEGER NOT NULL DEFAULT 0;
ALTER TABLE "session" ADD COLUMN "meter_prior_offset_wh" INTEGER;
ALTER TABLE "session" ADD COLUMN "meter_at" INTEGER;
ALTER TABLE "session" ADD COLUMN "meter_anomaly" TEXT;
ALTER TABLE "session" ADD COLUMN "start_clock_behind" INTEGER NOT NULL DEFAULT 0;
ALTER TABLE "session" ADD COLUMN "start_refused" TEXT;
"""

# Version 28: signed meter values (``SignedMeterValue``: OCMF and other vendors' SignedData),
# kept as sent beside the numeric samples. Read by session oldest first (the ``id``
# tie-breaker too: a session has a handful, so the index costs its rare writes little),
# and by charger for those of unknown transactions (the policy's cpId scope).
_V28 = """
CREATE TABLE "signed_meter_value" (
    "id" TEXT PRIMARY KEY NOT NULL,
    "created_at" INTEGER NOT NULL,
    "updated_at" INTEGER NOT NULL,
    "created_by" TEXT NOT NULL,
    "updated_by" TEXT NOT NULL,
    "session_id" TEXT,
    "station_id" TEXT NOT NULL,
    "cp_id" TEXT NOT NULL,
    "connector_id" INTEGER NOT NULL,
    "transaction_id" INTEGER,
    "at" INTEGER NOT NULL,
    "measurand" TEXT NOT NULL,
    "context" TEXT,
    "location" TEXT,
    "phase" TEXT,
    "encoding" TEXT NOT NULL,
    "data" TEXT NOT NULL,
    "data_length" INTEGER NOT NULL,
    "truncated" INTEGER NOT NULL
) STRICT;
CREATE INDEX "signed_meter_value_session_at_idx"
    ON "signed_meter_value" ("session_id", "at", "id");
CREATE INDEX "signed_meter_value_cp_at_idx" ON "signed_meter_value" ("cp_id", "at");
"""

# Version 29: a plate is kept as entered ("B-MI 2024", ``Vehicle.license_plate``) and
# compared by its key, its letters and digits ("BMI2024", ``Vehicle.plate_key``): the
# unique rule per owner moves to the key. Plates stored before were stored as their key,
# so that is both their key and how they go on reading.
_V29 = """
ALTER TABLE "vehicle" ADD COLUMN "plate_key" TEXT NOT NULL DEFAULT '';
UPDATE "vehicle" SET "plate_key" = "license_plate";
DROP INDEX "vehicle_license_plate_owner_key";
CREATE UNIQUE INDEX "vehicle_plate_key_owner_key" ON "vehicle" ("plate_key", "owner_id");
"""

# Version 30: site load management. Sites (``Site``: chargers behind one grid connection,
# a company's), the station's site (none for stations before), and each active session's
# share of its site (``SiteAllocation``, its id its session's), read by site.
_V30 = """
CREATE TABLE "site" (
    "id" TEXT PRIMARY KEY NOT NULL,
    "created_at" INTEGER NOT NULL,
    "updated_at" INTEGER NOT NULL,
    "created_by" TEXT NOT NULL,
    "updated_by" TEXT NOT NULL,
    "name" TEXT NOT NULL,
    "company_id" TEXT NOT NULL,
    "max_power_kw" REAL NOT NULL,
    "min_power_kw" REAL NOT NULL,
    "unit" TEXT NOT NULL,
    "voltage" REAL NOT NULL,
    "phases" INTEGER NOT NULL
) STRICT;
CREATE INDEX "site_company_idx" ON "site" ("company_id");
ALTER TABLE "station" ADD COLUMN "site_id" TEXT;
CREATE INDEX "station_site_idx" ON "station" ("site_id");
CREATE TABLE "site_allocation" (
    "id" TEXT PRIMARY KEY NOT NULL,
    "created_at" INTEGER NOT NULL,
    "updated_at" INTEGER NOT NULL,
    "created_by" TEXT NOT NULL,
    "updated_by" TEXT NOT NULL,
    "site_id" TEXT NOT NULL,
    "company_id" TEXT NOT NULL,
    "session_id" TEXT NOT NULL,
    "station_id" TEXT NOT NULL,
    "cp_id" TEXT NOT NULL,
    "connector_id" INTEGER NOT NULL,
    "transaction_id" INTEGER NOT NULL,
    "power_kw" REAL NOT NULL,
    "bound_kw" REAL NOT NULL,
    "limit" REAL,
    "unit" TEXT NOT NULL,
    "limit_sent_at" INTEGER,
    "answer" TEXT
) STRICT;
CREATE INDEX "site_allocation_site_idx" ON "site_allocation" ("site_id");
CREATE INDEX "site_allocation_company_idx" ON "site_allocation" ("company_id");
"""

# Version 31: what a station's boots are answered with (``Station.heartbeat_interval``,
# the HeartbeatInterval its charger accepted: a boot answered with the global one set it
# back, QA ops s6), and the whole of a status report as the connector (and, for
# connector 0, the station) holds it: ``info`` and ``vendor_error_code``, so a report
# that repeats the state is told from one that changes it (QA ops s7, s4). Older rows
# keep NULL: the global interval; no code known.
_V31 = """
ALTER TABLE "station" ADD COLUMN "heartbeat_interval" INTEGER;
ALTER TABLE "station" ADD COLUMN "info" TEXT;
ALTER TABLE "station" ADD COLUMN "vendor_error_code" TEXT;
ALTER TABLE "connector" ADD COLUMN "vendor_error_code" TEXT;
"""

# Version 32: the central system's own outages (stopped, crashed) in its chargers' history.
# A disconnect recorded for one says so (``ConnectionEvent.server_outage``), and the state
# stretch it opens, until the charger's next connection, is unknown time
# (``ConnectorInterval.known`` false). History recorded before counts as it did: known,
# every disconnect the charger's.
_V32 = """
ALTER TABLE "connector_interval" ADD COLUMN "known" INTEGER NOT NULL DEFAULT 1;
ALTER TABLE "connection_event" ADD COLUMN "server_outage" INTEGER NOT NULL DEFAULT 0;
"""

# Version 33: what each station's local authorization list
# holds (``LocalList``: the version its charger accepted last, one per station, its id
# the station's; ``LocalListEntry``: per station and tag, the status held, the one
# wanted instead and the card the tag named when the list was accepted), so a blocked
# card is withdrawn from the lists that accept it; the entries of a card are found by
# its id. (``card_id`` and its index replaced the tag index in place, the day 33 was
# written and before any release: a tag string is nobody's, QA review 17b.) Cards by
# group (``id_tag.parent_tag``): whose group a parentIdTag already is; by expiry: those
# that expired since the last sweep.
_V33 = """
CREATE TABLE "local_list" (
    "id" TEXT PRIMARY KEY NOT NULL,
    "created_at" INTEGER NOT NULL,
    "updated_at" INTEGER NOT NULL,
    "created_by" TEXT NOT NULL,
    "updated_by" TEXT NOT NULL,
    "station_id" TEXT NOT NULL,
    "cp_id" TEXT NOT NULL,
    "version" INTEGER NOT NULL
) STRICT;
CREATE TABLE "local_list_entry" (
    "id" TEXT PRIMARY KEY NOT NULL,
    "created_at" INTEGER NOT NULL,
    "updated_at" INTEGER NOT NULL,
    "created_by" TEXT NOT NULL,
    "updated_by" TEXT NOT NULL,
    "station_id" TEXT NOT NULL,
    "cp_id" TEXT NOT NULL,
    "tag" TEXT NOT NULL,
    "status" TEXT NOT NULL,
    "wanted" TEXT,
    "card_id" TEXT
) STRICT;
CREATE UNIQUE INDEX "local_list_entry_station_id_tag_key"
    ON "local_list_entry" ("station_id", "tag");
CREATE INDEX "local_list_entry_card_id_idx" ON "local_list_entry" ("card_id");
CREATE INDEX "id_tag_parent_tag_idx" ON "id_tag" ("parent_tag");
CREATE INDEX "id_tag_expires_idx" ON "id_tag" ("expires_at");
"""

# Version 34: a list in NAME order sorts by a key stored beside the name
# (``validation.name_key``: case folded, accents dropped), which the domain writes with
# every name; SQLite compares the names themselves by their bytes ("Zoo" before "aachen"
# and "Ärztehaus"). Older rows get theirs from the same function, registered for the
# migrations as ``chargegraph_name_key`` (``MIGRATION_FUNCTIONS``). Stations and users are
# the long lists, indexed in that order with the ``id`` tie-breaker.
_V34 = """
ALTER TABLE "company" ADD COLUMN "name_key" TEXT NOT NULL DEFAULT '';
UPDATE "company" SET "name_key" = chargegraph_name_key("name");
ALTER TABLE "user" ADD COLUMN "name_key" TEXT NOT NULL DEFAULT '';
UPDATE "user" SET "name_key" = chargegraph_name_key("name");
CREATE INDEX "user_name_key_idx" ON "user" ("name_key", "id");
ALTER TABLE "station" ADD COLUMN "name_key" TEXT NOT NULL DEFAULT '';
UPDATE "station" SET "name_key" = chargegraph_name_key("name");
CREATE INDEX "station_name_key_idx" ON "station" ("name_key", "id");
"""

# Version 35: the open unknown intervals (the central system's outage, not yet ended by a
# connection), which every instance lease round looks for (``settle_outages``). Partial:
# only open intervals are in it (one per connector), however long the history.
_V35 = """
CREATE INDEX "connector_interval_open_unknown_idx"
    ON "connector_interval" ("known", "end", "start") WHERE "end" IS NULL;
"""

# Version 36: outages of chargers as outgoing webhooks see them (``OfflineNotice``): a
# ``station.offline`` waits out a grace and a ``station.online`` follows only a delivered
# one, decided by whichever instance gets there first, also after a restart. The due ones
# are found by state and time, a station's open ones by station.
_V36 = """
CREATE TABLE "offline_notice" (
    "id" TEXT PRIMARY KEY NOT NULL,
    "created_at" INTEGER NOT NULL,
    "updated_at" INTEGER NOT NULL,
    "created_by" TEXT NOT NULL,
    "updated_by" TEXT NOT NULL,
    "station_id" TEXT NOT NULL,
    "cp_id" TEXT NOT NULL,
    "connection" INTEGER,
    "offline_at" INTEGER NOT NULL,
    "state" TEXT NOT NULL
) STRICT;
CREATE INDEX "offline_notice_state_offline_at_idx" ON "offline_notice" ("state", "offline_at");
CREATE INDEX "offline_notice_station_idx" ON "offline_notice" ("station_id", "state");
"""

# Version 37: refunds
# as records of their own (``Refund``), so reports book a refund when it was made, not
# when its session ended, and show it beside the gross revenue. A payment refunded before
# kept only how much (``refunded_minor``): that sum is one refund, dated by the payment's
# last write (a refund is the last thing a payment's life writes), its id the payment's
# (one per payment, and the same on MongoDB). Indexed as analytics read them: by time
# within each viewer's scope (an operator's books, a driver's own, an admin's all), and
# by payment. And payments left PENDING at 0 (a late stop corrected their session to
# cost nothing) are VOIDED: nothing is left to collect.
_V37 = """
CREATE TABLE "refund" (
    "id" TEXT PRIMARY KEY NOT NULL,
    "created_at" INTEGER NOT NULL,
    "updated_at" INTEGER NOT NULL,
    "created_by" TEXT NOT NULL,
    "updated_by" TEXT NOT NULL,
    "payment_id" TEXT NOT NULL,
    "session_id" TEXT NOT NULL,
    "station_id" TEXT NOT NULL,
    "cp_id" TEXT NOT NULL,
    "connector_id" INTEGER NOT NULL,
    "user_id" TEXT,
    "vehicle_id" TEXT,
    "amount_minor" INTEGER NOT NULL,
    "currency" TEXT NOT NULL,
    "at" INTEGER NOT NULL,
    "provider_ref" TEXT,
    "company_id" TEXT,
    "station_owner_id" TEXT
) STRICT;
CREATE INDEX "refund_payment_idx" ON "refund" ("payment_id");
CREATE INDEX "refund_at_idx" ON "refund" ("at");
CREATE INDEX "refund_user_at_idx" ON "refund" ("user_id", "at");
CREATE INDEX "refund_company_at_idx" ON "refund" ("company_id", "at");
CREATE INDEX "refund_station_owner_at_idx" ON "refund" ("station_owner_id", "at");
INSERT INTO "refund" (
    "id", "created_at", "updated_at", "created_by", "updated_by", "payment_id",
    "session_id", "station_id", "cp_id", "connector_id", "user_id", "vehicle_id",
    "amount_minor", "currency", "at", "provider_ref", "company_id", "station_owner_id")
SELECT "p"."id", "p"."updated_at", "p"."updated_at", "p"."updated_by", "p"."updated_by",
    "p"."id", "p"."session_id", "p"."station_id", "s"."cp_id", "s"."connector_id",
    "p"."user_id", "s"."vehicle_id", "p"."refunded_minor", "p"."currency",
    "p"."updated_at", "p"."provider_ref", "p"."company_id", "p"."station_owner_id"
FROM "payment" AS "p" JOIN "session" AS "s" ON "s"."id" = "p"."session_id"
WHERE "p"."refunded_minor" > 0;
UPDATE "payment" SET "status" = 'VOIDED' WHERE "status" = 'PENDING' AND "amount_minor" = 0;
"""

# Version 38: a station's firmware and diagnostics statuses
# with when they came (``Station.firmware_status_at``, ``diagnostics_status_at``), and
# the last firmware rollout its charger accepted (``firmware_requested_at``, ``_location``,
# ``_retrieve_date``): "Installed" alone did not say whether it was today's update or last
# year's. Statuses stored before keep NULL: when they came is not known.
_V38 = """
ALTER TABLE "station" ADD COLUMN "firmware_status_at" INTEGER;
ALTER TABLE "station" ADD COLUMN "diagnostics_status_at" INTEGER;
ALTER TABLE "station" ADD COLUMN "firmware_requested_at" INTEGER;
ALTER TABLE "station" ADD COLUMN "firmware_location" TEXT;
ALTER TABLE "station" ADD COLUMN "firmware_retrieve_date" INTEGER;
"""

# Version 39: each station's charger configuration as last known (``ConfigurationKey``:
# from GetConfiguration answers and the ChangeConfigurations it took), one per station and
# key without regard to case (``folded_key``), which is also a station's list's order.
# Nothing to fill in: no configuration was kept before.
_V39 = """
CREATE TABLE "configuration_key" (
    "id" TEXT PRIMARY KEY NOT NULL,
    "created_at" INTEGER NOT NULL,
    "updated_at" INTEGER NOT NULL,
    "created_by" TEXT NOT NULL,
    "updated_by" TEXT NOT NULL,
    "station_id" TEXT NOT NULL,
    "cp_id" TEXT NOT NULL,
    "key" TEXT NOT NULL,
    "folded_key" TEXT NOT NULL,
    "value" TEXT,
    "readonly" INTEGER NOT NULL,
    "secret" INTEGER NOT NULL,
    "read_at" INTEGER,
    "changed_at" INTEGER,
    "reboot_required" INTEGER NOT NULL
) STRICT;
CREATE UNIQUE INDEX "configuration_key_station_id_folded_key_key"
    ON "configuration_key" ("station_id", "folded_key");
"""

# Version 40: the data earlier texts of three released migrations left otherwise than
# today's (QA s18, upgrade; ``reconcile.py`` adds what they left out of the schema), made
# right wherever it is still as they left it, and a no-op elsewhere:
# * 16 backfilled ``blocked_by`` for status 'BLOCKED', which no row has ('Blocked'): a
#   card blocked before kept no blocker, so its driver could not unblock it again.
# * 8 gave a company station's sessions and payments its owner's books too: one who left
#   the company still saw them (``books_of``: a company's station has no owner's books);
#   37 copied them into the refunds it made of those payments (reviewer s18).
# * 21 took a State of Charge from per-phase or glitching samples (beyond 0..100, or one
#   of a phase: the session's value is one such sample's).
_V40 = """
UPDATE "id_tag" SET "blocked_by" = "updated_by"
    WHERE "status" = 'Blocked' AND "blocked_by" IS NULL;
UPDATE "session" SET "station_owner_id" = NULL
    WHERE "company_id" IS NOT NULL AND "station_owner_id" IS NOT NULL;
UPDATE "payment" SET "station_owner_id" = NULL
    WHERE "company_id" IS NOT NULL AND "station_owner_id" IS NOT NULL;
UPDATE "refund" SET "station_owner_id" = NULL
    WHERE "company_id" IS NOT NULL AND "station_owner_id" IS NOT NULL;
""" + SOC_FROM_SAMPLES + """
    WHERE "soc_percent" NOT BETWEEN 0 AND 100 OR EXISTS (
        SELECT 1 FROM "meter_sample" WHERE "meter_sample"."session_id" = "session"."id"
          AND "measurand" = 'SoC' AND "phase" IS NOT NULL
          AND "at" = "session"."soc_at" AND "value" = "session"."soc_percent");
"""

# Version 41: revenue is what the payments billed, booked on the day each was opened
# (``Payment.created_at``, the invoice date), not the sessions' cost by when they ended:
# a late stop rewrote those after the money moved. Payments carry their session's
# charger, connector and vehicle, as refunds do (migration 37), so reports filter and
# group them by fields of their own; older ones copy them from their session (sessions
# are never removed). Indexed as analytics read them: by time within each viewer's
# scope, which makes the single-field indexes of the same scopes redundant.
_V41 = """
ALTER TABLE "payment" ADD COLUMN "cp_id" TEXT;
ALTER TABLE "payment" ADD COLUMN "connector_id" INTEGER;
ALTER TABLE "payment" ADD COLUMN "vehicle_id" TEXT;
UPDATE "payment" SET ("cp_id", "connector_id", "vehicle_id") = (
    SELECT "cp_id", "connector_id", "vehicle_id" FROM "session"
    WHERE "session"."id" = "payment"."session_id");
DROP INDEX "payment_user_idx";
DROP INDEX "payment_company_idx";
DROP INDEX "payment_station_owner_idx";
CREATE INDEX "payment_created_idx" ON "payment" ("created_at");
CREATE INDEX "payment_user_created_idx" ON "payment" ("user_id", "created_at");
CREATE INDEX "payment_company_created_idx" ON "payment" ("company_id", "created_at");
CREATE INDEX "payment_station_owner_created_idx"
    ON "payment" ("station_owner_id", "created_at");
"""

# Version 42: a station whose charger reported more configuration keys than are kept
# (``Station.configuration_truncated``: only the first 2,000 by key are). Before, every
# key was kept: a station holding more than 2,000 is flagged (its list shows the first
# 2,000 by key, what its next read keeps, deleting the others), every other reads false.
_V42 = """
ALTER TABLE "station" ADD COLUMN "configuration_truncated" INTEGER NOT NULL DEFAULT 0;
UPDATE "station" SET "configuration_truncated" = 1 WHERE "id" IN (
    SELECT "station_id" FROM "configuration_key" GROUP BY "station_id"
    HAVING COUNT(*) > 2000);
"""

# Version 43: an outage's ``station.online`` goes to
# whoever got its ``station.offline`` (``OfflineNotice.announced_at``, ``company_id``,
# ``owner_id``: the station's ownership when it was announced), not to a company the
# station was handed to meanwhile; and an outage a look found already ended
# (``RETURNED``) keeps the connection the station had then (``returned_connection``),
# so that only the connections up to it decide it. Nothing to fill in: a notice
# announced before keeps NULL, and its online goes by the station's ownership at the
# connection, as before.
_V43 = """
ALTER TABLE "offline_notice" ADD COLUMN "announced_at" INTEGER;
ALTER TABLE "offline_notice" ADD COLUMN "company_id" TEXT;
ALTER TABLE "offline_notice" ADD COLUMN "owner_id" TEXT;
ALTER TABLE "offline_notice" ADD COLUMN "returned_connection" INTEGER;
"""

# Version 44: what a card usable again puts back in a charger's local list
# (``LocalListEntry.restore``): "Accepted" where a withdrawal of ours had the list accept
# the card as Blocked or Expired on top of the list as we recorded it, "Removed" where it
# landed on a list that had moved on without us. Entries withdrawn before stay NULL:
# which of them the withdrawal changed is not known, so they stay as the list holds them.
_V44 = """
ALTER TABLE "local_list_entry" ADD COLUMN "restore" TEXT;
"""

# Version 45: when a MeterValues first named a session after its charger's latest boot
# (``Session.named_at``, our clock): a transaction its charger still meters is not closed
# as lost with the reboot (QA s20). Nothing to fill in: a session recorded before reads
# NULL, and is judged by the reboot's check as before.
_V45 = """
ALTER TABLE "session" ADD COLUMN "named_at" INTEGER;
"""

# Version 46: an open state interval's "now" on its charger's timeline
# (``ConnectorInterval.observed_at``: when, on our clock, the charger's clock read its
# start). Analytics counted an open interval up to our clock's now while its start sat
# on the charger's: hours of charging for a charger whose clock is behind (QA s20,
# time). Nothing to fill in: history recorded before keeps NULL and counts up to our
# now, as it did.
_V46 = """
ALTER TABLE "connector_interval" ADD COLUMN "observed_at" INTEGER;
"""

# Version 47: audit entries record whose the changed record was when it changed
# (``AuditEntry.holder_id``, the person it belonged to; ``company_id`` and
# ``station_owner_id``, its books, now for every company-held kind: ``base.Service._whose``).
# Removals were read by their actor alone, who kept them after moving to another company
# or being demoted, while the record's company and its driver could not read them (QA
# s21). Older entries take what their images say: a user's company and a session's,
# payment's or refund's books before the change, else after it (as the service writes
# them); a person from the entry (a user), its images' owner (a car) or driver. What the
# images do not say is taken as it stands now, which is what read these entries until
# then: a card's or a car's company is its holder's now, a connector's or a station
# tariff's books its station's now (none when it is gone), as version 18 did for
# stations. Entries of records of no one (a station's commands, tariffs of a removed
# station) keep none: admins read them.
_V47 = """
ALTER TABLE "audit_entry" ADD COLUMN "holder_id" TEXT;
UPDATE "audit_entry" SET "holder_id" = "entity_id" WHERE "entity" = 'user';
UPDATE "audit_entry" SET "holder_id" = COALESCE(json_extract("before", '$.owner_id'),
                                                json_extract("after", '$.owner_id'))
WHERE "entity" = 'vehicle';
UPDATE "audit_entry" SET "holder_id" = COALESCE(json_extract("before", '$.user_id'),
                                                json_extract("after", '$.user_id'))
WHERE "entity" IN ('id_tag', 'session', 'reservation', 'payment', 'refund');
UPDATE "audit_entry" SET "company_id" = "entity_id" WHERE "entity" = 'company';
UPDATE "audit_entry" SET "company_id" = COALESCE(json_extract("before", '$.company_id'),
                                                 json_extract("after", '$.company_id'))
WHERE "entity" = 'user' OR ("entity" = 'tariff' AND COALESCE(
    json_extract("before", '$.company_id'), json_extract("after", '$.company_id')) IS NOT NULL);
UPDATE "audit_entry" SET "company_id" = (
    SELECT "company_id" FROM "user" WHERE "user"."id" = "audit_entry"."holder_id")
WHERE "entity" IN ('id_tag', 'vehicle');
UPDATE "audit_entry" SET ("company_id", "station_owner_id") = (
    SELECT "company_id", CASE WHEN "company_id" IS NULL THEN "owner_id" END FROM "station"
    WHERE "station"."id" = COALESCE(json_extract("audit_entry"."before", '$.station_id'),
                                    json_extract("audit_entry"."after", '$.station_id')))
WHERE "entity" = 'connector' OR ("entity" = 'tariff' AND "company_id" IS NULL);
UPDATE "audit_entry" SET ("company_id", "station_owner_id") = (
    json_extract(CASE WHEN COALESCE(json_extract("before", '$.company_id'),
                                    json_extract("before", '$.station_owner_id')) IS NOT NULL
                      THEN "before" ELSE "after" END, '$.company_id'),
    json_extract(CASE WHEN COALESCE(json_extract("before", '$.company_id'),
                                    json_extract("before", '$.station_owner_id')) IS NOT NULL
                      THEN "before" ELSE "after" END, '$.station_owner_id'))
WHERE "entity" IN ('session', 'payment', 'refund');
UPDATE "audit_entry" SET ("company_id", "station_owner_id") = (
    json_extract(COALESCE("before", "after"), '$.company_id'),
    CASE WHEN json_extract(COALESCE("before", "after"), '$.company_id') IS NULL
         THEN json_extract(COALESCE("before", "after"), '$.owner_id') END)
WHERE "entity" = 'station' AND "company_id" IS NULL AND "station_owner_id" IS NULL
  AND COALESCE("before", "after") IS NOT NULL;
UPDATE "audit_entry" SET "company_id" = NULL
WHERE "entity" = 'vehicle' AND "action" = 'UPDATE' AND "actor" = "holder_id"
  AND json_extract("before", '$.owner_id') IS json_extract("after", '$.owner_id')
  AND json_extract("before", '$.license_plate') IS json_extract("after", '$.license_plate')
  AND json_extract("before", '$.make') IS json_extract("after", '$.make')
  AND json_extract("before", '$.model') IS json_extract("after", '$.model');
CREATE INDEX "audit_entry_holder_at_idx" ON "audit_entry" ("holder_id", "at");
"""

# Version 48: the fallback a station's site last sent its charger
# (``Station.site_fallback_kw``, a TxDefaultProfile): what a charger may still hold once
# its station left the site, to be removed. Older rows: none sent.
_V48 = """
ALTER TABLE "station" ADD COLUMN "site_fallback_kw" REAL;
"""

# Version 49: a removed car is kept as its sessions' car (``Vehicle.removed_at``): its
# removal deleted it, and history (a session's car, the CSV export, ``node(id:)``) read
# null while a filter by its id still matched (QA s22). A plate is unique per owner among
# the cars kept, so a removed car's plate may be added again. Nothing to fill in: every
# car stored was kept. (49 and 50 are other branches'.)
_V49 = """
ALTER TABLE "vehicle" ADD COLUMN "removed_at" INTEGER;
DROP INDEX "vehicle_plate_key_owner_key";
CREATE UNIQUE INDEX "vehicle_plate_key_owner_kept_key" ON "vehicle" ("plate_key", "owner_id")
    WHERE "removed_at" IS NULL;
"""

# Version 50: an account erased (``User.erased_at``, the right to erasure): its personal
# fields anonymised, its sessions and payments kept under its id. Nothing to fill in: no
# account was erased before.
_V50 = """
ALTER TABLE "user" ADD COLUMN "erased_at" INTEGER;
"""

# Version 51: the last diagnostics upload a station's charger accepted
# (``Station.diagnostics_requested_at``, ``diagnostics_file_name``), and whether the one
# before was still uploading then (``diagnostics_previous_uploading``): an accepted
# GetDiagnostics left the last upload's "Uploaded" showing (QA). Older rows: none
# recorded.
_V51 = """
ALTER TABLE "station" ADD COLUMN "diagnostics_requested_at" INTEGER;
ALTER TABLE "station" ADD COLUMN "diagnostics_file_name" TEXT;
ALTER TABLE "station" ADD COLUMN "diagnostics_previous_uploading" INTEGER NOT NULL DEFAULT 0;
"""

# Version 52: remote starts whose StartTransaction has not come yet (``PendingStart``): a
# card or a connector with one live is not started again (QA s23: three starts with one
# card before the first StartTransaction were all ACCEPTED, two then refused ConcurrentTx
# at the charger). Self-contained (a table of its own); found by card (a start's checks,
# the StartTransaction that consumes it), by station (the plug checks) and by expiry
# (the sweep).
_V52 = """
CREATE TABLE "pending_start" (
    "id" TEXT PRIMARY KEY NOT NULL,
    "created_at" INTEGER NOT NULL,
    "updated_at" INTEGER NOT NULL,
    "created_by" TEXT NOT NULL,
    "updated_by" TEXT NOT NULL,
    "station_id" TEXT NOT NULL,
    "cp_id" TEXT NOT NULL,
    "connector_id" INTEGER,
    "id_tag" TEXT NOT NULL,
    "user_id" TEXT,
    "vehicle_id" TEXT,
    "expires_at" INTEGER NOT NULL,
    "settled_at" INTEGER
) STRICT;
CREATE INDEX "pending_start_id_tag_expires_idx" ON "pending_start" ("id_tag", "expires_at");
CREATE INDEX "pending_start_station_expires_idx" ON "pending_start" ("station_id", "expires_at");
CREATE INDEX "pending_start_expires_idx" ON "pending_start" ("expires_at");
"""

# Version 53: a scrub of the WAL owed (``writer.owe_scrub``, after an erasure): kept only
# in the memory of the instance that owed it, it was dropped when that instance stopped
# while another still had the file open, and the erased person's old page images stayed
# in the -wal file (review r2). One row at most, its ``seq`` raised by each erasure; any
# instance's writer performs the scrub it finds owed and deletes the row.
_V53 = """
CREATE TABLE "scrub_owed" (
    "id" INTEGER PRIMARY KEY NOT NULL CHECK ("id" = 1),
    "seq" INTEGER NOT NULL
) STRICT;
"""

# Version 54: the phases a connector charges on (``Connector.phases``): a site's limit in
# amperes was converted with the site's phases for every connector, and a single-phase
# wallbox was sent a third of its current (QA sites s5). Older rows: null, the site's.
_V54 = """
ALTER TABLE "connector" ADD COLUMN "phases" INTEGER;
"""

# Version 55: company names are unique by their identity in the store
# (``Company.name_identity``, ``validation.name_identity``: case folded, NFKC), not only
# by the service's check before its write, which two creations at once both passed (review
# r2: "Bäckerei X" and "BÄCKEREI X"). Older rows get theirs from the same function
# (``chargegraph_name_identity``); of companies whose names were one this way before, the
# oldest keeps the identity and the others are left without one (NULL, which no unique
# index counts) and logged for an admin to rename (``chargegraph_identity_left``): their
# names and histories stay.
_V55 = """
ALTER TABLE "company" ADD COLUMN "name_identity" TEXT;
UPDATE "company" SET "name_identity" = chargegraph_name_identity("name")
WHERE "id" IN (SELECT MIN("id") FROM "company" GROUP BY chargegraph_name_identity("name"));
UPDATE "company" SET "name_identity" = chargegraph_identity_left("id", "name")
WHERE "name_identity" IS NULL;
CREATE UNIQUE INDEX "company_name_identity_key" ON "company" ("name_identity");
"""

# Version 56: a command entry's command in a column of its own (``AuditEntry.command``),
# so a station's profile commands by people are found in the query (``SiteLoad._overridden``:
# read from the latest entries of every kind, a person's override was pushed out by the
# site's own traffic to the station, review r4). Older entries get theirs from the image.
_V56 = """
ALTER TABLE "audit_entry" ADD COLUMN "command" TEXT;
UPDATE "audit_entry" SET "command" = json_extract("after", '$.command')
WHERE "action" = 'COMMAND';
CREATE INDEX "audit_entry_entity_command_at_idx" ON "audit_entry" ("entity_id", "command", "at");
"""

# Version 57: webhook deliveries handed over at a graceful stop (``PendingDelivery``):
# what an instance still had queued or waiting for a retry, with its body, delivery id,
# tries made and next try's time, for the next instance to claim (a guarded delete) and
# resume in order. Read oldest first (``queued_at``, ``id``), and a webhook's together,
# in that order.
_V57 = """
CREATE TABLE "pending_delivery" (
    "id" TEXT PRIMARY KEY NOT NULL,
    "created_at" INTEGER NOT NULL,
    "updated_at" INTEGER NOT NULL,
    "created_by" TEXT NOT NULL,
    "updated_by" TEXT NOT NULL,
    "webhook_id" TEXT NOT NULL,
    "delivery_id" TEXT NOT NULL,
    "event_type" TEXT NOT NULL,
    "body" TEXT NOT NULL,
    "event" TEXT NOT NULL,
    "tries_made" INTEGER NOT NULL,
    "due_at" INTEGER NOT NULL,
    "queued_at" INTEGER NOT NULL
) STRICT;
CREATE INDEX "pending_delivery_queued_at_idx" ON "pending_delivery" ("queued_at", "id");
CREATE INDEX "pending_delivery_webhook_idx"
    ON "pending_delivery" ("webhook_id", "queued_at", "id");
"""

# Version 58: a price list version's removal (``Tariff.valid_until``): from then on its
# owner has no price list in its scope (a station back on its company's prices). Older
# versions were never removed: null.
_V58 = """
ALTER TABLE "tariff" ADD COLUMN "valid_until" INTEGER;
"""

# Version 59: the lock of a claim of one webhook's handed-over deliveries
# (``DeliveryClaim``): its id is the webhook's, so a second claim's insert fails on the
# primary key while the first deletes the webhook's ``pending_delivery`` rows.
_V59 = """
CREATE TABLE "delivery_claim" (
    "id" TEXT PRIMARY KEY NOT NULL,
    "created_at" INTEGER NOT NULL,
    "updated_at" INTEGER NOT NULL,
    "created_by" TEXT NOT NULL,
    "updated_by" TEXT NOT NULL,
    "claimant" TEXT NOT NULL,
    "claimed_at" INTEGER NOT NULL
) STRICT;
"""

# Version 60: the registration a station's charger acts on (``Station.charger_registration``):
# the answer to its last BootNotification, which it keeps until its next boot. A station
# made Pending or Rejected mid-session had its charger's stop, meter values and reports
# judged by a registration the charger had not been told (review s25). Older rows: null,
# the station's registration; but a station with a session open (ACTIVE, or awaiting its
# late stop) whose charger booted was charging, so its charger was told Accepted: one
# made Pending or Rejected mid-session under schema 59 (whose stop was taken then) would
# otherwise have its stop refused after the upgrade, the session left open and unbilled
# (review s25). Also when it booted after the session started (review s26): that boot's
# answer is not known, but the session was open across it (a reboot mid-session, a stop
# still queued), and the two mistakes are not alike. Told Pending or Rejected, taken as
# Accepted: it boots again within the retry interval it was given (``RETRY_BOOT_S``),
# which writes what it is told, and meanwhile is sent an operator's stop or unlock it
# does not answer. Told Accepted, taken as the station's Pending or Rejected: its stop
# refused until a boot an Accepted charger may not make for weeks, the session unbilled.
# Not a station whose charger never booted (``booted_at`` null): it was told nothing,
# and Accepted would never be written over (it does not boot), admitting its starts on
# a station made Rejected for good, what review s25 closed; the station's registration
# judges it (a stop refused meanwhile is ended by ``endSession``). MongoDB:
# ``migrations._charger_registrations``.
_V60 = """
ALTER TABLE "station" ADD COLUMN "charger_registration" TEXT;
UPDATE "station" SET "charger_registration" = 'Accepted'
WHERE "station"."booted_at" IS NOT NULL AND EXISTS (
  SELECT 1 FROM "session"
  WHERE "session"."station_id" = "station"."id"
    AND ("session"."state" = 'ACTIVE'
         OR ("session"."state" = 'COMPLETED' AND "session"."stop_reason" IS NULL)));
"""

#: Migration 61's cars to remove: kept cars of an owner who keeps an older one (by
#: ``created_at``, then ``id``) of the same compatibility key. Read the same way before
#: and during their removal: the oldest of a key, never removed, stays older than each.
_TWINS = """
SELECT "car"."id" FROM "vehicle" AS "car"
WHERE "car"."removed_at" IS NULL AND EXISTS (
    SELECT 1 FROM "vehicle" AS "older"
    WHERE "older"."owner_id" = "car"."owner_id" AND "older"."removed_at" IS NULL
      AND ("older"."created_at", "older"."id") < ("car"."created_at", "car"."id")
      AND chargegraph_plate_key("older"."license_plate")
          = chargegraph_plate_key("car"."license_plate"))"""

# Version 61: a plate is kept and compared in its compatibility form (NFKC,
# ``validation.plate_shown``: QA s25, a full-width "ＢＭＩ２０２４" typed with a phone's
# keyboard was its owner's second car beside "BMI2024", and no search found it). Every car
# stored before takes that form and its key. Where one owner kept several cars of one key
# (the cars the bug made), the oldest (``created_at``, then ``id``) is kept and the others
# are removed as ``removeVehicle`` removes a car (``removed_at``, stamped by the system at
# the migration's time), logged; their cards are linked to the car kept, the same car.
# Removed cars are under no rule and all take the form. (Review s25: the version that left
# such a car as stored kept its old key for good, so its owner could remove the plain one
# and add that plate again, two cars of one plate once more; and MongoDB, converting the
# first by id, ended otherwise. MongoDB's ``migrations._plate_forms`` applies this rule.)
_V61 = """
UPDATE "id_tag" SET "vehicle_id" = (
    SELECT "kept"."id" FROM "vehicle" AS "car" JOIN "vehicle" AS "kept"
        ON "kept"."owner_id" = "car"."owner_id" AND "kept"."removed_at" IS NULL
       AND chargegraph_plate_key("kept"."license_plate")
           = chargegraph_plate_key("car"."license_plate")
    WHERE "car"."id" = "id_tag"."vehicle_id"
    ORDER BY "kept"."created_at", "kept"."id" LIMIT 1),
  "updated_at" = CAST(ROUND((julianday('now') - 2440587.5) * 86400000) AS INTEGER) * 1000,
  "updated_by" = 'system'
WHERE "vehicle_id" IN (""" + _TWINS + """);
UPDATE "vehicle" SET
  "removed_at" = CAST(ROUND((julianday('now') - 2440587.5) * 86400000) AS INTEGER) * 1000,
  "updated_at" = CAST(ROUND((julianday('now') - 2440587.5) * 86400000) AS INTEGER) * 1000,
  "updated_by" = chargegraph_plate_twin("id", "license_plate", (
    SELECT "kept"."id" FROM "vehicle" AS "kept"
    WHERE "kept"."owner_id" = "vehicle"."owner_id" AND "kept"."removed_at" IS NULL
      AND chargegraph_plate_key("kept"."license_plate")
          = chargegraph_plate_key("vehicle"."license_plate")
    ORDER BY "kept"."created_at", "kept"."id" LIMIT 1))
WHERE "id" IN (""" + _TWINS + """);
UPDATE "vehicle" SET "license_plate" = chargegraph_plate_shown("license_plate"),
    "plate_key" = chargegraph_plate_key("license_plate")
WHERE "license_plate" IS NOT chargegraph_plate_shown("license_plate")
   OR "plate_key" IS NOT chargegraph_plate_key("license_plate");
"""

# Version 62: the boot a remote start was sent in (``PendingStart.station_booted_at``: its
# station's ``booted_at`` as read then). A start holds its card and plug until its station
# boots again, compared as a value: compared by time, a start stored by an instance whose
# clock was behind the one that stored the boot held nothing (review s25). Older rows:
# null, judged by ``created_at`` as before. MongoDB reads a missing field as null: no step.
_V62 = """
ALTER TABLE "pending_start" ADD COLUMN "station_booted_at" INTEGER;
"""

# Version 63: a reservation cancelled while its charger was offline remembers that its
# CancelReservation is owed to the charger (``Reservation.cancel_owed_since``), sent when
# the charger comes back (QA s25: nobody could end a live reservation while its charger
# was offline). Older rows: null, nothing owed.
_V63 = """
ALTER TABLE "reservation" ADD COLUMN "cancel_owed_since" INTEGER;
"""

# Version 64: the holder of the card a local list entry names (``LocalListEntry.
# holder_id``), so a removed card issued again to the same person is put back in the lists
# its removal withdrew it from (QA s26; ``withdrawal.reissue_marks``). Older rows take it
# from their card where it is still there; a removed card's holder is not known: NULL,
# left as the list holds it.
_V64 = """
ALTER TABLE "local_list_entry" ADD COLUMN "holder_id" TEXT;
UPDATE "local_list_entry" SET "holder_id" = (
    SELECT "user_id" FROM "id_tag" WHERE "id_tag"."id" = "local_list_entry"."card_id")
WHERE "card_id" IS NOT NULL;
CREATE INDEX "local_list_entry_holder_id_idx" ON "local_list_entry" ("holder_id");
"""

# Version 65: the timestamp a StartTransaction carried when its charger's clock was never
# set (before 2015: 1970), the session dated on the start's arrival instead
# (``Session.reported_start``): a resend of that start must repeat it (QA s26). Older
# rows: null (their sessions kept such a stamp as their start, which a resend is then
# compared with, ``_StartIdentity.matches``). MongoDB reads a missing
# field as null: no step.
_V65 = """
ALTER TABLE "session" ADD COLUMN "reported_start" INTEGER;
"""

# Version 66: whether a session was closed by the CSMS without its StopTransaction (as
# lost, or by an operator's endSession: ``Session.closed_without_stop``), recorded instead
# of read from a null meterStop and the reason 'Other': a charger's own stop with
# meterStop -1 and reason Other was written so too, and its resend taken for a correction
# of the close (review r26). Older rows closed so take it; a stop of -1 is told apart by
# the flag it always set (IMPLAUSIBLE_STOP), which no close without a stop sets.
_V66 = """
ALTER TABLE "session" ADD COLUMN "closed_without_stop" INTEGER NOT NULL DEFAULT 0;
UPDATE "session" SET "closed_without_stop" = 1
WHERE "state" = 'COMPLETED' AND "meter_stop_wh" IS NULL AND "stop_reason" = 'Other'
  AND "meter_anomaly" IS NOT 'IMPLAUSIBLE_STOP';
"""

# Version 67: while a ChangeConfiguration answered RebootRequired waits for its charger's
# boot, the value it replaced, the one in force until then (``ConfigurationKey.
# value_in_force``): the value set was taken as the charger's list limit at once (review
# s26). Older rows: null, not known (the charger is asked). MongoDB reads a missing field
# as null: no step.
_V67 = """
ALTER TABLE "configuration_key" ADD COLUMN "value_in_force" TEXT;
"""

# Version 68: the version of who sees a station (``Station.sight``), moved on by every edit
# of its company, owner or registration on or off the map, in that edit's write; events
# carry the version their read found, so live feeds and webhooks judge an event by the
# newer of its own read and the handovers they heard (review s26: a handover heard, the
# next one lost, was trusted over fresh reads for good). Older rows: 0. MongoDB reads a
# missing field as 0 (and stores it: ``ADDED_WITH_DEFAULT``).
_V68 = """
ALTER TABLE "station" ADD COLUMN "sight" INTEGER NOT NULL DEFAULT 0;
"""

# Version 69: the ACTIVE sessions of a card (``holding_card``), by the card's tag: an
# Accepted start is written only while no other session holds its card (the guard
# ``ChargingService._card_free``, checked inside the write lock), and the start judged by
# the same read just before (``authorize_start``); without an index on the tag both
# scanned every ACTIVE session of the network, the guard holding the write lock for it
# (review r26-tx2: 4-5 ms a start at 20,000 sessions open). Partial, as the state is
# always a literal in the store's SQL (``sql_filter``): only open sessions are in it.
# MongoDB has ``(id_tag, state)``.
_V69 = """
CREATE INDEX "session_active_id_tag_idx" ON "session" ("id_tag") WHERE "state" = 'ACTIVE';
"""

# Version 70: the SendLocalLists sent and not answered (a timeout, the connection lost
# after it), as sent, oldest first (a JSON array; review r26-multi3, before any release: one
# object), until the charger's version tells which it holds (``LocalList.pending``; review
# s26: a withdrawal was judged against a list the charger no longer held). Older rows:
# null, nothing pending. And a station's entries by what is
# wanted of them: every push, and every expiry sweep for the stations connected to its
# instance, read those marked. MongoDB reads a missing field as null: its index only.
_V70 = """
ALTER TABLE "local_list" ADD COLUMN "pending" TEXT;
CREATE INDEX "local_list_entry_station_id_wanted_idx"
    ON "local_list_entry" ("station_id", "wanted");
"""
# Version 71: the timestamp a StopTransaction carried for a session whose start was
# stamped by a clock never set (``Session.reported_end``): a replayed queue's stop
# repeating it, with the same stamp, meterStart and meterStop, closes a duplicate, priced
# nothing (review r26-robust4). Older rows: null (not told apart). MongoDB reads a
# missing field as null: no step.
_V71 = """
ALTER TABLE "session" ADD COLUMN "reported_end" INTEGER;
"""

# Version 72: webhook deliveries stored when queued, not only at a graceful stop
# (``PendingDelivery.instance_id``: the instance delivering it, null once handed over), so
# a crashed instance's are taken over once its lease expired; and leases of instances
# that serve no chargers (``InstanceLease.serves_chargers``), held for their deliveries.
_V72 = """
ALTER TABLE "pending_delivery" ADD COLUMN "instance_id" TEXT;
CREATE INDEX "pending_delivery_instance_idx" ON "pending_delivery" ("instance_id");
ALTER TABLE "instance_lease" ADD COLUMN "serves_chargers" INTEGER NOT NULL DEFAULT 1;
"""

# Version 73: the clients' idempotency keys (``IdempotencyKey``): one row per user and
# key, its id derived from both, so the first request's insert is the claim a second
# instance's fails on (the primary key); ``access`` is what the user could do when it
# ran (a replay to them once it changed is refused). A user's are found by ``user_id``
# (an erasure forgets them), the expired by ``expires_at`` (the sweep). Self-contained
# (a table of its own): 72 is another change's.
_V73 = """
CREATE TABLE "idempotency_key" (
    "id" TEXT PRIMARY KEY NOT NULL,
    "created_at" INTEGER NOT NULL,
    "updated_at" INTEGER NOT NULL,
    "created_by" TEXT NOT NULL,
    "updated_by" TEXT NOT NULL,
    "user_id" TEXT NOT NULL,
    "key" TEXT NOT NULL,
    "fingerprint" TEXT NOT NULL,
    "state" TEXT NOT NULL,
    "claimant" TEXT NOT NULL,
    "access" TEXT NOT NULL,
    "lease_until" INTEGER NOT NULL,
    "response" TEXT,
    "expires_at" INTEGER NOT NULL
) STRICT;
CREATE INDEX "idempotency_key_user_id_idx" ON "idempotency_key" ("user_id");
CREATE INDEX "idempotency_key_expires_at_idx" ON "idempotency_key" ("expires_at");
"""

# Version 74: the group a reservation was made for beside its card (``Reservation.
# parent_id_tag``, ReserveNow's parentIdTag), which its charger holds the plug for too:
# a card of it takes the reservation up here as at the charger (QA s27: the charger ended
# it, and here it held the plug until its expiry). Older rows: null, the card's own group
# only, as before. MongoDB reads a missing field as null: no step.
_V74 = """
ALTER TABLE "reservation" ADD COLUMN "parent_id_tag" TEXT;
"""

# Version 75: refunds claimed before the payment provider is asked (QA s27: refunds at
# once all reached the provider, 6.50 EUR of a 4.00 capture under one key): what is
# being paid back (``Payment.refunding_minor``, the amount reserved against what is
# left) and the claims it sums (``Payment.refund_claims``, a JSON array, each with its
# own idempotency key), until each is settled or released. The sweep settling those a
# crash left (``settle_stale_refunds``) finds them by the amount. Older rows: 0 and
# null, nothing pending. MongoDB stores the 0 (``ADDED_WITH_DEFAULT``) and has the index.
_V75 = """
ALTER TABLE "payment" ADD COLUMN "refunding_minor" INTEGER NOT NULL DEFAULT 0;
ALTER TABLE "payment" ADD COLUMN "refund_claims" TEXT;
CREATE INDEX "payment_refunding_minor_idx" ON "payment" ("refunding_minor");
"""

# Version 76: a station's state history records whose books it went to
# (``StatusEvent``/``ConnectorInterval``/``ConnectionEvent``
# ``company_id``/``station_owner_id``), as sessions do (version 8): a company that hands
# a station over keeps its status reports, its time and its connection history there,
# and the new one reads its own only (review r27). Older rows take their station's books
# now, where it still exists (who read them until then), else none. Operators and a
# ``companyId`` filter read reports and intervals by these columns, by time; a
# connector's page of reports (``statusHistory``) still comes out of its index in order,
# the books beside it (migration 21's index, the two columns added), and so does a
# station's page of connection events (``connectionHistory``, migration 34's index).
_V76 = """
ALTER TABLE "status_event" ADD COLUMN "company_id" TEXT;
ALTER TABLE "status_event" ADD COLUMN "station_owner_id" TEXT;
ALTER TABLE "connector_interval" ADD COLUMN "company_id" TEXT;
ALTER TABLE "connector_interval" ADD COLUMN "station_owner_id" TEXT;
ALTER TABLE "connection_event" ADD COLUMN "company_id" TEXT;
ALTER TABLE "connection_event" ADD COLUMN "station_owner_id" TEXT;
UPDATE "status_event" SET ("company_id", "station_owner_id") = (
    SELECT "company_id", CASE WHEN "company_id" IS NULL THEN "owner_id" END FROM "station"
    WHERE "station"."id" = "status_event"."station_id");
UPDATE "connector_interval" SET ("company_id", "station_owner_id") = (
    SELECT "company_id", CASE WHEN "company_id" IS NULL THEN "owner_id" END FROM "station"
    WHERE "station"."id" = "connector_interval"."station_id");
UPDATE "connection_event" SET ("company_id", "station_owner_id") = (
    SELECT "company_id", CASE WHEN "company_id" IS NULL THEN "owner_id" END FROM "station"
    WHERE "station"."id" = "connection_event"."station_id");
DROP INDEX IF EXISTS "status_event_station_connector_at_idx";
CREATE INDEX "status_event_station_connector_at_books_idx" ON "status_event" (
    "station_id", "connector_id", "at", "id", "company_id", "station_owner_id");
CREATE INDEX "status_event_company_at_idx" ON "status_event" ("company_id", "at");
CREATE INDEX "status_event_station_owner_at_idx"
    ON "status_event" ("station_owner_id", "at");
DROP INDEX IF EXISTS "connection_event_station_at_idx";
CREATE INDEX "connection_event_station_at_books_idx" ON "connection_event" (
    "station_id", "at", "id", "company_id", "station_owner_id");
CREATE INDEX "connection_event_company_at_idx" ON "connection_event" ("company_id", "at");
CREATE INDEX "connection_event_station_owner_at_idx"
    ON "connection_event" ("station_owner_id", "at");
CREATE INDEX "connector_interval_company_start_idx"
    ON "connector_interval" ("company_id", "start");
CREATE INDEX "connector_interval_station_owner_start_idx"
    ON "connector_interval" ("station_owner_id", "start");
"""

#: Every migration, oldest first. Append only.
# Version 77: when a restore put back the backup a session was open in
# (``Session.open_at_restore``, our clock, written by ``chargegraph restore``): its
# charger may have ended it since the backup, its StopTransaction lost with the database
# replaced (restore QA s27: open for ever, its card ConcurrentTx everywhere). Older rows:
# null. MongoDB reads a missing field as null: no step.
_V77 = """
ALTER TABLE "session" ADD COLUMN "open_at_restore" INTEGER;
"""

# Version 78: a station's cpId without regard to case (``Station.cp_id_key``,
# ``validation.cp_id_key``: OCPP 1.6's chargeBoxIdentity is a CiString): what a charger
# connecting as ``cp-001`` finds station ``CP-001`` by, and what createStation refuses a
# second of (QA s28). Not unique: stations stored before may differ only in case, and
# keep working, each under its own cpId (``ChargerConnections.station``). cpIds are ASCII,
# which SQLite's lower() folds as Python's does.
_V78 = """
ALTER TABLE "station" ADD COLUMN "cp_id_key" TEXT NOT NULL DEFAULT '';
UPDATE "station" SET "cp_id_key" = lower("cp_id");
CREATE INDEX "station_cp_id_key_idx" ON "station" ("cp_id_key");
"""

#: What gives a station written without its cpId's key (``cp_id_key`` '', the column's
#: DEFAULT) its key, as migration 78 gave every station then: in a rolling upgrade an
#: instance of a build from before migration 78, started before a newer one migrated the
#: file, keeps inserting stations with the columns it knows (review r28-batch), and a
#: charger connecting under their cpId in other case found none of them. Run at every
#: start and every ``SqliteStore.heal_every`` (``SqliteStore._heal_cp_id_keys``), as
#: MongoDB's ``heal_cp_id_keys``: one lookup of the index ``station_cp_id_key_idx`` when
#: there is none, as a rule.
HEAL_CP_ID_KEYS = """UPDATE "station" SET "cp_id_key" = lower("cp_id") WHERE "cp_id_key" = ''"""

# Version 79: when a send of a reservation's owed CancelReservation claimed it
# (``Reservation.cancel_sending_since``, our clock): other sends leave it to that one for a
# while (review r28-leftan: the holder's sweep sent the charger a cancel another instance
# was relaying, twice). Older rows: null, no send has it. MongoDB reads a missing field
# as null: no step.
_V79 = """
ALTER TABLE "reservation" ADD COLUMN "cancel_sending_since" INTEGER;
"""

# Version 80: who set a card's expiry (``IdTag.expiry_set_by``): its holder's own date
# bars nothing once passed, their operator's bars them as an EXPIRED mark does. Cards
# stored with an expiry take their creator (a driver set one only when issuing their
# card: edits of it were refused them), or, when that is the holder, their last writer:
# another than the holder may have moved it since, and unless it was the holder the
# date is read as staff's, as migration 16 read a block (an operator's later edit of
# something else bars a driver on their own date until an operator clears or moves it;
# the other reading would let a driver round an operator's date).
_V80 = """
ALTER TABLE "id_tag" ADD COLUMN "expiry_set_by" TEXT;
UPDATE "id_tag" SET "expiry_set_by" = CASE WHEN "created_by" = "user_id"
    THEN "updated_by" ELSE "created_by" END
    WHERE "expires_at" IS NOT NULL;
"""

# Version 81: accounts by when they were erased (``User.erased_at``): the keeping of an
# idempotency key's answer reads whether anyone was erased since its request claimed the
# key, and then forgets it (``IdempotencyService._unless_erased_since``: an erasure on
# another instance looked for such answers before it was kept, and it named the person
# for a day). One read per answer kept; the accounts never erased are left out by it.
_V81 = """
CREATE INDEX "user_erased_at_idx" ON "user" ("erased_at");
"""

# Version 82: where stations' chargers passed their password check from
# (``KnownChargerAddress``), kept for the instances that start later (review s31: known
# only in memory, a charger moved by a rolling restart was a stranger where it landed).
# One row per pair (its id derived from it); a station's found by ``station_id`` (its
# removal deletes them), the oldest by ``passed_at`` (the sweep; a start reads the newest).
_V82 = """
CREATE TABLE "known_charger_address" (
    "id" TEXT PRIMARY KEY NOT NULL,
    "created_at" INTEGER NOT NULL,
    "updated_at" INTEGER NOT NULL,
    "created_by" TEXT NOT NULL,
    "updated_by" TEXT NOT NULL,
    "station_id" TEXT NOT NULL,
    "pair" TEXT NOT NULL,
    "passed_at" INTEGER NOT NULL
) STRICT;
CREATE INDEX "known_charger_address_station_id_idx" ON "known_charger_address" ("station_id");
CREATE INDEX "known_charger_address_passed_at_idx" ON "known_charger_address" ("passed_at");
"""

# Version 83: a price list version a later one replaced ends where that one begins
# (``Tariff.valid_until``, as ``TariffService.set_tariff`` now writes it): the version in
# force is the latest not ended (a removal gives back the version the removed one
# replaced), so older versions left open would come back when a later one is removed;
# ended here, each prices what it priced before. The next version is the next in
# ``LATEST_VERSION_FIRST``'s order of the same owner and scope; one removed earlier keeps
# its removal. MongoDB: ``migrations._replaced_tariffs_ended``.
_V83 = """
UPDATE "tariff" SET "valid_until" = (
    SELECT MIN(n."valid_from") FROM "tariff" AS n
    WHERE n."station_id" IS "tariff"."station_id" AND n."company_id" IS "tariff"."company_id"
      AND n."connector_type" IS "tariff"."connector_type"
      AND n."power_type" IS "tariff"."power_type"
      AND (n."valid_from", n."created_at", n."id")
          > ("tariff"."valid_from", "tariff"."created_at", "tariff"."id"))
WHERE EXISTS (
    SELECT 1 FROM "tariff" AS n
    WHERE n."station_id" IS "tariff"."station_id" AND n."company_id" IS "tariff"."company_id"
      AND n."connector_type" IS "tariff"."connector_type"
      AND n."power_type" IS "tariff"."power_type"
      AND (n."valid_from", n."created_at", n."id")
          > ("tariff"."valid_from", "tariff"."created_at", "tariff"."id")
      AND ("tariff"."valid_until" IS NULL OR n."valid_from" < "tariff"."valid_until"));
"""

# Version 84: the payment provider that paid a refund back (``Refund.provider``): the
# payment's is its capture's, and a refund may be paid by another (the provider
# configured changed since). Refunds recorded before take their payment's, the provider
# the instance had then; one whose payment is gone reads ``manual``, the default.
# MongoDB: ``migrations._refund_providers``.
_V84 = """
ALTER TABLE "refund" ADD COLUMN "provider" TEXT NOT NULL DEFAULT 'manual';
UPDATE "refund" SET "provider" = (
    SELECT p."provider" FROM "payment" AS p WHERE p."id" = "refund"."payment_id")
WHERE EXISTS (SELECT 1 FROM "payment" AS p WHERE p."id" = "refund"."payment_id");
"""

# Version 85: card numbers freed (``FreedIdTag``: a card removed, an erased account's),
# held back from drivers for 30 days (QA s32: a driver issuing one had the physical
# card's sessions booked to them). One row per freeing, by a digest of the tag; a tag's
# latest read by (``tag_digest``, ``freed_at``), the old swept by ``freed_at``.
_V85 = """
CREATE TABLE "freed_id_tag" (
    "id" TEXT PRIMARY KEY NOT NULL,
    "created_at" INTEGER NOT NULL,
    "updated_at" INTEGER NOT NULL,
    "created_by" TEXT NOT NULL,
    "updated_by" TEXT NOT NULL,
    "tag_digest" TEXT NOT NULL,
    "holder_id" TEXT NOT NULL,
    "company_id" TEXT,
    "freed_at" INTEGER NOT NULL
) STRICT;
CREATE INDEX "freed_id_tag_tag_digest_freed_at_idx" ON "freed_id_tag" ("tag_digest", "freed_at");
CREATE INDEX "freed_id_tag_freed_at_idx" ON "freed_id_tag" ("freed_at");
"""

# Version 86: connection events by their time alone, for their retention's sweep
# (``CHARGEGRAPH_RETAIN_CONNECTION_EVENTS_DAYS``, ``RetentionService``: each batch read
# oldest first, ``at < cut-off``), as status reports have theirs. MongoDB:
# its ``at_1`` index (``indexes.INDEXES``).
_V86 = """
CREATE INDEX "connection_event_at_idx" ON "connection_event" ("at");
"""

# Version 87: a session's first boot of its charger since it was recorded, or since a
# MeterValues last showed its charger still had it (``Session.first_boot_at``, our clock):
# where it ended when its stop was lost, whichever later boot closes it (QA s33: closed at
# the charger's last boot, and a charger booting again within the grace kept it open).
# And a remote start whose answer did not tell whether the charger took it
# (``PendingStart.outcome_unknown``: no answer, or one we could not read), named so to
# whoever it holds the card from. Older rows: null (the boot the check is for), and 0.
# MongoDB: ``outcome_unknown``'s default stored (``migrations.ADDED_WITH_DEFAULT``).
_V87 = """
ALTER TABLE "session" ADD COLUMN "first_boot_at" INTEGER;
ALTER TABLE "pending_start" ADD COLUMN "outcome_unknown" INTEGER NOT NULL DEFAULT 0;
"""

# Version 88: a command's audit entries carry its id beside the image
# (``AuditEntry.command_id``), so ``auditLog(filter: {commandId})`` finds them by index
# (QA s33: a mutation's commandId could not be looked up).
_V88 = """
ALTER TABLE "audit_entry" ADD COLUMN "command_id" TEXT;
UPDATE "audit_entry" SET "command_id" = json_extract("after", '$.commandId')
WHERE "action" = 'COMMAND';
CREATE INDEX "audit_entry_command_id_idx" ON "audit_entry" ("command_id");
"""

# Version 89: a signed-in device's user agent (``RefreshFamily.user_agent``, the one it
# last signed in or refreshed with), for its person to tell their devices apart
# (``User.devices``). Older families: null. MongoDB: nothing to change (a field a
# document lacks reads as its default, null).
_V89 = """
ALTER TABLE "refresh_family" ADD COLUMN "user_agent" TEXT;
"""

MIGRATIONS: tuple[Migration, ...] = ((1, _V1), (2, _V2), (3, _V3), (4, _V4), (5, _V5),
                                     (6, _V6), (7, _V7), (8, _V8), (9, _V9), (10, _V10),
                                     (11, _V11), (12, _V12),
                                     (13, _V13), (14, _V14), (15, _V15), (16, _V16), (17, _V17),
                                     (18, _V18), (19, _V19), (20, _V20), (21, _V21),
                                     (22, _V22), (23, _V23), (24, _V24),
                                     (25, _V25), (26, _V26), (27, _V27),
                                     (28, _V28), (29, _V29), (30, _V30),
                                     (31, _V31), (32, _V32), (33, _V33), (34, _V34),
                                     (35, _V35), (36, _V36), (37, _V37),
                                     (38, _V38), (39, _V39), (40, _V40),
                                     (41, _V41), (42, _V42), (43, _V43),
                                     (44, _V44), (45, _V45), (46, _V46),
                                     (47, _V47), (48, _V48), (49, _V49),
                                     (50, _V50), (51, _V51), (52, _V52),
                                     (53, _V53),
                                     (54, _V54),
                                     (55, _V55),
                                     (56, _V56),
                                     (57, _V57),
                                     (58, _V58),
                                     (59, _V59),
                                     (60, _V60),
                                     (61, _V61),
                                     (62, _V62),
                                     (63, _V63),
                                     (64, _V64),
                                     (65, _V65),
                                     (66, _V66),
                                     (67, _V67),
                                     (68, _V68),
                                     (69, _V69),
                                     (70, _V70),
                                     (71, _V71),
                                     (72, _V72),
                                     (73, _V73),
                                     (74, _V74),
                                     (75, _V75),
                                     (76, _V76), (77, _V77),
                                     (78, _V78), (79, _V79),
                                     (80, _V80), (81, _V81),
                                     (82, _V82), (83, _V83),
                                     (84, _V84), (85, _V85), (86, _V86),
                                     (87, _V87), (88, _V88), (89, _V89))


def identity_left(company_id: str, name: str) -> None:
    """A company migrated without its name's identity, another (older) one having it
    (migration 55; MongoDB's ``migrations._name_identities``): said in the log, for an
    admin to rename it. ``None``, the identity it is left with."""
    log.warning("company %s (%r) has the name of an older company, told apart only by "
                "case or how its letters were typed: rename it (updateCompany)",
                company_id, name)


def plate_twin(vehicle_id: str, plate: str, kept_id: str) -> str:
    """A car removed by migration 61 (MongoDB's ``migrations._plate_forms``): its owner
    keeps an older car, ``kept_id``, of the same plate in compatibility form. Said in
    the log; the actor its removal is stamped with (the system's)."""
    log.warning("vehicle %s (%r) was another car of its owner with the plate of vehicle %s: "
                "removed, that older one kept, its cards linked to it", vehicle_id, plate,
                kept_id)
    return "system"


#: Python functions migrations call, registered on the migrating connection: a value only
#: the domain's rules can compute for rows written before (name, arity, function).
MIGRATION_FUNCTIONS: tuple[tuple[str, int, Callable[..., Any]], ...] = (
    ("chargegraph_name_key", 1, name_key),
    ("chargegraph_name_identity", 1, name_identity),
    ("chargegraph_identity_left", 2, identity_left),
    ("chargegraph_plate_shown", 1, plate_shown),
    ("chargegraph_plate_key", 1, plate_key),
    ("chargegraph_plate_twin", 3, plate_twin))


_BOOTSTRAP = """
CREATE TABLE IF NOT EXISTS "schema_version" (
    "version" INTEGER PRIMARY KEY NOT NULL,
    "applied_at" INTEGER NOT NULL
) STRICT
"""


def split_statements(script: str) -> list[str]:
    """The statements of ``script``, each complete. ``executescript`` would do this for us
    but it COMMITs first, which would run every migration outside its transaction."""
    statements: list[str] = []
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            if pending.strip(" \t\r\n;"):
                statements.append(pending.strip())
            pending = ""
    if pending.strip():
        raise ValueError(f"incomplete SQL statement in migration: {pending.strip()[:80]!r}")
    return statements


class NewerSchema(sqlite3.DatabaseError):
    """The database was migrated by a newer ChargeGraph than this one."""


#: How long a start waits for another process holding the database's write lock, beyond
#: the connection's busy timeout: an instance started beside one migrating the database
#: waits for that migration, which may take minutes on a large database (a column filled
#: on every status report), rather than end with "database is locked" (QA s28).
MIGRATION_LOCK_WAIT_S = 30 * 60


async def waiting_for_the_lock(conn: aiosqlite.Connection, statement: str, *,
                               patience_s: float = MIGRATION_LOCK_WAIT_S) -> None:
    """Runs ``statement`` (one taking a lock: BEGIN IMMEDIATE, the switch to WAL) on
    ``conn``, waiting up to ``patience_s`` for the lock while another process holds it
    (each attempt waits the connection's busy timeout), said once in the log so an
    operator knows why the instance is not up yet."""
    deadline: float | None = None
    while True:
        try:
            await conn.execute(statement)
            return
        except sqlite3.OperationalError as error:
            if getattr(error, "sqlite_errorcode", None) != sqlite3.SQLITE_BUSY \
                    and "database is locked" not in str(error):
                raise
            if deadline is None:
                deadline = time.monotonic() + patience_s
                log.warning("another process holds the database's write lock (an instance "
                            "migrating it?): waiting for it, up to %d minutes",
                            round(patience_s / 60))
            elif time.monotonic() >= deadline:
                raise sqlite3.OperationalError(
                    f"database is locked: another process held its write lock for "
                    f"{round(patience_s / 60)} minutes (an instance still migrating it? "
                    "start this one once that one answers /healthz)") from error
        # A busy timeout of 0 returns at once: not a spin.
        await asyncio.sleep(0.05)


async def current_version(conn: aiosqlite.Connection) -> int:
    rows = await conn.execute_fetchall('SELECT MAX("version") FROM "schema_version"')
    value = next(iter(rows))[0]
    return int(value) if value is not None else 0


def refuse_newer(found: int, known: int | None) -> None:
    """Raises ``NewerSchema`` when the database's version ``found`` is past ``known``, the
    last migration this build has (``None``: it has none, and refuses nothing)."""
    if known is not None and found > known:
        # A rollback to an older ChargeGraph: it would write rows without the columns
        # and rules the newer one relies on, or misread what it finds.
        raise NewerSchema(f"the database has schema version {found}, written by a newer "
                          f"ChargeGraph (this one knows up to {known}): run that "
                          "version, or restore a backup made with this one")


async def begin_migrating(conn: aiosqlite.Connection, known: int | None) -> None:
    """BEGIN IMMEDIATE, waiting for another process's migration (``waiting_for_the_lock``),
    then refuses (``refuse_newer``, the transaction rolled back) a database that a newer
    build migrated meanwhile: an instance of an older build waiting out a newer one's
    migration found every migration it knows done and started on the newer schema
    (review r28-upgrade)."""
    await waiting_for_the_lock(conn, "BEGIN IMMEDIATE")
    try:
        refuse_newer(await current_version(conn), known)
    except BaseException:
        await conn.rollback()
        raise


async def apply_migrations(
    conn: aiosqlite.Connection, migrations: Sequence[Migration] = MIGRATIONS
) -> list[int]:
    """Apply the migrations newer than the database, each in its own transaction, and
    return the versions applied. ``conn`` must be in autocommit mode (``isolation_level``
    ``None``) so the explicit BEGIN/COMMIT here are the only transactions. Cancelled (a
    stop while it migrates), the statement under way ends at once and its migration is
    rolled back whole (``reconcile.Stoppable``)."""
    versions = [version for version, _ in migrations]
    if versions != sorted(set(versions)):
        raise ValueError("migration versions must be unique and ascending")
    async with Stoppable(conn) as stoppable:
        return await _apply(conn, migrations, versions, stoppable)


async def _apply(conn: aiosqlite.Connection, migrations: Sequence[Migration],
                 versions: list[int], stoppable: Stoppable) -> list[int]:
    """``apply_migrations``' work, its statements stoppable."""
    await conn.execute(_BOOTSTRAP)
    for name, arity, function in MIGRATION_FUNCTIONS:
        await conn.create_function(name, arity, function, deterministic=True)
    known = versions[-1] if versions else None
    found = await current_version(conn)
    # Before anything is written; again in each transaction below, since another process
    # may migrate the database while this one waits for the lock.
    refuse_newer(found, known)
    if found:
        # A migration changed after release left databases at its version without what
        # today's text makes (``reconcile``): repaired before the newer ones build on it.
        wanted = reference([m for m in migrations if m[0] <= found], MIGRATION_FUNCTIONS,
                           split_statements)

        async def unchanged() -> bool:
            return await current_version(conn) == found

        await reconcile(conn, wanted, unchanged, lambda: begin_migrating(conn, known),
                        stoppable)
    applied: list[int] = []
    began = time.monotonic()
    upgrade = False  # from the first migration's start: each step said on an upgrade only
    for version, script in migrations:
        statements = split_statements(script)
        # IMMEDIATE takes the write lock before we re-read the version: two processes
        # starting at once cannot both apply the same migration, and the one waiting
        # finds the migration done (or a newer build's schema: refused).
        await begin_migrating(conn, known)
        try:
            current = await current_version(conn)
            if current >= version:
                await conn.rollback()
                continue
            if not applied and current > 0:
                # An upgrade is worth a line: an operator checking a rolling upgrade
                # reads which schema the file went from and to. Said by the instance
                # that migrates, not by every one starting. A new database is said by
                # the end line alone (review r32-f: some 90 lines of its steps came
                # before create-user's one useful line).
                upgrade = True
                log.info("migrating the database from schema %d to %d", current,
                         versions[-1])
            step = time.monotonic()
            for statement in statements:
                await conn.execute(statement)
            await conn.execute(
                'INSERT INTO "schema_version" ("version", "applied_at") VALUES (?, ?)',
                (version, int(time.time() * 1_000_000)),
            )
            await conn.commit()
        except BaseException as error:
            await stoppable.roll_back(error)
            raise
        applied.append(version)
        # Each step and its time (QA s32: a long upgrade said only its first line, then
        # nothing until ready): an operator sees where it is and which step is slow. The
        # number is the migration's, as its comment in this file names it.
        if upgrade:
            log.info("migration %d applied in %.2f s", version, time.monotonic() - step)
    if applied:
        log.info("migrated the database to schema %d in %.2f s" if upgrade else
                 "created the database at schema %d in %.2f s", applied[-1],
                 time.monotonic() - began)
    return applied
