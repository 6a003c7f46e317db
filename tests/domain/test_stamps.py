"""Copies with stamps: what every update in the services is built from."""

from __future__ import annotations

import pytest

from domain.entities import Company, Role
from domain.policy import SYSTEM, Viewer
from domain.services.base import UNSET, changed, patch


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
    assert update.fields == frozenset({"name", "updated_at", "updated_by"})
