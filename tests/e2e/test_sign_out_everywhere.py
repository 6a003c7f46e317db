"""``signOutEverywhere`` end to end (QA s33: only a password change signed every device
out): a real uvicorn-served ChargeGraph, its subscribers on real websockets."""

from __future__ import annotations

import httpx
from websockets.exceptions import ConnectionClosed

from graph.ids import to_global_id
from tests.e2e.conftest import Running
from tests.e2e.wsclient import GraphQLWS

SESSIONS = "subscription { sessionUpdated { transactionId } }"
LOGIN = """mutation($e: String!) { login(email: $e, password: "password-123") {
    token refreshToken } }"""
EVERYWHERE = """mutation($u: ID) { signOutEverywhere(userId: $u) {
    signedOut errors { field code } } }"""


async def _closed_code(client: GraphQLWS) -> int | None:
    """The close code of a socket the server closes (bounded by ``next``'s timeout)."""
    try:
        message = await client.next()
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd is not None else None
    raise AssertionError(f"still open: {message}")


async def _status(service: Running, token: str) -> int:
    async with httpx.AsyncClient() as client:
        answer = await client.post(f"{service.http_url}/graphql",
                                   headers={"authorization": f"Bearer {token}"},
                                   json={"query": "{ me { email } }"})
    return answer.status_code


async def test_signing_out_everywhere_ends_every_token_and_closes_subscriptions(
        service: Running) -> None:
    phone = (await service.gql(LOGIN, {"e": "driver@example.com"}))["login"]
    laptop = (await service.gql(LOGIN, {"e": "driver@example.com"}))["login"]
    other = await service.token("driver2")
    watching = await GraphQLWS.open(service.ws_url, laptop["token"])
    bystander = await GraphQLWS.open(service.ws_url, other)
    try:
        await watching.subscribe(SESSIONS)
        await bystander.subscribe(SESSIONS)
        await service.until_subscribed(2)
        out = (await service.gql(EVERYWHERE, token=phone["token"]))["signOutEverywhere"]
        assert out == {"signedOut": True, "errors": []}
        assert await _closed_code(watching) == 4403  # the laptop's subscription
        for device in (phone, laptop):
            assert await _status(service, device["token"]) == 401
            refreshed = (await service.gql(
                """mutation($t: String!) { refreshToken(token: $t) {
                   errors { code } } }""", {"t": device["refreshToken"]}))["refreshToken"]
            assert refreshed["errors"] == [{"code": "INVALID_TOKEN"}]
        assert await _status(service, other) == 200  # someone else's stay
        assert service.services.live.watching == 1
        assert (await service.gql(LOGIN, {"e": "driver@example.com"}))["login"]["token"]
    finally:
        await watching.close()
        await bystander.close()


async def test_only_admins_sign_out_someone_else_and_it_is_audited(
        service: Running) -> None:
    driver2 = service.central.users["driver2"].id
    held = await service.token("driver2")
    target = {"u": to_global_id("user", driver2)}
    for who in ("op", "driver"):
        refused = (await service.gql(EVERYWHERE, target, token=await service.token(who))
                   )["signOutEverywhere"]
        assert refused == {"signedOut": False, "errors": [{"field": None,
                                                           "code": "FORBIDDEN"}]}, who
    assert await _status(service, held) == 200
    admin = await service.token("admin")
    out = (await service.gql(EVERYWHERE, target, token=admin))["signOutEverywhere"]
    assert out == {"signedOut": True, "errors": []}
    assert await _status(service, held) == 401
    audit = (await service.gql("""query($u: ID!) { auditLog(first: 10, filter: {
        entityId: $u}) { nodes { action actor } } }""", target, token=admin))["auditLog"]
    assert {"action": "UPDATE", "actor": to_global_id(
        "user", service.central.users["admin"].id)} in audit["nodes"]
