"""A database written by today's store, taken back to an older schema version: what tests
of one migration's data step start from (rows written with today's entities, the schema
and version as that migration found them).

Tests of migration N used to delete N's row from ``schema_version`` only: once a newer
migration existed, the database's version stayed the newest and N never ran again, and
a newer migration adding a column cannot run twice (``ADD COLUMN`` of a column there is).
So everything the migrations after ``version`` add to the schema is taken out (their
tables, columns and indexes, found by comparing what the migrations make of an empty
database); what they changed in the data stays, and the indexes the older version had
are made again by ``reconcile`` at the next start."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from store.sqlite.migrations import MIGRATION_FUNCTIONS, MIGRATIONS, split_statements
from store.sqlite.reconcile import Schema, reference


def _schema(upto: int | None) -> Schema:
    return reference([m for m in MIGRATIONS if upto is None or m[0] <= upto],
                     MIGRATION_FUNCTIONS, split_statements)


def roll_back(path: Path | str, version: int) -> None:
    """Takes the database at ``path`` (today's schema) back to ``version``'s schema."""
    old, new = _schema(version), _schema(None)
    with sqlite3.connect(path) as conn:
        # Indexes first: a column an index covers cannot be dropped.
        for name in new.indexes.keys() - old.indexes.keys():
            conn.execute(f'DROP INDEX IF EXISTS "{name}"')
        for table in new.tables.keys() - old.tables.keys():
            conn.execute(f'DROP TABLE "{table}"')
        for table in old.tables.keys() & new.tables.keys():
            had = {c.name for c in old.columns[table]}
            for column in new.columns[table]:
                if column.name not in had:
                    conn.execute(f'ALTER TABLE "{table}" DROP COLUMN "{column.name}"')
        conn.execute('DELETE FROM "schema_version" WHERE "version" > ?', (version,))
