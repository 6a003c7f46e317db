"""``Store.aggregate`` as one SQL ``GROUP BY`` query."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from domain.aggregation import (
    ByField,
    ByTime,
    Count,
    Group,
    Max,
    Metric,
    Min,
    OverlapSeconds,
    Sum,
)
from domain.entities import Record
from store.sqlite.codec import SqlValue, decode, encode, quote, spec_of
from store.sqlite.sql_filter import column, compile_where, sortable

MICROS = 1_000_000
#: More seconds than lie between 0001-01-01 (the earliest datetime) and 1970, plus the
#: largest bucket origin and zone offset (the shift keeps local microseconds positive and
#: below 2**63 up to the year 9999).
_LOWEST_S = 63_000_000_000


def _micros(kind: type[Record], field: str, value: datetime) -> SqlValue:
    return encode(spec_of(kind, field), value)


def _time_key(kind: type[Record], group: ByTime, params: list[SqlValue]) -> str:
    col = column("t0", group.field)
    # Closed on the right, an instant on a boundary (or an offset change) is before it.
    before = "<=" if group.closed_right else "<"
    if group.boundaries:
        branches = []
        for index, boundary in enumerate(group.boundaries[1:]):
            branches.append(f"WHEN {col} {before} ? THEN {index}")
            params.append(_micros(kind, group.field, boundary))
        return f"(CASE {' '.join(branches)} ELSE {len(group.boundaries) - 1} END)" \
            if branches else "0"
    if group.size_s is None:
        raise ValueError("ByTime needs size_s or boundaries")
    offset = "0"
    if group.offsets:
        branches = []
        for (_, previous), (instant, _) in zip(group.offsets, group.offsets[1:], strict=False):
            branches.append(f"WHEN {col} {before} ? THEN {int(previous)}")
            params.append(_micros(kind, group.field, instant))
        last = int(group.offsets[-1][1])
        offset = f"(CASE {' '.join(branches)} ELSE {last} END)" if branches else str(last)
    # The key is floor(local seconds / size). SQLite's integer division truncates toward
    # zero, which is not floor for a negative dividend: an instant before the bucket origin
    # (weeks count from Monday 1970-01-05) or pushed before 1970 by a zone behind UTC.
    # Adding a whole number of buckets that lifts every storable instant (year 1 on) above
    # zero, and taking it off the quotient again, makes truncation and floor agree. In
    # microseconds, so a fraction of a second before 1970 is floored as well.
    size = int(group.size_s)
    shift = -(-_LOWEST_S // size)  # buckets, rounded up
    local = f"({col} + ({offset} - {int(group.origin_s)} + {shift * size}) * {MICROS})"
    if group.closed_right:
        # ceil(x / size) - 1 is floor((x - 1) / size) for whole microseconds.
        local = f"({local} - 1)"
    return f"({local} / {size * MICROS} - {shift})"


def _metric(kind: type[Record], metric: Metric, params: list[SqlValue]) -> str:
    match metric:
        case Count():
            return "COUNT(*)"
        case Sum(field=field):
            spec = spec_of(kind, field)
            if spec.category == "int":
                # Exact: TOTAL() adds in floating point, which loses whole units past 2^53
                # (amounts in minor units), where MongoDB's $sum stays exact.
                return f"COALESCE(SUM({column('t0', field)}), 0)"
            return f"TOTAL({sortable(spec, column('t0', field))})"
        case Min(field=field):
            return f"MIN({column('t0', field)})"
        case Max(field=field):
            return f"MAX({column('t0', field)})"
        case OverlapSeconds():
            start, end = column("t0", metric.start), column("t0", metric.end)
            open_end = "?"
            params.append(_micros(kind, metric.end, metric.open_end))
            if metric.since is not None:
                # The record's own now: its start plus what our clock saw since its
                # ``since`` (all in microseconds); a null ``since`` is NULL here, and
                # COALESCE goes on to ``open_end``.
                open_end = f"{start} + ? - {column('t0', metric.since)}, ?"
                params.append(_micros(kind, metric.end, metric.open_end))
            params.extend([_micros(kind, metric.end, metric.hi),
                           _micros(kind, metric.start, metric.lo)])
            return (f"TOTAL(MAX(0, MIN(COALESCE({end}, {open_end}), ?) - MAX({start}, ?))) "
                    f"/ {float(MICROS)}")
    raise TypeError(f"not a metric: {metric!r}")


def build_query(kind: type[Record], where: Any, group: Sequence[Group],
                metrics: Mapping[str, Metric]) -> tuple[str, list[SqlValue]]:
    select_params: list[SqlValue] = []
    keys = []
    for index, g in enumerate(group):
        if isinstance(g, ByField):
            keys.append(f"{column('t0', g.field)} AS g{index}")
        else:
            keys.append(f"{_time_key(kind, g, select_params)} AS g{index}")
    values = [f"{_metric(kind, m, select_params)} AS {quote(name)}"
              for name, m in metrics.items()]
    where_sql, where_params = compile_where(kind, where)
    # A record whose bucket field is null is in no time bucket (``Store.aggregate``).
    where_sql = " AND ".join([where_sql, *(f"{column('t0', g.field)} IS NOT NULL"
                                           for g in group if isinstance(g, ByTime))])
    sql = f"SELECT {', '.join(keys + values)} FROM {quote(kind.kind)} AS t0 WHERE {where_sql}"
    if keys:
        sql += " GROUP BY " + ", ".join(f"g{i}" for i in range(len(keys)))
    return sql, select_params + where_params


def decode_row(kind: type[Record], group: Sequence[Group], metrics: Mapping[str, Metric],
               row: Sequence[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for index, g in enumerate(group):
        raw = row[index]
        if isinstance(g, ByField):
            spec = spec_of(kind, g.field)
            value = decode(spec, raw)
            out[f"g{index}"] = spec.enum_type(value) if spec.enum_type and value is not None \
                else value
        else:
            out[f"g{index}"] = int(raw)
    for offset, (name, metric) in enumerate(metrics.items(), start=len(group)):
        raw = row[offset]
        if isinstance(metric, Min | Max):
            out[name] = decode(spec_of(kind, metric.field), raw)
        elif isinstance(metric, Count):
            out[name] = int(raw or 0)
        elif isinstance(metric, Sum) and spec_of(kind, metric.field).category == "int":
            out[name] = int(raw or 0)  # whole units (Wh, minor units) stay exact
        else:
            out[name] = float(raw or 0)
    return out
