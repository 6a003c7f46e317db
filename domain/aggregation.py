"""Aggregations the stores compute in the database (``Store.aggregate``): group keys and
metrics, backend-neutral like ``domain.query``. Analytics are built from these."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TypeAlias


@dataclass(frozen=True, slots=True)
class ByField:
    """Group by a field's value."""

    field: str


@dataclass(frozen=True, slots=True)
class ByTime:
    """Group a datetime field into time buckets.

    With ``size_s``: key = floor((epoch seconds + offset - origin_s) / size_s), where the
    offset is the one of the last ``offsets`` entry whose instant is <= the value (the first
    entry's offset applies before it too). With ``boundaries`` instead: key = index of the
    last boundary <= the value (values before the first boundary get key 0). A null value
    is in no bucket: its record is left out (``Store.aggregate``).

    ``closed_right``: buckets are (start, end] instead of [start, end): a value exactly on
    a boundary is in the bucket that ends there. With ``size_s``: key =
    ceil((epoch seconds + offset - origin_s) / size_s) - 1, the offset the one of the last
    entry whose instant is < the value (an instant where the offset changes ends the
    stretch before it); with ``boundaries``: the index of the last boundary < the value.
    The keys of a bucket are the same either way. For readings that report what happened
    up to their instant (a meter sample's energy flowed before it was taken).
    """

    field: str
    offsets: tuple[tuple[datetime, int], ...] = ()
    size_s: int | None = None
    origin_s: int = 0
    boundaries: tuple[datetime, ...] = ()
    closed_right: bool = False


Group: TypeAlias = ByField | ByTime


@dataclass(frozen=True, slots=True)
class Count:
    pass


@dataclass(frozen=True, slots=True)
class Sum:
    """The sum of ``field`` over the group: an exact ``int`` for a whole-number field
    (Wh, minor units), else a ``float``; 0 over no rows."""

    field: str


@dataclass(frozen=True, slots=True)
class Min:
    field: str


@dataclass(frozen=True, slots=True)
class Max:
    field: str


@dataclass(frozen=True, slots=True)
class OverlapSeconds:
    """Σ seconds of overlap between each record's [start, end) and [lo, hi); a null end
    means "still going" and counts up to ``open_end``, or, with ``since``, up to the
    record's own "now": its start plus the time from its ``since`` (the instant on
    ``open_end``'s clock at which its start was current) to ``open_end``. A record's
    times may be on another clock than ours (a charger's): its open end is then on that
    clock too. A record whose ``since`` is null counts up to ``open_end``."""

    start: str
    end: str
    lo: datetime
    hi: datetime
    open_end: datetime
    since: str | None = None


Metric: TypeAlias = Count | Sum | Min | Max | OverlapSeconds
