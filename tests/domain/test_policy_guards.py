"""The policy's guards walk every node of a filter, the negated sub-select included: a
complement built on what a viewer may not read would tell them the hidden part."""

from __future__ import annotations

from domain.entities import AuditAction, AuditEntry, Role
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


def test_a_persons_audit_image_is_private_to_them_admins_and_their_company_s_operators(
) -> None:
    """``audit_snapshot`` of a user's entry: its private fields (email, role) for whoever
    sees the person's private view as the entry's books have it (``sees_user_private``'s
    rule, ``may_manage_company``): the person, admins, their company's operators then;
    not another company's operator, an operator of no company, nor a colleague driver."""
    policy = Policy()
    image = {"name": "Dana", "email": "dana@example.com", "role": "DRIVER"}
    entry = AuditEntry(entity="user", entity_id="u1", action=AuditAction.UPDATE,
                       actor="o1", after=image, company_id="c1")
    viewers = {
        "herself": Viewer(user_id="u1", role=Role.DRIVER, company_id="c1"),
        "admin": Viewer(user_id="a1", role=Role.ADMIN),
        "her company's operator": OPERATOR,
        "another company's operator": Viewer(user_id="o2", role=Role.OPERATOR,
                                             company_id="c2"),
        "an operator of no company": Viewer(user_id="o3", role=Role.OPERATOR),
        "a colleague driver": Viewer(user_id="d2", role=Role.DRIVER, company_id="c1"),
    }
    told = {who: policy.audit_snapshot(viewer, entry, image, {})
            for who, viewer in viewers.items()}
    assert {who for who, shown in told.items() if shown == image} == {
        "herself", "admin", "her company's operator"}
    assert all(shown == {"name": "Dana"} for shown in told.values() if shown != image)
    # Of no company: only she and admins.
    loose = AuditEntry(entity="user", entity_id="u1", action=AuditAction.UPDATE,
                       actor="a1", after=image)
    assert [who for who, viewer in viewers.items()
            if policy.audit_snapshot(viewer, loose, image, {}) == image] == ["herself", "admin"]
