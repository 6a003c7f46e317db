"""A real redis-server for tests, on a free loopback port in a temp folder.

Without ``redis-server`` on PATH the tests skip, unless ``CHARGEGRAPH_REQUIRE_REDIS=1``
(CI sets it), which turns the skip into a failure.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import pytest

from tests.helpers import free_port  # binds ("127.0.0.1", 0)

START_TIMEOUT_S = 10.0


def require_redis_server() -> str:
    """The ``redis-server`` binary, or skip (fail when CI demands Redis)."""
    binary = shutil.which("redis-server")
    if binary is None:
        message = "redis-server is not on PATH"
        if os.environ.get("CHARGEGRAPH_REQUIRE_REDIS") == "1":
            pytest.fail(message + " (CHARGEGRAPH_REQUIRE_REDIS=1)", pytrace=False)
        pytest.skip(message)
    return binary


def answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """``RedisServer().start()`` … ``cleanup()``, or ``with RedisServer() as server``.
    ``stop()`` and ``start()`` again restart it on the same port; ``pause()`` and
    ``resume()`` freeze it (SIGSTOP/SIGCONT), which looks like a dead network peer."""

    def __init__(self, port: int | None = None) -> None:
        self.binary = require_redis_server()
        self._fixed_port = port is not None
        self.port = port if port is not None else free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="chargegraph-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        for _ in range(1 if self._fixed_port else 3):
            if self._launch():
                return self
            # Another process took the free port between our probe and the bind.
            self.port = free_port()
        raise RuntimeError(f"redis-server did not start; see {self.dir / 'redis.log'}")

    def _launch(self) -> bool:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.dir), "--logfile", "redis.log"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.dir)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:  # exited: port taken, bad option, ...
                self.process = None
                return False
            if answers_ping(self.port):
                return True
            time.sleep(0.05)
        self.stop()
        return False

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        process.send_signal(signal.SIGCONT)  # a paused server cannot handle SIGTERM
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        try:
            return self.start()
        except BaseException:
            self.cleanup()
            raise

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.cleanup()
