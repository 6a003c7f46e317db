"""The right to erasure through the API (QA s22: an account could only be deactivated,
and its email never used again): ``eraseUser`` (admins) and ``eraseMyAccount``."""

from __future__ import annotations

import json
from typing import Any

from domain.entities import Role, User
from domain.policy import SYSTEM
from domain.ports import Insert
from domain.services import Services
from domain.services.base import stamp_new
from tests.graph.conftest import Api
from tests.graph.test_mutations import call, codes, gid
from tests.graph.world import PASSWORD, World

#: What an erasure's entry counts of webhooks when the person kept none.
NO_WEBHOOKS = {"webhooks_removed": 0, "webhooks_disabled": 0}

LOGIN = """mutation($e: String!, $p: String!) { login(email: $e, password: $p) {
  token errors { code } } }"""
SIGN_UP = """mutation($e: String!, $p: String!) { signUp(email: $e, password: $p,
  name: "New Person") { user { name } errors { field code } } }"""
AUDIT = """{ auditLog(first: 100) { nodes { entity entityId action before after } } }"""
SESSION = """query($id: ID!) { node(id: $id) { ... on Session { id
  user { id name } vehicle { licensePlate make model } payment { id } } } }"""

#: What names driver2 in the world: their name, email, plate and its key.
PERSONAL = ("Driver2", "driver2@example.com", "B-DR 2", "BDR2")


async def login(api: Api, email: str, password: str = PASSWORD) -> dict[str, Any]:
    return (await api.gql(LOGIN, {"e": email, "p": password}))["login"]


async def settle(services: Services) -> None:
    await services.erasure.settled()
    await services.withdrawal.settled()


async def test_an_admin_erases_a_driver_and_the_books_stay(
        api: Api, world: World, services: Services) -> None:
    driver = world.users["driver2"]
    token = (await login(api, "driver2@example.com"))["token"]
    # Their own record's and car's history, with their email and plate in the images.
    assert codes(await call(api, world, "driver2", "updateVehicle",
                            {"id": gid("vehicle", world.vehicles["driver2"].id),
                             "licensePlate": "B-DR 2"}, "vehicle { id }")) == []
    assert codes(await call(api, world, "admin", "updateUser",
                            {"id": gid("user", driver.id), "name": "Driver2"},
                            "user { id }")) == []

    erased = await call(api, world, "admin", "eraseUser", {"id": gid("user", driver.id)},
                        "user { id name email active erasedAt }")
    await settle(services)
    assert codes(erased) == []
    user = erased["user"]
    assert (user["name"], user["active"]) == ("Erased user", False)
    assert user["email"].endswith("@erased.invalid") and user["erasedAt"] is not None

    # Signed out everywhere, and signed in nowhere again.
    assert (await api.post("{ me { id } }", token=token)).status_code == 401
    assert (await login(api, "driver2@example.com"))["errors"] == [
        {"code": "UNAUTHENTICATED"}]
    # Their card is gone, and chargers refuse it.
    cards = await api.gql("{ idTags(first: 50) { nodes { tag } } }",
                          as_user=world.users["admin"].id)
    assert "TAG-DRIVER2" not in {n["tag"] for n in cards["idTags"]["nodes"]}
    info = await services.charging.authorize("A-002", "TAG-DRIVER2")
    assert info.status == "Invalid"  # unknown now: the card was removed

    # The operator's books keep the session and its payment, under the account's id,
    # with the car it was charged with, without the person.
    session = (await api.gql(SESSION, {"id": gid("session", world.sessions["s3"].id)},
                             as_user=world.users["op_a"].id))["node"]
    assert session["user"] == {"id": gid("user", driver.id), "name": "Erased user"}
    assert session["vehicle"] == {"licensePlate": "ERASED", "make": "VW", "model": "ID.3"}
    assert session["payment"] is not None

    # No audit entry names them any more; the erasure's own entry is there.
    log = (await api.gql(AUDIT, as_user=world.users["admin"].id))["auditLog"]["nodes"]
    text = json.dumps(log)
    assert [p for p in PERSONAL if p in text] == []
    [entry] = [e for e in log if e["action"] == "ERASE"]
    assert entry["entityId"] == gid("user", driver.id) and entry["before"] is None
    assert entry["after"] == {"vehicles_removed": 1, "id_tags_removed": 1, **NO_WEBHOOKS}

    # The email is free for a new sign-up.
    services.accounts.sign_up_open = True
    signed = (await api.gql(SIGN_UP, {"e": "driver2@example.com", "p": "a new password 1"})
              )["signUp"]
    assert signed["errors"] == [] and signed["user"] == {"name": "New Person"}

    # Nothing of the person is written back into the account.
    assert codes(await call(api, world, "admin", "updateUser",
                            {"id": gid("user", driver.id), "active": True}, "user { id }")
                 ) == [("id", "INVALID_STATE")]


async def test_a_driver_erases_their_own_account_with_their_password(
        api: Api, world: World, services: Services) -> None:
    wrong = await call(api, world, "driver2", "eraseMyAccount",
                       {"currentPassword": "not it at all"}, "user { id }")
    assert codes(wrong) == [("currentPassword", "FORBIDDEN")]
    mine = await call(api, world, "driver2", "eraseMyAccount",
                      {"currentPassword": PASSWORD}, "user { name erasedAt }")
    await settle(services)
    assert codes(mine) == [] and mine["user"]["name"] == "Erased user"
    assert mine["user"]["erasedAt"] is not None
    assert (await login(api, "driver2@example.com"))["errors"] == [
        {"code": "UNAUTHENTICATED"}]


async def test_erasure_waits_for_a_session_and_keeps_the_last_admin(
        api: Api, world: World) -> None:
    # driver1 is charging (s1 is ACTIVE).
    assert codes(await call(api, world, "admin", "eraseUser",
                            {"id": gid("user", world.users["driver1"].id)}, "user { id }")
                 ) == [("id", "IN_USE")]
    assert codes(await call(api, world, "driver1", "eraseMyAccount",
                            {"currentPassword": PASSWORD}, "user { id }")) == [(None, "IN_USE")]
    # The only admin.
    assert codes(await call(api, world, "admin", "eraseMyAccount",
                            {"currentPassword": PASSWORD}, "user { id }")) == [(None, "IN_USE")]
    # Not an operator's to do, even for their company's driver.
    assert codes(await call(api, world, "op_a", "eraseUser",
                            {"id": gid("user", world.users["driver_a"].id)}, "user { id }")
                 ) == [(None, "FORBIDDEN")]  # who they are, not whom they named
    # An operator owning stations hands them over first.
    assert codes(await call(api, world, "admin", "eraseUser",
                            {"id": gid("user", world.users["op_a"].id)}, "user { id }")
                 ) == [("id", "IN_USE")]
    still = await api.gql("{ me { name } }", as_user=world.users["driver1"].id)
    assert still["me"] == {"name": "Driver1"}


async def test_nobody_can_take_an_account_s_erased_email_and_block_its_erasure(
        api: Api, world: World, services: Services) -> None:
    """QA s25: the email an erasure gives the account (``erased-<id>@erased.invalid``)
    could be taken first, by a sign-up or by anyone changing their own email, and the
    erasure then failed for good (DUPLICATE on an `email` the admin never gave): anyone
    knowing an account's id could keep it from being erased. The reserved ``.invalid``
    domain (RFC 6761: no mailbox there exists) is refused as an account's email."""
    driver = world.users["driver2"]
    placeholder = f"erased-{driver.id}@erased.invalid"
    services.accounts.sign_up_open = True
    for email in (placeholder, placeholder.upper(), f"{placeholder}.",
                  "someone@example.invalid"):
        taken = (await api.gql(SIGN_UP, {"e": email, "p": PASSWORD}))["signUp"]
        assert taken["errors"] == [{"field": "email", "code": "INVALID"}], email
    moved = await call(api, world, "driver1", "updateUser",
                       {"id": gid("user", world.users["driver1"].id), "email": placeholder,
                        "currentPassword": PASSWORD}, "user { email }")
    assert codes(moved) == [("email", "INVALID")]
    made = await call(api, world, "admin", "createUser",
                      {"email": placeholder, "password": PASSWORD, "name": "Squatter",
                       "role": "DRIVER"}, "user { id }")
    assert codes(made) == [("email", "INVALID")]

    erased = await call(api, world, "admin", "eraseUser", {"id": gid("user", driver.id)},
                        "user { email }")
    await settle(services)
    assert codes(erased) == [] and erased["user"]["email"] == placeholder
    # The erased account still reads as it was written (the rule is on what is given).
    assert (await login(api, placeholder))["errors"] == [{"code": "UNAUTHENTICATED"}]


async def test_an_erased_email_taken_before_it_was_refused_does_not_block_the_erasure(
        api: Api, world: World, services: Services) -> None:
    """Review s25: refusing ``.invalid`` emails holds for what is given from now on; an
    account that took a victim's ``erased-<id>@erased.invalid`` before (the attack of
    QA s25) kept it, and the victim's erasure still failed for good (DUPLICATE on
    email). The erasure gives the account the placeholder with a random suffix, in the
    same reserved domain, and leaves the other account as it is; erasing again keeps
    it."""
    victim = world.users["driver2"]
    placeholder = f"erased-{victim.id}@erased.invalid"
    squatter = stamp_new(User(email=placeholder, name="Squatter", role=Role.DRIVER,
                              password_hash="x"), SYSTEM)
    await services.accounts.store.write([Insert(squatter)], [])
    # Found (and logged) at start, for an admin to give it a real email.
    assert await services.erasure.warn_of_held_placeholders() == [squatter.id]
    given = []
    for _ in range(2):  # erasing again (to finish a scrub) keeps the email
        erased = await call(api, world, "admin", "eraseUser",
                            {"id": gid("user", victim.id)}, "user { email name }")
        await settle(services)
        assert codes(erased) == [] and erased["user"]["name"] == "Erased user"
        given.append(erased["user"]["email"])
    assert given[0] == given[1] and given[0] != placeholder, given
    assert given[0].startswith(f"erased-{victim.id}-") \
        and given[0].endswith("@erased.invalid"), given
    [held] = await services.accounts.store.get_many(User, [squatter.id])
    assert held is not None and held.email == placeholder
    # The erased account's own placeholder is no such account, and is left out by the
    # read (it sorts first: with one read, the holder is still found).
    assert await services.erasure.warn_of_held_placeholders(limit=1) == [squatter.id]
