"""Every error code the service can answer is one a client can look up: README's list
(with what it means) and, for what a mutation's payload may carry, `UserError.code`'s
description, which GraphiQL shows. A client matches on `code`, never on the message
(README), so a code written nowhere is one it cannot handle: LIMIT_REACHED, OVERLAP,
CHANGED, EXPIRED, TOO_MANY and the database's STORE_* codes were answered and named
nowhere (QA s26).

The codes are read from the source, so a new one fails here until it is written down."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from graph.schema import schema

ROOT = Path(__file__).resolve().parents[2]
CODE = re.compile(r"[A-Z][A-Z_]{3,}")
#: ``Conflict``'s default, which every raise of one replaces with its own code.
NEVER_ANSWERED = {"CONFLICT"}
#: Answered to queries alone, as top-level errors (README lists them there).
QUERIES_ONLY = {"INVALID_CURSOR", "QUERY_TOO_COMPLEX"}
#: Functions with a ``code`` parameter that is no error code (a currency's).
NOT_ERRORS = {"minor_digits", "major_units", "minor_units"}


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


def answered_codes(*packages: str) -> set[str]:
    """The codes raised in ``packages``: ``code="X"`` in a call, an error class's
    ``code = "X"``, and what a helper taking a ``code`` is given or defaults to."""
    trees = [ast.parse(path.read_text()) for package in packages
             for path in sorted((ROOT / package).rglob("*.py"))]
    helpers = _code_parameters(trees)
    codes: set[str] = {default for _, default in helpers.values() if default}
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                codes |= {str(s.value.value) for s in node.body
                          if isinstance(s, ast.Assign)
                          and any(getattr(t, "id", None) == "code" for t in s.targets)
                          and isinstance(s.value, ast.Constant)}
            if not isinstance(node, ast.Call):
                continue
            values = [k.value for k in node.keywords if k.arg == "code"]
            name = getattr(node.func, "id", getattr(node.func, "attr", None))
            if name in helpers and len(node.args) > helpers[name][0]:
                values.append(node.args[helpers[name][0]])
            codes |= {v.value for v in values if isinstance(v, ast.Constant)
                      and isinstance(v.value, str) and CODE.fullmatch(v.value)}
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
    missing = {code for code in answered_codes("domain") - QUERIES_ONLY
               if not re.search(rf"\b{code}\b", described)}
    assert not missing, f"codes UserError.code does not list: {sorted(missing)}"
