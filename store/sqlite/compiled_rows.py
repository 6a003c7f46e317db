"""Records <-> SQLite rows, one generated function per entity kind and direction.

``codec.encode``/``decode`` decide per value by the field's category; that decision is
the same for every row of a kind, so it is made once: for each kind a function is
generated that handles the fields in column order.

* The **encoder** takes the common case inline (a ``str`` for text, an ``int`` for
  integers, an aware ``datetime`` for times); anything else falls back to
  ``codec.encode``, so the type checks and error messages stay exactly those of the
  generic encoder. A MeterValues burst writes thousands of rows per second through it
  (``python -m bench.store_inserts``).
* The **decoder** converts each column by its category and fills the record's fields
  without running the dataclass ``__init__`` (entities have no ``__post_init__``, and
  every field is set): a page of a nested query decodes hundreds of rows
  (``python -m bench.nested_query``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from domain.entities import Record
from store.fields import FieldSpec

RowEncoder = Callable[[Record], tuple[Any, ...]]
RowDecoder = Callable[[Sequence[Any]], Record]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)


def _field_code(index: int, spec: FieldSpec) -> list[str]:
    """Statements leaving field ``index``'s stored value in ``v<index>``."""
    v, s = f"v{index}", f"S{index}"
    read = f"    {v} = record.{spec.name}"
    match spec.category:
        case "id" | "str":
            fast = f"    if {v}.__class__ is not str and {v} is not None: {v} = encode({s}, {v})"
        case "int":
            fast = f"    if {v}.__class__ is not int and {v} is not None: {v} = encode({s}, {v})"
        case "float":
            fast = (f"    if {v}.__class__ is not float and {v} is not None: "
                    f"{v} = encode({s}, {v})")
        case "datetime":
            return [read,
                    f"    if {v}.__class__ is datetime and {v}.tzinfo is not None: "
                    f"{v} = ({v} - EPOCH) // MICRO",
                    f"    elif {v} is not None: {v} = encode({s}, {v})"]
        case _:  # bool, decimal, enum, json: the generic encoder
            fast = f"    if {v} is not None: {v} = encode({s}, {v})"
    return [read, fast]


def compile_row_encoder(specs: tuple[FieldSpec, ...],
                        encode: Callable[[FieldSpec, Any], Any]) -> RowEncoder:
    """A function turning a record with these fields into its row (in ``specs`` order);
    ``encode`` is the generic encoder for everything off the fast path."""
    lines = ["def to_row(record):"]
    for index, spec in enumerate(specs):
        if not spec.name.isidentifier():  # never: field names are Python identifiers
            raise ValueError(f"not a field name: {spec.name!r}")
        lines += _field_code(index, spec)
    lines.append(f"    return ({''.join(f'v{i}, ' for i in range(len(specs)))})")
    namespace: dict[str, Any] = {"encode": encode, "datetime": datetime, "EPOCH": _EPOCH,
                                 "MICRO": _MICRO}
    namespace.update({f"S{i}": spec for i, spec in enumerate(specs)})
    exec(compile("\n".join(lines), "<row encoder>", "exec"), namespace)
    return namespace["to_row"]  # type: ignore[no-any-return]


def _decode_expression(index: int, spec: FieldSpec) -> str:
    """The decoded value of column ``index`` (``v`` holds the raw value, not None)."""
    match spec.category:
        case "datetime":
            return "EPOCH + v * MICRO"
        case "decimal":
            return "Decimal(v)"
        case "bool":
            return "bool(v)"
        case "json":
            return "loads(v)"
        case "float":
            return "float(v)"
        case "enum" if spec.enum_type is not None:
            # A dict lookup: calling the enum class costs ~1 µs per value; the call stays
            # for values that are not a member's (it raises the usual ValueError).
            return f"M{index}[v] if v in M{index} else E{index}(v)"
        case _:
            return "v"


def compile_row_decoder(kind: type[Record], specs: tuple[FieldSpec, ...]) -> RowDecoder:
    """A function turning a row selected as ``specs`` (in order) into a ``kind``."""
    lines = ["def from_row(row):", "    record = new(kind)", "    fields = record.__dict__"]
    namespace: dict[str, Any] = {"new": object.__new__, "kind": kind, "EPOCH": _EPOCH,
                                 "MICRO": _MICRO, "Decimal": Decimal, "loads": json.loads}
    for index, spec in enumerate(specs):
        if not spec.name.isidentifier():
            raise ValueError(f"not a field name: {spec.name!r}")
        expression = _decode_expression(index, spec)
        if expression == "v":
            lines.append(f"    fields[{spec.name!r}] = row[{index}]")
        else:
            lines += [f"    v = row[{index}]",
                      f"    fields[{spec.name!r}] = None if v is None else {expression}"]
        if spec.enum_type is not None:
            namespace[f"E{index}"] = spec.enum_type
            namespace[f"M{index}"] = {member.value: member for member in spec.enum_type}
    lines.append("    return record")
    exec(compile("\n".join(lines), f"<{kind.kind} row decoder>", "exec"), namespace)
    return namespace["from_row"]  # type: ignore[no-any-return]
