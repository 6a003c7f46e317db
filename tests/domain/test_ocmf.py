"""Reading OCMF records for display: a well-formed one read out, anything else ``None``
(never an error: a query showing a charger's records must not fail on one)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from domain import ocmf
from tests.contract.factories import OCMF


def test_a_well_formed_record_is_read_out() -> None:
    record = ocmf.parse(OCMF)
    assert record is not None
    assert (record.version, record.gateway_id, record.meter_vendor, record.meter_serial,
            record.pagination, record.charge_point_id, record.signature_algorithm) == (
        "1.0", "ABL SBC-301", "Phoenix Contact", "BQ27400330016", "T12345", "DE*ABC*E123",
        "ECDSA-secp256r1-SHA256")
    assert record.signature is not None and record.signature.startswith("887FAB")
    begin, end = record.readings
    assert begin.time == datetime(2018, 7, 24, 11, 22, 4, tzinfo=UTC)
    assert (begin.time_status, begin.transaction, begin.value, begin.unit,
            begin.identification, begin.current_type, begin.status, begin.error_flags) == (
        "S", "B", Decimal("2935.6"), "kWh", "1-b:1.8.0", "AC", "G", "")
    assert end.value == Decimal("2947.05")  # exact, as signed


def test_a_bar_inside_a_text_is_no_separator() -> None:
    record = ocmf.parse('OCMF|{"GI":"a|b","RD":[{"RV":12}]}|{"SD":"00|11"}')
    assert record is not None and record.gateway_id == "a|b"
    assert record.signature == "00|11" and record.readings[0].value == Decimal(12)


@pytest.mark.parametrize("text", [
    "",
    '{"RD":[]}|{"SD":"00"}',  # no prefix
    'ocmf|{"RD":[]}|{"SD":"00"}',
    'OCMF|{"RD":[]}',  # no signature
    'OCMF|{"RD":[]}|',
    'OCMF|{"RD":[]}{"SD":"00"}',
    'OCMF|{"RD":[]}|{"SD":"00"}|more',
    'OCMF|{"RD":[]}|{"SD":"00"} ',
    'OCMF|{"RD":[]|{"SD":"00"}',  # a brace lost
    'OCMF|["RD"]|{"SD":"00"}',  # not objects
    'OCMF|{"RD":[]}|"00"',
    'OCMF|{"FV":"1.0"}|{"SD":"00"}',  # no readings
    'OCMF|{"RD":{"RV":1}}|{"SD":"00"}',
    'OCMF|{"RD":[1, 2]}|{"SD":"00"}',
    'OCMF|{"RD":[{"RV":NaN}]}|{"SD":"00"}',  # no JSON number
    'OCMF|{"RD":[{"RV":' + "9" * 5000 + '}]}|{"SD":"00"}',  # past Python's int limit
    "OCMF|" + "[" * 100_000 + "]" * 100_000 + '|{"SD":"00"}',  # too deep
    'OCMF|{"RD":[{"RV":1}]}|{"SD":"00"',  # cut off (a truncated record)
])
def test_anything_else_reads_as_none(text: str) -> None:
    assert ocmf.parse(text) is None


def test_a_field_of_another_type_reads_as_absent() -> None:
    record = ocmf.parse('OCMF|{"FV":1.0,"MS":null,"RD":[{"RV":"12.5","TM":7,"TX":true},'
                        '{"RV":true,"RU":["kWh"]}]}|{"SA":{},"SD":12}')
    assert record is not None
    assert (record.version, record.meter_serial, record.signature_algorithm,
            record.signature) == (None, None, None, None)
    first, second = record.readings
    assert (first.value, first.time, first.transaction) == (None, None, None)
    assert (second.value, second.unit) == (None, None)


@pytest.mark.parametrize(("text", "expected"), [
    ("2018-07-24T13:22:04,000+0200 S", (datetime(2018, 7, 24, 11, 22, 4, tzinfo=UTC), "S")),
    ("2018-07-24T13:22:04,5-0130 U",
     (datetime(2018, 7, 24, 14, 52, 4, 500000, tzinfo=UTC), "U")),
    ("2018-07-24T13:22:04.123+00:00", (datetime(2018, 7, 24, 13, 22, 4, 123000,
                                                tzinfo=UTC), None)),
    ("2018-02-31T13:22:04,000+0200 S", (None, None)),  # no such day
    ("2018-07-24T13:22:04,000+2400 S", (None, None)),  # no such offset
    # Beyond the calendar in UTC: was an OverflowError, an internal error of the query.
    ("0001-01-01T00:30:00,000+0100 S", (None, None)),
    ("9999-12-31T23:59:00,000-0100 S", (None, None)),
    ("2018-07-24 13:22:04", (None, None)),
    ("yesterday", (None, None)),
])
def test_ocmf_times(text: str, expected: tuple[datetime | None, str | None]) -> None:
    assert ocmf.parse_time(text) == expected
