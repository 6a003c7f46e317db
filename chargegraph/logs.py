"""Process logging: one format, and no credentials in the log at any level."""

from __future__ import annotations

import logging
import re
from typing import Any

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: Per-frame and per-connection chatter: useful when debugging a charger only.
NOISY = ("chargegraph.ocpp.wire", "chargegraph.simulator.wire", "websockets.server",
         "websockets.client")

#: Database drivers log every statement with its parameters at DEBUG: password hashes,
#: station secrets' hashes and personal data. Their DEBUG is not ours to turn on.
DRIVERS = ("aiosqlite", "pymongo")

#: Request and response headers that carry a credential: a charger's HTTP Basic password,
#: a bearer token, a session cookie.
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})
HIDDEN = "[hidden]"

#: The websockets handshake lines ("< Name: value" received, "> Name: value" sent) as the
#: websockets library logs them at DEBUG, in its own loggers and in uvicorn's.
_HEADER_LINES = frozenset({"< %s: %s", "> %s: %s"})
_FRAME_LINES = frozenset({"< %s", "> %s"})

#: Lines that carry a request's target (path and query string), each with the index of the
#: argument holding it: uvicorn's access line (at INFO, by default), its websocket
#: handshake lines (``uvicorn.error``, INFO) and websockets' request lines (DEBUG). A query
#: string can hold a credential: ``/export/sessions.csv?access_token=<JWT>`` (refused
#: 401, since the token belongs in ``Authorization``) or ``/graphql?query=mutation{login(…
#: password: "…")}`` (refused 405); the path is kept, the query's values are not.
_TARGET_LINES = {
    '%s - "%s %s HTTP/%s" %d': 2,
    '%s - "WebSocket %s" [accepted]': 1,
    '%s - "WebSocket %s" 403': 1,
    '%s - "WebSocket %s" %d': 1,
    "< GET %s HTTP/1.1": 0,  # websockets' legacy server (uvicorn's "websockets")
    "< %s %s %s": 1,  # its new server (the OCPP server), method, target, protocol
    "> GET %s HTTP/1.1": 0,  # its client (the simulator)
}
#: httpx's line for every request it sends (INFO), with the URL (an object) at this
#: index: webhook deliveries, whose URL may carry a secret in its query string or, as
#: Slack's, Teams' and Discord's do, in its path. Only the origin is kept.
_OUTGOING_LINES = {'HTTP Request: %s %s "%s %d %s"': 1}
#: A query parameter's name kept in the log (it tells which parameter a client sent, say a
#: misspelt export filter): a short identifier. Anything else may be a value sent
#: without ``=`` (``?<token>``) and is hidden like one.
_PARAMETER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]{0,31}")


class HideCredentials(logging.Filter):
    """Masks the value of credential headers in websockets' handshake logging, keeping the
    scheme ("Authorization: Basic [hidden]") so a wrong scheme can still be debugged, and
    the values of a logged request target's query string (``/graphql?query=[hidden]``).

    With ``payloads``, data frames are logged by kind and size only: on the GraphQL
    websocket they carry bearer tokens (``connection_init``) and mutation variables such as
    passwords, and websockets shows a frame's head and tail (all of it when
    ``WEBSOCKETS_MAX_LOG_SIZE`` is raised)."""

    def __init__(self, *, payloads: bool = False) -> None:
        super().__init__()
        self.payloads = payloads

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if not isinstance(args, tuple):
            return True
        at = _TARGET_LINES.get(record.msg) if isinstance(record.msg, str) else None
        target = args[at] if at is not None and len(args) > at else None
        outgoing = _OUTGOING_LINES.get(record.msg) if isinstance(record.msg, str) else None
        if outgoing is not None and len(args) > outgoing:
            record.args = (*args[:outgoing], origin_only(str(args[outgoing])),
                           *args[outgoing + 1:])
        elif at is not None and target is not None:
            record.args = (*args[:at], without_query_values(str(target)), *args[at + 1:])
        elif record.msg in _HEADER_LINES and len(args) == 2 \
                and str(args[0]).lower() in SECRET_HEADERS:
            record.args = (args[0], _masked(str(args[1])))
        elif self.payloads and record.msg in _FRAME_LINES and len(args) == 1:
            record.args = (_frame_summary(args[0]),)
        return True


def origin_only(url: str) -> str:
    """``https://hooks.slack.com/[hidden]``: scheme and host (which receiver), nothing of
    the path or query, where a webhook's secret may be."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return HIDDEN
    host, slash, tail = rest.partition("/")
    host = host.rsplit("@", 1)[-1]  # no user information either
    return f"{scheme}://{host}/{HIDDEN}" if slash and tail else f"{scheme}://{host}/"


def without_query_values(target: str) -> str:
    """``/export/sessions.csv?access_token=[hidden]&stationIds=[hidden]``: the path as it
    was, the query string's parameter names where they look like names, every value
    hidden."""
    path, mark, query = target.partition("?")
    if not mark:
        return target
    if not query:
        return f"{path}?"
    names = []
    for parameter in query.split("&"):
        name, equals, _ = parameter.partition("=")
        names.append(f"{name}={HIDDEN}" if equals and _PARAMETER_NAME.fullmatch(name)
                     else HIDDEN)
    return f"{path}?{'&'.join(names)}"


def _masked(value: str) -> str:
    scheme, _, credential = value.partition(" ")
    return f"{scheme} {HIDDEN}" if credential else HIDDEN


def _frame_summary(frame: object) -> object:
    """``TEXT [389 bytes]`` for a data frame; control frames (close codes, pings) as they
    are, since they carry no user data worth hiding and help debugging."""
    opcode, data = getattr(frame, "opcode", None), getattr(frame, "data", None)
    if opcode is None or not isinstance(data, bytes | bytearray | memoryview):
        return frame
    name = getattr(opcode, "name", str(opcode))
    if name not in ("TEXT", "BINARY", "CONT"):
        return frame
    return f"{name} [{len(data)} bytes]"


#: Where websockets logs handshakes: its own server (OCPP) and client (simulator) loggers,
#: uvicorn's error logger, which the GraphQL websocket's protocol logs through, and its
#: access logger, which writes every request's target at INFO.
_GUARDED: dict[str, HideCredentials] = {
    # OCPP frames by size only: the wire log (``chargegraph.ocpp.wire``) has each whole,
    # with a diagnostics or firmware URL's user:password masked (review s16: this
    # logger's frame lines showed it).
    "websockets.server": HideCredentials(payloads=True),
    "websockets.client": HideCredentials(payloads=True),
    "uvicorn.error": HideCredentials(payloads=True),
    "uvicorn.access": HideCredentials(),
    "httpx": HideCredentials(),  # webhook deliveries, GraphiQL asset downloads
}


def configure(level: str) -> None:
    """Logs ``level`` and above to stderr in ``FORMAT``; credentials are masked whatever
    the level. Filters sit on the emitting loggers, not on a handler, so every handler
    (ours, uvicorn's, a test's) sees the masked record."""
    logging.basicConfig(level=level, format=FORMAT)
    for name, guard in _GUARDED.items():
        logging.getLogger(name).addFilter(guard)  # the same object: adding twice is a no-op
    # Set either way, so configuring again (tests, one process) leaves no stale level.
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(logging.NOTSET if level == "DEBUG"
                                          else logging.WARNING)
    for driver in DRIVERS:
        logging.getLogger(driver).setLevel(logging.INFO)


def uvicorn_log_config() -> dict[str, Any]:
    """uvicorn's ``log_config``: its loggers keep no handlers or formats of their own
    ("INFO:     …" without a time, access lines on stdout) and pass their records up to
    the root handler ``configure`` installed, so every line of the process has ``FORMAT``.
    uvicorn still sets their levels from its ``log_level``."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "loggers": {name: {"handlers": [], "propagate": True}
                    for name in ("uvicorn", "uvicorn.error", "uvicorn.access")},
    }
