"""The domain query language as MongoDB filter documents, and keyset paging.

``Sub`` (a sub-select) has no MongoDB equivalent in a find filter. It used to be run first
with ``distinct`` and inlined as an ``$in`` list, which grows with the data: an operator's
audit scope (the entries of every session and payment in their books) passed the 16 MiB
command limit at ~240k sessions and payments, ``distinct`` itself failed at ~840k ids, and
every page moved megabytes. Now a filter with a ``Sub`` is read by an aggregation: each
``Sub`` is a ``$lookup`` into its kind's collection, joined on the selected field (an
index: ``_id`` or an indexed foreign key) and running the inner filter as its pipeline
(``$limit`` 1: only whether one matches counts), and the outer filter tests that the
lookup found one (a ``NotSub``, its complement, that it found none: NOT EXISTS). The
command stays the size of the filter, whatever the data. A filter without one is still
one ``find`` document.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bson import ObjectId
from bson.errors import InvalidId

from domain.entities import ENTITY_BY_KIND, Record
from domain.errors import ValidationError
from domain.query import (
    And,
    CursorKey,
    Eq,
    Filter,
    In,
    Near,
    NotSub,
    Or,
    Range,
    Search,
    Sort,
    Sub,
    search_folded,
    searched_fields,
)
from store.fields import FieldSpec
from store.mongo.codec import (
    EARTH_RADIUS_KM,
    compared,
    folded_name,
    shadow,
    spec_of,
    storage_name,
    unit_vector,
)

#: Matches nothing (an empty OR). Compared by identity: a compiled part that ``is NEVER``
#: lets AND/OR and the reads short-circuit without asking the database.
NEVER: dict[str, Any] = {"_id": {"$in": []}}
KM_PER_DEGREE_LAT = 111.19
#: How far past its radius a Near circle may reach, relative to the radius: far below the
#: metre a charger's position is good for, far above the rounding of the arithmetic.
NEAR_TOLERANCE = 1e-9


def storable(spec: FieldSpec, value: Any) -> bool:
    """Whether ``value`` can be stored in ``spec``'s field. An id field holds ObjectIds, so
    a string that is no ObjectId can never equal one: it matches nothing, as in SQLite."""
    return spec.category != "id" or value is None or isinstance(value, ObjectId) or (
        isinstance(value, str) and ObjectId.is_valid(value))


#: The digits of an id as text (``str(ObjectId)``).
_HEX = "0123456789abcdef"


def _bound(spec: FieldSpec, op: str, value: Any, bounds: dict[str, Any]
           ) -> dict[str, Any] | None:
    """``bounds`` with ``op value`` added; ``None``: nothing can be within them. An id
    field compares ids as text (SQLite's, and what a client sees): text that is no id
    bounds them at the first id at or after it in text order (``_id_from``), so a Range
    means the same on both stores instead of failing on an invalid ObjectId."""
    if spec.category != "id" or not isinstance(value, str) or (
            len(value) == 24 and not set(value) - set(_HEX)):
        # (An id in capitals is a valid ObjectId, but not the text: "0A" < "0a".)
        return {**bounds, f"${op}": compared(spec, value)}
    first = _id_from(value)  # > value: ``value`` is no id
    if first is None:  # every id is before it
        return bounds if op in ("lt", "lte") else None
    return {**bounds, "$gte" if op in ("gt", "gte") else "$lt": ObjectId(first)}


def _id_from(text: str) -> str | None:
    """The first id (24 lowercase hex digits) at or after ``text`` in text order, or
    ``None`` when every id comes before it."""
    for i, char in enumerate(text[:24]):
        if char not in _HEX:
            return _next_id(text[:i], char)
    if len(text) <= 24:
        return text + "0" * (24 - len(text))
    return _next_id(text[:23], text[23])  # ids equal to its first 24 come before it


def _next_id(prefix: str, after: str) -> str | None:
    """The first id that starts with ``prefix`` and then a digit above ``after``, else
    with a shorter piece of ``prefix`` and a digit above the next of it."""
    for i in range(len(prefix), -1, -1):
        above = [d for d in _HEX if d > (after if i == len(prefix) else prefix[i])]
        if above:
            return prefix[:i] + above[0] + "0" * (23 - i)
    return None


def all_of(*parts: dict[str, Any] | None) -> dict[str, Any]:
    """The conjunction of compiled parts (``None`` and ``{}`` match everything)."""
    kept = [part for part in parts if part]
    if any(part is NEVER for part in kept):
        return NEVER
    return {"$and": kept} if len(kept) > 1 else (kept[0] if kept else {})


@dataclass(frozen=True, slots=True)
class Query:
    """A compiled filter. ``before`` needs no join; ``stages`` are the ``$lookup``s (and
    key conversions) of its ``Sub``s, and ``after`` tests what they found. Without a
    ``Sub``, ``stages`` and ``after`` are empty and ``before`` is a ``find`` filter.
    ``before is NEVER``: matches nothing, nothing need be asked."""

    before: dict[str, Any]
    stages: tuple[dict[str, Any], ...] = ()
    after: dict[str, Any] | None = None
    #: The fields the stages add to each document, dropped before it is decoded.
    added: tuple[str, ...] = ()

    @property
    def never(self) -> bool:
        return self.before is NEVER

    def pipeline(self, extra: dict[str, Any] | None = None,
                 sort: Sequence[tuple[str, int]] = (), limit: int | None = None
                 ) -> list[dict[str, Any]]:
        """The aggregation reading the matching documents, ANDed with ``extra`` (no
        ``Sub`` in it), in ``sort`` order, at most ``limit``. What needs no join (a
        keyset bound, the sort's index) comes first, so the lookups run only for the
        documents that reach them, and stop at the limit."""
        before = all_of(self.before, extra)
        stages: list[dict[str, Any]] = [{"$match": before}] if before else []
        if sort:
            stages.append({"$sort": dict(sort)})
        stages.extend(self.stages)
        if self.after:
            stages.append({"$match": self.after})
        if limit is not None:
            stages.append({"$limit": limit})
        if self.added:
            stages.append({"$project": dict.fromkeys(self.added, 0)})
        return stages


def compile_query(kind: type[Record], where: Filter) -> Query:
    """``where`` on ``kind``: its top-level conjuncts without a ``Sub`` go ``before`` the
    lookups, the others ``after``."""
    compiler = FilterCompiler()
    before: list[dict[str, Any]] = []
    after: list[dict[str, Any]] = []
    for part in where.parts if isinstance(where, And) else (where,):
        joins = len(compiler.stages)
        compiled = compiler.compile(kind, part)
        if compiled is NEVER:
            return Query(NEVER)
        (after if len(compiler.stages) > joins else before).append(compiled)
    return Query(all_of(*before), tuple(compiler.stages), all_of(*after) or None,
                 tuple(compiler.added))


class FilterCompiler:
    """Compiles one filter; the ``Sub``s in it add their ``stages`` (and the fields those
    add, named apart per filter) as they are met."""

    def __init__(self) -> None:
        self.stages: list[dict[str, Any]] = []
        self.added: list[str] = []
        #: (field, type) -> the added field holding it converted, made once per filter
        #: (an operator's audit scope joins ``entity_id`` with eight kinds).
        self._converted: dict[tuple[str, str], str] = {}

    def compile(self, kind: type[Record], where: Filter) -> dict[str, Any]:
        match where:
            case Eq(field=field, value=value):
                spec = spec_of(kind, field)
                if not storable(spec, value):
                    return NEVER
                return {shadow(spec): compared(spec, value)}
            case In(field=field, values=values):
                spec = spec_of(kind, field)
                kept = [compared(spec, v) for v in values if storable(spec, v)]
                return {shadow(spec): {"$in": kept}} if kept else NEVER
            case Range(field=field):
                spec = spec_of(kind, field)
                bounds: dict[str, Any] | None = {}
                for op in ("gte", "gt", "lte", "lt"):
                    value = getattr(where, op)
                    if value is not None and bounds is not None:
                        bounds = _bound(spec, op, value, bounds)
                if bounds is None:
                    return NEVER
                return {shadow(spec): bounds} if bounds else {}
            case Search(fields=names, text=text):
                names = searched_fields(kind.kind, names)
                if not names:
                    return NEVER  # an OR over no fields (MongoDB refuses an empty $or)
                # The folded shadows, case-sensitively (no "i" option): the server's
                # regex engine folds case otherwise than the domain (codec's note).
                pattern = {"$regex": re.escape(search_folded(text))}
                return {"$or": [{folded_name(spec_of(kind, n).name): pattern}
                                for n in names]}
            case Near():
                return self._near(where)
            case Sub():
                found = self._join(kind, where)
                return NEVER if found is None else {found: {"$ne": []}}
            case NotSub():
                # The same lookup, kept when it found nothing: the exact complement (a
                # null key finds nothing, since the lookup leaves null keys out).
                found = self._join(kind, where)
                return {} if found is None else {found: {"$size": 0}}
            case And(parts=parts):
                compiled = [c for c in [self.compile(kind, p) for p in parts] if c]
                if any(c is NEVER for c in compiled):
                    return NEVER
                return {"$and": compiled} if len(compiled) > 1 else (
                    compiled[0] if compiled else {})
            case Or(parts=parts):
                if not parts:
                    return NEVER
                compiled = [self.compile(kind, p) for p in parts]
                if any(c == {} for c in compiled):
                    return {}
                compiled = [c for c in compiled if c is not NEVER]
                if not compiled:
                    return NEVER
                return {"$or": compiled} if len(compiled) > 1 else compiled[0]
        raise TypeError(f"not a filter: {where!r}")

    @staticmethod
    def _near(near: Near) -> dict[str, Any]:
        """Exact great-circle distance, compared as the chord between unit vectors: a
        central angle ``a`` is a chord of ``2 sin(a / 2)``, and the squared chord is a sum
        of squared differences, accurate for a metre as for a continent. (The cosine of a
        few metres' angle differs from 1 by less than a double resolves: ``dot >= cos(a)``
        counted stations up to ~9 m outside the circle.) A latitude band (indexed) narrows
        the candidates first."""
        if near.radius_km < 0:
            return NEVER  # as in SQLite (a cosine would have read it as its absolute value)
        center = unit_vector(near.lat, near.lon)
        band = near.radius_km / KM_PER_DEGREE_LAT + 1e-9
        angle = min(near.radius_km / EARTH_RADIUS_KM, math.pi)
        # Float rounding must not cut off a point on the circle itself: a relative margin,
        # plus an absolute one of a few ulps of a unit vector's components (nanometres).
        chord = 2 * math.sin(angle / 2) * (1 + NEAR_TOLERANCE) + 1e-15
        squared = squared_chord(center)
        return {"lat": {"$gte": near.lat - band, "$lte": near.lat + band},
                "_geo": {"$ne": None},
                "$expr": {"$lte": [squared, chord * chord]}}

    def _join(self, kind: type[Record], sub: Sub | NotSub) -> str | None:
        """Adds the ``$lookup`` of ``sub`` and returns the field it fills: the (at most
        one) matching record's id. ``None``: the inner filter matches nothing, so no
        record can be found and no lookup is needed."""
        inner_kind = ENTITY_BY_KIND[sub.kind]
        inner = compile_query(inner_kind, sub.where)
        if inner.never:
            return None
        outer = spec_of(kind, sub.field)
        selected = spec_of(inner_kind, sub.select)
        local = storage_name(outer.name)
        number = len(self.stages)
        # Ids are ObjectIds, some text fields hold them too (audit ``entity_id``,
        # ``actor``): the join compares the outer value in the selected field's type. Text
        # that is no ObjectId becomes null, which matches nothing (as in SQLite).
        to = "string" if outer.category == "id" and selected.category != "id" else (
            "objectId" if outer.category != "id" and selected.category == "id" else None)
        if to is not None:
            local = self._converted_field(local, to)
        found = f"_j{number}"
        foreign = storage_name(selected.name)
        # NULL never matches IN, as in SQL (a null key would find the null ones).
        extra: dict[str, Any] = {foreign: {"$ne": None}}
        lookup: dict[str, Any] = {"from": sub.kind, "localField": local,
                                  "foreignField": foreign}
        if sub.joined:
            lookup["let"], extra["$expr"] = _joined(kind, inner_kind, sub.joined, number)
        matching = inner.pipeline(extra=extra, limit=1)
        self.stages.append({"$lookup": {
            **lookup, "pipeline": [*matching, {"$project": {"_id": 1}}], "as": found}})
        self.added.append(found)
        return found

    def _converted_field(self, name: str, to: str) -> str:
        key = self._converted.get((name, to))
        if key is None:
            key = self._converted[(name, to)] = f"_k{len(self.stages)}"
            self.stages.append({"$addFields": {key: {"$convert": {
                "input": f"${name}", "to": to, "onError": None, "onNull": None}}}})
            self.added.append(key)
        return key


def _joined(kind: type[Record], inner_kind: type[Record], pairs: Sequence[tuple[str, str]],
            number: int) -> tuple[dict[str, str], dict[str, Any]]:
    """A ``Sub``'s further key fields (``joined``): the lookup's ``let`` (the outer
    document's values, as ``$$k<lookup>_<i>``) and the ``$expr`` the inner documents
    must meet (MongoDB 5.0's correlated lookup: localField/foreignField with a pipeline
    and its variables)."""
    names: dict[str, str] = {}
    equal: list[dict[str, Any]] = []
    for index, (outer_field, inner_field) in enumerate(pairs):
        outer, inner = spec_of(kind, outer_field), spec_of(inner_kind, inner_field)
        if outer.category != inner.category:
            raise ValueError(f"joined fields differ in type: {outer_field}, {inner_field}")
        name = f"k{number}_{index}"
        names[name] = f"${storage_name(outer.name)}"
        equal.append({"$eq": [f"${storage_name(inner.name)}", f"$${name}"]})
    return names, {"$and": equal} if len(equal) > 1 else equal[0]


def squared_chord(center: dict[str, float]) -> dict[str, Any]:
    """The squared chord between a station's ``_geo`` and ``center`` (unit vectors), as an
    aggregation expression: the great-circle distance grows with it."""
    return {"$add": [{"$multiply": [difference, difference]} for difference in (
        {"$subtract": [f"$_geo.{axis}", center[axis]]} for axis in "xyz")]}


def computed_name(index: int) -> str:
    """The field a computed sort key (a distance) is added under, by its place in the sort."""
    return f"_sort{index}"


def computed_keys(kind: type[Record], sort: Sequence[Sort]) -> dict[str, Any]:
    """The ``$addFields`` document of the sort keys that are no stored field: a distance
    key orders by the squared chord from its origin (no trigonometry: plain arithmetic
    the server repeats to the bit, and the cursor carries the value the server computed,
    so "after it" compares equal values exactly)."""
    if any(key.origin is not None for key in sort):
        for name in ("lat", "lon"):
            spec_of(kind, name)  # raises for a kind without a position, as SQLite does
    return {computed_name(i): squared_chord(unit_vector(*key.origin))
            for i, key in enumerate(sort) if key.origin is not None}


def _sort_name(kind: type[Record], index: int, key: Sort) -> str:
    return computed_name(index) if key.origin is not None else shadow(spec_of(kind, key.field))


def sort_spec(kind: type[Record], sort: Sequence[Sort], reverse: bool = False
              ) -> list[tuple[str, int]]:
    """Sort keys plus ``_id`` ascending as the tie-breaker; ``reverse`` flips them all."""
    keys = [(_sort_name(kind, i, s), -1 if s.descending else 1) for i, s in enumerate(sort)]
    if all(name != "_id" for name, _ in keys):
        keys.append(("_id", 1))
    return [(name, -direction if reverse else direction) for name, direction in keys]


def beyond(kind: type[Record], sort: Sequence[Sort], key: CursorKey, *, after: bool,
           field: str) -> dict[str, Any]:
    """Documents strictly after (or before) the cursor's position in ``sort`` order (a
    distance key compares its ``computed_keys`` field: the filter must follow them)."""
    # (name, descending, spec): spec encodes the cursor's value; None for a distance.
    keys: list[tuple[str, bool, FieldSpec | None]] = [
        (_sort_name(kind, i, s), s.descending,
         None if s.origin is not None else spec_of(kind, s.field))
        for i, s in enumerate(sort)]
    values: list[Any] = list(key.values)
    if all(spec is None or spec.name != "id" for _, _, spec in keys):
        keys.append(("_id", False, spec_of(kind, "id")))
        values.append(key.id)
    try:
        encoded = [_compared(spec, v) for (_, _, spec), v in zip(keys, values, strict=True)]
    except (TypeError, ValueError, ArithmeticError, InvalidId) as exc:
        raise ValidationError("malformed cursor", field=field, code="INVALID_CURSOR") from exc
    if any(v is None or (isinstance(v, int) and not -(2**63) <= v < 2**63)
           for v in encoded):
        # BSON holds 64-bit integers: a crafted 10^30 would fail in the driver.
        raise ValidationError("malformed cursor", field=field, code="INVALID_CURSOR")
    disjuncts = []
    for i, (name, descending, _) in enumerate(keys):
        term: dict[str, Any] = {n: v for (n, _, _), v in zip(keys[:i], encoded[:i],
                                                             strict=True)}
        op = "$gt" if descending != after else "$lt"
        term[name] = {op: encoded[i]}
        disjuncts.append(term)
    return {"$or": disjuncts}


def _compared(spec: FieldSpec | None, value: Any) -> Any:
    if spec is not None:
        return compared(spec, value)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError("a distance is a number")
    return float(value)
