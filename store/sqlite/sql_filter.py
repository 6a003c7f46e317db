"""``domain.query`` filters as SQL ``WHERE`` text with bound parameters.

Only validated identifiers (field and kind names checked against the entities) and
enum members are ever written into the SQL text; every other value travels as a ``?``
parameter, encoded exactly as it is stored (``store.sqlite.codec``). Enum members are
literals because a parameter compared with a column that a partial index's condition
names (``session.state``: one active session per connector) makes SQLite prepare the
statement again on every run, since only the bound value tells whether that index
applies: a station's active sessions took 52 µs instead of 14. They come from a fixed
set, so the statement cache holds one statement per member.

Column references are qualified with a per-depth table alias (``t0`` for the queried
table, ``t1`` inside a ``Sub`` …) so a subquery on the same table can never be confused
with its outer query.
"""

from __future__ import annotations

import math

from domain.entities import Record
from domain.geo import EARTH_RADIUS_KM, distance_km
from domain.query import (
    And,
    Eq,
    Filter,
    In,
    Near,
    NotSub,
    Or,
    Range,
    Search,
    Sub,
    search_folded,
    searched_fields,
)
from store.fields import FieldSpec
from store.sqlite.codec import SqlValue, encode, kind_of, quote, spec_of

TRUE = "1"
FALSE = "0"

#: Name of the SQL function computing great-circle distances (registered per connection).
HAVERSINE = "haversine_km"
#: Name of the SQL function folding text as ``Search`` compares it
#: (``domain.query.search_folded``). SQLite's own ``lower`` only folds ASCII, so "MÜLLER"
#: would not find "Müller".
SEARCH_FOLDED = "search_folded"


def haversine_km(lat1: float | None, lon1: float | None, lat2: float | None,
                 lon2: float | None) -> float | None:
    """Great-circle distance in km; NULL when a coordinate is missing (never matches)."""
    if lat1 is None or lon1 is None or lat2 is None or lon2 is None:
        return None
    # The domain's function itself: a distance sort's cursor, computed in Python from the
    # record, equals to the last bit what SQLite compares it with.
    return distance_km(lat1, lon1, lat2, lon2)


def search_folded_sql(text: str | None) -> str | None:
    """The SQL function ``SEARCH_FOLDED``: the domain's folding, NULL for NULL (and for
    anything not text, which no searched column holds)."""
    # The domain's function itself: both stores fold alike, and this one with MongoDB's
    # folded shadows (store/mongo/codec.py).
    return search_folded(text) if isinstance(text, str) else None


def column(alias: str, name: str) -> str:
    return f"{alias}.{quote(name)}"


def sortable(spec: FieldSpec, sql: str) -> str:
    """``sql`` (a column or a ``?``) as compared in equality, ranges and orderings. Decimals
    are stored as exact TEXT, which would order "10" before "9" and tell "0.390" from
    "0.39"; they compare as numbers instead."""
    return f"CAST({sql} AS REAL)" if spec.category == "decimal" else sql


def compile_where(kind: type[Record], where: Filter, alias: str = "t0"
                  ) -> tuple[str, list[SqlValue]]:
    """``where`` on ``kind`` (aliased ``alias``) as SQL text and its parameters."""
    params: list[SqlValue] = []
    return _node(kind, where, alias, params), params


def _node(kind: type[Record], node: Filter, alias: str, params: list[SqlValue]) -> str:
    match node:
        case Eq():
            return _eq(kind, node, alias, params)
        case In():
            return _in(kind, node, alias, params)
        case Range():
            return _range(kind, node, alias, params)
        case Search():
            return _search(kind, node, alias, params)
        case Near():
            return _near(kind, node, alias, params)
        case Sub():
            return _sub(kind, node, alias, params)
        case NotSub():
            return _not_sub(kind, node, alias, params)
        case And(parts=parts):
            if not parts:
                return TRUE
            return "(" + " AND ".join(_node(kind, p, alias, params) for p in parts) + ")"
        case Or(parts=parts):
            if not parts:
                return FALSE
            return "(" + " OR ".join(_node(kind, p, alias, params) for p in parts) + ")"
    raise TypeError(f"not a filter: {node!r}")


def _value(spec: FieldSpec, value: object, params: list[SqlValue]) -> str:
    """``value`` in the SQL text: a member of the field's enum as a literal (see the
    module's note), anything else — a plain string for an enum field too — as a
    parameter."""
    encoded = encode(spec, value)
    if spec.enum_type is not None and isinstance(value, spec.enum_type) \
            and isinstance(encoded, str):
        return "'" + encoded.replace("'", "''") + "'"
    params.append(encoded)
    return "?"


def _eq(kind: type[Record], node: Eq, alias: str, params: list[SqlValue]) -> str:
    spec = spec_of(kind, node.field)
    if node.value is None:
        return f"{column(alias, spec.name)} IS NULL"
    # By number for a decimal (``sortable``), as MongoDB compares its numeric shadow: as
    # text, "0.390" is not "0.39".
    return (f"{sortable(spec, column(alias, spec.name))} = "
            f"{sortable(spec, _value(spec, node.value, params))}")


def _in(kind: type[Record], node: In, alias: str, params: list[SqlValue]) -> str:
    spec = spec_of(kind, node.field)
    col = column(alias, spec.name)
    # Decimals by number, as in ``_eq``.
    values = [sortable(spec, _value(spec, v, params)) for v in node.values if v is not None]
    parts = []
    if values:
        parts.append(f"{sortable(spec, col)} IN ({', '.join(values)})")
    if len(values) < len(node.values):  # a None among the values: "or is null", like Eq
        parts.append(f"{col} IS NULL")
    if not parts:
        return FALSE
    return parts[0] if len(parts) == 1 else f"({' OR '.join(parts)})"


def _range(kind: type[Record], node: Range, alias: str, params: list[SqlValue]) -> str:
    spec = spec_of(kind, node.field)
    col = sortable(spec, column(alias, spec.name))
    parts = []
    for op, bound in ((">=", node.gte), (">", node.gt), ("<=", node.lte), ("<", node.lt)):
        if bound is not None:
            params.append(encode(spec, bound))
            parts.append(f"{col} {op} {sortable(spec, '?')}")
    if not parts:
        return TRUE
    return parts[0] if len(parts) == 1 else "(" + " AND ".join(parts) + ")"


def _search(kind: type[Record], node: Search, alias: str, params: list[SqlValue]) -> str:
    # instr() takes the needle literally, so % _ . * in the text match only themselves
    # (LIKE would need escaping). The needle is folded once, here, not per row.
    needle = search_folded(node.text)
    parts = []
    for name in searched_fields(kind.kind, node.fields):
        spec = spec_of(kind, name)
        params.append(needle)
        parts.append(f"instr({SEARCH_FOLDED}({column(alias, spec.name)}), ?) > 0")
    if not parts:
        return FALSE
    return parts[0] if len(parts) == 1 else "(" + " OR ".join(parts) + ")"


def _near(kind: type[Record], node: Near, alias: str, params: list[SqlValue]) -> str:
    lat_col = column(alias, spec_of(kind, "lat").name)
    lon_col = column(alias, spec_of(kind, "lon").name)
    if node.radius_km < 0:
        return FALSE
    # A bounding box first, so the (lat, lon) index narrows the rows the exact (and
    # comparatively slow, Python) distance function has to look at. A tiny margin keeps
    # float rounding from cutting off points on the circle itself.
    angle = node.radius_km / EARTH_RADIUS_KM
    dlat = math.degrees(angle) + 1e-9
    parts = [f"{lat_col} BETWEEN ? AND ?"]
    params.extend([node.lat - dlat, node.lat + dlat])
    cos_lat = math.cos(math.radians(node.lat))
    if node.lat + dlat < 90 and node.lat - dlat > -90 and math.sin(angle) < cos_lat:
        # Widest longitude offset of the circle (it does not contain a pole here).
        dlon = math.degrees(math.asin(math.sin(angle) / cos_lat)) + 1e-9
        if node.lon - dlon >= -180 and node.lon + dlon <= 180:
            # Only when the box does not wrap around the antimeridian; otherwise the
            # latitude band alone prefilters.
            parts.append(f"{lon_col} BETWEEN ? AND ?")
            params.extend([node.lon - dlon, node.lon + dlon])
    parts.append(f"{HAVERSINE}({lat_col}, {lon_col}, ?, ?) <= ?")
    params.extend([node.lat, node.lon, node.radius_km])
    return "(" + " AND ".join(parts) + ")"


def _sub(kind: type[Record], node: Sub | NotSub, alias: str, params: list[SqlValue]
         ) -> str:
    outer = spec_of(kind, node.field)
    inner_kind = kind_of(node.kind)
    selected = spec_of(inner_kind, node.select)
    inner_alias = f"t{int(alias[1:]) + 1}"
    inner_col = column(inner_alias, selected.name)
    inner_where = _node(inner_kind, node.where, inner_alias, params)
    # The further key fields make it a correlated sub-select (run per outer row, through
    # the inner kind's index on the selected field).
    joined = "".join(
        f" AND {column(inner_alias, spec_of(inner_kind, inner).name)} = "
        f"{column(alias, spec_of(kind, outer_field).name)}"
        for outer_field, inner in node.joined)
    # A NULL in the selected column must match nothing. IN already never matches it, but
    # saying so lets the planner skip those rows in the subquery's index.
    return (
        f"{column(alias, outer.name)} IN (SELECT {inner_col} FROM {quote(inner_kind.kind)} "
        f"AS {inner_alias} WHERE {inner_col} IS NOT NULL AND {inner_where}{joined})"
    )


def _not_sub(kind: type[Record], node: NotSub, alias: str, params: list[SqlValue]) -> str:
    # ``NOT (x IN (…))`` is the complement of the ``Sub`` for every non-null ``x``: the
    # sub-select yields no NULL (``_sub`` leaves them out), so ``IN`` is never unknown.
    # A null ``x`` matches no ``Sub``, so it matches its complement: said outright, as
    # ``NOT (NULL IN …)`` would be unknown. The sub-select is uncorrelated, so SQLite
    # builds its set once per statement, as for ``Sub``.
    col = column(alias, spec_of(kind, node.field).name)
    return f"({col} IS NULL OR NOT ({_sub(kind, node, alias, params)}))"
