"""The server process's garbage-collector settings."""

from __future__ import annotations

import gc
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import chargegraph.cli as cli_module


def test_serve_tunes_the_collector_in_its_own_process() -> None:
    # In a child process: gc.freeze() in the test process would keep every test's garbage.
    code = ("import gc; from chargegraph.runtime import tune_garbage_collector, "
            "GC_GEN0_THRESHOLD; tune_garbage_collector(); "
            "assert gc.get_threshold()[0] == GC_GEN0_THRESHOLD; "
            "assert gc.get_freeze_count() > 1000; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "ok"
    assert gc.get_threshold()[0] != 0  # this process keeps its own settings


def test_serve_applies_them_before_running(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CHARGEGRAPH_DATABASE_URL", f"sqlite:///{tmp_path}/gc.db")
    monkeypatch.setenv("CHARGEGRAPH_JWT_SECRET", "s" * 40)
    monkeypatch.setattr(cli_module, "tune_garbage_collector", lambda: calls.append("gc"))
    monkeypatch.setattr(cli_module.GracefulServer, "run",
                        lambda self, sockets=None: calls.append("run"))
    result = CliRunner().invoke(cli_module.app, ["serve", "--port", "1"])
    assert result.exit_code == 0, result.output
    assert calls == ["gc", "run"]
