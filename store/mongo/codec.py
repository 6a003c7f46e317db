"""Records <-> MongoDB documents, generically from ``store.fields``.

==========  ==============================================================
id fields   ``ObjectId`` (``id`` is stored as ``_id``)
datetime    BSON date (UTC; BSON keeps milliseconds, as the domain does)
decimal     exact text, plus a numeric shadow ``_n_<field>`` that Eq, In, Range and
            sort use (``Decimal128`` would do both, but mongomock cannot compare it)
enum        the member's value
json        embedded document
==========  ==============================================================

A searched text field (``domain.query.SEARCHED``) also carries a folded shadow
``_f_<field>``: its text as ``domain.query.search_folded`` folds it (null for null), which
``Search`` matches with a case-sensitive regex of the folded needle. The server's regex
engine then never decides what case is: PCRE2's caseless matching has no "İ"/"i" pair
(a real server's "istanbul" missed "İstanbul", which mongomock, using Python's ``re``,
found), and SQLite folds the same way (``store/sqlite/sql_filter.py``). Every write
derives it from the field (``to_doc``, ``written_names``); ``migrations._search_folded``
fills it in for documents stored before, and ``migrations`` folds it again where an
earlier version folded it otherwise (``_search_refolded``, ``heal_search_shadows``).

Stations also carry ``_geo``, the unit vector of their position: "within r km of P" is then
``|_geo - P|² <= (2 sin(r / 2R))²`` (the squared chord), exact at a metre as at a continent
and expressible in every MongoDB (and in mongomock, which lacks ``$geoWithin``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from enum import Enum
from typing import Any

from bson import Decimal128, ObjectId

from domain import geo
from domain.entities import Record
from domain.query import SEARCHED, search_folded
from store import fields
from store.fields import FieldSpec, build, checked_scalar

field_specs: Callable[[type[Record]], tuple[FieldSpec, ...]] = fields.field_specs  # type: ignore[assignment]
spec_by_name: Callable[[type[Record]], dict[str, FieldSpec]] = fields.spec_by_name  # type: ignore[assignment]

EARTH_RADIUS_KM = geo.EARTH_RADIUS_KM


def storage_name(field: str) -> str:
    return "_id" if field == "id" else field


def spec_of(kind: type[Record], field: str) -> FieldSpec:
    try:
        return spec_by_name(kind)[field]
    except KeyError:
        raise ValueError(f"{kind.kind} has no field {field!r}") from None


def encode(spec: FieldSpec, value: Any) -> Any:
    """A domain value of field ``spec`` as stored (also for filter and cursor values)."""
    if value is None:
        return None
    # Types are checked as SQLite's codec checks them (``TypeError``): a float or a bool
    # in an int field was stored here and refused there. A few ``isinstance`` calls on
    # the write path; a cursor's value is refused the same way (``INVALID_CURSOR``).
    match spec.category:
        case "id":
            if isinstance(value, ObjectId):
                return value
            if not isinstance(value, str):
                raise TypeError(f"{spec.name}: expected str, got {type(value).__name__}")
            return ObjectId(value)
        case "datetime":
            if not isinstance(value, datetime):
                raise TypeError(f"{spec.name}: expected datetime, got {type(value).__name__}")
            if value.tzinfo is None:
                raise ValueError(f"{spec.name}: needs an aware datetime")
            return value.astimezone(UTC)
        case "decimal":
            return str(value if isinstance(value, Decimal) else Decimal(str(value)))
        case "enum":
            return value.value if isinstance(value, Enum) else str(value)
        case "bool":
            return bool(value)
        case "int" | "float" | "str":
            return checked_scalar(spec, value)
        case _:
            return value


#: "No constant default" (``constant_default``).
NO_DEFAULT: Any = dataclasses.MISSING


def constant_default(kind: type[Record], name: str) -> Any:
    """The constant a stored document without field ``name`` reads as (``fields.build``
    fills a missing non-nullable field with its dataclass default), or ``NO_DEFAULT``:
    a nullable field reads None, and a factory's value (a fresh id, the time) is each
    record's own, never one a guard could name."""
    spec = spec_by_name(kind)[name]
    if not spec.defaulted:
        return NO_DEFAULT
    return _defaults(kind).get(name, NO_DEFAULT)


_DEFAULTS: dict[type[Record], dict[str, Any]] = {}


def _defaults(kind: type[Record]) -> dict[str, Any]:
    if kind not in _DEFAULTS:
        _DEFAULTS[kind] = {f.name: f.default for f in dataclasses.fields(kind)
                           if f.default is not dataclasses.MISSING}
    return _DEFAULTS[kind]


def shadow(spec: FieldSpec) -> str:
    """The stored name a filter or sort on ``spec`` compares: decimals use their numeric
    shadow, everything else itself."""
    return f"_n_{spec.name}" if spec.category == "decimal" else storage_name(spec.name)


def folded_name(field: str) -> str:
    """The stored name of searched field ``field``'s folded shadow."""
    return f"_f_{field}"


def folded(value: Any) -> str | None:
    """A searched field's value as its folded shadow holds it."""
    return search_folded(value) if isinstance(value, str) else None


def compared(spec: FieldSpec, value: Any) -> Any:
    """A filter or cursor value in the form ``shadow(spec)`` holds."""
    if spec.category == "decimal" and value is not None:
        return float(Decimal(str(value)))
    return encode(spec, value)


def decode(spec: FieldSpec, value: Any) -> Any:
    if value is None:
        return None
    match spec.category:
        case "id":
            return str(value)
        case "datetime":
            return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        case "decimal":
            return value.to_decimal() if isinstance(value, Decimal128) else Decimal(str(value))
        case "float":
            return float(value)
        case _:
            return value


def unit_vector(lat: float, lon: float) -> dict[str, float]:
    phi, lam = math.radians(lat), math.radians(lon)
    return {"x": math.cos(phi) * math.cos(lam), "y": math.cos(phi) * math.sin(lam),
            "z": math.sin(phi)}


GEO = "_geo"


def _has_geo(record: Record) -> bool:
    return record.kind == "station"


def to_doc(record: Record) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for spec in field_specs(type(record)):
        value = getattr(record, spec.name)
        doc[storage_name(spec.name)] = encode(spec, value)
        if spec.category == "decimal":
            doc[shadow(spec)] = compared(spec, value)
    for name in SEARCHED.get(record.kind, ()):
        doc[folded_name(name)] = folded(getattr(record, name))
    lat, lon = doc.get("lat"), doc.get("lon")
    if _has_geo(record) and lat is not None and lon is not None:
        doc[GEO] = unit_vector(lat, lon)
    return doc


def written_names(record: Record, fields: frozenset[str]) -> set[str]:
    """The stored names a partial update of ``fields`` writes: the fields themselves, a
    decimal's numeric shadow, a searched field's folded one, and a station's ``_geo``
    when its position moves."""
    specs = spec_by_name(type(record))
    unknown = fields - specs.keys()
    if unknown or "id" in fields:
        raise ValueError(f"cannot update {sorted(unknown or {'id'})} of {record.kind}")
    names = {storage_name(name) for name in fields}
    names |= {shadow(specs[name]) for name in fields if specs[name].category == "decimal"}
    names |= {folded_name(name) for name in fields & SEARCHED.get(record.kind, frozenset())}
    if _has_geo(record) and {"lat", "lon"} & fields:
        names.add(GEO)
    return names


def partial_update(record: Record, fields: frozenset[str]) -> dict[str, Any]:
    """The ``$set`` (and ``$unset``) document writing only ``fields`` of ``record``. A
    station that loses its position loses ``_geo`` too, so ``Near`` cannot find it at the
    old place."""
    doc = to_doc(record)
    names = written_names(record, fields)
    update: dict[str, Any] = {"$set": {name: doc[name] for name in names if name in doc}}
    if GEO in names and GEO not in doc:
        update["$unset"] = {GEO: ""}
    return update


def from_doc(kind: type[Record], doc: dict[str, Any]) -> Record:
    values = {spec.name: decode(spec, doc.get(storage_name(spec.name)))
              for spec in field_specs(kind)}
    return build(kind, values)
