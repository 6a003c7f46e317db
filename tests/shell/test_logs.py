"""Process logging: credentials never reach the log, whatever the level."""

from __future__ import annotations

import base64
import logging
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.frames import Frame, Opcode

from chargegraph.cli import _logging, _uvicorn
from chargegraph.logs import HideCredentials
from chargegraph.settings import Settings

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
    ocpp = record("< %s", init)  # OCPP frames keep their detail (the wire log has them anyway)
    assert HideCredentials().filter(ocpp) and ocpp.getMessage() == f"< {init}"


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
