"""Records -> SQLite rows, one generated function per entity kind.

``codec.encode`` decides per value by the field's category; on the write path that
decision is the same for every row of a kind, so it is made once: for each kind a
function is generated that reads the fields in column order and takes the common case
inline (a ``str`` for text, an ``int`` for integers, an aware ``datetime`` for times).
Anything else falls back to ``codec.encode``, so the type checks and error messages stay
exactly those of the generic encoder. A MeterValues burst writes thousands of rows per
second through this function (``python -m bench.store_inserts``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from domain.entities import Record
from store.fields import FieldSpec

RowEncoder = Callable[[Record], tuple[Any, ...]]

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
