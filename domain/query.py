"""A small, backend-neutral query language.

Use cases and the visibility policy describe *what* to read with these values; every store
translates them into its own query (SQL ``WHERE``, MongoDB filter documents), so filtering,
sorting, paging and the viewer's scope all happen inside the database in one query.

Field names are entity field names (``domain.entities``). Values are domain values
(``str`` ids, aware ``datetime``, ``int``, ``float``, ``bool``, ``StrEnum``, ``Decimal``).
Decimals compare and sort by numeric value in every backend; ``In`` with a ``None`` value
matches null like ``Eq``; ``find_one`` returns the first match in id order.
"""

from __future__ import annotations

import base64
import json
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, Generic, TypeAlias, TypeVar

import orjson

from domain.errors import ValidationError
from domain.geo import distance_km

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Eq:
    field: str
    value: Any  # ``None`` means "field is null"


@dataclass(frozen=True, slots=True)
class In:
    field: str
    values: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Range:
    """Bounds on one field; ``None`` means unbounded on that side."""

    field: str
    gte: Any = None
    gt: Any = None
    lte: Any = None
    lt: Any = None


@dataclass(frozen=True, slots=True)
class Search:
    """Case-insensitive substring match of ``text`` in any of ``fields`` (literal, not a
    pattern: ``%``, ``_``, ``.`` and friends match themselves): the field's text folded
    (``search_folded``) contains the folded ``text``. Only the fields ``SEARCHED`` lists
    for the kind may be searched; a store refuses others (``ValueError``)."""

    fields: tuple[str, ...]
    text: str


#: The fields ``Search`` looks in, by kind: the ones the API searches
#: (``graph/filters.py``). MongoDB keeps their text folded beside them
#: (``store/mongo/codec.py``), so searching another field is a programming error on
#: every store, not a search that works on one of them only.
SEARCHED: dict[str, frozenset[str]] = {
    "company": frozenset({"name"}),
    "user": frozenset({"name", "email"}),
    "vehicle": frozenset({"license_plate", "make", "model", "plate_key"}),
    "id_tag": frozenset({"tag"}),
    "station": frozenset({"name", "cp_id", "address"}),
}


def searched_fields(kind: str, fields: Sequence[str]) -> tuple[str, ...]:
    """``fields`` of a ``Search`` on ``kind``, each checked against ``SEARCHED``."""
    allowed = SEARCHED.get(kind, frozenset())
    for name in fields:
        if name not in allowed:
            raise ValueError(f"{kind} field {name!r} is not searchable (domain.query.SEARCHED)")
    return tuple(fields)


#: The accents a search ignores, each of them one NAME order ignores too
#: (``validation.name_key`` drops every combining mark): the combining marks Latin,
#: Greek and Cyrillic letters decompose into, U+0300-U+036F ("ö" is an "o" and U+0308,
#: "İ" an "I" and a dot above), the Arabic vowel marks (harakat, U+064B-U+065F, and the
#: superscript alef U+0670) and the Hebrew points and cantillation marks (niqqud,
#: U+0591-U+05C7 less the punctuation among them: maqaf, paseq, sof pasuq, nun
#: hafukha), which are seldom typed: "محمد" finds "مُحَمَّد" (review r27-lists). Not
#: every combining mark: a Japanese voicing mark (U+3099) or an Indic virama makes
#: another letter, not the same one accented. Nor letters whose stroke or slash is part
#: of the letter, with no decomposition: "ł", "ø", "đ", "ħ", "æ" are letters of their
#: own, in searches as in NAME order ("wroclaw" does not find "Wrocław"; "wrocław"
#: does). A change here changes what MongoDB's shadows hold: raise ``FOLD_VERSION``.
_ACCENTS = re.compile("[\u0300-\u036f\u0591-\u05bd\u05bf\u05c1\u05c2\u05c4\u05c5\u05c7"
                      "\u064b-\u065f\u0670]")

#: The version of ``search_folded``'s rule, raised with each change to it: MongoDB folds
#: every shadow of non-ASCII text again once per version (``store/mongo/migrations.py``).
#: 2: accents dropped (QA s27); 3: Arabic and Hebrew vowel marks dropped (review r27-lists).
FOLD_VERSION = 3


def search_folded(text: str) -> str:
    """``text`` as ``Search`` compares it, the one folding every store applies to the
    needle and the searched text alike: compatibility forms unfolded (NFKD: a full-width
    "Ｍ" is an "m", "ﬁ" is "fi"), Unicode case folding, which also makes "ß" "ss" and the
    Greek final sigma "ς" a "σ" (lower-casing alone left "ΟΔΟΣ" as "οδος", which did not
    find "ΟΔΟΣΤΡΩΜΑ 12"), then accents dropped (``_ACCENTS``), as NAME order drops them
    (``validation.name_key``): "munchen" finds "München", "skoda" a "Škoda" and "MÜLLER"
    "Muller" (a driver's keyboard has no umlauts; QA s27: only the accented spelling
    found them, though they sorted with the plain letters). The Turkish "İ" folds to "i"
    and a dot above, which goes with the accents, and the dotless "ı" is made a plain "i":
    "istanbul" finds "İstanbul" and "kadikoy" finds "Kadıköy". Composed again at the end
    (NFKC). Exact and server-independent: a store compares the folded texts
    case-sensitively and never needs its own idea of case (MongoDB's PCRE2 has no
    "İ"/"i" pair). MongoDB keeps the folded text beside each searched field, so a change
    here raises ``FOLD_VERSION``, which folds them again (``store/mongo/migrations.py``)."""
    if text.isascii():
        return text.lower()  # the same as below for ASCII, and most text is
    # NFKD on both sides of the case fold: folding can make a letter with a mark ("İ" is
    # "i" and a dot above) and decomposing an upper-case letter ("ℌ" is "H").
    decomposed = unicodedata.normalize("NFKD", unicodedata.normalize("NFKD", text).casefold())
    bare = _ACCENTS.sub("", decomposed)
    return unicodedata.normalize("NFKC", bare).replace("\u0131", "i")


@dataclass(frozen=True, slots=True)
class Near:
    """Records whose ``lat``/``lon`` lie within ``radius_km`` (great-circle) of a point."""

    lat: float
    lon: float
    radius_km: float


@dataclass(frozen=True, slots=True)
class Sub:
    """``field`` IN (SELECT ``select`` FROM ``kind`` WHERE ``where``): how the policy says
    "sessions on stations this operator may see" without loading the station ids first.

    ``joined``: (outer field, inner field) pairs that must be equal too, for a key of
    several fields: "a session ACTIVE on this very plug" is its station's and its
    connector number's (``AND inner.connector_id = outer.connector_id``, a correlated
    sub-select). Fields of the same type on both sides, never null."""

    field: str
    kind: str
    where: Filter
    select: str = "id"
    joined: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class NotSub:
    """The exact complement of ``Sub`` with the same arguments: ``field`` is null or NOT
    IN (SELECT ``select`` FROM ``kind`` WHERE ``where``), i.e. NOT EXISTS such a record.
    "Stations none of whose connectors is free now". A record matches exactly one of
    ``Sub(...)`` and ``NotSub(...)``: null never matches ``Sub``, so it matches this.

    A node of its own rather than a flag on ``Sub``: code walking filters (the policy's
    guards) that forgot a flag would treat the complement as the set itself."""

    field: str
    kind: str
    where: Filter
    select: str = "id"
    joined: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class And:
    parts: tuple[Filter, ...]


@dataclass(frozen=True, slots=True)
class Or:
    parts: tuple[Filter, ...]


Filter: TypeAlias = Eq | In | Range | Search | Near | Sub | NotSub | And | Or

#: Matches everything (an empty AND) and nothing (an empty OR).
ALL: Filter = And(())
NONE: Filter = Or(())


def all_of(*parts: Filter | None) -> Filter:
    """AND of the given filters, flattening trivial cases (``None`` and ``ALL`` vanish,
    and an OR one of whose branches is also ANDed)."""
    kept: list[Filter] = []
    for part in parts:
        if part is None or part == ALL:
            continue
        if part == NONE:
            return NONE
        if isinstance(part, And):
            kept.extend(part.parts)
        else:
            kept.append(part)
    # Absorption, A AND (A OR B) is A: a read narrowed to one branch of a scope (a
    # driver's garage, ``Policy.theirs``) asks that branch alone, not also the other
    # branches' sub-selects (each a ``$lookup`` on MongoDB) for an answer they cannot change.
    kept = [part for part in kept if not (isinstance(part, Or) and any(
        other in part.parts for other in kept if other is not part))]
    if not kept:
        return ALL
    if len(kept) == 1:
        return kept[0]
    return And(tuple(kept))


def any_of(*parts: Filter) -> Filter:
    """OR of the given filters, flattening trivial cases."""
    kept: list[Filter] = []
    for part in parts:
        if part == ALL:
            return ALL
        if part == NONE:
            continue
        if isinstance(part, Or):
            kept.extend(part.parts)
        else:
            kept.append(part)
    if not kept:
        return NONE
    if len(kept) == 1:
        return kept[0]
    return Or(tuple(kept))


#: The field name of a distance sort key (``Sort.by_distance``): no stored field, but the
#: great-circle distance of a record's position (``lat``, ``lon``) from the key's origin.
DISTANCE = "distance"


@dataclass(frozen=True, slots=True)
class Sort:
    """One sort key. Sortable fields must be non-null; ``id`` is always the final
    tie-breaker (added by the store), which makes every order total and keyset-pageable.

    A distance key (``field`` is ``DISTANCE``, ``origin`` the point measured from) orders
    records that have a position: its callers filter by ``Near`` (``ReadService`` also
    keeps records without one out of such a list and its count)."""

    field: str
    descending: bool = False
    origin: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if (self.field == DISTANCE) != (self.origin is not None):
            raise ValueError("a distance sort key, and only it, has an origin")

    @classmethod
    def by_distance(cls, lat: float, lon: float, descending: bool = False) -> Sort:
        """Nearest first from (``lat``, ``lon``); farthest first when ``descending``."""
        return cls(DISTANCE, descending, (float(lat), float(lon)))

    @property
    def signature(self) -> tuple[Any, ...]:
        """What a cursor records of this key, to refuse it under another ordering: a
        distance cursor taken from another point would position the list anywhere."""
        if self.origin is None:
            return (self.field, self.descending)
        return (self.field, self.descending, *self.origin)


def newest_first(field: str) -> tuple[Sort, Sort]:
    """Newest ``field`` first, and among records of one instant the last written first:
    ``id`` descending, not the stores' ascending tie-breaker (ids count up as written
    within a second in one process, ``ids.new_id``; QA s30: a ReserveNow's ``SENT``
    entry was listed above its ``ANSWERED`` of the same millisecond)."""
    return Sort(field, descending=True), Sort("id", descending=True)


def sort_value(record: Any, key: Sort) -> Any:
    """The value ``record`` is ordered by under ``key`` (what its cursor carries): the
    field, or for a distance key the distance in km (``None`` without a position)."""
    if key.origin is None:
        return getattr(record, key.field)
    lat, lon = record.lat, record.lon
    if lat is None or lon is None:
        return None
    return distance_km(lat, lon, *key.origin)


def sorts_by_distance(sort: Sequence[Sort]) -> bool:
    return any(key.origin is not None for key in sort)


#: Records with a position, the ones a distance order can place.
POSITIONED: Filter = And((Range("lat", gte=-90.0, lte=90.0),
                          Range("lon", gte=-180.0, lte=180.0)))


MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 20


@dataclass(frozen=True, slots=True)
class PageRequest:
    """Relay-style paging. ``after``/``before`` are cursors from ``encode_cursor``.

    Forward paging uses ``first``/``after``; backward paging ``last``/``before``.
    """

    first: int | None = None
    after: str | None = None
    last: int | None = None
    before: str | None = None
    #: Which list of the kind its cursors belong to, beyond the kind and order: one
    #: parent's nested list (``nested_list``), ``None`` for a top-level list.
    within: str | None = None

    def __post_init__(self) -> None:
        for name in ("first", "last"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= MAX_PAGE_SIZE:
                raise ValidationError(
                    f"{name} must be between 0 and {MAX_PAGE_SIZE}", field=name,
                    code="OUT_OF_RANGE"
                )
        if self.first is not None and self.last is not None:
            raise ValidationError("use either first or last, not both", field="last")

    @property
    def backward(self) -> bool:
        return self.last is not None or (self.before is not None and self.first is None)

    @property
    def limit(self) -> int:
        if self.backward:
            return self.last if self.last is not None else DEFAULT_PAGE_SIZE
        return self.first if self.first is not None else DEFAULT_PAGE_SIZE


@dataclass(slots=True)
class Page(Generic[T]):
    """One page in the requested order. ``cursors[i]`` is the cursor of ``items[i]``."""

    items: list[T]
    cursors: list[str]
    has_next: bool
    has_previous: bool


@dataclass(frozen=True, slots=True)
class CursorKey:
    """The decoded position a cursor points at: the sort values and the id."""

    values: tuple[Any, ...]
    id: str
    sort: tuple[tuple[Any, ...], ...] = field(default=())


def _encode_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"t": value.isoformat()}
    if isinstance(value, Decimal):
        return {"d": str(value)}
    if isinstance(value, StrEnum):
        return value.value
    return value


def _decode_value(value: Any) -> Any:
    if isinstance(value, dict) and "t" in value:
        return datetime.fromisoformat(value["t"])
    if isinstance(value, dict) and "d" in value:
        return Decimal(value["d"])
    return value


def _signature(raw: Any) -> tuple[Any, ...]:
    """A sort key's signature as a cursor carries it: field and direction, then a
    distance key's origin (``Sort.signature``)."""
    field_name, descending, *origin = raw
    return (str(field_name), bool(descending), *(float(o) for o in origin))


def nested_list(key_field: str, key: Any, *more: tuple[str, Any]) -> str:
    """The ``PageRequest.within`` of one parent's nested list (``Station.sessions``: the
    sessions whose ``station_id`` is the station's); ``more``: further keys that tell
    the parent's list apart (``Connector.statusHistory``: its station's reports of its
    connector number)."""
    return "&".join(f"{name}={value}" for name, value in ((key_field, key), *more))


def encode_cursor(kind: str, sort: Sequence[Sort], values: Sequence[Any], record_id: str,
                  within: str | None = None) -> str:
    """The cursor of one row of a list of ``kind`` records in ``sort`` order (``within``:
    of one parent's nested list, ``nested_list``)."""
    payload: dict[str, Any] = {
        "k": kind,
        "s": [list(s.signature) for s in sort],
        "v": [_encode_value(v) for v in values],
        "i": record_id,
    }
    # A top-level list's cursors say so (null): a cursor without the key at all was
    # made before cursors named their list, and still pages (a rolling upgrade's
    # instances hand each other their clients' cursors).
    payload["p"] = within
    # orjson: the standard library's encoder is built anew on every call (~3 µs, and a
    # page of 100 rows needs 100 cursors). Compact like ``separators=(",", ":")``; JSON
    # either way, so cursors made before still decode.
    raw = orjson.dumps(payload)
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, kind: str, sort: Sequence[Sort], field: str = "after",
                  within: str | None = None) -> CursorKey:
    """Decode a cursor and check it was made for a list of ``kind`` in this sort order,
    and ``within`` the same parent's list (or both top-level); errors name ``field``
    (``after`` or ``before``)."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        payload = json.loads(base64.urlsafe_b64decode(padded.encode()))
        key = CursorKey(
            values=tuple(_decode_value(v) for v in payload["v"]),
            id=str(payload["i"]),
            sort=tuple(_signature(s) for s in payload["s"]),
        )
        # Cursors made before they named their kind carry none; they still decode.
        made_for = str(payload.get("k", kind))
        made_within = payload.get("p", within)
    except (ValueError, KeyError, TypeError, ArithmeticError) as exc:
        # ArithmeticError: decimal.InvalidOperation, a decimal value that is no number.
        raise ValidationError("malformed cursor", field=field, code="INVALID_CURSOR") from exc
    if made_for != kind:
        # A cursor of another list (users' cursor on stations) is a client's mistake: its
        # values would silently position this list somewhere arbitrary.
        raise ValidationError(f"cursor belongs to another list ({made_for})", field=field,
                              code="INVALID_CURSOR")
    if made_within != within:
        # Another parent's list of the same kind and order (station A's sessions'
        # cursor on station B's): a position in B's list, but not one B's client had.
        raise ValidationError("cursor belongs to another parent's list", field=field,
                              code="INVALID_CURSOR")
    if key.sort != tuple(s.signature for s in sort) or len(key.values) != len(sort):
        raise ValidationError(
            "cursor belongs to another ordering", field=field, code="INVALID_CURSOR"
        )
    return key
