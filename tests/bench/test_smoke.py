"""Seconds-long runs of every benchmark, so they keep working (no timing asserted: the
numbers belong in docs/performance.md, measured with the full runs)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SMOKE = {
    "ocpp_validation": ["--messages", "200"],
    "store_inserts": ["--messages", "200", "--chargers", "10"],
    "webhook_store": ["--deliveries", "100", "--batch", "10"],
    "nested_query": ["--repeat", "1"],
    "analytics": ["--samples", "20000", "--repeat", "1"],
    "ocpp_throughput": ["--cps", "10", "--seconds", "1", "--rate", "0"],
    "ocpp_density": ["--cps", "50"],
    "ocpp_big_frames": ["--kinds", "dt_ascii", "mv_valid", "--repeat", "1"],
    "subscription_fanout": ["--subscribers", "10", "--rate", "20", "--seconds", "1"],
    # Two addresses of three nested subscriptions: the render queue, droppedBefore
    # accounting and the client processes all run, in a few seconds.
    "subscription_storm": ["--addresses", "2", "--per-address", "3", "--stations", "2",
                           "--rate", "20", "--seconds", "1", "--light", "2",
                           "--client-processes", "1", "--drain", "5"],
}


@pytest.mark.parametrize("name", sorted(SMOKE))
def test_benchmark_runs(name: str) -> None:
    result = subprocess.run([sys.executable, "-m", f"bench.{name}", *SMOKE[name]], cwd=ROOT,
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    written = json.loads((ROOT / "bench" / "results" / f"{name}.json").read_text())
    assert written["benchmark"] == name and written["rows"]
    if name == "subscription_storm":  # every nested subscription registered and heard
        storm = written["rows"][-1]
        assert storm["nested_ops"] == 6 and storm["nested_renders"] > 0, storm
