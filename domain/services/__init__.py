"""The use cases, bundled so adapters get one object to call."""

from __future__ import annotations

from datetime import timedelta

from domain.ports import ChargerGateway, PaymentProvider
from domain.services.accounts import AccountService
from domain.services.analytics import AnalyticsService
from domain.services.base import UNSET, ServiceContext
from domain.services.charger_connections import REGISTRATIONS_PER_ADDRESS
from domain.services.charger_sign_ins import ChargerSignInLimits
from domain.services.charging import DEFAULT_AUTH_CACHE, ChargingService
from domain.services.commands import CommandService
from domain.services.erasure import Erasure
from domain.services.fleet import MAX_CARDS_PER_DRIVER, FleetService
from domain.services.idempotency import IdempotencyService
from domain.services.instances import InstanceService
from domain.services.live import LiveService
from domain.services.offline_notices import OfflineNotices
from domain.services.payments import PaymentService
from domain.services.personal_data import PersonalDataService
from domain.services.reads import ReadService
from domain.services.refresh_tokens import DEFAULT_TTL, RefreshTokenService
from domain.services.retention import Retention, RetentionService
from domain.services.site_load import SiteLoad
from domain.services.sites import SiteService
from domain.services.stations import ConnectorSpec, StationService
from domain.services.tariffs import TariffService
from domain.services.webhooks import WebhookService
from domain.services.withdrawal import Withdrawal

__all__ = ["UNSET", "ConnectorSpec", "ServiceContext", "Services"]


class Services:
    """Every use case of the API over one set of ports."""

    def __init__(self, ctx: ServiceContext, *, gateway: ChargerGateway | None = None,
                 heartbeat_interval: int = 300, auto_register: bool = False,
                 registrations_per_hour: int = REGISTRATIONS_PER_ADDRESS,
                 command_timeout: float = 30.0,
                 payment_provider: PaymentProvider | None = None,
                 webhooks_allow_private: bool = False, sign_up: bool = False,
                 refresh_ttl: timedelta = DEFAULT_TTL,
                 auth_cache: timedelta = DEFAULT_AUTH_CACHE,
                 charger_sign_ins: ChargerSignInLimits = ChargerSignInLimits(),
                 retention: Retention = Retention(),
                 max_cards_per_driver: int = MAX_CARDS_PER_DRIVER) -> None:
        self.ctx = ctx
        self.policy = ctx.policy
        self.reads = ReadService(ctx)
        self.accounts = AccountService(ctx)
        self.accounts.sign_up_open = sign_up
        self.refresh_tokens = RefreshTokenService(ctx, refresh_ttl)
        self.fleet = FleetService(ctx)
        self.fleet.max_cards_per_driver = max_cards_per_driver
        self.stations = StationService(ctx)
        self.tariffs = TariffService(ctx)
        self.charging = ChargingService(ctx, heartbeat_interval=heartbeat_interval,
                                        auto_register=auto_register,
                                        registrations_per_hour=registrations_per_hour,
                                        auth_cache=auth_cache,
                                        sign_in_limits=charger_sign_ins)
        self.commands = CommandService(ctx, gateway, timeout=command_timeout)
        self.withdrawal = Withdrawal(ctx, self.commands)
        self.commands.on_list_wanting = self.withdrawal.push_later
        self.commands.on_cancel_answered = self.withdrawal.owed_cancels_later
        self.stations.cancel_at_chargers = self.withdrawal.cancel_reservations
        self.stations.close_refused = self.charging.refused_closes
        self.stations.announce_closed = self.charging.announce_closed
        for retrying in (self.stations, self.tariffs, self.fleet):
            retrying.pause_to_retry = self.charging.pause_to_retry  # the one pause
        self.stations.forget_known = self.charging.sign_ins.known.forget
        self.accounts.on_deactivated = self.withdrawal.withdraw_user
        self.fleet.on_withdrawn = self.withdrawal.withdraw_card
        self.accounts.on_reactivated = self.withdrawal.restore_user
        self.fleet.on_restored = self.withdrawal.restore_card
        #: Clients' idempotency keys (``graph.http`` takes them from the request).
        self.idempotency = IdempotencyService(ctx)
        self.erasure = Erasure(ctx, self.accounts, self.refresh_tokens,
                               charging=self.charging, idempotency=self.idempotency)
        self.erasure.on_erased = self.withdrawal.withdraw_erased
        self.personal_data = PersonalDataService(ctx)
        self.stations.on_accepted = self.commands.ask_to_boot
        self.charging.on_restored_connect = self.commands.ask_for_status
        self.instances = InstanceService(ctx, self.charging)
        self.live = LiveService(ctx)
        self.analytics = AnalyticsService(ctx)
        self.payments = PaymentService(ctx, payment_provider)
        self.webhooks = WebhookService(ctx, allow_private=webhooks_allow_private)
        self.offline_notices = OfflineNotices(ctx)
        self.retention = RetentionService(ctx, retention)
        self.sites = SiteService(ctx)
        self.site_load = SiteLoad(ctx, self.commands)
        self.commands.profile_watch = self.site_load
        self.sites.recompute = self.site_load.request_site
        self.stations.on_site_left = self.site_load.request_site
        self.charging.on_start_answered.append(self.site_load.request_station)
        self.charging.on_boot_accepted.append(self.site_load.charger_back)
        self.charging.on_followed.append(self.site_load.followed)
        self.charging.on_boot_accepted.append(self.withdrawal.charger_back)

    def attach_gateway(self, gateway: ChargerGateway) -> None:
        """The OCPP bridge starts after the services exist; it plugs itself in here."""
        self.commands.gateway = gateway
