"""A development MQTT broker on loopback, so the quick start needs no installed broker.

:class:`EmbeddedBroker` runs the ``mosquitto`` binary when one is installed
(a private process with a temporary config: one loopback listener, anonymous
access, no persistence), else the pure-Python ``amqtt`` broker in a thread with
its own asyncio loop. ``kind`` says which one runs.

It is for development only: anyone on the machine may connect without a
password, so it refuses to listen on anything but a loopback address. Fleets
use a real broker (Mosquitto, EMQX, HiveMQ) with TLS and authentication.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Protocol

from edge_sdk.errors import MissingDependencyError
from edge_sdk.mqtt.topics import MqttError

logger = logging.getLogger(__name__)

ENGINES = ("auto", "mosquitto", "python")
KINDS = ("mosquitto", "amqtt")
START_TIMEOUT_S = 10.0

_MOSQUITTO_PLACES = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto", "/opt/homebrew/sbin/mosquitto",
                     "/usr/local/opt/mosquitto/sbin/mosquitto")


def find_mosquitto() -> Path | None:
    """The ``mosquitto`` binary on PATH or in the usual sbin folders, or None."""
    found = shutil.which("mosquitto")
    if found:
        return Path(found)
    for place in _MOSQUITTO_PLACES:
        if os.access(place, os.X_OK):
            return Path(place)
    return None


def amqtt_available() -> bool:
    try:
        import amqtt.broker  # noqa: F401
    except ImportError:
        return False
    return True


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _check_port_free(host: str, port: int) -> None:
    # Brokers bind with SO_REUSEADDR, so a port in TIME_WAIT is usable; only a listener is in the way.
    with socket.socket(_family(host), socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise MqttError(f"port {port} on {host} is already in use (is another broker running?); "
                                "choose another port, or port 0 for a free one") from exc
            raise MqttError(f"cannot listen on {host}:{port}: {exc}") from exc


def _wait_listening(host: str, port: int, alive: Any, deadline: float) -> None:
    while True:
        if not alive():
            raise MqttError("the broker stopped while starting")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise MqttError(f"the broker did not listen on {host}:{port} within {START_TIMEOUT_S:.0f} s")
        time.sleep(0.02)


class _Backend(Protocol):
    def start(self, host: str, port: int) -> None: ...

    def stop(self) -> None: ...

    def alive(self) -> bool: ...


class _MosquittoBackend:
    def __init__(self, binary: Path) -> None:
        self._binary = binary
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, host: str, port: int) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="edge-sdk-broker-"))
        conf = self._dir / "mosquitto.conf"
        conf.write_text(
            "# edge-sdk development broker: loopback only, anonymous, nothing persisted\n"
            f"listener {port} {host}\n"
            "allow_anonymous true\n"
            "persistence false\n"
            "log_dest stderr\n"
            "log_type error\nlog_type warning\nlog_type notice\n"
        )
        try:
            with open(self._dir / "mosquitto.log", "wb") as log:
                # Own session: Ctrl-C in a terminal reaches us, and we stop mosquitto in order.
                self._proc = subprocess.Popen([str(self._binary), "-c", str(conf)], stdin=subprocess.DEVNULL,
                                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as exc:
            self._cleanup()
            raise MqttError(f"cannot run {str(self._binary)!r}: {exc}") from exc
        try:
            _wait_listening(host, port, self.alive, time.monotonic() + START_TIMEOUT_S)
        except MqttError as exc:
            tail = self._log_tail()
            self.stop()
            raise MqttError(f"mosquitto failed to start on {host}:{port}: {exc}; its log says: {tail}") from None

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                logger.warning("mosquitto (pid %d) did not stop within 5 s; killing it", proc.pid)
                proc.kill()
                proc.wait()
        elif proc is not None:
            logger.warning("mosquitto had already exited with code %s: %s", proc.returncode, self._log_tail())
        self._cleanup()

    def _log_tail(self) -> str:
        try:
            text = (self._dir / "mosquitto.log").read_text(errors="replace") if self._dir else ""
        except OSError:
            text = ""
        return " | ".join(text.strip().splitlines()[-5:]) or "(nothing)"

    def _cleanup(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


class _AmqttBackend:
    """amqtt's asyncio broker on a private event loop in a thread this object starts and joins."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._broker: Any = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self, host: str, port: int) -> None:
        try:
            from amqtt.broker import Broker
        except ImportError as exc:
            raise MissingDependencyError("amqtt", "broker", "the pure-Python development broker") from exc
        bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        config = {
            "listeners": {"default": {"type": "tcp", "bind": bind}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        self._ready.clear()
        self._error = None
        self._loop = asyncio.new_event_loop()

        async def serve() -> None:
            self._broker = Broker(config, loop=self._loop)
            await self._broker.start()

        def run() -> None:
            loop = self._loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(serve())
            except BaseException as exc:  # noqa: BLE001 - handed to the starting thread
                self._error = exc
                self._ready.set()
                _close_loop(loop)
                return
            self._ready.set()
            loop.run_forever()
            _close_loop(loop)

        self._thread = threading.Thread(target=run, name="edge-sdk-amqtt-broker", daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_S):
            raise MqttError(f"the amqtt broker did not start within {START_TIMEOUT_S:.0f} s")
        if self._error is not None:
            self._thread.join()
            self._thread = None
            raise MqttError(f"the amqtt broker failed to start on {bind}: {self._error}") from self._error
        # Broker.start() returns once its server listens. (No probe connection: amqtt would keep that
        # half-open session until shutdown and then leak its transport.)

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        thread, loop, broker = self._thread, self._loop, self._broker
        self._thread = self._broker = None
        if thread is None or loop is None:
            return
        if broker is not None and thread.is_alive():
            try:
                asyncio.run_coroutine_threadsafe(broker.shutdown(), loop).result(10)
            except Exception:  # stop anyway
                logger.exception("the amqtt broker did not shut down cleanly")
            loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        if thread.is_alive():
            logger.warning("the amqtt broker thread did not finish within 10 s")


def _close_loop(loop: asyncio.AbstractEventLoop) -> None:
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.run_until_complete(loop.shutdown_default_executor())
    loop.close()


class EmbeddedBroker:
    """A loopback MQTT broker for development: ``with EmbeddedBroker(port=0) as b: ... b.url``.

    ``port=0`` picks a free port once; :meth:`stop` then :meth:`start` again
    reuses it. ``engine`` is ``auto`` (mosquitto when installed, else amqtt),
    ``mosquitto`` or ``python`` (amqtt, MQTT 3.1.1 only).
    """

    def __init__(self, port: int = 1883, host: str = "127.0.0.1", engine: str = "auto") -> None:
        if not isinstance(host, str) or not is_loopback(host):
            raise MqttError(f"the development broker only listens on loopback (127.0.0.1, ::1, localhost), "
                            f"not {host!r}: it accepts anyone without a password. Use a real broker to serve a "
                            "network")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise MqttError(f"port must be 0 (a free port) or 1 to 65535, got {port!r}")
        if engine not in ENGINES:
            raise MqttError(f"unknown broker engine {engine!r}; choose one of {', '.join(ENGINES)}")
        self.host = host
        self.port = port
        self.engine = engine
        self.kind: str | None = None
        self._backend: _Backend | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"mqtt://{host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._backend is not None and self._backend.alive()

    def start(self) -> EmbeddedBroker:
        if self._backend is not None:
            raise MqttError(f"the broker on {self.url} is already running")
        kind, backend = self._choose()
        if self.port == 0:
            self.port = free_port(self.host)
        _check_port_free(self.host, self.port)
        backend.start(self.host, self.port)
        self._backend, self.kind = backend, kind
        logger.info("development broker (%s) listening on %s", kind, self.url)
        return self

    def stop(self) -> None:
        backend, self._backend = self._backend, None
        if backend is not None:
            backend.stop()
            logger.info("development broker (%s) on %s stopped", self.kind, self.url)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _choose(self) -> tuple[str, _Backend]:
        binary = find_mosquitto() if self.engine in ("auto", "mosquitto") else None
        if binary is not None:
            return "mosquitto", _MosquittoBackend(binary)
        if self.engine == "mosquitto":
            raise MqttError("no mosquitto binary on PATH or in /usr/sbin; install it (apt install mosquitto, "
                            "brew install mosquitto) or use the python engine")
        return "amqtt", _AmqttBackend()
