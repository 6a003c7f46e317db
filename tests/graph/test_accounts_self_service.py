"""Drivers' self-service accounts over HTTP, on both stores: sign-up, refresh tokens
(rotation, reuse detection, sign-out, revocation by the existing paths) and
changePassword."""

from __future__ import annotations

import asyncio
import hashlib
import unicodedata
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from domain.entities import AuditEntry, RefreshFamily, RefreshToken, Role, User
from domain.errors import DomainError
from domain.policy import SYSTEM
from domain.ports import Update
from domain.query import ALL, Eq
from domain.services import Services
from domain.services.base import changed
from graph import TokenService, create_graphql_app
from graph.ids import to_global_id
from tests.graph.conftest import SECRET, Api
from tests.graph.test_mutations import call, codes
from tests.graph.world import PASSWORD, World

SESSION = "token expiresAt refreshToken refreshExpiresAt user { id email role } " \
          "errors { field code message }"
SIGN_UP = f"""mutation($e: String!, $p: String!, $n: String!) {{
    signUp(email: $e, password: $p, name: $n) {{ {SESSION} }} }}"""
LOGIN = f"""mutation($e: String!, $p: String!) {{
    login(email: $e, password: $p) {{ {SESSION} }} }}"""
REFRESH = f"""mutation($t: String!) {{ refreshToken(token: $t) {{ {SESSION} }} }}"""
SIGN_OUT = """mutation($t: String!) { signOut(token: $t) { signedOut errors { field code } } }"""
CHANGE = f"""mutation($c: String!, $n: String!) {{
    changePassword(currentPassword: $c, newPassword: $n) {{ {SESSION} }} }}"""


def errors(payload: dict[str, Any]) -> list[tuple[str | None, str]]:
    return [(e["field"], e["code"]) for e in payload["errors"]]


async def sign_up(api: Api, email: str = "neo@example.com", password: str = PASSWORD,
                  name: str = "Neo") -> dict[str, Any]:
    return (await api.gql(SIGN_UP, {"e": email, "p": password, "n": name}))["signUp"]  # type: ignore[no-any-return]


async def login(api: Api, email: str = "driver1@example.com", password: str = PASSWORD
                ) -> dict[str, Any]:
    return (await api.gql(LOGIN, {"e": email, "p": password}))["login"]  # type: ignore[no-any-return]


async def refresh(api: Api, token: str) -> dict[str, Any]:
    return (await api.gql(REFRESH, {"t": token}))["refreshToken"]  # type: ignore[no-any-return]


async def me(api: Api, token: str) -> httpx.Response:
    return await api.post("{ me { email } }", token=token)


# ------------------------------------------------------------------ sign-up
async def test_sign_up_is_refused_unless_the_service_takes_sign_ups(
        api: Api, services: Services, world: World) -> None:
    assert not services.accounts.sign_up_open  # the default
    refused = await sign_up(api)
    assert errors(refused) == [(None, "SIGN_UP_DISABLED")] and refused["token"] is None
    assert await services.ctx.store.find_one(User, Eq("email", "neo@example.com")) is None


async def test_a_driver_signs_up_and_is_signed_in(api: Api, services: Services,
                                                  world: World) -> None:
    services.accounts.sign_up_open = True
    done = await sign_up(api, email="  Neo@Example.COM ", name=" Thomas   Anderson ")
    assert done["errors"] == []
    assert done["user"]["email"] == "neo@example.com" and done["user"]["role"] == "DRIVER"
    assert (await me(api, done["token"])).json()["data"]["me"] == {"email": "neo@example.com"}
    assert (await refresh(api, done["refreshToken"]))["errors"] == []
    # The new account made itself: its own id is the creator and the audit actor.
    user = await services.ctx.store.find_one(User, Eq("email", "neo@example.com"))
    assert user is not None and user.name == "Thomas Anderson"
    assert (user.role, user.company_id, user.created_by) == (Role.DRIVER, None, user.id)
    [entry] = await services.ctx.store.find_all(AuditEntry, Eq("entity_id", user.id))
    assert (entry.action, entry.actor, entry.created_by) == ("CREATE", user.id, user.id)
    assert entry.after is not None and "password_hash" not in entry.after


async def test_sign_up_input_is_checked_field_by_field(api: Api, services: Services,
                                                       world: World) -> None:
    services.accounts.sign_up_open = True
    for email, password, name, expected in (
            ("not an email", PASSWORD, "Neo", ("email", "INVALID")),
            ("neo@example.com", "short", "Neo", ("password", "TOO_SHORT")),
            ("neo@example.com", "x" * 1000, "Neo", ("password", "TOO_LONG")),
            # QA s23: the passwords guessed first were taken (no rules on what it holds).
            ("neo@example.com", "password", "Neo", ("password", "TOO_WEAK")),
            ("neo@example.com", "Password123", "Neo", ("password", "TOO_WEAK")),
            ("neo@example.com", " " * 8, "Neo", ("password", "TOO_WEAK")),
            ("neo@example.com", "zzzzzzzzzz", "Neo", ("password", "TOO_WEAK")),
            ("neo@example.com", PASSWORD, "   ", ("name", "REQUIRED")),
            ("neo@example.com", PASSWORD, "Neo\u202e", ("name", "INVALID"))):
        refused = await sign_up(api, email, password, name)
        assert errors(refused) == [expected] and refused["token"] is None, expected
    assert await services.ctx.store.find_one(User, Eq("email", "neo@example.com")) is None


async def test_a_taken_email_is_a_duplicate_in_any_case_and_tells_nothing_more(
        api: Api, services: Services, world: World) -> None:
    services.accounts.sign_up_open = True
    await api.gql("""mutation($i: DeactivateUserInput!) { deactivateUser(input: $i) {
        errors { code } } }""", {"i": {"id": to_global_id("user", world.users["driver2"].id)}},
                  as_user=world.users["admin"].id)
    answers = [await sign_up(api, email=email) for email in
               ("DRIVER1@example.com", "admin@example.com", "driver2@example.com")]
    # An active driver, an admin and a deactivated account answer alike.
    assert {(e["field"], e["code"], e["message"]) for a in answers for e in a["errors"]} == {
        ("email", "DUPLICATE", "an account with this email exists: sign in instead")}
    assert all(a["token"] is None for a in answers)
    assert await services.ctx.store.count(User, ALL) == len(world.users)


async def test_sign_ups_are_limited_per_client(api: Api, services: Services,
                                               world: World) -> None:
    services.accounts.sign_up_open = True
    services.accounts.sign_up_throttle.limit = 3
    for i in range(3):
        assert (await sign_up(api, email=f"d{i}@example.com"))["errors"] == []
    refused = await sign_up(api, email="d3@example.com")
    assert errors(refused) == [(None, "TOO_MANY_ATTEMPTS")]
    # Another address is not held up by this one.
    other = await services.accounts.sign_up(email="d3@example.com", password=PASSWORD,
                                            name="D3", client="203.0.113.9")
    assert other.email == "d3@example.com"


async def test_probing_emails_by_sign_up_spends_the_clients_sign_in_budget(
        api: Api, services: Services, world: World) -> None:
    """A taken email counts as a failed sign-in of the client: probing which emails have
    an account is as limited by sign-up as by sign-in, and locks sign-ins too."""
    services.accounts.sign_up_open = True
    services.accounts.client_throttle.limit = 2
    for email in ("driver1@example.com", "driver2@example.com"):
        assert errors(await sign_up(api, email=email)) == [("email", "DUPLICATE")]
    assert errors(await sign_up(api, email="fresh@example.com")) == [
        (None, "TOO_MANY_ATTEMPTS")]
    assert errors(await login(api)) == [(None, "TOO_MANY_ATTEMPTS")]


async def test_probing_emails_by_changing_one_s_own_spends_the_same_budget(
        api: Api, services: Services, world: World) -> None:
    """QA s25: a signed-in driver (any sign-up) moving their own email to others' learnt
    which have an account (DUPLICATE) as fast as the server hashed their password, with
    no limit: 120 probes in half a minute, never refused. A taken email counts as a
    failed sign-in of the client there too, and a locked client changes no email."""
    services.accounts.client_throttle.limit = 2
    change = """mutation($i: UpdateUserInput!) { updateUser(input: $i) {
      user { email } errors { field code } } }"""
    me_id = to_global_id("user", world.users["driver1"].id)

    async def move_to(email: str) -> list[tuple[str | None, str]]:
        moved = (await api.gql(change, {"i": {"id": me_id, "email": email,
                                               "currentPassword": PASSWORD}},
                               as_user=world.users["driver1"].id))["updateUser"]
        return errors(moved)

    for email in ("driver2@example.com", "op_a@example.com"):
        assert await move_to(email) == [("email", "DUPLICATE")]
    assert await move_to("fresh@example.com") == [(None, "TOO_MANY_ATTEMPTS")]
    assert errors(await login(api)) == [(None, "TOO_MANY_ATTEMPTS")]
    # Another address is not held up by this one.
    driver = world.viewer("driver1")
    moved = await services.accounts.update_user(driver, driver.user_id or "",
                                                email="fresh@example.com",
                                                current_password=PASSWORD,
                                                client="203.0.113.9")
    assert moved.email == "fresh@example.com"


async def test_probes_sent_at_once_meet_the_same_limit(services: Services,
                                                      world: World) -> None:
    """Review s25: the client's lock was read before the (slow) password check and a
    taken email counted only after the write, so probes sent at once all passed the
    lock: with a limit of 2, ten at once answered DUPLICATE ten times. Each is counted
    before its slow part, as a sign-in is, and taken back unless the email was taken:
    a sign-up's too."""
    accounts = services.accounts
    accounts.client_throttle.limit = 2
    accounts.sign_up_open = True
    driver = world.viewer("driver1")
    taken = ["driver2@example.com", "op_a@example.com", "op_b@example.com",
             "admin@example.com", "driver_a@example.com"] * 2

    async def moving(email: str, client: str) -> str:
        try:
            await accounts.update_user(driver, driver.user_id or "", email=email,
                                       current_password=PASSWORD, client=client)
        except DomainError as exc:
            return exc.code
        return "MOVED"

    async def signing_up(email: str, client: str) -> str:
        try:
            await accounts.sign_up(email=email, password=PASSWORD, name="Probe",
                                   client=client)
        except DomainError as exc:
            return exc.code
        return "SIGNED_UP"

    for attempt, client in ((moving, "198.51.100.7"), (signing_up, "198.51.100.8")):
        answers = await asyncio.gather(*(attempt(e, client) for e in taken))
        assert answers.count("DUPLICATE") == 2, answers
        assert set(answers) == {"DUPLICATE", "TOO_MANY_ATTEMPTS"}, answers


async def test_an_email_change_that_finds_none_taken_is_not_counted(
        services: Services, world: World) -> None:
    """Counted before its check, a probe is taken back when the email was free (or the
    password wrong: that counts against the account, as ever): moves to free emails,
    at once, leave the client free to sign in."""
    accounts = services.accounts
    accounts.client_throttle.limit = 2
    driver = world.viewer("driver1")
    moved = await accounts.update_user(driver, driver.user_id or "",
                                       email="fresh@example.com",
                                       current_password=PASSWORD, client="198.51.100.7")
    assert moved.email == "fresh@example.com"
    with pytest.raises(DomainError):
        await accounts.update_user(driver, driver.user_id or "", email="new@example.com",
                                   current_password="not it", client="198.51.100.7")
    assert accounts.client_throttle.locked_for("198.51.100.7") is None
    signed_in = await accounts.authenticate("fresh@example.com", PASSWORD,
                                            client="198.51.100.7")
    assert signed_in.id == driver.user_id


# ------------------------------------------------------------------ refresh tokens
async def test_sign_in_keeps_its_fields_and_adds_a_refresh_token(api: Api,
                                                                 world: World) -> None:
    signed_in = await login(api)
    assert signed_in["errors"] == [] and signed_in["token"] and signed_in["expiresAt"]
    assert signed_in["refreshToken"] and signed_in["refreshExpiresAt"] > signed_in["expiresAt"]
    assert (await me(api, signed_in["token"])).status_code == 200


async def test_a_refresh_rotates_and_a_reused_token_ends_the_family(
        api: Api, services: Services, world: World) -> None:
    first = await login(api)
    other_device = await login(api)
    second = await refresh(api, first["refreshToken"])
    assert second["errors"] == [] and second["user"]["email"] == "driver1@example.com"
    assert second["refreshToken"] != first["refreshToken"]
    assert (await me(api, second["token"])).status_code == 200

    # The rotated token again: someone holds a copy. Its family ends, so neither the
    # copy nor the holder's newest token refreshes any more.
    assert errors(await refresh(api, first["refreshToken"])) == [("token", "TOKEN_REUSED")]
    assert errors(await refresh(api, second["refreshToken"])) == [("token", "INVALID_TOKEN")]
    # Another device's session is another family.
    assert (await refresh(api, other_device["refreshToken"]))["errors"] == []


async def test_refresh_tokens_are_stored_hashed(api: Api, services: Services,
                                                world: World) -> None:
    plain = (await login(api))["refreshToken"]
    [stored] = await services.ctx.store.find_all(RefreshToken, ALL)
    assert stored.token_hash == hashlib.sha256(plain.encode()).hexdigest()
    assert plain not in repr(stored)
    assert plain not in repr(await services.ctx.store.find_all(RefreshFamily, ALL))


async def test_sign_out_ends_that_session_only(api: Api, world: World) -> None:
    phone, laptop = await login(api), await login(api)
    out = (await api.gql(SIGN_OUT, {"t": phone["refreshToken"]}))["signOut"]
    assert out == {"signedOut": True, "errors": []}
    assert errors(await refresh(api, phone["refreshToken"])) == [("token", "INVALID_TOKEN")]
    again = (await api.gql(SIGN_OUT, {"t": phone["refreshToken"]}))["signOut"]
    assert again == {"signedOut": True, "errors": []}  # idempotent
    assert (await refresh(api, laptop["refreshToken"]))["errors"] == []


EVERYWHERE = """mutation { signOutEverywhere { signedOut errors { field code } } }"""


async def test_sign_out_everywhere_ends_every_session(api: Api, world: World) -> None:
    """QA s33 (its subscriptions closing, and admins': ``tests/e2e``)."""
    phone, laptop = await login(api), await login(api)
    other = await login(api, "driver2@example.com")
    out = (await api.post(EVERYWHERE, token=phone["token"])).json()["data"]
    assert out["signOutEverywhere"] == {"signedOut": True, "errors": []}
    for device in (phone, laptop):
        assert (await me(api, device["token"])).status_code == 401
        assert errors(await refresh(api, device["refreshToken"])) == [
            ("token", "INVALID_TOKEN")]
    assert (await me(api, other["token"])).status_code == 200
    assert (await refresh(api, other["refreshToken"]))["errors"] == []
    anonymous = (await api.post(EVERYWHERE)).json()["data"]["signOutEverywhere"]
    assert anonymous["signedOut"] is False
    assert [e["code"] for e in anonymous["errors"]] == ["UNAUTHENTICATED"]


async def test_refresh_and_sign_out_check_their_token(api: Api, world: World) -> None:
    for given, expected in (("", ("token", "REQUIRED")), ("  ", ("token", "REQUIRED")),
                            ("not-a-token", ("token", "INVALID_TOKEN")),
                            ("x" * 10_000, ("token", "INVALID_TOKEN")),
                            ("A" * 43, ("token", "INVALID_TOKEN"))):  # well-formed, unknown
        assert errors(await refresh(api, given)) == [expected], given
        out = (await api.gql(SIGN_OUT, {"t": given}))["signOut"]
        assert out["signedOut"] is False and errors(out) == [expected], given


async def test_a_new_password_and_a_deactivation_end_refresh_tokens(
        api: Api, services: Services, world: World) -> None:
    admin = world.users["admin"].id
    driver2 = to_global_id("user", world.users["driver2"].id)
    held = await login(api, "driver2@example.com")
    await api.gql("""mutation($i: UpdateUserInput!) { updateUser(input: $i) {
        errors { code } } }""", {"i": {"id": driver2, "password": "reset by the admin"}},
                  as_user=admin)
    assert errors(await refresh(api, held["refreshToken"])) == [("token", "INVALID_TOKEN")]

    held = await login(api, "driver2@example.com", "reset by the admin")
    for change in ({"active": False}, {"active": True}):
        await api.gql("""mutation($i: UpdateUserInput!) { updateUser(input: $i) {
            errors { code } } }""", {"i": {"id": driver2, **change}}, as_user=admin)
    # Reactivated, the account does not get back what the deactivation ended.
    assert errors(await refresh(api, held["refreshToken"])) == [("token", "INVALID_TOKEN")]


async def test_a_refresh_token_works_on_another_instance(api: Api, services: Services,
                                                         world: World) -> None:
    """Two instances share the store and the JWT secret, nothing else."""
    other = Services(services.ctx)
    tokens = TokenService(SECRET, timedelta(hours=1))
    second = Api(create_graphql_app(other, tokens), tokens)
    try:
        issued_here = await login(api)
        there = await refresh(second, issued_here["refreshToken"])
        assert there["errors"] == [] and (await me(api, there["token"])).status_code == 200
        # The token rotated there is used here too.
        assert errors(await refresh(api, issued_here["refreshToken"])) == [
            ("token", "TOKEN_REUSED")]
    finally:
        await second.client.aclose()


# ------------------------------------------------------------------ changePassword
async def test_change_password_signs_everything_else_out(api: Api, world: World) -> None:
    phone, laptop = await login(api), await login(api)
    changed = (await api.post(CHANGE, {"c": PASSWORD, "n": "a brand new secret"},
                              token=phone["token"])).json()["data"]["changePassword"]
    assert changed["errors"] == [] and changed["user"]["email"] == "driver1@example.com"
    for old in (phone, laptop):
        assert (await me(api, old["token"])).status_code == 401
        assert errors(await refresh(api, old["refreshToken"])) == [
            ("token", "INVALID_TOKEN")]
    # The payload's tokens are the new session's.
    assert (await me(api, changed["token"])).status_code == 200
    assert (await refresh(api, changed["refreshToken"]))["errors"] == []
    assert errors(await login(api)) == [(None, "UNAUTHENTICATED")]
    assert (await login(api, password="a brand new secret"))["errors"] == []


UPDATE_OWN = f"""mutation($i: UpdateUserInput!) {{ updateUser(input: $i) {{
    user {{ email }} signedIn {{ {SESSION} }} errors {{ field code }} }} }}"""


async def test_update_user_of_ones_own_password_gives_new_tokens_as_change_password(
        api: Api, world: World) -> None:
    """QA s33: the change revoked the caller's own token and gave no new one, so the
    next request failed INVALID_TOKEN and the refresh token was dead too."""
    me_id = to_global_id("user", world.users["driver1"].id)
    phone, laptop = await login(api), await login(api)
    updated = (await api.post(UPDATE_OWN, {"i": {
        "id": me_id, "password": "a brand new secret", "currentPassword": PASSWORD}},
        token=phone["token"])).json()["data"]["updateUser"]
    assert updated["errors"] == [] and updated["user"]["email"] == "driver1@example.com"
    new = updated["signedIn"]
    assert new["errors"] == [] and new["user"]["email"] == "driver1@example.com"
    for old in (phone, laptop):  # every earlier token, as changePassword
        assert (await me(api, old["token"])).status_code == 401
        assert errors(await refresh(api, old["refreshToken"])) == [
            ("token", "INVALID_TOKEN")]
    assert (await me(api, new["token"])).status_code == 200
    assert (await refresh(api, new["refreshToken"]))["errors"] == []
    # No new password, no new tokens.
    renamed = (await api.post(UPDATE_OWN, {"i": {"id": me_id, "name": "Neo"}},
                              token=new["token"])).json()["data"]["updateUser"]
    assert renamed["errors"] == [] and renamed["signedIn"] is None


async def test_update_user_of_ones_own_password_mints_tokens_only_when_signed_in_is_selected(
        api: Api, services: Services, world: World) -> None:
    """Review r33: each own-password change stored a refresh family (a device, in the
    data export) though the request never asked for the tokens."""
    me_id = to_global_id("user", world.users["driver1"].id)
    token = (await login(api))["token"]
    store = services.ctx.store
    families = await store.count(RefreshFamily, ALL)
    unasked = (await api.post(
        """mutation($i: UpdateUserInput!) { updateUser(input: $i) {
            user { email } errors { field code } } }""",
        {"i": {"id": me_id, "password": "a brand new secret", "currentPassword": PASSWORD}},
        token=token)).json()["data"]["updateUser"]
    assert unasked["errors"] == [] and await store.count(RefreshFamily, ALL) == families
    # Revoked as before: the old token no longer works, the new password does.
    assert (await me(api, token)).status_code == 401
    token = (await login(api, password="a brand new secret"))["token"]
    families = await store.count(RefreshFamily, ALL)
    # Asked for under an alias, through a fragment: given.
    asked = (await api.post(
        f"""mutation($i: UpdateUserInput!) {{ updateUser(input: $i) {{ ...Tokens }} }}
        fragment Tokens on UserPayload {{ pair: signedIn {{ {SESSION} }} }}""",
        {"i": {"id": me_id, "password": "another secret", "currentPassword":
               "a brand new secret"}}, token=token)).json()["data"]["updateUser"]
    assert asked["pair"]["errors"] == [] and (await me(api, asked["pair"]["token"])
                                              ).status_code == 200
    assert await store.count(RefreshFamily, ALL) == families + 1


async def test_an_admin_changes_their_own_password_with_update_user(
        api: Api, world: World) -> None:
    """As a driver does: ``currentPassword`` required (an admin may reset others'
    without), and ``signedIn`` keeps them signed in."""
    admin = world.users["admin"]
    admin_id = to_global_id("user", admin.id)
    token = (await login(api, admin.email))["token"]
    unproven = (await api.post(UPDATE_OWN, {"i": {"id": admin_id, "password": "admin anew"}},
                               token=token)).json()["data"]["updateUser"]
    assert errors(unproven) == [("currentPassword", "REQUIRED")]
    assert unproven["signedIn"] is None and (await me(api, token)).status_code == 200
    changed_ = (await api.post(UPDATE_OWN, {"i": {
        "id": admin_id, "password": "admin anew", "currentPassword": PASSWORD}},
        token=token)).json()["data"]["updateUser"]
    assert changed_["errors"] == [] and changed_["signedIn"]["errors"] == []
    assert changed_["signedIn"]["user"]["role"] == "ADMIN"
    assert (await me(api, token)).status_code == 401
    assert (await me(api, changed_["signedIn"]["token"])).status_code == 200
    assert (await login(api, admin.email, "admin anew"))["errors"] == []


async def test_a_password_reset_by_an_admin_gives_the_admin_no_tokens(
        api: Api, world: World) -> None:
    driver2 = to_global_id("user", world.users["driver2"].id)
    held = await login(api, "driver2@example.com")
    reset = (await api.gql(UPDATE_OWN, {"i": {"id": driver2, "password": "reset by admin"}},
                           as_user=world.users["admin"].id))["updateUser"]
    assert reset["errors"] == [] and reset["signedIn"] is None
    assert (await me(api, held["token"])).status_code == 401  # signed out everywhere


async def test_change_password_checks_its_fields(api: Api, world: World) -> None:
    token = (await login(api))["token"]
    for current, new, expected in (
            ("", "a brand new secret", ("currentPassword", "REQUIRED")),
            ("not it", "a brand new secret", ("currentPassword", "FORBIDDEN")),
            (PASSWORD, "short", ("newPassword", "TOO_SHORT")),
            (PASSWORD, "x" * 1000, ("newPassword", "TOO_LONG")),
            (PASSWORD, "QwertyUiop", ("newPassword", "TOO_WEAK")),
            # QA s23: the current one again was taken, and signed every device out.
            (PASSWORD, PASSWORD, ("newPassword", "UNCHANGED")),
            # Review s23: only of the current one; a wrong one given twice is wrong.
            ("not it at all", "not it at all", ("currentPassword", "FORBIDDEN"))):
        payload = (await api.post(CHANGE, {"c": current, "n": new}, token=token)
                   ).json()["data"]["changePassword"]
        assert errors(payload) == [expected] and payload["token"] is None, expected
    assert (await me(api, token)).status_code == 200  # nothing changed
    anonymous = (await api.gql(CHANGE, {"c": PASSWORD, "n": "a brand new secret"})
                 )["changePassword"]
    assert errors(anonymous) == [(None, "UNAUTHENTICATED")]


async def test_empty_fields_are_required_on_every_account_mutation_all_at_once(
        api: Api, services: Services, world: World) -> None:
    """QA s32: login("", "") was UNAUTHENTICATED on no field, signUp("", "", "") email
    INVALID and password TOO_SHORT, and an empty currentPassword was told only once the
    other fields were valid. Each empty field is REQUIRED, every invalid field told at
    once; a wrong non-empty pair is still UNAUTHENTICATED, and a wrong current password
    is checked (throttled) only when the rest is valid."""
    assert errors(await login(api, "", "")) == [("email", "REQUIRED"), ("password", "REQUIRED")]
    assert errors(await login(api, " ", PASSWORD)) == [("email", "REQUIRED")]
    assert errors(await login(api, password="")) == [("password", "REQUIRED")]
    assert errors(await login(api, password="not it")) == [(None, "UNAUTHENTICATED")]
    services.accounts.sign_up_open = True
    assert errors(await sign_up(api, "", "", "")) == [
        ("email", "REQUIRED"), ("password", "REQUIRED"), ("name", "REQUIRED")]
    token = (await login(api))["token"]
    for current, new, expected in (
            ("", "x", [("currentPassword", "REQUIRED"), ("newPassword", "TOO_SHORT")]),
            ("", "", [("currentPassword", "REQUIRED"), ("newPassword", "REQUIRED")]),
            ("not it", "x", [("newPassword", "TOO_SHORT")])):
        payload = (await api.post(CHANGE, {"c": current, "n": new}, token=token)
                   ).json()["data"]["changePassword"]
        assert errors(payload) == expected, (current, new)
    update = """mutation($i: UpdateUserInput!) { updateUser(input: $i) {
      user { email } errors { field code } } }"""
    me_id = to_global_id("user", world.users["driver1"].id)
    for given, expected in (
            ({"email": "not an email", "currentPassword": ""},
             [("email", "INVALID"), ("currentPassword", "REQUIRED")]),
            ({"email": "", "name": ""},
             [("name", "REQUIRED"), ("email", "REQUIRED"), ("currentPassword", "REQUIRED")]),
            ({"password": "x", "currentPassword": "", "role": None},
             [("password", "TOO_SHORT"), ("currentPassword", "REQUIRED"),
              ("role", "REQUIRED")])):
        updated = (await api.gql(update, {"i": {"id": me_id, **given}},
                                 as_user=world.users["driver1"].id))["updateUser"]
        assert errors(updated) == expected, given
    assert (await me(api, token)).status_code == 200  # nothing changed
    assert (await login(api))["errors"] == []  # and nothing locked the account


@pytest.mark.parametrize("typed, code", [
    # Full-width letters (an IME in full-width mode): hashed as "password".
    ("ｐａｓｓｗｏｒｄ", "TOO_WEAK"),
    # One letter repeated, every other one full-width: two characters given, one hashed.
    ("aａaａaａaａ", "TOO_WEAK"),
    # Eight code points given, four letters ("áéíó") hashed.
    ("a\u0301e\u0301i\u0301o\u0301", "TOO_SHORT"),
], ids=["full-width-common", "full-width-repeated", "combining-short"])
async def test_password_rules_hold_for_the_password_as_it_is_hashed(
        api: Api, services: Services, world: World, typed: str, code: str) -> None:
    """Review s25: the rules checked the password as typed, the hash is of its NFKC form,
    so "ｐａｓｓｗｏｒｄ" was taken and then the plain "password" signed in. Wherever an
    account's password is set: sign-up, createUser, a reset by updateUser, and
    changePassword."""
    services.accounts.sign_up_open = True
    assert errors(await sign_up(api, password=typed)) == [("password", code)]
    made = await call(api, world, "admin", "createUser",
                      {"email": "weak@example.com", "password": typed, "name": "Weak",
                       "role": "DRIVER"}, "user { id }")
    assert codes(made) == [("password", code)]
    reset = await call(api, world, "admin", "updateUser",
                       {"id": to_global_id("user", world.users["driver2"].id),
                        "password": typed}, "user { id }")
    assert codes(reset) == [("password", code)]
    token = (await login(api))["token"]
    changed = (await api.post(CHANGE, {"c": PASSWORD, "n": typed}, token=token)
               ).json()["data"]["changePassword"]
    assert errors(changed) == [("newPassword", code)]
    for email in ("neo@example.com", "weak@example.com", "driver2@example.com",
                  "driver1@example.com"):
        assert errors(await login(api, email, "password")) == [(None, "UNAUTHENTICATED")]


async def test_a_password_hashed_before_normalization_gains_it_at_its_next_sign_in(
        api: Api, services: Services, world: World) -> None:
    """Review s25: a hash made before passwords were normalized, of the text as typed
    then (here decomposed, as pasted from a PDF), took only that text, and a sign-in by
    it changed nothing, so the same letters typed as one "ü" never signed in. The first
    sign-in by the old form stores the password normalized; from then on it signs in
    however typed."""
    composed = unicodedata.normalize("NFC", "Grüße aus Köln")
    decomposed = unicodedata.normalize("NFD", composed)
    driver = world.users["driver1"]
    store = services.accounts.store
    [user] = await store.get_many(User, [driver.id])
    assert user is not None
    legacy = services.accounts.ctx.hasher.hash(decomposed)
    await store.write([Update(changed(user, SYSTEM, password_hash=legacy))], [])
    assert errors(await login(api, password=composed)) == [(None, "UNAUTHENTICATED")]
    assert errors(await login(api, password=decomposed)) == []
    [upgraded] = await store.get_many(User, [driver.id])
    assert upgraded is not None and upgraded.password_hash != legacy
    assert upgraded.token_epoch == user.token_epoch  # the same password: nobody signed out
    for typed in (composed, decomposed, "Ｇｒüße aus Köln"):
        assert errors(await login(api, password=typed)) == [], typed


async def test_a_sign_in_whose_account_changed_meanwhile_fails_in_the_payload(
        api: Api, services: Services, world: World, monkeypatch: Any) -> None:
    """Review s23: the refresh family of a sign-in the account's erasure (or a new
    password) overtook is refused; the sign-in fails as any other, in the payload."""
    from domain.errors import Unauthenticated

    async def overtaken(user: User, agent: str | None = None) -> Any:
        raise Unauthenticated("the account changed while signing in: sign in again")

    monkeypatch.setattr(services.refresh_tokens, "start", overtaken)
    payload = await login(api)
    assert payload["errors"] == [{"field": None, "code": "UNAUTHENTICATED", "message":
                                  "the account changed while signing in: sign in again"}]
    assert payload["token"] is None


async def test_an_operator_probing_emails_through_their_people_has_a_budget_of_their_own(
        services: Services, world: World) -> None:
    """QA s26: an operator moving a driver of their company to another's email, or
    creating an account with it, learnt from DUPLICATE which emails have an account at
    any company (whose people do not exist for them), unlimited: 25 in a row, never
    refused. The taken emails they are told are counted by the operator (review s26:
    not their office's address, whose sign-ins they locked), free ones not at all, and
    an admin, who sees every account, is not counted."""
    accounts = services.accounts
    accounts.operator_probes.limit = 2
    operator, admin = world.viewer("op_a"), world.viewer("admin")
    their_driver = world.users["driver_a"].id

    async def probe(viewer: Any, email: str, create: bool = False) -> str:
        try:
            if create:
                await accounts.create_user(viewer, email=email, password=PASSWORD,
                                           name="Probe", role=Role.DRIVER)
            else:
                await accounts.update_user(viewer, their_driver, email=email,
                                           client=OFFICE)
        except DomainError as exc:
            return exc.code
        return "DONE"

    for _ in range(5):
        assert await probe(admin, "op_b@example.com") == "DUPLICATE"
        assert await probe(admin, "driver1@example.com", create=True) == "DUPLICATE"
    assert await probe(operator, "new-a@example.com", create=True) == "DONE"  # free
    assert await probe(operator, "op_b@example.com") == "DUPLICATE"
    assert await probe(operator, "driver1@example.com", create=True) == "DUPLICATE"
    assert await probe(operator, "driver2@example.com") == "TOO_MANY_ATTEMPTS"
    assert await probe(operator, "driver2@example.com", create=True) == "TOO_MANY_ATTEMPTS"
    # Their own budget: a colleague still probes (and signs in from the same office).
    colleague = world.viewer("op_a2")
    assert await accounts.create_user(colleague, email="new-b@example.com",
                                      password=PASSWORD, name="New B", role=Role.DRIVER)
    assert accounts.client_throttle.locked_for(OFFICE) is None


OFFICE = "198.51.100.7"


async def test_an_operators_parallel_creations_of_free_emails_are_not_refused(
        services: Services, world: World) -> None:
    """Review s26: each createUser was counted by the office's address as it started
    (taken back once the email proved free): a bulk import sending its requests at once
    locked the address while the passwords hashed, and its own creations and a
    colleague's sign-in from the office were refused TOO_MANY_ATTEMPTS."""
    accounts = services.accounts
    accounts.client_throttle.limit = 4
    accounts.operator_probes.limit = 4
    operator = world.viewer("op_a")

    async def create(i: int) -> str:
        try:
            await accounts.create_user(operator, email=f"new-{i}@example.com",
                                       password=PASSWORD, name=f"New {i}",
                                       role=Role.DRIVER)
        except DomainError as exc:
            return exc.code
        return "DONE"

    outcomes = await asyncio.gather(*(create(i) for i in range(6)),
                                    accounts.authenticate("op_a2@example.com", PASSWORD,
                                                          client=OFFICE))
    assert outcomes[:6] == ["DONE"] * 6, outcomes


async def test_a_bulk_import_meeting_taken_emails_leaves_the_offices_sign_ins_alone(
        api: Api, services: Services, world: World) -> None:
    """Review s26: an operator's taken emails counted against the office's sign-in
    limit, so a bulk import meeting existing accounts locked colleagues out of signing
    in from the office. Spent from the operator's own budget, they leave the office's
    sign-ins alone; resending a person's unchanged email is no probe, counted or
    refused, even once the budget is spent."""
    accounts = services.accounts
    accounts.client_throttle.limit = 2
    accounts.operator_probes.limit = 3
    their_driver = to_global_id("user", world.users["driver_a"].id)
    dup, spent = [("email", "DUPLICATE")], [(None, "TOO_MANY_ATTEMPTS")]
    for email, expected in (("new-1", []), ("driver1", dup), ("new-2", []), ("driver2", dup),
                            ("op_b", dup), ("admin", spent), ("new-3", spent)):
        made = await call(api, world, "op_a", "createUser",
                          {"email": f"{email}@example.com", "password": PASSWORD,
                           "name": f"Import {email}", "role": "DRIVER"}, "user { id }")
        assert codes(made) == expected, (email, made)
    assert errors(await login(api, "op_a2@example.com")) == []  # a colleague, same office
    for _ in range(3):  # the same email sent again: no probe
        resent = await call(api, world, "op_a", "updateUser",
                            {"id": their_driver, "email": "driver_a@example.com"},
                            "user { email }")
        assert codes(resent) == []


async def test_an_access_token_is_taken_until_the_leeway_past_its_expiry(
        services: Services, world: World) -> None:
    """``graph.auth.LEEWAY`` (30 s, for instances' clocks apart), as README tells it: a
    token 29 s past its ``expiresAt`` still signs in, a refresh sent with it included;
    31 s past it is refused, 401 ``TOKEN_EXPIRED``. On the tokens' clock, set here."""
    clock = [datetime.now(UTC).replace(microsecond=0)]
    tokens = TokenService(SECRET, timedelta(hours=1), clock=lambda: clock[0])
    api = Api(create_graphql_app(services, tokens), tokens)
    try:
        signed_in = await login(api)
        expires = datetime.fromisoformat(signed_in["expiresAt"])
        assert expires == clock[0] + timedelta(hours=1)
        clock[0] = expires + timedelta(seconds=29)
        taken = await me(api, signed_in["token"])
        assert (taken.status_code, taken.json()["data"]["me"]["email"]) == (
            200, "driver1@example.com")
        refreshed = await api.post(REFRESH, {"t": signed_in["refreshToken"]},
                                   token=signed_in["token"])
        assert refreshed.json()["data"]["refreshToken"]["errors"] == []
        clock[0] = expires + timedelta(seconds=31)
        for refused in (await me(api, signed_in["token"]),
                        await api.post(REFRESH, {"t": refreshed.json()["data"][
                            "refreshToken"]["refreshToken"]}, token=signed_in["token"])):
            assert refused.status_code == 401
            assert refused.json()["errors"][0]["extensions"]["code"] == "TOKEN_EXPIRED"
    finally:
        await api.client.aclose()
