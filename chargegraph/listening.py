"""The GraphQL port is bound before anything starts, so a taken port is one line naming it
and the service never announces itself ready on a port it cannot serve (uvicorn binds only
after the lifespan has started the store, the OCPP server and its "ready" log line). The
sockets are bound, not listening, until uvicorn serves: a TCP probe (a load balancer's, a
Kubernetes ``tcpSocket``) is refused during the start-up, not told "up" and then left to
hang (review s23: listening at bind did that). The OCPP server on the same port, which
could bind it too meanwhile, is refused by the settings (``Settings._ports_apart``)."""

from __future__ import annotations

import errno
import ipaddress
import socket

#: Tries at binding every address of a host on one free port (``port`` 0): the port the
#: system gave the first address may be taken on another one (rare; a few tries suffice).
SHARED_PORT_TRIES = 8


def listening_sockets(host: str, port: int) -> list[socket.socket]:
    """Bound TCP sockets for ``host`` (an address or a name: every address it
    resolves to, as asyncio's ``create_server`` would bind) and ``port``; with ``port``
    0, one free port for all of them (asyncio's would give each its own, and the banner
    and chargers name one). Raises ``OSError`` with the system's reason; no socket stays
    open then."""
    for _ in range(SHARED_PORT_TRIES - 1):
        try:
            return _bound(host, port)
        except _PortTakenElsewhere:
            continue
    return _bound(host, port, last_try=True)


class _PortTakenElsewhere(OSError):
    """The port the system chose for a host's first address is in use on another."""


def _bound(host: str, port: int, last_try: bool = False) -> list[socket.socket]:
    bound: list[socket.socket] = []
    chosen = port == 0
    try:
        for family, kind, proto, _, address in socket.getaddrinfo(
                host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE):
            sock = socket.socket(family, kind, proto)
            bound.append(sock)
            # As asyncio and uvicorn do: a restart may reuse a port whose old connections
            # are still in TIME_WAIT; IPv6 sockets leave IPv4 to their own socket.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind((address[0], port, *address[2:]))
            except OSError as exc:
                if chosen and len(bound) > 1 and exc.errno == errno.EADDRINUSE \
                        and not last_try:
                    raise _PortTakenElsewhere(exc.errno, exc.strerror) from exc
                raise
            port = sock.getsockname()[1]  # every address on the port the first was given
    except OSError:
        for sock in bound:
            sock.close()
        raise
    return bound


def _bound_addresses(host: str) -> set[str] | None:
    """The addresses a server binding ``host`` listens on (each it resolves to, as
    ``create_server`` binds); ``None`` for a name that does not resolve."""
    try:
        found = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError:
        return None
    return {str(info[4][0]) for info in found}


def addresses_of(host: str) -> int:
    """How many addresses a server binding ``host`` listens on; a name that does not
    resolve counts one, its bind saying why."""
    found = _bound_addresses(host)
    return 1 if found is None else len(found)


def loopback_only(host: str) -> bool:
    """Whether a server binding ``host`` is reached from this machine only (every address
    it binds a loopback one; a wildcard is not)."""
    found = _bound_addresses(host)
    return bool(found) and found is not None and all(_is_loopback(address) for address in found)


def _is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    # An IPv4-mapped IPv6 address (``::ffff:127.0.0.1``) is loopback as its IPv4 one is;
    # Python before 3.13 says it is not (review s33: a false warning on 3.11).
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return ip.is_loopback or (mapped is not None and mapped.is_loopback)


def url_host(host: str) -> str:
    """``host`` as a URL writes it: an IPv6 address in brackets (``http://:::8000`` is no
    URL, ``http://[::]:8000`` is)."""
    try:
        address = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return host  # a name, or an IPv4 address
    return f"[{host}]" if address.version == 6 else host


def reachable_host(host: str) -> str:
    """Where this machine reaches a server listening on ``host``, as a URL's host: a
    wildcard address by its family's loopback (a client cannot connect to ``::``)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return url_host(host)  # a name, or a scoped IPv6 address
    if address.is_unspecified:
        address = ipaddress.ip_address("::1" if address.version == 6 else "127.0.0.1")
    return url_host(str(address))
