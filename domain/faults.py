"""What counts as a fault in a charger's status reports: one rule for the live events
(``ChargingService.status_notification``: ``FaultReported``, the ``fault.reported``
webhook) and for fault reports (``AnalyticsService.fault_reports``), so what was
announced is what is counted, and availability's "down" (a Faulted status) is a fault
there too.

A report states a fault when its errorCode is one other than NoError, whatever its
status (a charger may report GroundFailure while still Charging), or when its status is
Faulted, whatever its errorCode: OCPP 1.6 chargers report Faulted with errorCode NoError
and the real cause in vendorErrorCode and info only ("E-017", "contactor welded"); keyed
on the errorCode alone, such a connector was down for availability and missing from
every fault report (QA ops s7).
"""

from __future__ import annotations

from domain.entities import ConnectorStatus
from domain.ocpp16 import ChargePointErrorCode
from domain.query import Eq, Filter, In, Or

#: OCPP 1.6 ChargePointErrorCode values other than NoError (``ocpp16``'s enumeration,
#: the one the API shows them by).
FAULT_CODES = tuple(code.value for code in ChargePointErrorCode
                    if code is not ChargePointErrorCode.NO_ERROR)


_FAULT_CODES = frozenset(FAULT_CODES)


def is_fault(status: ConnectorStatus | str | None, error_code: str | None) -> bool:
    """Whether a report (or a stored state) of ``status`` and ``error_code`` is a fault.
    An errorCode OCPP 1.6 does not have (the OCPP server's schema lets none through) is
    none, as fault reports never counted one."""
    return error_code in _FAULT_CODES or status == ConnectorStatus.FAULTED


def fault_filter(status_field: str = "status", code_field: str = "error_code") -> Filter:
    """``is_fault`` as a store filter on a record's status and error code fields."""
    return Or((In(code_field, FAULT_CODES), Eq(status_field, ConnectorStatus.FAULTED)))
