"""Orderings and keyset (cursor) pagination.

Every ordering ends with ``id`` ascending, which makes it total: two rows never tie, so a
cursor (the sort values and id of a row) names exactly one position and "the rows after
it" is a plain ``WHERE`` predicate the indexes can serve. No OFFSET: pages stay correct
and cheap however deep the client goes and however the table changes in between.

A distance key (``Sort.by_distance``) is the ``haversine_km`` function of the row's
position, not a column: no index serves that order, so the list's ``Near`` filter bounds
the rows it is computed for (its bounding box narrows them through the ``(lat, lon)``
index first), and SQLite keeps the first ``LIMIT`` of them in a sorter. Its cursor carries
the distance computed in Python by the same function, so "after it" compares equal values
exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from enum import Enum
from typing import Any

from domain.entities import Record
from domain.errors import ValidationError
from domain.query import CursorKey, Sort, decode_cursor, encode_cursor, sort_value
from store.fields import FieldSpec
from store.sqlite.codec import SqlValue, encode, spec_of
from store.sqlite.sql_filter import HAVERSINE, column, sortable


@dataclass(frozen=True, slots=True)
class _Key:
    """One ordering term: what it orders and compares by, as SQL with its parameters."""

    sql: str
    params: tuple[SqlValue, ...]
    descending: bool
    #: How a cursor's value is written beside ``sql`` (a decimal compares as a number).
    placeholder: str
    #: Encodes a cursor's value as stored; ``None``: a distance, a plain float.
    spec: FieldSpec | None


def _keys(kind: type[Record], sort: Sequence[Sort], alias: str) -> list[_Key]:
    """The sort keys, ``id`` ascending appended as tie-breaker (unless the caller already
    sorts by ``id``, after which nothing can tie). A distance key is the distance
    function itself, the one ``Near`` filters with, measured from its origin."""
    keys = []
    for key in sort:
        if key.origin is not None:
            lat, lon = (column(alias, spec_of(kind, name).name) for name in ("lat", "lon"))
            keys.append(_Key(f"{HAVERSINE}({lat}, {lon}, ?, ?)", key.origin, key.descending,
                             "?", None))
            continue
        spec = spec_of(kind, key.field)
        keys.append(_Key(sortable(spec, column(alias, spec.name)), (), key.descending,
                         sortable(spec, "?"), spec))
    if all(k.spec is None or k.spec.name != "id" for k in keys):
        spec = spec_of(kind, "id")
        keys.append(_Key(column(alias, spec.name), (), False, "?", spec))
    return keys


def order_by(kind: type[Record], sort: Sequence[Sort], alias: str = "t0",
             reverse: bool = False) -> tuple[str, list[SqlValue]]:
    """The ``ORDER BY`` terms (without the keywords) for ``sort`` and their parameters;
    ``reverse`` flips every direction, which is how a backward page is read."""
    terms: list[str] = []
    params: list[SqlValue] = []
    for key in _keys(kind, sort, alias):
        direction = "DESC" if key.descending != reverse else "ASC"
        terms.append(f"{key.sql} {direction}")
        params.extend(key.params)
    return ", ".join(terms), params


def decode(cursor: str, kind: type[Record], sort: Sequence[Sort], field: str,
           within: str | None = None) -> CursorKey:
    """``decode_cursor`` naming the argument the bad cursor came in (``after``/``before``)."""
    try:
        return decode_cursor(cursor, kind.kind, sort, within=within)
    except ValidationError as exc:
        raise ValidationError(exc.message, field=field, code=exc.code) from exc


#: SQLite's INTEGER range.
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def beyond(kind: type[Record], sort: Sequence[Sort], key: CursorKey, *, after: bool,
           field: str, alias: str = "t0") -> tuple[str, list[SqlValue]]:
    """The rows strictly after (``after=True``) or before ``key`` in the ordering:

    ``k1 > v1 OR (k1 = v1 AND k2 > v2) OR … OR (k1 = v1 AND … AND id > vid)``

    with ``<`` for descending keys (and everything mirrored for "before").
    """
    keys = _keys(kind, sort, alias)
    raw_values: list[Any] = list(key.values)
    if len(keys) > len(raw_values):
        raw_values.append(key.id)
    try:
        values = [_encode(k, v) for k, v in zip(keys, raw_values, strict=True)]
    except (TypeError, ValueError, InvalidOperation) as exc:
        raise ValidationError("malformed cursor", field=field, code="INVALID_CURSOR") from exc
    if any(v is None or (isinstance(v, int) and not _INT64_MIN <= v <= _INT64_MAX)
           for v in values):
        # An integer SQLite cannot hold (a crafted cursor: 10^30) was an internal error
        # at the query's execution (QA s17).
        raise ValidationError("malformed cursor", field=field, code="INVALID_CURSOR")

    params: list[SqlValue] = []
    disjuncts = []
    for i, current in enumerate(keys):
        terms = []
        for prev, value in zip(keys[:i], values[:i], strict=True):
            terms.append(f"{prev.sql} = {prev.placeholder}")
            params.extend((*prev.params, value))
        op = ">" if current.descending != after else "<"
        terms.append(f"{current.sql} {op} {current.placeholder}")
        params.extend((*current.params, values[i]))
        disjuncts.append("(" + " AND ".join(terms) + ")")
    return "(" + " OR ".join(disjuncts) + ")", params


def _encode(key: _Key, value: Any) -> SqlValue:
    if key.spec is not None:
        return encode(key.spec, value)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError("a distance is a number")
    return float(value)


def cursor_of(record: Record, sort: Sequence[Sort], within: str | None = None) -> str:
    """The cursor of ``record`` in ``sort`` order (the values ``beyond`` compares)."""
    values = [_cursor_value(sort_value(record, s)) for s in sort]
    return encode_cursor(record.kind, sort, values, record.id, within)


def _cursor_value(value: Any) -> Any:
    # encode_cursor's JSON knows datetimes and StrEnums; Decimals travel as exact text
    # (``encode`` turns the text back into the stored form).
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Enum) and not isinstance(value, str):
        return value.value
    return value
