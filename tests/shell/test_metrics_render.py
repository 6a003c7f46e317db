"""The text format ``chargegraph/metrics.py`` writes, without a server."""

from __future__ import annotations

from chargegraph.metrics import Family, MetricsRegistry, counters, render
from tests.e2e.test_metrics import parse, value


def test_label_values_are_escaped_and_numbers_written_plainly() -> None:
    text = render([Family("x_info", "gauge", "help", [({"v": 'a"b\\c\nd'}, 1)]),
                   Family("x_seconds", "gauge", "help", [({}, 1.5)])])
    assert 'x_info{v="a\\"b\\\\c\\nd"} 1\n' in text
    samples, _ = parse(text)
    assert value(samples, "x_info", v='a"b\\c\nd') == 1
    assert value(samples, "x_seconds") == 1.5


def test_counters_keep_each_result_apart_and_leave_out_zeros() -> None:
    registry = MetricsRegistry()
    for ok in (True, True, False):
        registry.ocpp_message("Heartbeat", ok)
    registry.ocpp_message("MeterValues", True)
    samples, types = parse(render(counters(registry)))
    name = "chargegraph_ocpp_messages_total"
    assert types[name] == "counter"
    assert value(samples, name, action="Heartbeat", result="ok") == 2
    assert value(samples, name, action="Heartbeat", result="CALLERROR") == 1
    assert value(samples, name, action="MeterValues", result="ok") == 1
    assert value(samples, name, action="MeterValues", result="CALLERROR") is None


def test_export_requests_are_counted_by_export_and_outcome() -> None:
    registry = MetricsRegistry()
    for outcome in ("ok", "ok", "invalid"):
        registry.export_request("sessions", outcome)
    samples, types = parse(render(counters(registry)))
    name = "chargegraph_export_requests_total"
    assert types[name] == "counter"
    assert value(samples, name, export="sessions", outcome="ok") == 2
    assert value(samples, name, export="sessions", outcome="invalid") == 1
