"""How each entity field is stored, derived once from the dataclasses' type hints.

Both backends share this table so they agree on every field's category; each then picks
its own physical representation (SQLite: epoch microseconds, TEXT decimals; MongoDB:
BSON dates, ObjectIds, strings for decimals).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, Literal

from domain.entities import ENTITY_TYPES, AuditEntry, Record
from domain.errors import Conflict
from domain.ports import Audit, AuditIfApplied, Change, Update

Category = Literal["id", "str", "int", "float", "bool", "datetime", "decimal", "enum", "json"]

#: Fields holding another entity's id (stored as ObjectId in MongoDB).
ID_FIELDS = frozenset(
    {
        "id",
        "company_id",
        "owner_id",
        "station_owner_id",
        "user_id",
        "vehicle_id",
        "station_id",
        "session_id",
        "family_id",
        "holder_id",
    }
)


@dataclass(frozen=True, slots=True)
class FieldSpec:
    name: str
    category: Category
    nullable: bool
    enum_type: type[StrEnum] | None = None
    #: The dataclass default stands in for a missing value of a non-nullable field: a
    #: document written before the field existed (MongoDB adds no column with a default).
    defaulted: bool = False


def _unwrap(hint: Any) -> tuple[Any, bool]:
    """(inner type, nullable) for ``X | None``."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return (args[0] if len(args) == 1 else Any), len(args) < len(typing.get_args(hint))
    return hint, False


def _category(name: str, hint: Any) -> tuple[Category, type[StrEnum] | None]:
    if name in ID_FIELDS:
        return "id", None
    if isinstance(hint, type) and issubclass(hint, StrEnum):
        return "enum", hint
    if hint is bool:
        return "bool", None
    if hint is int:
        return "int", None
    if hint is float:
        return "float", None
    if hint is str:
        return "str", None
    if hint is datetime:
        return "datetime", None
    if hint is Decimal:
        return "decimal", None
    return "json", None


_SPECS: dict[type[Record], tuple[FieldSpec, ...]] = {}


def field_specs(kind: type[Record]) -> tuple[FieldSpec, ...]:
    """Computed once per entity class (type hints are slow to evaluate)."""
    if kind in _SPECS:
        return _SPECS[kind]
    hints = typing.get_type_hints(kind)
    specs = []
    for f in dataclasses.fields(kind):
        inner, nullable = _unwrap(hints[f.name])
        category, enum_type = _category(f.name, inner)
        defaulted = not nullable and (f.default is not dataclasses.MISSING
                                      or f.default_factory is not dataclasses.MISSING)
        specs.append(FieldSpec(f.name, category, nullable, enum_type, defaulted))
    _SPECS[kind] = tuple(specs)
    return _SPECS[kind]


_BY_NAME: dict[type[Record], dict[str, FieldSpec]] = {}


def spec_by_name(kind: type[Record]) -> dict[str, FieldSpec]:
    if kind not in _BY_NAME:
        _BY_NAME[kind] = {s.name: s for s in field_specs(kind)}
    return _BY_NAME[kind]


def build(kind: type[Record], values: dict[str, Any]) -> Record:
    """Construct a record from decoded python values (enums re-typed here)."""
    kwargs: dict[str, Any] = {}
    for spec in field_specs(kind):
        value = values.get(spec.name)
        if value is None and spec.defaulted:
            continue
        if value is not None and spec.enum_type is not None:
            value = spec.enum_type(value)
        kwargs[spec.name] = value
    return kind(**kwargs)


def from_snapshot(kind: type[Record], image: dict[str, Any]) -> Record:
    """The record an audit image (``domain.entities.snapshot``) was taken of: times and
    decimals come back from their text. Secret fields, which images leave out, take their
    defaults (an image of a kind with a required secret cannot be rebuilt)."""
    values = dict(image)
    for spec in field_specs(kind):
        value = values.get(spec.name)
        if isinstance(value, str) and spec.category == "datetime":
            values[spec.name] = datetime.fromisoformat(value)
        elif isinstance(value, str) and spec.category == "decimal":
            values[spec.name] = Decimal(value)
    return build(kind, values)


ALL_KINDS: tuple[type[Record], ...] = ENTITY_TYPES


#: Fields whose words are not their column's: "cp" alone means nothing to anyone.
_FIELD_WORDS = {"cp_id": "charge point id (cpId)",
               # A plate's key is its letters and digits: people call it the plate.
               "plate_key": "license plate",
               # A configuration key compared without regard to case is the key.
               "folded_key": "key",
               # Two names of one identity are one name ("BÄCKEREI X", "Bäckerei X").
               "name_identity": "name"}


def field_words(name: str) -> str:
    """A field as people know it: a reference by what it names ("owner", "session"), an
    identifier of the entity itself with its "id" ("transaction id", "connector id")."""
    if name in _FIELD_WORDS:
        return _FIELD_WORDS[name]
    if name in ID_FIELDS and name != "id":
        return name.removesuffix("_id").replace("_", " ")
    return name.replace("_", " ")


def checked_scalar(spec: FieldSpec, value: Any) -> Any:
    """``value`` as the field's type takes it, or ``TypeError``: every store refuses alike
    what the domain should never write (a float or a bool in an int field, a number in a
    text field), so a bug cannot pass one store's tests and corrupt another's data."""
    match spec.category:
        case "int":
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{spec.name}: expected int, got {type(value).__name__}")
        case "float":
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"{spec.name}: expected number, got {type(value).__name__}")
        case _:  # id, str
            if not isinstance(value, str):
                raise TypeError(f"{spec.name}: expected str, got {type(value).__name__}")
    return value


def duplicate_message(kind: str, fields: tuple[str, ...]) -> str:
    """The words of a unique-rule violation, without column names: "another vehicle has
    the same license plate and owner", "another station has the same charge point id
    (cpId)"."""
    named = [field_words(f) for f in fields]
    return f"another {kind.replace('_', ' ')} has the same {' and '.join(named)}"


def changed_meanwhile(kind: str) -> Conflict:
    """A required guard (``Update.required``) or a ``Guard`` that no longer held: the
    whole write fails."""
    return Conflict(f"the {kind.replace('_', ' ')} changed meanwhile", field="id",
                    code="CHANGED")


def audit_parts(changes: Sequence[Change], audit: Sequence[Audit]
                ) -> tuple[list[AuditEntry], list[tuple[AuditEntry, Update]]]:
    """A write's audit entries: those it appends whatever its changes do, and those it
    appends only if their update applied (``AuditIfApplied``), each with that update,
    which must be one of ``changes`` (the object itself: two equal updates of one
    record are two changes), and given once: a store tells which updates applied by
    the object, so of one given twice, applied once, it could not tell which entry
    stands (review r2: both were dropped), and such a write is refused
    (``ValueError``) rather than mis-recorded."""
    entries: list[AuditEntry] = []
    conditional: list[tuple[AuditEntry, Update]] = []
    for item in audit:
        if isinstance(item, AuditIfApplied):
            conditional.append((item.entry, item.change))
        else:
            entries.append(item)
    if conditional:
        ours = Counter(id(change) for change in changes)
        if any(id(change) not in ours for _, change in conditional):
            raise ValueError("an AuditIfApplied's change is not one of the write's")
        if any(ours[id(change)] > 1 for _, change in conditional):
            raise ValueError("an AuditIfApplied's change is given more than once")
    return entries, conditional
