"""The pubsub URL picks the backend."""

from __future__ import annotations

import pytest

from pubsub.factory import check_event_bus_url, open_event_bus
from pubsub.memory import MemoryEventBus
from pubsub.redis import RedisEventBus


@pytest.mark.parametrize("url", ["memory://", "MEMORY://", " memory:// "])
def test_memory(url: str) -> None:
    bus = open_event_bus(url, queue_size=5)
    assert isinstance(bus, MemoryEventBus)
    assert bus.queue_size == 5


@pytest.mark.parametrize("url", ["redis://localhost:6379/0", "rediss://:pw@redis.example:6380",
                                 "redis://redis"])
def test_redis(url: str) -> None:
    bus = open_event_bus(url)  # not started: nothing connects yet
    assert isinstance(bus, RedisEventBus)
    assert bus.url == url.strip()


@pytest.mark.parametrize("url", ["", "memory", "memory://elsewhere", "redis://",
                                 "mongodb://localhost", "kafka://broker:9092", "localhost:6379",
                                 "unix:///tmp/redis.sock"])
def test_anything_else_is_a_clear_value_error(url: str) -> None:
    with pytest.raises(ValueError, match=r"unsupported pubsub URL.*memory://.*redis://"):
        open_event_bus(url)


def test_the_error_does_not_show_a_password() -> None:
    with pytest.raises(ValueError) as info:
        check_event_bus_url("redis+sentinel://user:s3cret@host")
    assert "s3cret" not in str(info.value)
    assert "user:***@host" in str(info.value)


@pytest.mark.parametrize(("url", "prefix", "expected"), [
    ("redis://localhost:6379/0", None, "chargegraph:"),  # as before: upgrades still talk
    ("redis://localhost:6379", None, "chargegraph:"),
    ("redis://localhost:6379/3", None, "chargegraph:3:"),
    ("redis://localhost:6379?db=3", None, "chargegraph:3:"),
    ("rediss://:pw@host:6380/3", "staging:", "staging:"),
])
def test_each_deployment_gets_its_channel_prefix(url: str, prefix: str | None,
                                                 expected: str) -> None:
    bus = open_event_bus(url, prefix=prefix)
    assert isinstance(bus, RedisEventBus)
    assert bus.channel_prefix == expected


@pytest.mark.parametrize("prefix", ["", "two words:", "x" * 65, "tab\t"])
def test_a_bad_prefix_is_a_clear_value_error(prefix: str) -> None:
    with pytest.raises(ValueError, match="pubsub prefix"):
        open_event_bus("redis://localhost/0", prefix=prefix)
