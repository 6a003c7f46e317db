"""Instances of the services over one store, on a clock a test moves by hand: what a
contract test of a record kept across instances (a restart, another process) needs."""

from __future__ import annotations

from datetime import UTC, datetime

from domain.policy import Policy
from domain.ports import Store
from domain.services import ServiceContext, Services
from tests.helpers import FastHasher

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
#: The deployment's key every instance shares (``ServiceContext.digest_key``).
KEY = b"a deployment's key"


class Clock:
    """The services' clock: reads ``now``, set by the test (``T0`` at first)."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def instance(store: Store, clock: Clock, key: bytes = KEY) -> Services:
    """An instance's services of their own over ``store`` (a deployment's: ``key``)."""
    return Services(ServiceContext(store=store, policy=Policy(), hasher=FastHasher(),
                                   clock=clock, digest_key=key))
