"""Which address a charger connects from, behind a load balancer: the proxies named
trusted (``CHARGEGRAPH_TRUSTED_PROXIES``, as for GraphQL) have their X-Forwarded-For
believed. Without this every charger behind one shares the balancer's address, and the
one-password-check-per-address rule lets a guessing flood from anywhere hold up every
real charger's handshake."""

from __future__ import annotations

import ipaddress

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedProxies:
    """``spec``: comma-separated addresses or networks, or ``*`` for any."""

    def __init__(self, spec: str = "127.0.0.1,::1") -> None:
        entries = [entry.strip() for entry in spec.split(",") if entry.strip()]
        self.any = entries == ["*"]
        self.networks: list[Network] = [] if self.any else [
            ipaddress.ip_network(entry, strict=False) for entry in entries]

    def trusts(self, address: str) -> bool:
        if self.any:
            return True
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.networks)

    def client(self, peer: str, forwarded_for: str | None) -> str:
        """The client's address: ``peer`` itself unless it is a trusted proxy that says
        whom it forwards; then the nearest address in X-Forwarded-For that is no trusted
        proxy (one further left could have been written by the client itself)."""
        if not forwarded_for or not self.trusts(peer):
            return peer
        hops = [_address(hop) for hop in forwarded_for.split(",") if hop.strip()]
        for hop in reversed(hops):
            if not self.trusts(hop):
                return hop
        return hops[0] if hops else peer


def _address(hop: str) -> str:
    """An X-Forwarded-For hop's address without a port some proxies add
    (``198.51.100.10:50001``, ``[2001:db8::1]:443``; review s22: each source port counted
    as an address of its own, so no lockout tripped and a charger's address was never
    known again)."""
    hop = hop.strip()
    if hop.startswith("["):
        return hop[1:].partition("]")[0]
    host, colon, port = hop.rpartition(":")
    if colon and ":" not in host and port.isdigit():
        return host
    return hop
