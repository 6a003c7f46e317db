"""Refresh tokens in both stores: found by their hash, one hash one token, a rotation is
all or nothing (the family's guard, the old token's and the new token together), and a
user's expired ones are found by (user, expiry)."""

from __future__ import annotations

import pytest

from domain.entities import RefreshFamily, RefreshToken, Role
from domain.errors import Conflict, UniqueViolation
from domain.policy import Policy, Viewer
from domain.ports import Insert, Store
from domain.query import Eq, Range, all_of
from domain.services.base import patch
from tests.contract.factories import T0, at, oid, put

USER = oid(7)
ME = Viewer(user_id=USER, role=Role.DRIVER)


def family(**fields: object) -> RefreshFamily:
    return RefreshFamily(**{"user_id": USER, "token_epoch": 0, "expires_at": at(60),
                            **fields})  # type: ignore[arg-type]


def token(of: RefreshFamily, digest: str, **fields: object) -> RefreshToken:
    return RefreshToken(**{"family_id": of.id, "user_id": of.user_id, "token_hash": digest,
                           "expires_at": of.expires_at, **fields})  # type: ignore[arg-type]


async def test_a_token_is_found_by_its_hash(store: Store) -> None:
    chain = family()
    first, other = token(chain, "a" * 64), token(chain, "b" * 64)
    await put(store, chain, first, other)
    assert await store.find_one(RefreshToken, Eq("token_hash", "a" * 64)) == first
    assert await store.find_one(RefreshToken, Eq("token_hash", "c" * 64)) is None


async def test_two_tokens_of_one_hash_are_refused(store: Store) -> None:
    chain = family()
    await put(store, chain, token(chain, "a" * 64))
    with pytest.raises(UniqueViolation) as raised:
        await put(store, token(chain, "a" * 64))
    assert raised.value.field == "token_hash"


async def test_a_rotation_of_a_used_token_writes_nothing(store: Store) -> None:
    """Two refreshes of one token racing: the second finds it used and its new token is
    not stored either."""
    chain = family()
    old = token(chain, "a" * 64)
    await put(store, chain, old)

    def rotation(digest: str) -> list[object]:
        return [patch(chain, ME, only_if=("revoked_at", None), required=True,
                      last_refreshed_at=at(1)),
                patch(old, ME, only_if=("used_at", None), required=True, used_at=at(1)),
                Insert(token(chain, digest))]

    await store.write(rotation("b" * 64), [])  # type: ignore[arg-type]
    with pytest.raises(Conflict) as raised:
        await store.write(rotation("c" * 64), [])  # type: ignore[arg-type]
    assert raised.value.code == "CHANGED"
    assert await store.find_one(RefreshToken, Eq("token_hash", "c" * 64)) is None
    [stored] = await store.get_many(RefreshToken, [old.id])
    assert stored is not None and stored.used_at == at(1)


async def test_a_rotation_in_a_revoked_family_writes_nothing(store: Store) -> None:
    chain = family()
    live = token(chain, "a" * 64)
    await put(store, chain, live)
    await store.write([patch(chain, ME, only_if=("revoked_at", None), revoked_at=at(1))], [])

    with pytest.raises(Conflict):
        await store.write([
            patch(chain, ME, only_if=("revoked_at", None), required=True,
                  last_refreshed_at=at(2)),
            patch(live, ME, only_if=("used_at", None), required=True, used_at=at(2)),
            Insert(token(chain, "b" * 64))], [])
    [stored] = await store.get_many(RefreshToken, [live.id])
    assert stored is not None and stored.used_at is None
    assert await store.count(RefreshToken, Eq("family_id", chain.id)) == 1


async def test_a_users_expired_tokens_are_found_by_user_and_expiry(store: Store) -> None:
    old_chain, live_chain = family(expires_at=at(-1)), family(expires_at=at(60))
    someone_elses = family(user_id=oid(8), expires_at=at(-1))
    expired, live = token(old_chain, "a" * 64), token(live_chain, "b" * 64)
    await put(store, old_chain, live_chain, someone_elses, expired, live)

    past = all_of(Eq("user_id", USER), Range("expires_at", lt=T0))
    assert [t.id for t in await store.find_all(RefreshToken, past)] == [expired.id]
    assert [f.id for f in await store.find_all(RefreshFamily, past)] == [old_chain.id]


@pytest.mark.parametrize("role", [Role.ADMIN, Role.OPERATOR, Role.DRIVER, None])
async def test_no_viewer_reads_refresh_tokens(store: Store, role: Role | None) -> None:
    chain = family()
    await put(store, chain, token(chain, "a" * 64))
    viewer = Viewer(user_id=USER if role else None, role=role)
    for kind in (RefreshFamily, RefreshToken):
        assert await store.find_all(kind, Policy(public_map=True).scope(viewer, kind.kind)
                                    ) == []
