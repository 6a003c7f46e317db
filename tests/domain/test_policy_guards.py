"""The policy's guards walk every node of a filter, the negated sub-select included: a
complement built on what a viewer may not read would tell them the hidden part."""

from __future__ import annotations

from domain.entities import Role
from domain.policy import Policy, Viewer
from domain.query import NONE, Eq, NotSub, Sub, all_of

DRIVER = Viewer(user_id="d1", role=Role.DRIVER)
OPERATOR = Viewer(user_id="o1", role=Role.OPERATOR, company_id="c1")


def test_guard_nested_guards_inside_a_not_sub_as_inside_a_sub() -> None:
    policy = Policy()
    on_company = Eq("company_id", "c2")  # a station's company is private
    guarded = policy.guard_nested(DRIVER, "meter_sample",
                                  NotSub("station_id", "station", on_company))
    # A driver sees no station's company: "not on c2's stations" is every sample,
    # which tells nothing about c2; unguarded it would list c2's stations by omission.
    assert guarded == NotSub("station_id", "station", NONE)
    assert policy.guard_nested(DRIVER, "meter_sample", Sub("station_id", "station",
                                                           on_company)) == \
        Sub("station_id", "station", NONE)


def test_guard_nested_keeps_a_sub_s_further_key_fields() -> None:
    """A sub-select joined on several fields ("the session ACTIVE on this very plug")
    guarded stays joined on all of them: rebuilt on its first key alone it would match
    a session on any plug of the station."""
    policy = Policy()
    plug = (("connector_id", "connector_id"),)
    for node in (Sub("station_id", "session", Eq("state", "ACTIVE"), "station_id", plug),
                 NotSub("station_id", "session", Eq("state", "ACTIVE"), "station_id", plug)):
        assert policy.guard_nested(DRIVER, "connector", node).joined == plug  # type: ignore[union-attr]


def test_guard_private_guards_a_not_sub_on_a_private_field() -> None:
    policy = Policy()
    on_people = NotSub("company_id", "company", Eq("name", "Acme"))  # a user's company
    view = policy.private_view(OPERATOR, "user")
    assert policy.guard_private(OPERATOR, "user", on_people) == all_of(on_people, view)
