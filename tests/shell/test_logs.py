"""Process logging: credentials never reach the log, whatever the level."""

from __future__ import annotations

import asyncio
import base64
import logging
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.frames import Frame, Opcode

from chargegraph.cli import _logging, _uvicorn
from chargegraph.logs import _GUARDED, HideCredentials, without_query_values
from chargegraph.settings import Settings
from tests.helpers import loopback_socket, until_started

PASSWORD = "S3cret-Station-PW"


def record(msg: str, *args: object, name: str = "websockets.server") -> logging.LogRecord:
    """A record as websockets makes it: the header name and value are arguments."""
    return logging.LogRecord(name, logging.DEBUG, __file__, 1, msg, args, None)


def test_credential_headers_are_masked_keeping_the_scheme() -> None:
    guard = HideCredentials()
    basic = record("< %s: %s", "Authorization", "Basic Q1AxOlMzY3JldA==")
    assert guard.filter(basic) and basic.getMessage() == "< Authorization: Basic [hidden]"
    cookie = record("> %s: %s", "set-cookie", "session=abc")
    assert guard.filter(cookie) and cookie.getMessage() == "> set-cookie: [hidden]"
    bearer = record("< %s: %s", "authorization", "Bearer eyJ.x.y")
    assert guard.filter(bearer) and bearer.getMessage() == "< authorization: Bearer [hidden]"
    # Everything else keeps its DEBUG detail.
    for kept in (record("< %s: %s", "User-Agent", "Python/3.11 websockets/17.4"),
                 record("< GET %s HTTP/1.1", "/ocpp/CP1"), record("connection open")):
        message = kept.getMessage()
        assert guard.filter(kept) and kept.getMessage() == message


def test_graphql_frames_are_logged_by_size_only() -> None:
    init = Frame(Opcode.TEXT, b'{"type": "connection_init", "payload": {"Authorization": '
                              b'"Bearer eyJhbGciOiJIUzI1NiJ9.e30.c2lnbmF0dXJlLXRhaWw"}}')
    frame = record("< %s", init, name="uvicorn.error")
    assert HideCredentials(payloads=True).filter(frame)
    assert frame.getMessage() == f"< TEXT [{len(init.data)} bytes]"
    close = record("> %s", Frame(Opcode.CLOSE, b"\x03\xe8"), name="uvicorn.error")
    assert HideCredentials(payloads=True).filter(close)
    assert close.getMessage() == "> CLOSE 1000 (OK) [2 bytes]"
    # OCPP frames too (review s16: a GetDiagnostics URL's password showed in websockets'
    # own frame line): the wire log has each frame whole, its secrets masked.
    ocpp = record("> %s", Frame(Opcode.TEXT, b'[2,"1","GetDiagnostics",{"location":'
                                              b'"ftp://u:S3cret@h/"}]'))
    assert _GUARDED["websockets.server"].filter(ocpp)
    assert "S3cret" not in ocpp.getMessage() and ocpp.getMessage().endswith("bytes]")


async def test_a_debug_handshake_logs_no_password(caplog: pytest.LogCaptureFixture) -> None:
    _logging(Settings(log_level="DEBUG"))
    caplog.set_level(logging.DEBUG)
    credential = base64.b64encode(f"CP1:{PASSWORD}".encode()).decode()

    async def hang_up(websocket: ServerConnection) -> None:
        await websocket.close()

    async with serve(hang_up, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}",
                           additional_headers={"Authorization": f"Basic {credential}"}
                           ) as websocket:
            await websocket.wait_closed()
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("websockets.")]
    assert "< Authorization: Basic [hidden]" in lines  # what the server received
    assert "> Authorization: Basic [hidden]" in lines  # what the client sent
    assert any(line.startswith("< Sec-WebSocket-Key: ") for line in lines)  # detail kept
    assert credential not in caplog.text and PASSWORD not in caplog.text


def test_uvicorn_logs_through_the_apps_handler(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path}/logs.db", jwt_secret="l" * 40,  # type: ignore[arg-type]
                        ocpp_enabled=False)
    _logging(settings)
    _uvicorn(settings)  # uvicorn applies its log_config when its Config is made
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        assert logger.handlers == [] and logger.propagate, name  # up to the root handler
    assert logging.getLogger("uvicorn.access").level == logging.INFO
    # Its configuration keeps the credential filter on the logger that needs it.
    assert any(isinstance(f, HideCredentials) for f in logging.getLogger("uvicorn.error").filters)


def test_database_drivers_never_log_statements(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # the root level, which basicConfig leaves to pytest
    _logging(Settings(log_level="DEBUG"))
    for driver in ("aiosqlite", "pymongo", "pymongo.command"):
        # Their DEBUG lines carry every statement's parameters, password hashes included.
        assert not logging.getLogger(driver).isEnabledFor(logging.DEBUG), driver
    assert logging.getLogger("websockets.server").isEnabledFor(logging.DEBUG)
    assert logging.getLogger("chargegraph.ocpp.wire").isEnabledFor(logging.DEBUG)


def test_query_values_are_hidden_keeping_path_and_names() -> None:
    assert without_query_values("/export/sessions.csv?access_token=eyJ.x.y&stationIds=1") \
        == "/export/sessions.csv?access_token=[hidden]&stationIds=[hidden]"
    assert without_query_values('/graphql?query=mutation{login(password:%22pw%22)}') \
        == "/graphql?query=[hidden]"
    # A value sent without a name, or a name that is no identifier, may be the secret.
    assert without_query_values("/graphql?eyJhbGciOiJIUzI1NiJ9.e30.c2ln") == "/graphql?[hidden]"
    assert without_query_values("/x?a=1&pass%20word=2&=3&" + "n" * 40 + "=4") \
        == "/x?a=[hidden]&[hidden]&[hidden]&[hidden]"
    assert without_query_values("/healthz") == "/healthz"
    assert without_query_values("/healthz?") == "/healthz?"


@pytest.mark.parametrize("level", ["INFO", "DEBUG"])
async def test_access_lines_keep_no_credential_of_a_query_string(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, level: str) -> None:
    """A password in a GET's GraphQL query (refused 405) and a token in an export's query
    string (refused 401) were written whole in uvicorn's access line, at the default INFO."""
    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c2VyIn0.c2lnbmF0dXJlLXRhaWw"
    password = "Pa55-in-a-URL"
    sock = loopback_socket()
    settings = Settings(database_url=f"sqlite:///{tmp_path}/logs.db", jwt_secret="l" * 40,  # type: ignore[arg-type]
                        ocpp_enabled=False, port=sock.getsockname()[1], log_level=level)
    _logging(settings)
    caplog.set_level(level)
    server = _uvicorn(settings)  # the app, uvicorn and its log_config as `serve` runs them
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await until_started(server)
        base = f"127.0.0.1:{settings.port}"
        async with httpx.AsyncClient(base_url=f"http://{base}") as client:
            login = f'mutation{{login(email:"a@example.com",password:"{password}"){{token}}}}'
            assert (await client.get("/graphql", params={"query": login})).status_code == 405
            assert (await client.get("/export/sessions.csv", params={"access_token": token})
                    ).status_code == 401
        async with connect(f"ws://{base}/graphql?token={token}",
                           subprotocols=["graphql-transport-ws"]):  # type: ignore[list-item]
            pass
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 15)
    # httpx is the test's client here, logging the URL it was given.
    lines = [r.getMessage() for r in caplog.records if r.name != "httpx"]
    assert not [line for line in lines if token in line or password in line]
    assert any(line.endswith('"GET /graphql?query=[hidden] HTTP/1.1" 405') for line in lines)
    assert any(line.endswith('"GET /export/sessions.csv?access_token=[hidden] HTTP/1.1" 401')
               for line in lines)
    assert any(line.endswith('"WebSocket /graphql?token=[hidden]" [accepted]')
               for line in lines)


def test_a_webhook_urls_query_is_hidden_in_httpx_lines() -> None:
    """opsfix (s16): httpx logs every request's whole URL at INFO, and a webhook's URL
    may carry a secret in its query string or its path: only the origin is logged."""
    import httpx

    line = record('HTTP Request: %s %s "%s %d %s"', "POST",
                  httpx.URL("https://hooks.example.com/in?token=s3cr3t&x=1"), "HTTP/1.1",
                  200, "OK", name="httpx")
    assert _GUARDED["httpx"].filter(line)
    assert line.getMessage() == ('HTTP Request: POST https://hooks.example.com/[hidden] '
                                 '"HTTP/1.1 200 OK"')
    # Slack's, Teams' and Discord's webhook secrets are in the path.
    slack = record('HTTP Request: %s %s "%s %d %s"', "POST",
                   httpx.URL("https://hooks.slack.com/services/T0/B0/XyZsecret"),
                   "HTTP/1.1", 200, "OK", name="httpx")
    assert _GUARDED["httpx"].filter(slack) and "XyZsecret" not in slack.getMessage()
