"""The OCPP server's TLS context (``wss://``, OCPP security profile 2), built and checked when
the app is built so that a wrong file stops ``serve`` with a message naming it, before
anything binds."""

from __future__ import annotations

import re
import ssl
from pathlib import Path

from chargegraph.errors import ConfigError
from chargegraph.settings import Settings

CERT_VAR = "CHARGEGRAPH_OCPP_TLS_CERT"
KEY_VAR = "CHARGEGRAPH_OCPP_TLS_KEY"

_CERTIFICATE = b"-----BEGIN CERTIFICATE-----"
#: PKCS#8 ("PRIVATE KEY", "ENCRYPTED PRIVATE KEY") and the traditional "RSA/EC PRIVATE KEY".
_PRIVATE_KEY = re.compile(rb"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----")


def ocpp_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """``None`` (plain ``ws://``) when no certificate is configured.

    The key may live in its own file (``CHARGEGRAPH_OCPP_TLS_KEY``) or after the
    certificate in one combined PEM file, as ``ssl.load_cert_chain`` and most ACME clients
    allow; so a certificate alone is fine when its file holds the key too. A key without a
    certificate is refused: silently serving unencrypted ``ws://`` would send every
    charger's Basic-auth password in clear text."""
    cert, key = settings.ocpp_tls_cert, settings.ocpp_tls_key
    if cert is None:
        if key is not None:
            raise ConfigError(f"{KEY_VAR} is set but {CERT_VAR} is not: set both for wss://, "
                              "or neither for plain ws://")
        return None
    cert_pem = _read(cert, CERT_VAR)
    key_pem = cert_pem if key is None else _read(key, KEY_VAR)
    if _CERTIFICATE not in cert_pem:
        swapped = key is not None and _CERTIFICATE in key_pem
        raise ConfigError(f"{CERT_VAR} {cert} holds no PEM certificate"
                          + (f" (swapped with {KEY_VAR}?)" if swapped else ""))
    if not _PRIVATE_KEY.search(key_pem):
        if key is None:
            raise ConfigError(f"{CERT_VAR} {cert} holds no private key: set {KEY_VAR} to the "
                              "key's file, or append the key to the certificate file")
        raise ConfigError(f"{KEY_VAR} {key} holds no PEM private key")
    key_file = key or cert

    def no_passphrase() -> str:
        # Without a callback OpenSSL would prompt on the terminal and hang a service.
        raise ConfigError(f"the private key in {key_file} is encrypted; give the service an "
                          "unencrypted key readable only by it")

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key, password=no_passphrase)
    except ssl.SSLError as error:
        if error.reason == "KEY_VALUES_MISMATCH":
            raise ConfigError(f"the private key in {key_file} does not belong to the "
                              f"certificate in {cert}") from None
        raise ConfigError(f"cannot load the OCPP TLS certificate {cert} with the key in "
                          f"{key_file}: {error}") from None
    except OSError as error:  # removed or made unreadable since it was read above
        raise ConfigError(f"cannot load the OCPP TLS certificate {cert}: {error}") from None
    return context


def _read(path: Path, variable: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise ConfigError(f"cannot read {variable} {path}: {error.strerror or error}"
                          ) from None
