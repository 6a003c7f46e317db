"""Settings from ``CHARGEGRAPH_*`` environment variables (or a ``.env`` file)."""

from __future__ import annotations

import codecs
import contextlib
import difflib
import ipaddress
import socket
from collections.abc import Iterable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from chargegraph.errors import ConfigError
from chargegraph.stores import sqlite_path
from domain.services.charger_connections import REGISTRATIONS_PER_ADDRESS
from domain.services.charger_sign_ins import ChargerSignInLimits
from domain.services.fleet import MAX_CARDS_PER_DRIVER
from domain.services.retention import Retention
from domain.validation import MAX_HEARTBEAT_S

ENV_PREFIX = "CHARGEGRAPH_"
#: Read from the working directory, after the environment.
ENV_FILE = Path(".env")

#: Python's level names. uvicorn's extra TRACE is left out on purpose: at TRACE it logs
#: every request and response body, passwords and tokens included.
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]

#: The settings whose empty value means something of its own: no origin allowed, no proxy
#: believed. Any other setting given empty is refused (``Settings._not_empty``).
EMPTY_MEANS_NONE = frozenset({"cors_origins", "trusted_proxies", "graphiql_assets"})


class Settings(BaseSettings):
    # No setting is nan or infinite: a bound refused them with itself as the reason
    # ("less than or equal to 3600 (got 'nan')", ops QA s32), and one without a bound
    # would take them. Pydantic says "a finite number" first, for every float setting.
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_file=ENV_FILE,
                                      extra="ignore", allow_inf_nan=False)

    def __init__(self, **values: Any) -> None:
        # Before pydantic-settings reads the file, whose UnicodeDecodeError was a traceback.
        env_file = values.get("_env_file", ENV_FILE)
        for path in env_file if isinstance(env_file, list | tuple) else [env_file]:
            if path is not None:
                check_env_file(Path(path))
        super().__init__(**values)

    database_url: str = Field("sqlite:///chargegraph.db",
                              description="sqlite:///relative.db, sqlite:////abs.db or "
                                          "mongodb://host/db")
    pubsub_url: str = Field("memory://", description="memory:// or redis://host:6379/0")
    pubsub_prefix: str | None = Field(
        None, description="Redis channel prefix of this deployment (all its instances "
                          "use the same); default chargegraph: on database 0, "
                          "chargegraph:<n>: on database n. Redis pub/sub ignores the "
                          "database number: deployments sharing one Redis need "
                          "different ones")
    host: str = "127.0.0.1"
    # 0: any free port, chosen as the socket is bound (``listening.listening_sockets``);
    # the app reads the bound one back (``app.state.port``, ``app.state.ocpp_port``) for
    # the ready line, the demo's banner and its chargers, so no gap is left between
    # choosing a port and binding it (tests start ``serve`` so).
    port: int = Field(8000, ge=0, le=65535)
    trusted_proxies: str = Field(
        "127.0.0.1,::1", description="Comma-separated addresses or networks (CIDR) of the "
                                     "proxies whose X-Forwarded-For/-Proto is believed; * for "
                                     "any. Sign-in limits count per client address")
    cors_origins: str = Field(
        "", description="Comma-separated origins (scheme://host[:port]) of browser apps "
                        "allowed to call /graphql from another origin; * for any; empty: "
                        "none (no CORS headers)")
    # A cap below the process's open files (``runtime.raise_open_file_limit``), so that
    # GraphQL clients alone cannot take the descriptors new chargers need. uvicorn counts
    # open websockets toward it but never refuses an upgrade: at 1,000 (review s24) a
    # thousand live-map subscribers made every HTTP request, /healthz included, a 503.
    # The default leaves room for as many sockets as the live hub runs operations
    # (``graph.live_ws.MAX_OPERATIONS``) and HTTP beside them.
    max_connections: int = Field(
        12_000, ge=1, le=1_000_000,
        description="Connections the GraphQL port serves at once; open websockets count "
                    "toward it (an upgrade itself is never refused), and a request beyond "
                    "it is answered 503 (logged at WARNING at most once a minute), but for "
                    "GET or HEAD /healthz")
    # Application-level, unlike uvicorn's websocket pings (``cli._uvicorn``), which the
    # browser answers itself, not the page: see ``graph.live_ws.Connection.keep_alive``. At least a
    # second: a ping every millisecond on ten thousand sockets would be a busy loop.
    ws_keepalive_s: float = Field(
        25.0, ge=0, le=3600,
        description="Seconds between GraphQL websocket keep-alives: a graphql-transport-ws "
                    "socket quiet that long gets a ping and is closed (4408) if the "
                    "client sends nothing within as long again after the socket took the "
                    "ping; a legacy graphql-ws one "
                    "gets a ka that often. 0: none")
    ocpp_host: str = "127.0.0.1"
    ocpp_port: int = Field(9000, ge=0, le=65535)
    ocpp_enabled: bool = True
    ocpp_strict_schema: bool = Field(
        False, description="Refuse (CALLERROR FormationViolation) charger messages and "
                           "answers with properties the OCPP 1.6 schemas do not define; "
                           "off, such properties are left out and logged once per "
                           "connection (vendors add fields of their own), and a stop's, "
                           "a meter value's or a status report's secondary field the "
                           "schemas refuse is mended (ocpp_bridge.frames.LENIENT)")
    # Above 1,000 for chargers that batch a backlog into one MeterValues; each value
    # costs the event loop, every charger's and request's, ~25 µs (ocpp_bridge.frames
    # .MAX_SAMPLED_VALUES): 100,000 holds it 2.5 s. Below 100, a charger reporting many
    # measurands per phase would have ordinary frames refused.
    ocpp_max_sampled_values: int = Field(
        1000, ge=100, le=100_000,
        description="Sampled values one MeterValues may carry over all its readings; "
                    "beyond, it is refused (CALLERROR OccurenceConstraintViolation), the "
                    "connection kept")
    # Chargers' Basic-auth passwords (QA s22: guessed at 2,700 a second). Per address a
    # few failures, as a misconfigured charger retrying makes; per station enough that
    # a handful of the station's own addresses failing (a password change not yet on
    # the charger) does not shut newcomers out. The lockout doubles up to the maximum.
    ocpp_password_failures_per_address: int = Field(
        5, ge=1, le=1000,
        description="Wrong Basic-auth passwords of one charge point from one address "
                    "within the window before that address is refused, unchecked (429), "
                    "for the lockout")
    ocpp_password_failures_per_station: int = Field(
        20, ge=1, le=100_000,
        description="Wrong passwords of one charge point from all addresses within the "
                    "window before only the addresses its charger passed from are "
                    "checked, for the lockout")
    ocpp_password_window_s: float = Field(
        900.0, ge=1, le=86_400,
        description="Seconds within which wrong charger passwords are counted")
    ocpp_password_lockout_s: float = Field(
        60.0, ge=1, le=86_400,
        description="Seconds of a charger password lockout; each further one in a row "
                    "lasts twice as long, up to the maximum")
    ocpp_password_max_lockout_s: float = Field(
        3600.0, ge=1, le=7 * 86_400,
        description="Seconds a charger password lockout lasts at most (at least the "
                    "lockout; equal: no doubling)")
    # Off by default (review r26-security5): one client behind a carrier's CGNAT address
    # spent the address's budget as fast as it freed and kept that address's restarted
    # chargers out; the pending checks per address (a queue) bound a scan's CPU anyway.
    charger_checks_per_minute: int = Field(
        0, ge=0, le=1_000_000,
        description="Unverified charger password checks one address may have started "
                    "within a minute, across cpIds; 0: no budget")
    ocpp_tls_cert: Path | None = Field(None, description="PEM certificate: wss:// "
                                                         "(OCPP security profile 2)")
    ocpp_tls_key: Path | None = None
    jwt_secret: SecretStr | None = None
    # Upper bounds: beyond a year a token is no longer a session, and a huge value would
    # overflow the expiry date. An hour by default: an access token outlives a sign-out
    # (which ends its refresh token only) until it expires, and apps get the next one
    # with their refresh token; much shorter would have admins in GraphiQL and
    # dashboards' sockets signing in again every few minutes. A password change or a
    # deactivation ends it at once (the token epoch). Clients that never refresh may
    # want the former 720.
    jwt_ttl_minutes: int = Field(60, gt=0, le=365 * 24 * 60,
                                 description="Access token lifetime in minutes")
    refresh_ttl_days: int = Field(30, gt=0, le=365,
                                  description="Refresh token lifetime in days (each "
                                              "refresh starts a new one)")
    # Off by default: a CPO running ChargeGraph usually gives drivers accounts itself (a
    # contract, a fleet card), and open registration lets anyone in who can reach the
    # API. An app-first deployment turns it on; the demo does.
    sign_up: bool = Field(False, description="Drivers may open their own accounts "
                                             "(signUp); off, accounts are made by admins "
                                             "and operators")
    public_map: bool = Field(False, description="Anonymous users see the public station "
                                                "map and its live availability")
    auto_register: bool = Field(False, description="Unknown chargers are registered as "
                                                   "Pending instead of refused")
    # A limit on a scan of made-up ids (each would be a station stored for good); a
    # fleet moved onto this central system from behind one NAT or mobile carrier address
    # registers hundreds in an hour, so it is the operator's to raise, or lift (0).
    auto_register_per_hour: int = Field(
        REGISTRATIONS_PER_ADDRESS, ge=0, le=1_000_000,
        description="Stations auto-registered from one charger address in any hour; "
                    "0: no limit")
    # One sign-up issuing itself card numbers by the dozen keeps them from everyone
    # else (DUPLICATE, then IN_USE for 30 days after their removal), and sign-up lets
    # one person open several accounts: a driver's own cards are capped (QA s33).
    max_cards_per_driver: int = Field(
        MAX_CARDS_PER_DRIVER, ge=0, le=10_000,
        description="Cards a driver may hold (any status) when issuing one for "
                    "themselves; staff issuing for them are not capped. 0: no limit")
    heartbeat_interval: int = Field(300, gt=0, le=MAX_HEARTBEAT_S,
                                    description="Seconds, sent to chargers on boot")
    command_timeout: float = Field(30.0, gt=0, le=3600,
                                   description="Seconds to wait for a charger's answer")
    # Bounded: uvicorn waits this long for requests in flight at a stop, and a command
    # the charger has is given up a second before its end (``app.ANSWER_MARGIN_S``);
    # beyond an hour a supervisor kills the process first anyway.
    shutdown_grace_s: float = Field(
        10.0, gt=0, le=3600,
        description="Seconds a graceful stop (SIGTERM) waits for requests in flight: "
                    "commands the chargers already have wait for their answers until a "
                    "second before its end, then are answered CHARGER_TIMEOUT (the "
                    "charger may have acted)")
    # A charger caches an Accepted card until the answer's expiryDate: a card blocked
    # meanwhile charges there offline up to this long. A year at most: beyond that the
    # bound means nothing.
    auth_cache_hours: float = Field(
        24.0, gt=0, le=24 * 366,
        description="Hours a charger may cache an Accepted authorization (the expiryDate "
                    "of Authorize and StartTransaction answers; a card's own expiry if "
                    "sooner)")
    # Bounded both ways: it is renewed every third of it, so a thousandth of a second
    # was a renewal write loop (a core busy, the WAL growing by megabytes a second), and
    # inf or 1e308 overflowed the lease's timedelta at start (a traceback, not this
    # line). Beyond an hour a crashed instance's chargers would read online far longer
    # than anyone waits for them; a second is the least tests and labs use.
    instance_lease_seconds: float = Field(
        30.0, ge=1, le=3600,
        description="How long after an instance stops renewing its lease (it crashed) "
                    "another one records its chargers offline; 1 to 3600 seconds")
    webhooks_allow_private: bool = Field(
        False, description="Webhooks may post to loopback, private and link-local "
                           "addresses (a receiver inside the deployment's network); off, "
                           "such URLs are refused, also when a name resolves to one")
    # Bounded: beyond an hour an outage would be told long after anyone needs to know,
    # and inf would overflow the grace's timedelta at start.
    offline_webhook_grace_s: float = Field(
        60.0, ge=0, le=3600,
        description="Seconds a charger must stay offline before the station.offline "
                    "webhook is delivered (dated when it went offline); station.online "
                    "follows only a delivered one, so a flap within the grace delivers "
                    "neither. 0: both at once. Live subscriptions are never delayed")
    # Unset (0), kept for good, as always: pruning is the operator's choice, and it
    # thins the energy trends, fault counts and connection histories of the ranges it
    # prunes (README
    # "Database size"). At most a hundred years: a bound that still fits a timedelta.
    retain_meter_samples_days: int = Field(
        0, ge=0, le=36_500,
        description="Days meter samples are kept (a session's once it was closed by its "
                    "StopTransaction and ended that long ago); 0: for good")
    retain_status_events_days: int = Field(
        0, ge=0, le=36_500,
        description="Days connectors' status reports are kept; 0: for good")
    retain_connection_events_days: int = Field(
        0, ge=0, le=36_500,
        description="Days chargers' connects and disconnects (a station's connection "
                    "history) are kept; 0: for good")
    graphiql: bool = True
    # On by default (developers explore the API in GraphiQL); a production deployment
    # whose clients are its own apps turns it off, and GraphiQL with it (it reads the
    # schema by introspection). `chargegraph export-schema` writes the schema either way.
    introspection: bool = Field(
        True, description="Answer __schema and __type queries (and suggest names in "
                          "errors); off, GraphiQL is not served either")
    graphiql_assets: str | None = Field(
        None, description="Where the GraphiQL page loads its scripts from instead of "
                          "unpkg.com: a folder written by `chargegraph graphiql-assets "
                          "FOLDER` (served at /graphiql-assets), or the http(s) URL of a "
                          "mirror of unpkg.com")
    # On by default: it tells counts (connected chargers, requests), never a record, like
    # /healthz beside it; a deployment that must not tell even those turns it off or
    # keeps /metrics behind its proxy (docs/architecture.md, "Metrics").
    metrics: bool = Field(True, description="Serve Prometheus metrics at GET /metrics "
                                            "(unauthenticated, on the GraphQL port)")
    state_dir: Path | None = Field(None, description="Where generated state (the JWT "
                                                     "secret) lives")
    log_level: LogLevel = "INFO"

    @field_validator("*", mode="before")
    @classmethod
    def _not_empty(cls, value: object, info: ValidationInfo) -> object:
        """An empty value is refused, whatever the setting, rather than read as something:
        as a path it was the working directory (the JWT secret written there, a
        certificate "is a directory"), as a host every interface (compose's ``${VAR}``
        gives an empty value when VAR is unset). Leaving the variable out gives the
        default."""
        if isinstance(value, str) and not value.strip() \
                and info.field_name not in EMPTY_MEANS_NONE:
            raise ValueError("is empty: give a value, or leave the variable out for the "
                             "default")
        return value

    @model_validator(mode="after")
    def _ports_apart(self) -> Settings:
        """The GraphQL and OCPP servers on one port of one interface: the socket both
        bind is served by one of them only (QA: GraphQL answered 404 from the OCPP
        server, after a "ready" line)."""
        if self.ocpp_enabled and self.port == self.ocpp_port != 0 \
                and _may_overlap(self.host, self.ocpp_host):
            raise ValueError(
                f"{ENV_PREFIX}PORT and {ENV_PREFIX}OCPP_PORT are both {self.port} on "
                f"{self.host} and {self.ocpp_host}: give the GraphQL and the OCPP server "
                "a port each")
        return self

    @field_validator("ws_keepalive_s")
    @classmethod
    def _keepalive(cls, value: float) -> float:
        if 0 < value < 1:
            raise ValueError("give 0 (no keep-alives) or at least 1 second")
        return value

    @field_validator("ocpp_password_max_lockout_s")
    @classmethod
    def _max_lockout(cls, value: float, info: ValidationInfo) -> float:
        lockout = info.data.get("ocpp_password_lockout_s")
        if lockout is not None and value < lockout:
            raise ValueError(f"must be at least CHARGEGRAPH_OCPP_PASSWORD_LOCKOUT_S ({lockout:g})")
        return value

    @property
    def charger_sign_ins(self) -> ChargerSignInLimits:
        """The ``ocpp_password_*`` settings as the services take them."""
        return ChargerSignInLimits(
            per_address=self.ocpp_password_failures_per_address,
            per_station=self.ocpp_password_failures_per_station,
            window=timedelta(seconds=self.ocpp_password_window_s),
            lockout=timedelta(seconds=self.ocpp_password_lockout_s),
            max_lockout=timedelta(seconds=self.ocpp_password_max_lockout_s),
            checks_per_minute=self.charger_checks_per_minute)

    @property
    def retention(self) -> Retention:
        """The ``retain_*_days`` settings as the services take them (0: kept for good)."""
        def days(n: int) -> timedelta | None:
            return timedelta(days=n) if n else None
        return Retention(meter_samples=days(self.retain_meter_samples_days),
                         status_events=days(self.retain_status_events_days),
                         connection_events=days(self.retain_connection_events_days))

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_in_any_case(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().upper() in get_args(LogLevel):
            return value.strip().upper()
        return value  # refused as given, so the message shows what was written

    @field_validator("trusted_proxies")
    @classmethod
    def _proxy_addresses(cls, value: str) -> str:
        """Addresses and networks in the form uvicorn matches: it would take a typo, or a
        network with host bits set (10.0.0.1/8), for a literal name that never matches,
        and every client would again share the proxy's address."""
        entries = [entry.strip() for entry in value.split(",") if entry.strip()]
        if entries == ["*"]:
            return "*"
        if "*" in entries:  # uvicorn would trust only the others: say which was meant
            raise ValueError("* (any address) stands alone, not in a list")
        try:
            return ",".join(str(ipaddress.ip_network(entry, strict=False)) if "/" in entry
                            else str(ipaddress.ip_address(entry)) for entry in entries)
        except ValueError as error:
            raise ValueError(f"use IP addresses or networks (CIDR), comma-separated: {error}"
                             ) from None

    @field_validator("cors_origins")
    @classmethod
    def _cors_origins(cls, value: str) -> str:
        """Origins as browsers send them in ``Origin`` (lower case, no path, no default
        port), since CORSMiddleware compares the header with each entry as a string:
        ``http://localhost:3000/`` or ``HTTPS://App.example.com:443`` would never match."""
        entries = [entry.strip() for entry in value.split(",") if entry.strip()]
        if entries == ["*"]:
            return "*"
        if "*" in entries:  # a list next to * would mean nothing: say which was meant
            raise ValueError("* (any origin) stands alone, not in a list")
        return ",".join(dict.fromkeys(_origin(entry) for entry in entries))

    @field_validator("graphiql_assets")
    @classmethod
    def _graphiql_assets(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip()
        if "://" in value:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError("use a folder, or an http(s):// URL of a mirror of unpkg.com")
        return value

    @property
    def graphiql_assets_folder(self) -> Path | None:
        """``graphiql_assets`` when it names a folder (not a URL)."""
        if self.graphiql_assets is None or "://" in self.graphiql_assets:
            return None
        return Path(self.graphiql_assets)

    @property
    def cors_allowed_origins(self) -> list[str]:
        """``cors_origins`` as a list; empty when cross-origin calls are not allowed."""
        return self.cors_origins.split(",") if self.cors_origins else []

    def resolved_state_dir(self) -> Path:
        """``state_dir``, else ``.chargegraph`` beside the SQLite file (state travels with
        the data), else the working directory's ``.chargegraph`` (MongoDB)."""
        if self.state_dir is not None:
            return self.state_dir
        database = sqlite_path(self.database_url)
        return (database.parent if database is not None else Path()) / ".chargegraph"


def check_env_file(env_file: Path) -> None:
    """``ConfigError`` for a ``.env`` that cannot be read as UTF-8 text, naming what to do
    (QA s26: one written by Windows PowerShell's ``>``, UTF-16, stopped every command with
    a UnicodeDecodeError traceback; so did a Latin-1 "ä" in a comment). No file (or a
    folder, which pydantic-settings skips too): nothing to check."""
    try:
        raw = env_file.read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        return
    except OSError as error:
        raise ConfigError(f"cannot read {env_file.resolve()}: {error.strerror or error}"
                          ) from None
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as error:
        why = ("it is UTF-16, as Windows PowerShell's > writes it"
               if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
               else f"byte {error.start + 1} is not UTF-8")
        raise ConfigError(f"{env_file.resolve()} is not UTF-8 text ({why}): save it as "
                          "UTF-8") from None


def _may_overlap(host: str, other: str) -> bool:
    """Whether sockets bound on ``host`` and on ``other`` (at one port) may take the same
    connections: a shared address, or a wildcard of the same family on either side
    (``0.0.0.0`` covers every IPv4 address, ``::`` every IPv6 one: both servers bind IPv6
    sockets IPv6-only, so ``0.0.0.0`` and ``::1`` share a port; review s23). A name
    counts as the addresses it resolves to; one that does not resolve is left to the
    bind, which names it."""
    ours, theirs = _addresses(host), _addresses(other)
    return any(a == b or (a.version == b.version and (a.is_unspecified or b.is_unspecified))
               for a in ours for b in theirs)


def _addresses(host: str) -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    with contextlib.suppress(ValueError):
        return {ipaddress.ip_address(host)}
    try:
        found = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except OSError:
        return set()
    # An IPv6 address may carry its interface (fe80::1%eth0), which ip_address refuses.
    return {ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in found}


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin(entry: str) -> str:
    """One allowed CORS origin, normalised; ValueError naming the entry if it is none."""
    usage = f"{entry!r} is not an origin: use scheme://host[:port], e.g. http://localhost:3000"
    try:
        parts = urlsplit(entry)
        port = parts.port
    except ValueError:
        raise ValueError(usage) from None
    scheme, host = parts.scheme.lower(), parts.hostname
    if scheme not in _DEFAULT_PORTS or not host or "*" in host or parts.username \
            or parts.password is not None or parts.path not in ("", "/") or parts.query \
            or parts.fragment or entry.endswith(("?", "#")):
        raise ValueError(usage)
    if ":" in host:
        host = f"[{host}]"  # an IPv6 address, as the Origin header writes it
    else:
        try:  # browsers send an international name in its ASCII (punycode) form
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise ValueError(usage) from None
    return f"{scheme}://{host}" + ("" if port in (None, _DEFAULT_PORTS[scheme])
                                   else f":{port}")


#: CHARGEGRAPH_* variables the project itself reads outside Settings (the test suite's
#: MongoDB server, CI's demand that the Redis tests run, scripts/test's worker count): set
#: on purpose, not misspelt.
NOT_SETTINGS = frozenset({"CHARGEGRAPH_TEST_MONGODB_URL", "CHARGEGRAPH_REQUIRE_REDIS",
                          "CHARGEGRAPH_TEST_WORKERS"})


def unknown_variables(sources: Mapping[str, Iterable[str]]) -> list[str]:
    """A warning per ``CHARGEGRAPH_*`` name that is no setting (pydantic-settings ignores
    those, so a public map setting spelt with an extra S left the map private without a
    word), suggesting the closest setting. ``sources``: where the names were found ("the
    environment", ".env") → the names."""
    settings = {name.upper(): name for name in Settings.model_fields}
    warnings = []
    for where, names in sources.items():
        for name in sorted({name.upper() for name in names}):
            if not name.startswith(ENV_PREFIX) or name in NOT_SETTINGS \
                    or name.removeprefix(ENV_PREFIX) in settings:
                continue
            closest = _closest_setting(name.removeprefix(ENV_PREFIX), list(settings))
            hint = f": did you mean {ENV_PREFIX}{closest}?" if closest else ""
            warnings.append(f"{name} (in {where}) is not a setting and is ignored{hint}")
    return warnings


def _closest_setting(given: str, settings: list[str]) -> str | None:
    """The setting ``given`` most likely means: the closest by difflib's ratio, else one
    it abbreviates (its letters in order, from the first: ``DB`` for ``DATABASE_URL``),
    the shortest of those. Compared without the prefix, which every name shares and
    which would make short settings look closest to everything."""
    close = difflib.get_close_matches(given, settings, n=1, cutoff=0.6)
    if close:
        return close[0]
    abbreviated = [name for name in settings
                   if given[:1] == name[:1] and _in_order(given, name)]
    return min(abbreviated, key=len) if abbreviated else None


def _in_order(letters: str, word: str) -> bool:
    rest = iter(word)
    return all(letter in rest for letter in letters)  # consumes ``rest`` as it goes


def environment_warnings(environ: Mapping[str, str], env_file: Path) -> list[str]:
    """``unknown_variables`` of the process's environment and its ``.env`` file."""
    sources: dict[str, Iterable[str]] = {"the environment": environ}
    if env_file.is_file():
        from dotenv import dotenv_values

        sources[str(env_file)] = dotenv_values(env_file)
    return unknown_variables(sources)


def problems(error: ValidationError) -> list[str]:
    """One line per invalid setting, named as the operator sets it
    (``CHARGEGRAPH_PORT: Input should be …``), without pydantic's multi-line layout and
    documentation links; a rule between settings is its message, which names them."""
    lines = []
    for problem in error.errors(include_url=False):
        field = ".".join(str(part) for part in problem["loc"])
        message = problem["msg"].removeprefix("Value error, ")
        if not field:  # a rule between settings (``_ports_apart``): its message names them
            lines.append(message)
            continue
        given = problem.get("input")
        # The value helps spot a typo; a secret's value is never echoed.
        if isinstance(given, str) and "secret" not in field:
            shown = given if len(given) <= 60 else given[:57] + "..."
            message += f" (got {shown!r})"
        lines.append(f"{ENV_PREFIX}{field.upper()}: {message}")
    return lines
