"""Every error code the service can answer is one a client can look up: README's list
(with what it means) and, for what a mutation's payload may carry, `UserError.code`'s
description, which GraphiQL shows. A client matches on `code`, never on the message
(README), so a code written nowhere is one it cannot handle: LIMIT_REACHED, OVERLAP,
CHANGED, EXPIRED, TOO_MANY and the database's STORE_* codes were answered and named
nowhere (QA s26).

The codes are read from the source, so a new one fails here until it is written down."""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path
from typing import Any

import pytest

from domain.errors import StoreUnavailable
from domain.services import Services
from graph.schema import schema
from tests.graph.conftest import Api
from tests.graph.world import World

ROOT = Path(__file__).resolve().parents[2]
CODE = re.compile(r"[A-Z][A-Z_]{3,}")
#: ``Conflict``'s default, which every raise of one replaces with its own code.
NEVER_ANSWERED = {"CONFLICT"}
#: Answered to queries alone, as top-level errors (README lists them there).
QUERIES_ONLY = {"INVALID_CURSOR", "QUERY_TOO_COMPLEX"}
#: Functions with a ``code`` parameter that is no error code (a currency's).
NOT_ERRORS = {"minor_digits", "major_units", "minor_units"}
#: Codes a use case raises that reach no GraphQL response: answered only as a plain HTTP
#: download's status and body (README's "HTTP answers"), so UserError.code, which lists
#: what a payload may carry, does not name them (QA s26: TOO_MANY_REQUESTS failed here).
#: ``test_an_http_only_code_is_raised_for_the_http_doors_alone`` proves each: the use
#: cases raising it are called from ``HTTP_DOORS`` alone.
HTTP_ONLY = {"ERASED", "TOO_MANY_REQUESTS"}
#: What answers over plain HTTP: the download doors and the chargers' OCPP handshake.
HTTP_DOORS = {"graph/data_export.py", "graph/csv_export.py", "ocpp_bridge/server.py"}
#: Where the services are built, each an attribute (``services.personal_data``).
SERVICES = "domain/services/__init__.py"


def _code_parameters(trees: list[ast.Module]) -> dict[str, tuple[int, str | None]]:
    """Functions taking an error ``code``: its position, and its default if a string."""
    found: dict[str, tuple[int, str | None]] = {}
    for tree in trees:
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) \
                    or node.name in NOT_ERRORS:
                continue
            names = [a.arg for a in node.args.posonlyargs + node.args.args]
            if "code" not in names:
                continue
            index = names.index("code")
            defaults = node.args.defaults
            first_default = len(names) - len(defaults)
            default = defaults[index - first_default] if index >= first_default else None
            found[node.name] = (index, default.value if isinstance(default, ast.Constant)
                                and isinstance(default.value, str) else None)
    return found


@functools.cache
def _modules(*packages: str) -> dict[str, ast.Module]:
    """The modules of ``packages`` by their path in the repository."""
    paths = [path for package in packages for path in
             ([ROOT / package] if package.endswith(".py")
              else sorted((ROOT / package).rglob("*.py")))]
    return {path.relative_to(ROOT).as_posix(): ast.parse(path.read_text()) for path in paths}


def _constants(tree: ast.Module) -> dict[str, str]:
    """A module's string constants (``PARSE_FAILED = "GRAPHQL_PARSE_FAILED"``)."""
    return {t.id: s.value.value for s in tree.body if isinstance(s, ast.Assign)
            and isinstance(s.value, ast.Constant) and isinstance(s.value.value, str)
            for t in s.targets if isinstance(t, ast.Name)}


def _error_classes() -> dict[str, str]:
    """``domain``'s error classes by name, each with its code (its own, or inherited)."""
    classes = {n.name: n for tree in _modules("domain").values() for n in ast.walk(tree)
               if isinstance(n, ast.ClassDef)}

    def code_of(name: str) -> str | None:
        cls = classes.get(name)
        if cls is None:
            return None
        own = [s.value.value for s in cls.body if isinstance(s, ast.Assign)
               and any(getattr(t, "id", None) == "code" for t in s.targets)
               and isinstance(s.value, ast.Constant) and isinstance(s.value.value, str)]
        return own[0] if own else next(
            (c for b in cls.bases if (c := code_of(getattr(b, "id", "")))), None)

    return {name: code for name in classes if (code := code_of(name))}


def answered_codes(*packages: str, skip: set[str] = frozenset()) -> set[str]:  # type: ignore[assignment]
    """The codes raised in ``packages`` (but for the modules ``skip``), however given:
    ``code="X"`` in a call, an error class's ``code = "X"``, a call of a ``domain``
    error class without ``code`` (``StoreUnavailable(…)``: its class's), what a helper
    taking a ``code`` is given or defaults to, and a dict literal's ``"code": "X"`` (a
    GraphQL error's ``extensions``; review r26-api2: EVENTS_LOST went unseen), each
    value a string or a module constant naming one."""
    modules = _modules(*packages)
    trees = [tree for path, tree in modules.items() if path not in skip]
    helpers = _code_parameters(trees + list(_modules("domain").values()))
    errors = _error_classes()
    codes: set[str] = {default for _, default in helpers.values() if default}
    for tree in trees:
        constants = _constants(tree)
        values: list[ast.expr] = []
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                values += [s.value for s in node.body if isinstance(s, ast.Assign)
                           and any(getattr(t, "id", None) == "code" for t in s.targets)]
            if isinstance(node, ast.Dict):
                values += [v for k, v in zip(node.keys, node.values, strict=True)
                           if isinstance(k, ast.Constant) and k.value == "code"]
            if not isinstance(node, ast.Call):
                continue
            values += [k.value for k in node.keywords if k.arg == "code"]
            name = getattr(node.func, "id", getattr(node.func, "attr", None))
            if name in errors and not any(k.arg == "code" for k in node.keywords):
                codes.add(errors[name])
            if name in helpers and len(node.args) > helpers[name][0]:
                values.append(node.args[helpers[name][0]])
        given = [v.value if isinstance(v, ast.Constant)
                 else constants.get(v.id) if isinstance(v, ast.Name) else None
                 for v in values]
        codes |= {v for v in given if isinstance(v, str) and CODE.fullmatch(v)}
    return codes - NEVER_ANSWERED


def test_every_code_answered_is_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = {code for code in answered_codes("domain", "graph", "ocpp_bridge",
                                               "chargegraph")
               if f"`{code}`" not in readme}
    assert not missing, f"codes README does not list: {sorted(missing)}"


def test_every_code_a_use_case_answers_is_in_the_user_error_description() -> None:
    """What ``domain`` raises reaches a mutation's payload (``graph.errors.attempt``)."""
    user_error = schema._schema.type_map["UserError"]
    described = user_error.fields["code"].description  # type: ignore[attr-defined]
    missing = {code for code in answered_codes("domain") - QUERIES_ONLY - HTTP_ONLY
               if not re.search(rf"\b{code}\b", described)}
    assert not missing, f"codes UserError.code does not list: {sorted(missing)}"
    told = {code for code in HTTP_ONLY if re.search(rf"\b{code}\b", described)}
    assert not told, f"UserError.code names codes no payload carries: {sorted(told)}"


def _bullet(title: str) -> str:
    """README's "Using the API from a client" bullet ``title``."""
    readme = (ROOT / "README.md").read_text()
    found = re.search(rf"\* \*\*{title}\*\*(.*?)\n\* ", readme, re.S)
    assert found, f"README has a {title} bullet"
    return found.group(1)


#: What every read of the store goes through: the failures any query may answer (review
#: r26-api2: MongoDB's outage, STORE_UNAVAILABLE, was named among the mutations' codes
#: alone).
STORE_READS = {"store/mongo/outage.py", "store/mongo/query.py", "store/sqlite/reader.py",
               "store/sqlite/paging.py"}


def test_every_code_a_query_answers_is_among_the_top_level_errors() -> None:
    """A query's failures are top-level errors: those raised by the GraphQL side of
    ``graph`` (not its downloads), by the use cases only queries call (analytics) and by
    the store's reads. QA s26: analytics' TOO_MANY was named among the mutations' codes
    alone."""
    bullet = _bullet("Top-level errors") + _bullet("Query limits")
    missing = {code for code in answered_codes("graph", skip=HTTP_DOORS)
               | answered_codes("domain/services/analytics.py")
               | answered_codes(*sorted(STORE_READS))
               if f"`{code}`" not in bullet}
    assert not missing, f"top-level codes README does not list: {sorted(missing)}"


def test_the_http_only_codes_are_among_the_http_answers() -> None:
    bullet = _bullet("HTTP answers")
    assert not {code for code in HTTP_ONLY if f"`{code}`" not in bullet}
    assert answered_codes("domain") >= HTTP_ONLY, "an HTTP-only code no longer raised"


def _name(node: ast.expr) -> str | None:
    return getattr(node, "id", getattr(node, "attr", None))


def _raised_codes(node: ast.Raise, error_codes: dict[str, str]) -> set[str]:
    call = node.exc
    if not isinstance(call, ast.Call):
        return set()
    given = {k.value.value for k in call.keywords if k.arg == "code"
             and isinstance(k.value, ast.Constant) and isinstance(k.value.value, str)}
    return given or ({error_codes[n]} if (n := _name(call.func)) in error_codes else set())


def _raisers(code: str, modules: dict[str, ast.Module]) -> set[tuple[str, str]]:
    """The (class, method) pairs of ``domain`` raising ``code``, themselves or through
    another method of theirs (``self.check`` of ``open``): a raise outside a method of
    a class fails, as one whose callers this cannot follow."""
    classes = {n.name: n for tree in modules.values() for n in ast.walk(tree)
               if isinstance(n, ast.ClassDef)}

    def code_of(name: str) -> str | None:
        cls = classes.get(name)
        if cls is None:
            return None
        own = [s.value.value for s in cls.body if isinstance(s, ast.Assign)
               and any(_name(t) == "code" for t in s.targets)
               and isinstance(s.value, ast.Constant) and isinstance(s.value.value, str)]
        return own[0] if own else next(
            (c for b in cls.bases if (c := code_of(_name(b) or ""))), None)

    error_codes = {n: c for n in classes if (c := code_of(n))}
    found: set[tuple[str, str]] = set()
    methods = {(cls.name, f.name): f for cls in classes.values() for f in cls.body
               if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)}
    in_methods = 0
    for key, f in methods.items():
        raises = [n for n in ast.walk(f) if isinstance(n, ast.Raise)
                  and code in _raised_codes(n, error_codes)]
        in_methods += len(raises)
        if raises:
            found.add(key)
    everywhere = sum(1 for tree in modules.values() for n in ast.walk(tree)
                     if isinstance(n, ast.Raise) and code in _raised_codes(n, error_codes))
    assert everywhere == in_methods, f"{code} raised outside a class's method"
    while True:  # the methods calling a raising one of their own class
        more = {(cls, name) for (cls, name), f in methods.items() if (cls, name) not in found
                and any(isinstance(c, ast.Call) and isinstance(c.func, ast.Attribute)
                        and _name(c.func.value) == "self" and (cls, c.func.attr) in found
                        for c in ast.walk(f))}
        if not more:
            return found
        found |= more


def _services(modules: dict[str, ast.Module]) -> dict[str, set[str]]:
    """Each service attribute (``charging``) with its class and every class it inherits
    from (``ChargingService``, ``ChargerConnections``, …)."""
    bases = {n.name: {_name(b) for b in n.bases} for tree in modules.values()
             for n in ast.walk(tree) if isinstance(n, ast.ClassDef)}

    def lineage(name: str) -> set[str]:
        return {name}.union(*(lineage(b) for b in bases.get(name, ()) if b))

    return {target.attr: lineage(_name(node.value.func) or "")
            for node in ast.walk(modules[SERVICES]) if isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Call)
            for target in node.targets if isinstance(target, ast.Attribute)}


def test_an_http_only_code_is_raised_for_the_http_doors_alone() -> None:
    """What makes a code HTTP-only: the service methods raising it (``open`` and
    ``check`` of the personal data, ``station_for_connection``) are called, through
    their service (``services.personal_data.open``), from the HTTP doors and nowhere
    else: no GraphQL resolver, no other use case (whose caller could be one)."""
    domain = _modules("domain")
    services = _services(domain)
    everywhere = {**domain, **_modules("graph", "ocpp_bridge", "chargegraph")}
    for code in sorted(HTTP_ONLY):
        raisers = _raisers(code, domain)
        callers = {path for path, tree in everywhere.items() for c in ast.walk(tree)
                   if isinstance(c, ast.Call) and isinstance(c.func, ast.Attribute)
                   and any((cls, c.func.attr) in raisers
                           for cls in services.get(_name(c.func.value) or "", ()))}
        assert callers, f"{code}: raised by {sorted(raisers)}, called from nowhere found"
        assert callers <= HTTP_DOORS, (
            f"{code} is raised for {sorted(callers - HTTP_DOORS)} too: a GraphQL answer "
            "may carry it, so UserError.code must name it (leave HTTP_ONLY)")


def test_the_scan_sees_codes_given_as_extensions() -> None:
    """graph/subscription.py ends a feed with ``extensions={"code": "EVENTS_LOST"}``:
    a scan reading only ``code=`` keywords and class attributes let such a code go
    undocumented (review r26-api2)."""
    assert "EVENTS_LOST" in answered_codes("graph", skip=HTTP_DOORS)
    assert "GRAPHQL_PARSE_FAILED" in answered_codes("graph/request_errors.py")


async def test_a_query_in_a_store_outage_answers_a_listed_top_level_code(
        api: Api, world: World, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read the store cannot serve (MongoDB's outage.py makes every read's outage
    StoreUnavailable) is a query's top-level STORE_UNAVAILABLE, which README's
    top-level errors name (review r26-api2: they did not)."""
    async def down(*args: Any, **kwargs: Any) -> Any:
        raise StoreUnavailable("the store is unreachable: try again later", reason="outage")

    monkeypatch.setattr(type(services.reads), "page", down)
    answer = await api.post("{ stations(first: 5) { nodes { id } } }", None,
                            api.token_for(world.users["admin"].id))
    code = answer.json()["errors"][0]["extensions"]["code"]
    assert code == "STORE_UNAVAILABLE"
    assert f"`{code}`" in _bullet("Top-level errors") + _bullet("Query limits")
