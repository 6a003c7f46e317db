"""Copies with stamps: what every update in the services is built from."""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import pytest

from domain.entities import Company, Role, Station, User
from domain.policy import SYSTEM, Viewer
from domain.services.base import UNSET, changed, patch, stamp_new


def test_changed_copies_sets_stamps_and_leaves_the_original() -> None:
    original = Company(name="Before")
    actor = Viewer(user_id="u1", role=Role.DRIVER)
    copy = changed(original, actor, name="After")
    assert (original.name, copy.name) == ("Before", "After")
    assert copy.id == original.id and copy.created_at == original.created_at
    assert copy.updated_by == actor.actor and copy.updated_at >= original.updated_at
    assert type(copy) is Company and copy is not original


def test_changed_skips_unset_and_refuses_unknown_fields() -> None:
    original = Company(name="Same")
    assert changed(original, SYSTEM, name=UNSET).name == "Same"
    with pytest.raises(TypeError):
        changed(original, SYSTEM, nmae="typo")


def test_patch_writes_only_the_named_fields_and_stamps() -> None:
    update = patch(Company(name="A"), SYSTEM, name="B")
    # ``name_key`` goes with the name: it is what NAME order sorts by; so does a
    # company's ``name_identity``, what its name is unique by.
    assert update.fields == frozenset({"name", "name_key", "name_identity", "updated_at",
                                       "updated_by"})


@pytest.mark.parametrize("kind", [
    lambda name: Company(name=name),
    lambda name: User(email="u@example.com", name=name, role=Role.DRIVER),
    lambda name: Station(cp_id="CP-1", name=name),
])
def test_a_name_is_written_with_its_sort_key(kind: Callable[[str], Company | User | Station]
                                             ) -> None:
    """Every new record is stamped and every edit patched: there the name's key is kept
    in step, so no use case (a charger registering itself included) leaves it behind."""
    new = stamp_new(kind("Ärztehaus"), SYSTEM)
    assert new.name_key == "arztehaus"
    renamed = patch(new, SYSTEM, name="Zoo")
    assert cast(Company, renamed.record).name_key == "zoo"
    assert renamed.fields is not None and "name_key" in renamed.fields
    untouched = patch(new, SYSTEM, name=UNSET)
    assert cast(Company, untouched.record).name_key == "arztehaus"
    assert untouched.fields is not None and "name_key" not in untouched.fields


def test_a_company_s_name_is_written_with_its_identity() -> None:
    """What company names are unique by in the store (``Company.name_identity``) is kept
    in step with the name as its sort key is (review r2), a company left without one
    (migration 55) taking one when renamed."""
    new = stamp_new(Company(name="BÄCKEREI X"), SYSTEM)
    assert new.name_identity == "bäckerei x"
    left = Company(name="Bäckerei X", name_identity=None)
    renamed = patch(left, SYSTEM, name="Bäckerei X Süd")
    assert cast(Company, renamed.record).name_identity == "bäckerei x süd"
    assert renamed.fields is not None and "name_identity" in renamed.fields


def test_a_change_is_a_new_version_even_within_the_same_millisecond(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``updated_at`` is the version edits are guarded on, and MongoDB keeps it to the
    millisecond: a record made and changed within one read as the same version, and an
    edit on the first read landed on the change (review s21, a flaky race test)."""
    from datetime import UTC, datetime, timedelta

    from domain.services import base

    now = datetime(2026, 12, 5, 13, 0, 0, 123_456, tzinfo=UTC)
    monkeypatch.setattr(base, "utcnow", lambda: now)
    made = stamp_new(Company(name="Made"), SYSTEM)
    edited = changed(made, SYSTEM, name="Edited")
    assert edited.updated_at == datetime(2026, 12, 5, 13, 0, 0, 124_000, tzinfo=UTC)
    assert changed(edited, SYSTEM, name="Again").updated_at == edited.updated_at + timedelta(
        milliseconds=1)


def test_an_entry_is_dated_by_the_version_it_wrote(monkeypatch: pytest.MonkeyPatch) -> None:
    """Verify s21: two edits of one record in one millisecond (two instances) had entries
    of one ``at``, listed by id the other way round: their images did not chain."""
    from datetime import UTC, datetime, timedelta

    from domain.ports import Delete, Update
    from domain.services import base

    now = datetime(2026, 12, 5, 13, 0, 0, 123_456, tzinfo=UTC)
    monkeypatch.setattr(base, "utcnow", lambda: now)
    made = stamp_new(Company(name="Made"), SYSTEM)
    first = changed(made, SYSTEM, name="First")
    second = changed(first, SYSTEM, name="Second")
    dated = [base._entry_at(now, Update(first), made),
             base._entry_at(now, Update(second), first),
             base._entry_at(now, Delete(second), second)]
    assert dated == sorted(set(dated))  # strictly later, each
    assert dated[0] > now and dated[2] - dated[1] == timedelta(milliseconds=1)
