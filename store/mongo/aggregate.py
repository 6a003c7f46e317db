"""``Store.aggregate`` as one MongoDB aggregation pipeline ($match, or the lookups of a
filter with a ``Sub``, then $group)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
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
from store.mongo.codec import decode, shadow, spec_of, storage_name

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _field(kind: type[Record], name: str) -> str:
    return "$" + storage_name(spec_of(kind, name).name)


def _time_key(kind: type[Record], group: ByTime) -> Any:
    at = _field(kind, group.field)
    # Closed on the right, an instant on a boundary (or an offset change) is before it.
    before = "$lte" if group.closed_right else "$lt"
    if group.boundaries:
        branches = [{"case": {before: [at, boundary]}, "then": index}
                    for index, boundary in enumerate(group.boundaries[1:])]
        last = len(group.boundaries) - 1
        return {"$switch": {"branches": branches, "default": last}} if branches else 0
    if group.size_s is None:
        raise ValueError("ByTime needs size_s or boundaries")
    offset: Any = 0
    if group.offsets:
        branches = [{"case": {before: [at, instant]}, "then": int(previous)}
                    for (_, previous), (instant, _) in zip(group.offsets, group.offsets[1:],
                                                           strict=False)]
        last = int(group.offsets[-1][1])
        offset = {"$switch": {"branches": branches, "default": last}} if branches else last
    seconds = {"$divide": [{"$subtract": [at, EPOCH]}, 1000]}
    local = {"$subtract": [{"$add": [seconds, offset]}, int(group.origin_s)]}
    if group.closed_right:
        # Boundaries are whole seconds, exact in a double: on one the quotient is whole.
        return {"$subtract": [{"$ceil": {"$divide": [local, int(group.size_s)]}}, 1]}
    return {"$floor": {"$divide": [local, int(group.size_s)]}}


def _millis(value: Any) -> Any:
    """Milliseconds since 1970 of a date (a field's, null for a null field, or a given
    instant): the overlap is worked out in numbers, as ``$add`` of a date and a number
    is not everywhere a date (mongomock adds numbers only)."""
    if isinstance(value, datetime):
        return (value - EPOCH) // timedelta(milliseconds=1)
    return {"$subtract": [value, EPOCH]}


def _overlap_end(kind: type[Record], metric: OverlapSeconds) -> Any:
    """Where a record's overlap ends, in milliseconds: its end, or for one still going
    ``open_end`` or, with ``since``, its own now (its start plus what our clock saw since
    its ``since``; ``open_end`` where that is null or absent); never past ``hi``."""
    open_end: Any = _millis(metric.open_end)
    if metric.since is not None:
        since = _field(kind, metric.since)
        open_end = {"$cond": [
            {"$eq": [{"$ifNull": [since, None]}, None]}, open_end,
            {"$add": [_millis(_field(kind, metric.start)),
                      {"$subtract": [metric.open_end, since]}]}]}
    return {"$min": [{"$ifNull": [_millis(_field(kind, metric.end)), open_end]},
                     _millis(metric.hi)]}


def _metric(kind: type[Record], metric: Metric) -> Any:
    match metric:
        case Count():
            return {"$sum": 1}
        case Sum(field=field):
            return {"$sum": "$" + shadow(spec_of(kind, field))}
        case Min(field=field):
            return {"$min": _field(kind, field)}
        case Max(field=field):
            return {"$max": _field(kind, field)}
        case OverlapSeconds():
            return {"$sum": {"$max": [0, {"$subtract": [_overlap_end(kind, metric), {
                "$max": [_millis(_field(kind, metric.start)), _millis(metric.lo)]}]}]}}
    raise TypeError(f"not a metric: {metric!r}")


def bucketed(kind: type[Record], group: Sequence[Group]) -> dict[str, Any] | None:
    """The filter keeping records out whose time bucket field is null (or missing): they
    are in no bucket (``Store.aggregate``)."""
    present = {storage_name(spec_of(kind, g.field).name): {"$ne": None}
               for g in group if isinstance(g, ByTime)}
    return present or None


def pipeline(kind: type[Record], matching: Sequence[dict[str, Any]], group: Sequence[Group],
             metrics: Mapping[str, Metric]) -> list[dict[str, Any]]:
    """``matching``: the stages selecting the documents (``Query.pipeline()``)."""
    keys = {f"g{i}": (_field(kind, g.field) if isinstance(g, ByField) else _time_key(kind, g))
            for i, g in enumerate(group)}
    stage: dict[str, Any] = {"_id": keys or None}
    stage.update({name: _metric(kind, m) for name, m in metrics.items()})
    return [*matching, {"$group": stage}]


def decode_row(kind: type[Record], group: Sequence[Group], metrics: Mapping[str, Metric],
               row: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    ids = row.get("_id") or {}
    for index, g in enumerate(group):
        raw = ids.get(f"g{index}")
        if isinstance(g, ByField):
            spec = spec_of(kind, g.field)
            value = decode(spec, raw)
            out[f"g{index}"] = spec.enum_type(value) if spec.enum_type and value is not None \
                else value
        else:
            out[f"g{index}"] = int(raw or 0)
    for name, metric in metrics.items():
        raw = row.get(name)
        if isinstance(metric, Min | Max):
            out[name] = decode(spec_of(kind, metric.field), raw)
        elif isinstance(metric, Count):
            out[name] = int(raw or 0)
        elif isinstance(metric, OverlapSeconds):
            out[name] = float(raw or 0) / 1000
        elif isinstance(metric, Sum) and spec_of(kind, metric.field).category == "int":
            out[name] = int(raw or 0)  # whole units (Wh, minor units) stay exact
        else:
            out[name] = float(raw or 0)
    return out
