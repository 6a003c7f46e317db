"""Which address a charger connects from, behind a load balancer the operator trusts."""

from __future__ import annotations

from ocpp_bridge.peers import TrustedProxies


def test_a_trusted_proxy_is_believed_about_whom_it_forwards() -> None:
    proxies = TrustedProxies("127.0.0.1,10.0.0.0/8")
    assert proxies.client("127.0.0.1", "203.0.113.7") == "203.0.113.7"
    # The nearest hop that is no trusted proxy: one further left may be the client's own
    # invention.
    assert proxies.client("10.1.2.3", "1.2.3.4, 203.0.113.7, 10.9.9.9") == "203.0.113.7"
    assert proxies.client("10.1.2.3", "10.2.2.2, 10.3.3.3") == "10.2.2.2"
    assert proxies.client("127.0.0.1", None) == "127.0.0.1"


def test_anyone_else_is_taken_at_their_own_address() -> None:
    proxies = TrustedProxies("127.0.0.1,::1")
    assert proxies.client("198.51.100.9", "203.0.113.7") == "198.51.100.9"
    assert proxies.client("not-an-address", "203.0.113.7") == "not-an-address"
    assert TrustedProxies("*").client("198.51.100.9", "203.0.113.7") == "203.0.113.7"
    assert TrustedProxies("::1").client("::1", "2001:db8::1") == "2001:db8::1"


def test_a_hop_s_port_is_not_part_of_its_address() -> None:
    """Review s22: a proxy writing ``IP:port`` (Azure Application Gateway) made every
    source port an address of its own: no lockout tripped, no address stayed known."""
    proxies = TrustedProxies("127.0.0.1,10.0.0.0/8")
    assert proxies.client("127.0.0.1", "198.51.100.10:50001") == "198.51.100.10"
    assert proxies.client("127.0.0.1", "[2001:db8::1]:443") == "2001:db8::1"
    assert proxies.client("127.0.0.1", "2001:db8::1") == "2001:db8::1"  # no port
    assert proxies.client("127.0.0.1", "203.0.113.7, 10.0.0.5:8080") == "203.0.113.7"
