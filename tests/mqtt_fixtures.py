"""A private Mosquitto broker for tests, independent of the code under test.

Use it from a test module with ``from mqtt_fixtures import mosquitto_broker_fixture  # noqa: F401``
and ask for ``mosquitto_broker`` (or list the module in the root conftest's ``pytest_plugins``). The fixture starts ``mosquitto`` on a free
loopback port with a temporary config (listener on 127.0.0.1 only, anonymous, no
persistence) and yields a :class:`MosquittoBroker` with ``host``, ``port``, ``url``
and ``stop()`` / ``start()`` to take the broker away and bring it back on the same port.
Tests are skipped, with the reason, when no ``mosquitto`` binary is installed.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

_PLACES = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto", "/opt/homebrew/sbin/mosquitto")


def mosquitto_binary() -> str | None:
    found = shutil.which("mosquitto")
    if found:
        return found
    return next((p for p in _PLACES if os.access(p, os.X_OK)), None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MosquittoBroker:
    """One mosquitto process at a time on a fixed loopback port."""

    host = "127.0.0.1"

    def __init__(self, binary: str, workdir: Path, port: int | None = None) -> None:
        self.binary = binary
        self.port = port or _free_port()
        self.workdir = workdir
        self.config = workdir / "mosquitto.conf"
        self.log = workdir / "mosquitto.log"
        self.config.write_text(
            f"listener {self.port} {self.host}\n"
            "allow_anonymous true\n"
            "persistence false\n"
            "log_dest stderr\n"
            "log_type all\n"
        )
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        assert self._proc is None, "already running"
        with open(self.log, "ab") as log:
            self._proc = subprocess.Popen([self.binary, "-c", str(self.config)], stdin=subprocess.DEVNULL,
                                          stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self._proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"mosquitto did not listen on {self.port}: {self.log.read_text()[-2000:]}")
                time.sleep(0.02)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def private_broker(tmp_path_factory):
    """Start a private mosquitto (skip the test when none is installed); yields it, stops it afterwards."""
    binary = mosquitto_binary()
    if binary is None:
        pytest.skip("no mosquitto binary on PATH or in /usr/sbin (apt install mosquitto)")
    broker = MosquittoBroker(binary, tmp_path_factory.mktemp("mosquitto"))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(name="mosquitto_broker")
def mosquitto_broker_fixture(tmp_path_factory):
    yield from private_broker(tmp_path_factory)
