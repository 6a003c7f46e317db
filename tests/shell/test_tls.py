"""The OCPP TLS files are configuration: checked when the app is built, before anything binds,
and a mistake names the file instead of failing inside the lifespan."""

from __future__ import annotations

import logging
import ssl
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

import chargegraph.app as app_module
from chargegraph.app import create_app
from chargegraph.cli import app as cli
from chargegraph.errors import ConfigError
from chargegraph.listening import loopback_only
from chargegraph.settings import Settings
from chargegraph.tls import ocpp_ssl_context
from tests.shell.guards import never_serve


def certificate(folder: Path, name: str, *, passphrase: str | None = None
                ) -> tuple[Path, Path]:
    cert, key = folder / f"{name}.crt", folder / f"{name}.key"
    secrecy = ["-passout", f"pass:{passphrase}"] if passphrase else ["-nodes"]
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", *secrecy, "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


@pytest.fixture(scope="module")
def pem(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pem")
    cert, key = certificate(folder, "server")
    (folder / "combined.pem").write_bytes(cert.read_bytes() + key.read_bytes())
    certificate(folder, "other")
    certificate(folder, "locked", passphrase="a passphrase")
    return folder


def settings(tmp_path: Path, cert: Path | None, key: Path | None, *,
             ocpp_enabled: bool = True) -> Settings:
    return Settings(database_url=f"sqlite:///{tmp_path}/tls.db", jwt_secret="j" * 40,  # type: ignore[arg-type]
                    ocpp_tls_cert=cert, ocpp_tls_key=key, ocpp_enabled=ocpp_enabled)


def test_a_certificate_and_its_key(pem: Path, tmp_path: Path) -> None:
    context = ocpp_ssl_context(settings(tmp_path, pem / "server.crt", pem / "server.key"))
    assert isinstance(context, ssl.SSLContext)
    assert ocpp_ssl_context(settings(tmp_path, None, None)) is None  # plain ws://


def test_one_file_holding_certificate_and_key(pem: Path, tmp_path: Path) -> None:
    # load_cert_chain takes the key from the certificate's file when no key file is given.
    assert ocpp_ssl_context(settings(tmp_path, pem / "combined.pem", None)) is not None


@pytest.mark.parametrize(("cert", "key", "message"), [
    (None, "server.key", "CHARGEGRAPH_OCPP_TLS_KEY is set but CHARGEGRAPH_OCPP_TLS_CERT is "
                         "not"),
    ("server.crt", None, "server.crt holds no private key: set CHARGEGRAPH_OCPP_TLS_KEY"),
    ("server.key", "server.crt", "server.key holds no PEM certificate (swapped with "
                                 "CHARGEGRAPH_OCPP_TLS_KEY?)"),
    ("server.crt", "other.crt", "CHARGEGRAPH_OCPP_TLS_KEY {pem}/other.crt holds no PEM "
                                "private key"),
    ("server.crt", "other.key", "the private key in {pem}/other.key does not belong to the "
                                "certificate in {pem}/server.crt"),
    ("missing.crt", "server.key", "cannot read CHARGEGRAPH_OCPP_TLS_CERT {pem}/missing.crt: "
                                  "No such file or directory"),
    ("server.crt", "missing.key", "cannot read CHARGEGRAPH_OCPP_TLS_KEY {pem}/missing.key"),
    (".", "server.key", "cannot read CHARGEGRAPH_OCPP_TLS_CERT {pem}: Is a directory"),
    ("locked.crt", "locked.key", "the private key in {pem}/locked.key is encrypted"),
])
def test_a_wrong_pair_fails_when_the_app_is_built(pem: Path, tmp_path: Path, cert: str | None,
                                                  key: str | None, message: str) -> None:
    configured = settings(tmp_path, None if cert is None else pem / cert,
                          None if key is None else pem / key)
    with pytest.raises(ConfigError) as raised:
        create_app(configured)
    assert message.format(pem=pem) in str(raised.value)
    assert not (tmp_path / "tls.db").exists()


def test_an_instance_without_ocpp_needs_no_certificate(tmp_path: Path) -> None:
    create_app(settings(tmp_path, tmp_path / "missing.crt", None, ocpp_enabled=False))


def test_serve_with_a_key_but_no_certificate_exits_2(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CHARGEGRAPH_DATABASE_URL", f"sqlite:///{tmp_path}/cli.db")
    monkeypatch.delenv("CHARGEGRAPH_OCPP_TLS_CERT", raising=False)
    monkeypatch.setenv("CHARGEGRAPH_OCPP_TLS_KEY", str(tmp_path / "key.pem"))
    never_serve(monkeypatch)
    refused = CliRunner().invoke(cli, ["serve"])
    assert refused.exit_code == 2
    assert refused.stderr.startswith("configuration error: CHARGEGRAPH_OCPP_TLS_KEY is set")


@pytest.mark.parametrize(("cert", "key"), [("server.crt", "server.key"),
                                           ("combined.pem", None)])
async def test_the_demos_chargers_trust_its_wss_server(pem: Path, tmp_path: Path,
                                                       cert: str, key: str | None) -> None:
    """QA s26: with CHARGEGRAPH_OCPP_TLS_CERT the demo gave its chargers ws://, which the
    TLS port never answered ("did not receive a valid HTTP response", retried for ever),
    and its banner said ws:// too. They connect over wss:// now, trusting the server's
    own certificate (self-signed here, its name not the address they use)."""
    from websockets.asyncio.server import ServerConnection, serve

    from chargegraph.cli import demo_tls, demo_urls
    from ocpp_bridge.simulator import _open

    configured = settings(tmp_path, pem / cert, pem / key if key else None)
    _, ocpp_url = demo_urls(configured)
    assert ocpp_url == f"wss://127.0.0.1:{configured.ocpp_port}/ocpp"
    reached: list[str] = []

    async def handler(connection: ServerConnection) -> None:
        reached.append(connection.request.path if connection.request else "")

    async with serve(handler, "127.0.0.1", 0, ssl=ocpp_ssl_context(configured),
                     subprotocols=["ocpp1.6"]) as server:  # type: ignore[list-item]
        port = server.sockets[0].getsockname()[1]
        connection = await _open(f"wss://127.0.0.1:{port}/ocpp", "DEMO-1", None,
                                 demo_tls(configured))
        await connection.wait_closed()
    assert reached == ["/ocpp/DEMO-1"]
    assert demo_tls(settings(tmp_path, None, None)) is None  # plain ws://: no context


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("::1", True), ("localhost", True), ("127.0.0.2", True),
    ("::ffff:127.0.0.1", True), ("0.0.0.0", False), ("::", False), ("192.0.2.1", False),
    ("::ffff:192.0.2.1", False), ("fe80::1%1", False)])
def test_which_hosts_are_reached_from_this_machine_only(host: str, loopback: bool) -> None:
    assert loopback_only(host) is loopback


@pytest.mark.parametrize(("beyond", "tls", "warned"), [
    (True, False, True), (False, False, False), (True, True, False)])
async def test_plain_ws_beyond_this_machine_is_warned_of_at_start(
        pem: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture, beyond: bool, tls: bool, warned: bool) -> None:
    """Brief x33-secfix: chargers' Basic-auth passwords went over plain ws:// from beyond
    the machine (the Docker image binds 0.0.0.0) without a word. The server binds
    127.0.0.1 here; ``beyond`` has the host read as another (``loopback_only``, whose
    reading of hosts the test above holds)."""
    monkeypatch.setattr(app_module, "loopback_only", lambda host: not beyond)
    cert = pem / "combined.pem" if tls else None
    configured = settings(tmp_path, cert, None).model_copy(update={"ocpp_port": 0})
    app = create_app(configured)
    with caplog.at_level(logging.WARNING, logger="chargegraph"):
        async with app.router.lifespan_context(app):
            port = app.state.ocpp_port
    lines = [r.getMessage() for r in caplog.records if "without TLS" in r.getMessage()]
    assert lines == ([f"the OCPP server listens on 127.0.0.1:{port} without TLS "
                      "(CHARGEGRAPH_OCPP_TLS_CERT unset): chargers' Basic-auth passwords "
                      "travel unencrypted, unless a proxy in front of it terminates TLS "
                      "(wss://); set CHARGEGRAPH_OCPP_TLS_CERT, or "
                      "CHARGEGRAPH_OCPP_HOST=127.0.0.1 behind such a proxy on this "
                      "machine"]
                     if warned else [])
