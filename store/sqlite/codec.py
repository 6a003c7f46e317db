"""Records <-> SQLite rows, generically from ``store.fields`` (one table per kind, one
column per dataclass field, same names).

Physical representation per field category:

====================  =======================================================
datetime              INTEGER, microseconds since the epoch, UTC
decimal               TEXT, ``str(Decimal)`` so ``0.3450`` stays ``0.3450``
enum                  TEXT, the member's value
bool                  INTEGER 0/1
json                  TEXT, JSON
id, str               TEXT
int / float           INTEGER / REAL
====================  =======================================================

Filter values and cursor values go through ``encode`` too, so a query compares exactly
what was stored.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import Enum
from typing import Any, TypeVar

from domain.entities import ENTITY_BY_KIND, E, Record
from store import fields
from store.fields import FieldSpec, build, checked_scalar
from store.sqlite.compiled_rows import (
    RowDecoder,
    RowEncoder,
    compile_row_decoder,
    compile_row_encoder,
)

T = TypeVar("T")

# ``store.fields`` memoizes with functools.cache, whose stub wants Hashable arguments, and
# mypy does not count entity classes as Hashable (a dataclass with eq sets ``__hash__`` to
# None for its *instances*). One typed alias each instead of an ignore at every call.
field_specs: Callable[[type[Record]], tuple[FieldSpec, ...]] = fields.field_specs  # type: ignore[assignment]
spec_by_name: Callable[[type[Record]], dict[str, FieldSpec]] = fields.spec_by_name  # type: ignore[assignment]


def per_kind(fn: Callable[[type[Record]], T]) -> Callable[[type[Record]], T]:
    """Memoize a function of an entity class (SQL text, column lists): computed once per
    kind, like ``functools.cache`` but typed for classes."""
    memo: dict[type[Record], T] = {}

    def cached(kind: type[Record]) -> T:
        if kind not in memo:
            memo[kind] = fn(kind)
        return memo[kind]

    return cached

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)

#: Values SQLite can bind and that ``encode`` produces.
SqlValue = int | float | str | None


def encode(spec: FieldSpec, value: Any) -> SqlValue:
    """A domain value of field ``spec`` as the value stored in its column."""
    if value is None:
        return None
    match spec.category:
        case "datetime":
            if not isinstance(value, datetime):
                raise TypeError(f"{spec.name}: expected datetime, got {type(value).__name__}")
            if value.tzinfo is None:
                # A naive time would be silently shifted by whatever the host zone is.
                raise ValueError(f"{spec.name}: datetime without a time zone")
            return (value - _EPOCH) // _MICRO
        case "decimal":
            return str(value if isinstance(value, Decimal) else Decimal(str(value)))
        case "enum":
            return str(value.value) if isinstance(value, Enum) else str(value)
        case "bool":
            return int(bool(value))
        case "json":
            return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        case _:  # int, float, id, str
            return checked_scalar(spec, value)


def decode(spec: FieldSpec, raw: Any) -> Any:
    """The stored column value back as a domain value (enums are re-typed by ``build``)."""
    if raw is None:
        return None
    match spec.category:
        case "datetime":
            return _EPOCH + raw * _MICRO
        case "decimal":
            return Decimal(raw)
        case "bool":
            return bool(raw)
        case "json":
            return json.loads(raw)
        case "float":
            return float(raw)
        case _:
            return raw


@per_kind
def columns(kind: type[Record]) -> tuple[str, ...]:
    """Column names of ``kind``'s table, in dataclass field order."""
    return tuple(spec.name for spec in field_specs(kind))


@per_kind
def _row_encoder(kind: type[Record]) -> RowEncoder:
    return compile_row_encoder(field_specs(kind), encode)


def to_row(record: Record) -> tuple[SqlValue, ...]:
    """The record as a row in ``columns(type(record))`` order (through the kind's
    generated encoder: the write path's hottest loop)."""
    return _row_encoder(type(record))(record)


@per_kind
def _row_decoder(kind: type[Record]) -> RowDecoder:
    return compile_row_decoder(kind, field_specs(kind))


def from_row(kind: type[E], row: Sequence[Any]) -> E:
    """A row selected as ``columns(kind)`` (extra trailing columns are ignored)."""
    if len(row) >= len(field_specs(kind)):
        return _row_decoder(kind)(row)  # type: ignore[return-value]
    values = {  # a shorter row: the fields it lacks are None, as ``build`` makes them
        spec.name: decode(spec, raw) for spec, raw in zip(field_specs(kind), row, strict=False)
    }
    return build(kind, values)  # type: ignore[return-value]


def spec_of(kind: type[Record], name: str) -> FieldSpec:
    """The field ``name`` of ``kind``. Field names end up in SQL text (values never do), so
    anything that is not a real field is refused here."""
    try:
        return spec_by_name(kind)[name]
    except KeyError:
        raise ValueError(f"{kind.kind} has no field {name!r}") from None


def kind_of(name: str) -> type[Record]:
    try:
        return ENTITY_BY_KIND[name]
    except KeyError:
        raise ValueError(f"unknown entity kind {name!r}") from None


def quote(identifier: str) -> str:
    """A quoted SQL identifier. Only ever called with validated field and kind names;
    quoting keeps names like ``before``/``after``/``type`` from being read as keywords."""
    return '"' + identifier.replace('"', '""') + '"'
