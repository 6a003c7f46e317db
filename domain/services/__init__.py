"""The use cases, bundled so adapters get one object to call."""

from __future__ import annotations

from domain.services.accounts import AccountService
from domain.services.base import UNSET, ServiceContext
from domain.services.fleet import FleetService
from domain.services.reads import ReadService
from domain.services.stations import ConnectorSpec, StationService
from domain.services.tariffs import TariffService

__all__ = ["UNSET", "ConnectorSpec", "ServiceContext", "Services"]


class Services:
    """Every use case of the API over one set of ports."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.policy = ctx.policy
        self.reads = ReadService(ctx)
        self.accounts = AccountService(ctx)
        self.fleet = FleetService(ctx)
        self.stations = StationService(ctx)
        self.tariffs = TariffService(ctx)
