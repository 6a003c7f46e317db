"""A person's signed-in devices (``User.devices``) and signing one out by its id
(``signOutDevice``), over HTTP on both stores (brief x33-devices: refresh families were
listed only in the personal data copy, and no device could be signed out but by its own
refresh token)."""

from __future__ import annotations

from typing import Any

from domain.entities import AuditEntry, RefreshFamily
from domain.query import Eq
from domain.services import Services
from domain.services.refresh_tokens import AGENT_MAX
from graph.ids import to_global_id
from tests.graph.conftest import Api
from tests.graph.test_accounts_self_service import REFRESH, errors, refresh
from tests.graph.world import PASSWORD, World

DEVICES = """{ me { devices { id userAgent current signedInAt lastRefreshedAt expiresAt }
    } }"""
USER_DEVICES = """query($u: ID!) { node(id: $u) { ... on User { devices { id } } } }"""
SIGN_OUT_DEVICE = """mutation($d: ID!) { signOutDevice(id: $d) {
    signedOut errors { field code } } }"""
LOGIN = """mutation($e: String!, $p: String!) { login(email: $e, password: $p) {
    token refreshToken errors { code } } }"""


async def login(api: Api, agent: str | None, email: str = "driver1@example.com"
                ) -> dict[str, Any]:
    headers = {"user-agent": agent} if agent is not None else {}
    response = await api.post(LOGIN, {"e": email, "p": PASSWORD}, **headers)
    signed_in: dict[str, Any] = response.json()["data"]["login"]
    assert signed_in["errors"] == [], signed_in
    return signed_in


async def devices(api: Api, token: str) -> list[dict[str, Any]]:
    response = await api.post(DEVICES, token=token)
    assert response.status_code == 200, response.text
    return response.json()["data"]["me"]["devices"]  # type: ignore[no-any-return]


async def sign_out_device(api: Api, token: str, device: str) -> dict[str, Any]:
    response = await api.post(SIGN_OUT_DEVICE, {"d": device}, token=token)
    assert response.status_code == 200, response.text
    return response.json()["data"]["signOutDevice"]  # type: ignore[no-any-return]


async def test_a_person_lists_their_devices_by_user_agent_and_which_is_theirs(
        api: Api, services: Services, world: World) -> None:
    del api.client.headers["user-agent"]  # httpx's own: requests send theirs or none
    phone = await login(api, "VoltApp/1.0 (Android 14)")
    laptop = await login(api, "Mozilla/5.0\x1b[31m  (X11)\n")
    await login(api, "Other/1", "driver2@example.com")
    listed = await devices(api, phone["token"])
    # Newest sign-in first; the agent shown on one line without control characters.
    assert [(d["userAgent"], d["current"]) for d in listed] == [
        ("Mozilla/5.0[31m (X11)", False), ("VoltApp/1.0 (Android 14)", True)]
    assert all(d["lastRefreshedAt"] is None for d in listed)
    # Never the token: the device's id is its family's.
    [stored] = await services.ctx.store.find_all(
        RefreshFamily, Eq("user_agent", "VoltApp/1.0 (Android 14)"))
    assert listed[1]["id"] == to_global_id("refresh_family", stored.id)
    assert phone["refreshToken"] not in str(listed)

    # A refresh keeps the device, its new agent (an app updated) and when it refreshed;
    # the access token it gives names that device.
    response = await api.post(REFRESH, {"t": laptop["refreshToken"]},
                              **{"user-agent": "Mozilla/6.0"})
    rotated = response.json()["data"]["refreshToken"]
    assert rotated["errors"] == []
    after = await devices(api, rotated["token"])
    assert [(d["id"], d["userAgent"], d["current"]) for d in after] == [
        (listed[0]["id"], "Mozilla/6.0", True), (listed[1]["id"], listed[1]["userAgent"],
                                                 False)]
    assert after[0]["lastRefreshedAt"] is not None
    # A refresh without the header keeps the agent it had.
    assert (await refresh(api, rotated["refreshToken"]))["errors"] == []
    assert (await devices(api, phone["token"]))[0]["userAgent"] == "Mozilla/6.0"

    # Signed out (by its refresh token), a device is no longer listed; nor an agent
    # none was sent with, listed as null; nor one past AGENT_MAX characters, clipped.
    await api.post("""mutation($t: String!) { signOut(token: $t) { signedOut } }""",
                   {"t": phone["refreshToken"]})
    await login(api, None)
    await login(api, "x" * 1000)
    agents = [d["userAgent"] for d in await devices(api, rotated["token"])]
    assert agents == ["x" * AGENT_MAX, None, "Mozilla/6.0"]


async def test_sign_out_device_ends_that_devices_refresh_chain_only(
        api: Api, services: Services, world: World) -> None:
    phone = await login(api, "Phone")
    laptop = await login(api, "Laptop")
    [laptop_id] = [d["id"] for d in await devices(api, phone["token"])
                   if d["userAgent"] == "Laptop"]
    assert await sign_out_device(api, phone["token"], laptop_id) == {
        "signedOut": True, "errors": []}
    assert errors(await refresh(api, laptop["refreshToken"])) == [
        ("token", "INVALID_TOKEN")]
    assert [d["userAgent"] for d in await devices(api, phone["token"])] == ["Phone"]
    phone_next = await refresh(api, phone["refreshToken"])
    assert phone_next["errors"] == []
    # Signed out already: done, as signOut is.
    assert await sign_out_device(api, phone_next["token"], laptop_id) == {
        "signedOut": True, "errors": []}
    # The person's own act, audited once, under them.
    [entry] = await services.ctx.store.find_all(AuditEntry, Eq("entity", "refresh_family"))
    assert (entry.actor, entry.after is not None and "revoked_at" in entry.after) == (
        world.users["driver1"].id, True)
    assert "token_hash" not in str(entry.after)
    # Nor the device's user agent: the entry is no one's books, so an erasure of the
    # person never finds it (review r33).
    assert "Laptop" not in str((entry.before, entry.after))


async def test_only_the_person_and_admins_see_and_sign_out_their_devices(
        api: Api, services: Services, world: World) -> None:
    mine = await login(api, "Phone", "driver_a@example.com")
    [device] = await devices(api, mine["token"])
    user = {"u": to_global_id("user", world.users["driver_a"].id)}
    # Their company's operator sees the person, not their devices.
    seen = await api.gql(USER_DEVICES, user, as_user=world.users["op_a"].id)
    assert seen == {"node": {"devices": None}}
    assert (await api.gql(USER_DEVICES, user, as_user=world.users["admin"].id)) == {
        "node": {"devices": [{"id": device["id"]}]}}
    for who in ("op_a", "driver1"):
        refused = await sign_out_device(api, api.token_for(world.users[who].id),
                                        device["id"])
        assert refused == {"signedOut": False, "errors": [{"field": "id",
                                                           "code": "NOT_FOUND"}]}, who
    assert (await refresh(api, mine["refreshToken"]))["errors"] == []
    # Not a device's id at all.
    assert (await sign_out_device(api, mine["token"], user["u"]))["errors"] == [
        {"field": "id", "code": "INVALID_ID"}]
    admin = api.token_for(world.users["admin"].id)
    assert (await sign_out_device(api, admin, device["id"]))["signedOut"] is True
    assert await api.gql(USER_DEVICES, user, as_user=world.users["admin"].id) == {
        "node": {"devices": []}}
    [entry] = await services.ctx.store.find_all(AuditEntry, Eq("entity", "refresh_family"))
    assert entry.actor == world.users["admin"].id
    anonymous = (await api.post(SIGN_OUT_DEVICE, {"d": device["id"]})).json()["data"]
    assert [e["code"] for e in anonymous["signOutDevice"]["errors"]] == [
        "UNAUTHENTICATED"]


async def test_devices_ended_by_signing_out_everywhere_are_not_listed(
        api: Api, world: World) -> None:
    phone = await login(api, "Phone")
    await login(api, "Laptop")
    await api.post("mutation { signOutEverywhere { signedOut } }", token=phone["token"])
    again = await login(api, "Phone again")
    assert [(d["userAgent"], d["current"]) for d in await devices(api, again["token"])] \
        == [("Phone again", True)]
