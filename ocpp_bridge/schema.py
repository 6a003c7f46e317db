"""JSON-schema validation for the subset the OCPP 1.6 schemas use, compiled to closures.

The ``ocpp`` package ships the 1.6 schemas (draft 4): ``type``, ``properties``,
``required``, ``additionalProperties``, ``enum``, ``maxLength``, ``format: date-time``,
``items``, ``minItems``, ``multipleOf`` and local ``$ref``. Validation of every incoming
frame was an eighth of the bridge's CPU per MeterValues with fastjsonschema's generated
code, which copies key sets and scans enum lists; compiled here, each node is one closure
doing the few checks its schema asks for (``python -m bench.ocpp_validation``). Results
agree with fastjsonschema, rule by rule (``tests/ocpp/test_schema.py`` compares them).
An unknown keyword is refused at compile time rather than silently ignored.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any, NamedTuple

Check = Callable[[Any], None]

#: Keywords that carry no validation (documentation, or meaningless where the 1.6 schemas
#: put them, e.g. ``additionalProperties`` on a string).
_IGNORED = frozenset({"$schema", "$id", "id", "title", "description", "javaType",
                      "definitions", "additionalItems"})
_KNOWN = _IGNORED | {"type", "properties", "required", "additionalProperties", "enum",
                     "maxLength", "format", "items", "minItems", "maxItems", "multipleOf",
                     "minimum", "maximum", "$ref"}


class SchemaError(Exception):
    """A value breaks its schema: ``rule`` is the JSON-schema keyword it broke, ``path``
    where (``data.meterValue[0].timestamp``), as fastjsonschema reports them."""

    def __init__(self, rule: str, path: str, message: str) -> None:
        super().__init__(f"{path} {message}")
        self.rule = rule
        self.path = path
        self.message = f"{path} {message}"


class _Invalid(Exception):
    """Raised inside the closures with the path relative to the failing node; the path
    is only assembled on the way out (a valid frame never builds a string)."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule
        self.message = message
        self.steps: list[str] = []


def compile_schema(schema: dict[str, Any], formats: dict[str, str] | None = None
                   ) -> Callable[[Any], None]:
    """A function raising ``SchemaError`` for a value ``schema`` rejects."""
    patterns = {name: re.compile(pattern) for name, pattern in (formats or {}).items()}
    check = _Compiler(schema, patterns).node(schema)

    def validate(value: Any) -> None:
        try:
            check(value)
        except _Invalid as error:
            path = "data" + "".join(reversed(error.steps))
            raise SchemaError(error.rule, path, error.message) from None

    return validate


def _is_integer(value: Any) -> bool:
    # JSON has one number type: 2.0 is an integer (draft 4, as fastjsonschema reads it).
    cls = value.__class__
    return cls is int or (cls is float and value.is_integer()) or (
        isinstance(value, int) and not isinstance(value, bool))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


_TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": _is_integer,
    "number": _is_number,
    "boolean": lambda v: v is True or v is False,
    "null": lambda v: v is None,
}


class _Compiler:
    def __init__(self, root: dict[str, Any], patterns: dict[str, re.Pattern[str]]) -> None:
        self.root = root
        self.patterns = patterns

    def node(self, schema: dict[str, Any]) -> Check:
        unknown = set(schema) - _KNOWN
        if unknown:
            raise ValueError(f"unsupported schema keywords: {sorted(unknown)}")
        if "$ref" in schema:
            return self.node(self._resolve(schema["$ref"]))
        typed = None if schema.get("type") == "object" and self._object_checks(schema) \
            else self._type(schema)
        checks = [c for c in (typed, self._enum(schema), self._string(schema),
                              self._number(schema), self._array(schema),
                              self._object(schema)) if c is not None]
        if not checks:
            return lambda value: None
        if len(checks) == 1:
            full = checks[0]
        else:
            def full(value: Any) -> None:
                for check in checks:
                    check(value)
        accept = self._fast_accept(schema)
        if accept is None:
            return full

        def leaf(value: Any) -> None:
            if not accept(value):
                full(value)  # raises with the rule fastjsonschema would name

        return leaf

    def _fast_accept(self, schema: dict[str, Any]) -> Callable[[Any], bool] | None:
        """For the leaves every frame is full of (typed strings, enums, integers), one
        predicate that accepts a good value at once; ``None`` where none applies."""
        if set(schema) & {"properties", "items", "multipleOf", "minimum", "maximum",
                          "$ref"}:
            return None
        kind = schema.get("type")
        if kind == "string":
            if "enum" in schema:
                allowed = frozenset(v for v in schema["enum"] if isinstance(v, str))
                return lambda v: v.__class__ is str and v in allowed
            longest = schema.get("maxLength")
            pattern = self.patterns.get(schema["format"]) if "format" in schema else None
            if pattern is not None and longest is None:
                match = pattern.match
                return lambda v: v.__class__ is str and match(v) is not None
            if pattern is None and longest is not None:
                return lambda v: v.__class__ is str and len(v) <= longest
            if pattern is None and longest is None:
                return lambda v: v.__class__ is str
        if kind == "integer" and "enum" not in schema:
            return lambda v: v.__class__ is int
        return None

    def _deref(self, schema: dict[str, Any]) -> dict[str, Any]:
        return self._deref(self._resolve(schema["$ref"])) if "$ref" in schema else schema

    def _resolve(self, ref: str) -> dict[str, Any]:
        if not ref.startswith("#/"):
            raise ValueError(f"only local $ref is supported: {ref}")
        target: Any = self.root
        for part in ref[2:].split("/"):
            target = target[part]
        return target  # type: ignore[no-any-return]

    @staticmethod
    def _type(schema: dict[str, Any]) -> Check | None:
        if "type" not in schema:
            return None
        names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        tests = [_TYPES[name] for name in names]
        expected = " or ".join(names)

        def check(value: Any) -> None:
            if not any(test(value) for test in tests):
                raise _Invalid("type", f"must be {expected}")

        if len(tests) == 1:
            test = tests[0]

            def check_one(value: Any) -> None:
                if not test(value):
                    raise _Invalid("type", f"must be {expected}")

            return check_one
        return check

    @staticmethod
    def _enum(schema: dict[str, Any]) -> Check | None:
        if "enum" not in schema:
            return None
        allowed = list(schema["enum"])
        # A set for speed; membership means the same as in the list (equality), and values
        # a set cannot hold (objects, arrays) are looked up in the list.
        hashable = frozenset(v for v in allowed if not isinstance(v, list | dict))

        def check(value: Any) -> None:
            try:
                if value in hashable:
                    return
            except TypeError:
                if value in allowed:
                    return
            raise _Invalid("enum", f"must be one of {allowed}")

        return check

    def _string(self, schema: dict[str, Any]) -> Check | None:
        longest = schema.get("maxLength")
        pattern = self.patterns.get(schema["format"]) if "format" in schema else None
        if longest is None and pattern is None:
            return None
        name = schema.get("format")

        def check(value: Any) -> None:
            if not isinstance(value, str):
                return  # only strings are measured; "type" reports the rest
            if longest is not None and len(value) > longest:
                raise _Invalid("maxLength", f"must be shorter than or equal to {longest} "
                                            "characters")
            if pattern is not None and not pattern.match(value):
                raise _Invalid("format", f"must be {name}")

        return check

    @staticmethod
    def _number(schema: dict[str, Any]) -> Check | None:
        step, low, high = schema.get("multipleOf"), schema.get("minimum"), \
            schema.get("maximum")
        if step is None and low is None and high is None:
            return None
        step_decimal = Decimal(str(step)) if step is not None else None

        def check(value: Any) -> None:
            if not _is_number(value):
                return
            if low is not None and value < low:
                raise _Invalid("minimum", f"must be bigger than or equal to {low}")
            if high is not None and value > high:
                raise _Invalid("maximum", f"must be smaller than or equal to {high}")
            if step_decimal is not None:
                try:
                    whole = (Decimal(str(value)) % step_decimal) == 0
                except InvalidOperation:
                    whole = False
                if not whole:
                    raise _Invalid("multipleOf", f"must be multiple of {step}")

        return check

    def _array(self, schema: dict[str, Any]) -> Check | None:
        fewest, most = schema.get("minItems"), schema.get("maxItems")
        item = self.node(schema["items"]) if isinstance(schema.get("items"), dict) else None
        if fewest is None and most is None and item is None:
            return None

        def check(value: Any) -> None:
            if not isinstance(value, list):
                return
            if fewest is not None and len(value) < fewest:
                raise _Invalid("minItems", f"must contain at least {fewest} items")
            if most is not None and len(value) > most:
                raise _Invalid("maxItems", f"must contain less than or equal to {most} "
                                           "items")
            if item is not None:
                for index, element in enumerate(value):
                    try:
                        item(element)
                    except _Invalid as error:
                        error.steps.append(f"[{index}]")
                        raise

        return check

    @staticmethod
    def _object_checks(schema: dict[str, Any]) -> bool:
        """Whether ``_object`` builds a check (which then tests the type itself)."""
        return bool(schema.get("properties") or schema.get("required")
                    or schema.get("additionalProperties", True) is False)

    def _object(self, schema: dict[str, Any]) -> Check | None:
        properties = {name: self.node(sub)
                      for name, sub in schema.get("properties", {}).items()}
        required = tuple(schema.get("required", ()))
        types = schema.get("type")
        # The 1.6 schemas put additionalProperties on strings too; it can only matter
        # where the type check lets an object through.
        closed = schema.get("additionalProperties", True) is False and (
            types is None or types == "object"
            or (isinstance(types, list) and "object" in types))
        if not properties and not required and not closed:
            return None
        ordered = tuple(properties.items())
        is_object = types == "object"
        # Integer fields sent as 2.0 pass (JSON has one number type) and are handed on
        # as 2: the store and the domain take an int, and some firmware writes
        # ``"meterStart": 12345.0``.
        integers = tuple(name for name, sub in schema.get("properties", {}).items()
                         if self._deref(sub).get("type") == "integer")

        def as_ints(value: dict[str, Any]) -> None:
            for name in integers:
                element = value.get(name)
                if element.__class__ is float:
                    value[name] = int(element)

        def check_in_order(value: Any) -> None:
            if not isinstance(value, dict):
                if is_object:
                    raise _Invalid("type", "must be object")
                return
            for name in required:
                if name not in value:
                    missing = sorted(n for n in required if n not in value)
                    raise _Invalid("required", f"must contain {missing} properties")
            known = 0
            # In the schema's order, then the extra keys: the first error is the one
            # fastjsonschema would report, so the 1.6 error code is the same.
            for name, check_property in ordered:
                if name in value:
                    known += 1
                    try:
                        check_property(value[name])
                    except _Invalid as error:
                        error.steps.append(f".{name}")
                        raise
            if closed and known != len(value):
                extra = [name for name in value if name not in properties]
                raise _Invalid("additionalProperties",
                               f"must not contain {set(extra)!r} properties")
            if integers:
                as_ints(value)

        def check(value: Any) -> None:
            # The fast pass walks the value's few keys rather than the schema's many;
            # on any doubt the ordered pass runs and raises the error to report.
            if value.__class__ is dict:
                try:
                    for name in required:
                        if name not in value:
                            raise _Retry
                    for name, element in value.items():
                        check_property = properties.get(name)
                        if check_property is None:
                            if closed:
                                raise _Retry
                            continue
                        check_property(element)
                    if integers:
                        as_ints(value)
                    return
                except (_Invalid, _Retry):
                    pass
            check_in_order(value)

        return check


class _Retry(Exception):
    """The fast pass found something wrong; the ordered pass says what."""


class Pruned(NamedTuple):
    """What ``compile_pruner``'s function left out of a value: the paths of properties
    the schema does not know, and of optional ones that were ``null``."""

    unknown: list[str]
    nulls: list[str]


def compile_pruner(schema: dict[str, Any]) -> Callable[[Any], Pruned]:
    """A function removing, in place, the properties ``schema`` does not know from the
    closed objects (``additionalProperties: false``) of a value, and the optional ones
    (not ``required``) whose value is ``null``, and returning their paths
    (``idTagInfo.vendorFlag``). Applied only to values the schema refused: firmware
    adding a field of its own to a BootNotification would otherwise never boot, and
    firmware writing ``null`` for an optional field it has no value for (a serializer's
    default: ``"reservationId": null``, ``"chargePointSerialNumber": null``) never booted
    or started a session either. A ``null`` is no value: left out, the field reads as
    absent (a stop's ``"reason": null`` is Local, as a stop without one)."""
    root = schema

    def resolve(node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            target: Any = root
            for part in node["$ref"][2:].split("/"):
                target = target[part]
            node = target
        return node

    def prune(node: dict[str, Any], value: Any, path: str, pruned: Pruned) -> None:
        node = resolve(node)
        if isinstance(value, dict):
            properties = node.get("properties", {})
            if node.get("additionalProperties", True) is False:
                for name in [name for name in value if name not in properties]:
                    del value[name]
                    pruned.unknown.append(f"{path}.{name}".lstrip("."))
            required = node.get("required", ())
            for name in [name for name in properties
                         if name in value and value[name] is None and name not in required
                         and not _allows_null(resolve(properties[name]))]:
                del value[name]
                pruned.nulls.append(f"{path}.{name}".lstrip("."))
            for name, sub in properties.items():
                if name in value:
                    prune(sub, value[name], f"{path}.{name}", pruned)
        elif isinstance(value, list) and isinstance(node.get("items"), dict):
            for index, element in enumerate(value):
                prune(node["items"], element, f"{path}[{index}]", pruned)

    def pruned(value: Any) -> Pruned:
        found = Pruned([], [])
        prune(schema, value, "", found)
        return found

    return pruned


def _allows_null(node: dict[str, Any]) -> bool:
    """Whether a property's schema takes ``null`` (the 1.6 schemas' never do)."""
    kind = node.get("type")
    return kind == "null" or (isinstance(kind, list) and "null" in kind)
