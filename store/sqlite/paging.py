"""Orderings and keyset (cursor) pagination.

Every ordering ends with ``id`` ascending, which makes it total: two rows never tie, so a
cursor (the sort values and id of a row) names exactly one position and "the rows after
it" is a plain ``WHERE`` predicate the indexes can serve. No OFFSET: pages stay correct
and cheap however deep the client goes and however the table changes in between.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from enum import Enum
from typing import Any

from domain.entities import Record
from domain.errors import ValidationError
from domain.query import CursorKey, Sort, decode_cursor, encode_cursor
from store.fields import FieldSpec
from store.sqlite.codec import SqlValue, encode, spec_of
from store.sqlite.sql_filter import column, sortable


def _keys(kind: type[Record], sort: Sequence[Sort]) -> list[tuple[FieldSpec, bool]]:
    """The sort keys as (field, descending), ``id`` ascending appended as tie-breaker
    (unless the caller already sorts by ``id``, after which nothing can tie)."""
    keys = [(spec_of(kind, s.field), s.descending) for s in sort]
    if all(spec.name != "id" for spec, _ in keys):
        keys.append((spec_of(kind, "id"), False))
    return keys


def order_by(kind: type[Record], sort: Sequence[Sort], alias: str = "t0",
             reverse: bool = False) -> str:
    """The ``ORDER BY`` terms (without the keywords) for ``sort``; ``reverse`` flips every
    direction, which is how a backward page is read."""
    terms = []
    for spec, descending in _keys(kind, sort):
        direction = "DESC" if descending != reverse else "ASC"
        terms.append(f"{sortable(spec, column(alias, spec.name))} {direction}")
    return ", ".join(terms)


def decode(cursor: str, kind: type[Record], sort: Sequence[Sort], field: str) -> CursorKey:
    """``decode_cursor`` naming the argument the bad cursor came in (``after``/``before``)."""
    try:
        return decode_cursor(cursor, kind.kind, sort)
    except ValidationError as exc:
        raise ValidationError(exc.message, field=field, code=exc.code) from exc


def beyond(kind: type[Record], sort: Sequence[Sort], key: CursorKey, *, after: bool,
           field: str, alias: str = "t0") -> tuple[str, list[SqlValue]]:
    """The rows strictly after (``after=True``) or before ``key`` in the ordering:

    ``k1 > v1 OR (k1 = v1 AND k2 > v2) OR … OR (k1 = v1 AND … AND id > vid)``

    with ``<`` for descending keys (and everything mirrored for "before").
    """
    keys = _keys(kind, sort)
    raw_values: list[Any] = list(key.values)
    if len(keys) > len(raw_values):
        raw_values.append(key.id)
    try:
        values = [encode(spec, v) for (spec, _), v in zip(keys, raw_values, strict=True)]
    except (TypeError, ValueError, InvalidOperation) as exc:
        raise ValidationError("malformed cursor", field=field, code="INVALID_CURSOR") from exc
    if any(v is None for v in values):
        raise ValidationError("malformed cursor", field=field, code="INVALID_CURSOR")

    params: list[SqlValue] = []
    disjuncts = []
    for i, (spec, descending) in enumerate(keys):
        terms = []
        for (prev, _), value in zip(keys[:i], values[:i], strict=True):
            terms.append(f"{sortable(prev, column(alias, prev.name))} = {sortable(prev, '?')}")
            params.append(value)
        op = ">" if descending != after else "<"
        terms.append(f"{sortable(spec, column(alias, spec.name))} {op} {sortable(spec, '?')}")
        params.append(values[i])
        disjuncts.append("(" + " AND ".join(terms) + ")")
    return "(" + " OR ".join(disjuncts) + ")", params


def cursor_of(record: Record, sort: Sequence[Sort]) -> str:
    """The cursor of ``record`` in ``sort`` order (the values ``beyond`` compares)."""
    values = [_cursor_value(getattr(record, s.field)) for s in sort]
    return encode_cursor(record.kind, sort, values, record.id)


def _cursor_value(value: Any) -> Any:
    # encode_cursor's JSON knows datetimes and StrEnums; Decimals travel as exact text
    # (``encode`` turns the text back into the stored form).
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Enum) and not isinstance(value, str):
        return value.value
    return value
