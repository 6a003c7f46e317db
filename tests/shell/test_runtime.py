"""The server process's garbage-collector settings."""

from __future__ import annotations

import gc
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import chargegraph.cli as cli_module
from tests.helpers import communicate, served_ports, wait_healthy
from tests.shell.test_process import clean_env


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
    monkeypatch.setattr(cli_module, "raise_open_file_limit", lambda: calls.append("nofile"))
    monkeypatch.setattr(cli_module.GracefulServer, "run",
                        lambda self, sockets=None: calls.append("run"))
    result = CliRunner().invoke(cli_module.app, ["serve", "--port", "1"])
    assert result.exit_code == 0, result.output
    assert calls == ["gc", "nofile", "run"]


def test_serve_raises_its_open_file_limit_to_the_hard_one(tmp_path: Path) -> None:
    """QA s24: at systemd's default soft limit (1024) a thousand sockets to the GraphQL
    port left no descriptor for new chargers or /healthz; the hard limit is what the
    administrator allows, and `serve` raises to it, saying so."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 256:
        pytest.skip(f"the hard limit ({hard}) leaves nothing to raise")

    def lowered() -> None:  # in the child, before it runs: as systemd starts a service
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))

    env = {**clean_env(tmp_path), "CHARGEGRAPH_JWT_SECRET": "r" * 40}
    process = subprocess.Popen(
        [sys.executable, "-m", "chargegraph", "serve", "--port", "0", "--ocpp-port", "0"],
        cwd=tmp_path, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        preexec_fn=lowered)
    try:
        wait_healthy(process, f"http://127.0.0.1:{served_ports(process)[0]}")
        limits = Path(f"/proc/{process.pid}/limits").read_text().splitlines()
        [line] = [line for line in limits if line.startswith("Max open files")]
        shown = "unlimited" if hard == resource.RLIM_INFINITY else str(hard)
        assert line.split()[3:5] == [shown, shown]  # soft and hard
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = communicate(process, 30)  # against a hang only
    assert f"INFO chargegraph: open-file limit: {shown} (raised from 256)" in stderr
