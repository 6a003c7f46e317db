"""Turning SQLite's unique-index failures into the domain's ``UniqueViolation``.

The indexes themselves live in ``migrations``; here we only recognise which rule fired.
SQLite reports a unique failure on plain columns as
``UNIQUE constraint failed: session.cp_id, session.connector_id``, naming the table and the
columns (also for a partial index), which is enough to find the rule.
"""

from __future__ import annotations

import re
import sqlite3

from domain.errors import UniqueViolation
from domain.ports import PARTIAL_UNIQUE_RULES, UNIQUE_RULES
from store.fields import duplicate_message

_UNIQUE_FAILED = re.compile(r"UNIQUE constraint failed: (?P<columns>.+)$")

#: (table, columns) -> the field ``UniqueViolation`` names, from the domain's rules.
_FIELD_BY_RULE: dict[tuple[str, tuple[str, ...]], str] = {
    (kind, rule): rule[0] for kind, rules in UNIQUE_RULES.items() for rule in rules
} | {(kind, rule): rule[0] for kind, rules in PARTIAL_UNIQUE_RULES.items()
     for rule, _ in rules}
# The partial index "one ACTIVE session per connector" (not a domain rule: a store-level
# invariant). It is the connector that is taken, so the violation names connector_id.
_FIELD_BY_RULE["session", ("cp_id", "connector_id")] = "connector_id"

_MESSAGES = {
    ("session", "connector_id"): "the connector already has an active session",
}


def unique_violation(exc: sqlite3.IntegrityError) -> UniqueViolation | None:
    """The ``UniqueViolation`` for ``exc``, or ``None`` when ``exc`` is another kind of
    integrity failure (NOT NULL, CHECK …) which is a bug, not a user error."""
    match = _UNIQUE_FAILED.search(str(exc))
    if match is None:
        return None
    qualified = [part.strip() for part in match["columns"].split(",")]
    tables = {part.partition(".")[0] for part in qualified}
    columns = tuple(part.partition(".")[2] for part in qualified)
    if len(tables) != 1 or not all(columns):
        # e.g. "index 'name'" for expression indexes, which we do not use.
        return UniqueViolation("a unique rule rejected the change")
    table = tables.pop()
    # An insert reusing an existing id fails on the primary key: report it as "id".
    field = _FIELD_BY_RULE.get((table, columns), columns[0])
    message = _MESSAGES.get((table, field), duplicate_message(table, columns))
    return UniqueViolation(message, field=field)
