"""``User.devices``' ``current`` over a real websocket (review s33: a query sent over
graphql-transport-ws built its context with no ``connection_init`` token, so no device was
ever the caller's there)."""

from __future__ import annotations

from tests.e2e.conftest import Running
from tests.e2e.wsclient import GraphQLWS

LOGIN = """mutation($e: String!) { login(email: $e, password: "password-123") {
    token } }"""
DEVICES = "{ me { devices { id current } } }"


async def test_the_socket_s_own_device_is_current_over_graphql_transport_ws(
        service: Running) -> None:
    phone = (await service.gql(LOGIN, {"e": "driver@example.com"}))["login"]
    laptop = (await service.gql(LOGIN, {"e": "driver@example.com"}))["login"]
    over_http = (await service.gql(DEVICES, token=laptop["token"]))["me"]["devices"]
    [laptop_id] = [d["id"] for d in over_http if d["current"]]
    socket = await GraphQLWS.open(service.ws_url, phone["token"])
    try:
        op_id = await socket.subscribe(DEVICES)
        answer = await socket.next()
        assert answer["id"] == op_id and answer["type"] == "next", answer
        listed = answer["payload"]["data"]["me"]["devices"]
        # The phone's device, the one the socket's token names, and only it.
        assert len(listed) == 2
        assert [d["current"] for d in listed if d["id"] != laptop_id] == [True]
        assert [d["current"] for d in listed if d["id"] == laptop_id] == [False]
        assert (await socket.next())["type"] == "complete"
    finally:
        await socket.close()
