import base64
import json
from datetime import UTC, datetime

import pytest

from domain.errors import ValidationError
from domain.query import (
    ALL,
    NONE,
    And,
    Eq,
    Or,
    PageRequest,
    Sort,
    Sub,
    all_of,
    any_of,
    decode_cursor,
    encode_cursor,
)


def test_all_of_and_any_of_simplify() -> None:
    a, b = Eq("x", 1), Eq("y", 2)
    assert all_of(None, ALL, a) == a
    assert all_of(a, b) == And((a, b))
    assert all_of(a, NONE) == NONE
    assert any_of(a, NONE) == a
    assert any_of(a, ALL) == ALL
    assert any_of() == NONE
    assert any_of(a, Or((b,))) == Or((a, b))


def test_all_of_drops_an_or_one_of_whose_branches_it_also_ands() -> None:
    """Absorption: a driver's garage (their own cars) within their scope of cars (their
    own, or their sessions' through a sub-select) is their own cars alone."""
    own, c = Eq("owner_id", "u1"), Eq("removed_at", None)
    sessions = Sub("id", "session", Eq("user_id", "u1"), select="vehicle_id")
    scope = any_of(own, sessions)
    assert all_of(scope, all_of(c, own)) == And((c, own))
    assert all_of(own, scope) == own
    # Kept: no branch of it ANDed as such (another owner's cars, or any car in a garage).
    assert all_of(scope, c) == And((scope, c))
    assert all_of(scope, Eq("owner_id", "u2")) == And((scope, Eq("owner_id", "u2")))
    assert all_of(any_of(own, c), any_of(own, c)) == And((any_of(own, c),) * 2)


def test_cursor_round_trip_and_ordering_check() -> None:
    sort = [Sort("start_time", descending=True)]
    at = datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
    cursor = encode_cursor("session", sort, [at], "0" * 24)
    key = decode_cursor(cursor, "session", sort)
    assert key.values == (at,) and key.id == "0" * 24
    with pytest.raises(ValidationError) as err:
        decode_cursor(cursor, "session", [Sort("start_time")])
    assert err.value.code == "INVALID_CURSOR"
    with pytest.raises(ValidationError):
        decode_cursor("%%%", "session", sort)


def test_a_cursor_of_another_list_is_a_user_error() -> None:
    sort = [Sort("name")]
    cursor = encode_cursor("user", sort, ["Mia"], "abc")
    with pytest.raises(ValidationError) as err:
        decode_cursor(cursor, "station", sort, "before")
    assert (err.value.field, err.value.code) == ("before", "INVALID_CURSOR")
    assert "another list" in err.value.message


def test_a_cursor_with_a_decimal_that_is_no_number_is_a_user_error() -> None:
    sort = [Sort("name")]
    forged = base64.urlsafe_b64encode(json.dumps(
        {"s": [["name", False]], "v": [{"d": "nope"}], "i": "x"}).encode()).decode()
    with pytest.raises(ValidationError) as err:
        decode_cursor(forged, "station", sort)
    assert (err.value.field, err.value.code) == ("after", "INVALID_CURSOR")


def test_cursors_keep_any_text_and_decode_the_compact_json_of_earlier_versions() -> None:
    sort = [Sort("name")]
    cursor = encode_cursor("station", sort, ["Zürich Süd ⚡"], "abc")
    assert decode_cursor(cursor, "station", sort).values == ("Zürich Süd ⚡",)
    # A cursor made with ``json.dumps(..., separators=(",", ":"))`` (ASCII escapes).
    earlier = base64.urlsafe_b64encode(json.dumps(
        {"s": [["name", False]], "v": ["Zürich"], "i": "abc"},
        separators=(",", ":")).encode()).decode().rstrip("=")
    key = decode_cursor(earlier, "station", sort)  # made before cursors named their list
    assert key.values == ("Zürich",) and key.id == "abc"


def test_page_request_bounds() -> None:
    assert PageRequest(first=5).limit == 5
    assert PageRequest(last=3).backward
    with pytest.raises(ValidationError):
        PageRequest(first=101)
    with pytest.raises(ValidationError):
        PageRequest(first=1, last=1)
