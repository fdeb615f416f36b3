"""A thin, owned wrapper over paho-mqtt 2.x: typed config, jittered reconnects, acks, safe handlers.

:class:`MqttConfig` is validated once. :class:`MqttClient` owns two threads:
paho's network thread (``loop_start`` in :meth:`MqttClient.start`,
``loop_stop`` in :meth:`MqttClient.close`) and a small ack thread that runs the
``on_ack`` callbacks of :meth:`MqttClient.publish`.

Threads and callbacks:

* message handlers and connect listeners run on paho's network thread; keep
  them short (hand long work to your own thread) or keepalives stall;
* ``on_ack`` runs on the ack thread, never on the caller's thread and never
  while paho holds its internal locks, so it may take the caller's locks and
  call :meth:`MqttClient.publish` again;
* an exception in any callback is logged and counted, and never stops a thread.

Reconnects: paho's own reconnect wait doubles a fixed delay with no jitter, so
a fleet that lost its broker would come back in lock-step. The client keeps
paho's reconnect loop but sets each wait itself, from :func:`backoff_delay`,
in paho's ``on_disconnect`` / ``on_connect_fail`` callbacks (both run just
before paho waits). Subscriptions are renewed on every connect.
"""

from __future__ import annotations

import logging
import queue
import random
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_sdk.mqtt.topics import MqttError, Topics

logger = logging.getLogger(__name__)

Handler = Callable[[str, bytes], None]
Will = tuple[str, bytes, int, bool]

PROTOCOLS = ("3.1.1", "5")
_SCHEMES = {"mqtt": (False, 1883), "mqtts": (True, 8883)}


def backoff_delay(attempt: int, minimum: float, maximum: float, rng: random.Random | None = None) -> float:
    """Seconds to wait before reconnect ``attempt`` (0 = the first retry): capped exponential, full jitter.

    The ceiling doubles from ``2 * minimum`` per attempt up to ``maximum``; the
    delay is drawn uniformly between ``minimum`` and that ceiling, so devices
    that lost the same broker spread their retries instead of arriving together.
    """
    ceiling = min(maximum, minimum * 2.0 ** (min(attempt, 62) + 1))
    return (rng or random).uniform(minimum, ceiling) if ceiling > minimum else minimum


@dataclass(frozen=True)
class MqttConfig:
    """Where and how to connect. Build it from a URL with :meth:`from_url`; it is validated on creation.

    ``keepalive`` also sets how fast the broker publishes the last will of a
    device that vanished (about 1.5 x keepalive). ``max_inflight`` bounds the
    QoS>0 messages awaiting an ack, ``max_queued`` all unacknowledged messages
    paho holds in memory (also while disconnected). ``clean_session=False``
    asks the broker to keep subscriptions and queued QoS>0 messages while the
    client is away; it needs a fixed ``client_id``.
    """

    host: str = "127.0.0.1"
    port: int = 1883
    tls: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    protocol: str = "3.1.1"
    keepalive: int = 30
    reconnect_min: float = 1.0
    reconnect_max: float = 60.0
    max_inflight: int = 20
    max_queued: int = 1000
    client_id: str = ""
    clean_session: bool = True
    prefix: str = "edge"
    connect_timeout: float = 10.0

    def __post_init__(self) -> None:
        for name in ("ca_file", "cert_file", "key_file"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value))
        _validate(self)

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> MqttConfig:
        """``mqtt://[user[:password]@]host[:port]`` (1883) or ``mqtts://...`` (TLS, 8883), plus any field by name."""
        if not isinstance(url, str):
            raise MqttError(f"broker URL must be a string, got {type(url).__name__}")
        parts = urlsplit(url)
        if parts.scheme not in _SCHEMES:
            raise MqttError(f"broker URL {url!r}: unsupported scheme {parts.scheme!r}; use mqtt://host:1883 "
                            "or mqtts://host:8883")
        tls, default_port = _SCHEMES[parts.scheme]
        try:
            port = parts.port
        except ValueError:
            raise MqttError(f"broker URL {url!r}: the port must be a number from 1 to 65535") from None
        if not parts.hostname:
            raise MqttError(f"broker URL {url!r}: no host; expected mqtt://host:1883")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise MqttError(f"broker URL {url!r}: unexpected path, query or fragment; expected mqtt://host:port")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise MqttError(f"unknown MQTT option {unknown[0]!r}; known options: {', '.join(sorted(known))}")
        values: dict[str, Any] = {
            "host": parts.hostname,
            "port": default_port if port is None else port,
            "tls": tls,
            "username": unquote(parts.username) if parts.username is not None else None,
            "password": unquote(parts.password) if parts.password is not None else None,
        }
        values.update(overrides)
        return cls(**values)

    @property
    def url(self) -> str:
        """The broker URL, without the password."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        user = f"{quote(self.username, safe='')}@" if self.username else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{host}:{self.port}"

    @property
    def topics(self) -> Topics:
        return Topics(self.prefix)

    def replace(self, **changes: Any) -> MqttConfig:
        return replace(self, **changes)


def _validate(c: MqttConfig) -> None:
    def bad(name: str, reason: str) -> MqttError:
        return MqttError(f"MQTT option {name!r}: {reason}")

    if not isinstance(c.host, str) or not c.host or any(ch.isspace() for ch in c.host):
        raise bad("host", f"expected a host name or address, got {c.host!r}")
    for name, low, high in (("port", 1, 65535), ("keepalive", 1, 65535), ("max_inflight", 1, 65535),
                            ("max_queued", 1, 10_000_000)):
        value = getattr(c, name)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise bad(name, f"expected a whole number from {low} to {high}, got {value!r}")
    for name in ("reconnect_min", "reconnect_max", "connect_timeout"):
        value = getattr(c, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 86400:
            raise bad(name, f"expected seconds > 0, got {value!r}")
    if c.reconnect_max < c.reconnect_min:
        raise bad("reconnect_max", f"{c.reconnect_max!r} is less than reconnect_min {c.reconnect_min!r}")
    if c.protocol not in PROTOCOLS:
        raise bad("protocol", f"expected one of {', '.join(PROTOCOLS)}, got {c.protocol!r}")
    for name in ("tls", "clean_session"):
        if not isinstance(getattr(c, name), bool):
            raise bad(name, f"expected true or false, got {getattr(c, name)!r}")
    if not isinstance(c.client_id, str) or len(c.client_id.encode()) > 65535:
        raise bad("client_id", f"expected a string, got {c.client_id!r}")
    if not c.clean_session and not c.client_id:
        raise bad("clean_session", "a persistent session (clean_session=False) needs a fixed client_id")
    if c.password is not None and c.username is None:
        raise bad("password", "a password needs a username")
    if (c.cert_file is None) != (c.key_file is None):
        raise bad("key_file" if c.key_file is None else "cert_file",
                  "a client certificate needs both cert_file and key_file")
    for name in ("ca_file", "cert_file", "key_file"):
        path = getattr(c, name)
        if path is None:
            continue
        if not c.tls:
            raise bad(name, "is set but TLS is off; use an mqtts:// URL or tls=True")
        if not path.is_file():
            raise bad(name, f"file {str(path)!r} does not exist or is not a file")
    Topics(c.prefix)  # raises TopicError (an MqttError) for a bad prefix


@dataclass
class _Subscription:
    topic_filter: str
    handler: Handler
    qos: int


@dataclass
class _Pending:
    on_ack: Callable[[], None] | None
    qos: int
    rejected: bool = False


class _QuietReconnects(logging.Filter):
    """paho logs an ERROR for every failed reconnect attempt; we already log a warning with the delay."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.ERROR and str(record.msg).startswith("Client is not connected"):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            # The level check already passed at ERROR: emit the downgraded record only where DEBUG is wanted.
            return _paho_logger.isEnabledFor(logging.DEBUG)
        return True


_paho_logger = logging.getLogger(f"{__name__}.paho")
_paho_logger.addFilter(_QuietReconnects())

_STOP = object()
_DISCONNECTED = object()


class MqttClient:
    """One connection to a broker, reconnected until :meth:`close`. Use it as a context manager.

    ``will`` is ``(topic, payload, qos, retain)``: what the broker publishes when
    this client vanishes without a clean disconnect.
    """

    def __init__(self, config: MqttConfig, *, will: Will | None = None) -> None:
        if not isinstance(config, MqttConfig):
            raise MqttError(f"expected an MqttConfig, got {type(config).__name__}; use MqttConfig.from_url(...)")
        self.config = config
        self.topics = config.topics
        self._will = _check_will(will)
        self._lock = threading.Lock()
        self._acked = threading.Condition(self._lock)
        self._subs: dict[str, _Subscription] = {}
        self._listeners: list[Callable[[], None]] = []
        self._pending: dict[int, _Pending] = {}
        self._early: dict[int, bool] = {}
        self._acks: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._ack_thread: threading.Thread | None = None
        self._connected = threading.Event()
        self._state = "new"
        self._attempt = 0
        self._rng = random.Random()
        self._handler_errors = 0
        self._callback_errors = 0
        self._rejected = 0
        self._paho = self._make_paho()

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background; returns at once. Use :meth:`wait_connected` to wait."""
        with self._lock:
            if self._state != "new":
                raise MqttError(f"start() called on a client that is {self._state}; create a new MqttClient")
            self._state = "started"
        self._ack_thread = threading.Thread(target=self._ack_loop, name="edge-sdk-mqtt-acks", daemon=True)
        self._ack_thread.start()
        c = self.config
        if c.protocol == "5":
            properties = None
            if not c.clean_session:
                properties = Properties(PacketTypes.CONNECT)
                properties.SessionExpiryInterval = 0xFFFFFFFF
            self._paho.connect_async(c.host, c.port, c.keepalive, clean_start=c.clean_session, properties=properties)
        else:
            self._paho.connect_async(c.host, c.port, c.keepalive)
        self._paho.reconnect_delay_set(c.reconnect_min, c.reconnect_min)
        self._paho.loop_start()
        logger.info("connecting to %s as %r", c.url, c.client_id or "<generated id>")

    def close(self) -> None:
        """Disconnect cleanly (the broker does not publish the will), stop and join both threads."""
        with self._lock:
            if self._state == "closed":
                return
            started = self._state == "started"
            self._state = "closed"
        if started:
            self._paho.disconnect()
            self._paho.loop_stop()  # joins paho's thread (paho skips the join when called from a callback)
            self._acks.put(_STOP)
            if self._ack_thread is not None and self._ack_thread is not threading.current_thread():
                self._ack_thread.join()
        self._connected.clear()
        logger.info("closed connection to %s", self.config.url)

    def __enter__(self) -> MqttClient:
        if self._state == "new":
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float | None = None) -> bool:
        """Block until connected (True) or until ``timeout`` seconds pass (False)."""
        return self._connected.wait(timeout)

    @property
    def handler_errors(self) -> int:
        """How many times a message handler raised."""
        return self._handler_errors

    @property
    def callback_errors(self) -> int:
        """How many times a connect listener or an ``on_ack`` callback raised."""
        return self._callback_errors

    @property
    def rejected(self) -> int:
        """QoS>0 messages the broker refused (MQTT 5 failure reason codes); their ``on_ack`` is not called."""
        return self._rejected

    # -- publishing -----------------------------------------------------------------------------

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False,
                on_ack: Callable[[], None] | None = None) -> bool:
        """Send (or queue, while disconnected) a message; False when it was not accepted.

        QoS 1/2 messages are kept in memory across reconnects and resent; when
        ``max_queued`` of them are unacknowledged, or a QoS 0 message finds no
        connection, the message is dropped and False returned. ``on_ack`` is
        called exactly once, when the broker acknowledges the message (PUBACK
        for QoS 1, PUBCOMP for QoS 2); never when it is dropped or refused.
        """
        if qos not in (0, 1, 2):
            raise MqttError(f"qos must be 0, 1 or 2, got {qos!r}")
        if on_ack is not None and qos == 0:
            raise MqttError("on_ack needs qos 1 or 2: a QoS 0 message is never acknowledged")
        if not isinstance(payload, (bytes, bytearray)):
            raise MqttError(f"payload must be bytes, got {type(payload).__name__}; encode it first")
        if self._state == "closed":
            logger.debug("publish to %r after close(): dropped", topic)
            return False
        try:
            info = self._paho.publish(topic, bytes(payload), qos, retain)
        except ValueError as exc:
            raise MqttError(f"cannot publish to {topic!r}: {exc}") from exc
        accepted = info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS or (
            info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN and qos > 0)
        if not accepted:
            logger.debug("publish to %r not accepted: %s", topic, paho.error_string(info.rc))
            return False
        entry = _Pending(on_ack, qos)
        with self._lock:
            early = self._early.pop(info.mid, None)
            if early is None:
                self._pending[info.mid] = entry
        if early is not None:
            entry.rejected = early
            self._acks.put(entry)
        return True

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every accepted QoS>0 message is acknowledged (True) or ``timeout`` passes (False)."""
        with self._acked:
            return self._acked.wait_for(lambda: not any(p.qos for p in self._pending.values()), timeout)

    # -- subscribing ----------------------------------------------------------------------------

    def subscribe(self, topic_filter: str, handler: Handler, qos: int = 1) -> None:
        """Call ``handler(topic, payload)`` for each message matching ``topic_filter``, now and after reconnects.

        Subscribing again to the same filter replaces its handler.
        """
        _check_filter(topic_filter)
        if qos not in (0, 1, 2):
            raise MqttError(f"qos must be 0, 1 or 2, got {qos!r}")
        sub = _Subscription(topic_filter, handler, qos)
        with self._lock:
            self._subs[topic_filter] = sub
        self._paho.message_callback_add(topic_filter, self._dispatcher(sub))
        if self._connected.is_set():
            self._paho.subscribe(topic_filter, qos)

    def unsubscribe(self, topic_filter: str) -> None:
        with self._lock:
            known = self._subs.pop(topic_filter, None) is not None
        if known:
            self._paho.message_callback_remove(topic_filter)
            if self._connected.is_set():
                self._paho.unsubscribe(topic_filter)

    def add_connect_listener(self, fn: Callable[[], None]) -> None:
        """Call ``fn()`` on paho's thread after every successful (re)connect.

        The subscriptions' SUBSCRIBE packets are already queued by then, so the
        broker handles them before anything ``fn`` publishes.
        """
        with self._lock:
            self._listeners.append(fn)

    # -- paho plumbing --------------------------------------------------------------------------

    def _make_paho(self) -> paho.Client:
        c = self.config
        if c.protocol == "5":
            client = paho.Client(CallbackAPIVersion.VERSION2, client_id=c.client_id, protocol=paho.MQTTv5)
        else:
            client = paho.Client(CallbackAPIVersion.VERSION2, client_id=c.client_id, protocol=paho.MQTTv311,
                                 clean_session=c.clean_session)
        client.enable_logger(_paho_logger)
        client.max_inflight_messages_set(c.max_inflight)
        client.max_queued_messages_set(c.max_queued)
        client.connect_timeout = float(c.connect_timeout)
        if c.username is not None:
            client.username_pw_set(c.username, c.password)
        if c.tls:
            try:
                client.tls_set(ca_certs=_str(c.ca_file), certfile=_str(c.cert_file), keyfile=_str(c.key_file))
            except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
                raise MqttError(f"TLS setup for {c.url} failed: {exc}; check ca_file, cert_file and key_file") \
                    from exc
        if self._will is not None:
            topic, payload, qos, retain = self._will
            client.will_set(topic, payload, qos, retain)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_unmatched
        return client

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            logger.warning("broker %s refused the connection: %s", self.config.url, reason)
            return
        self._attempt = 0
        _no_delay(client)
        self._connected.set()
        logger.info("connected to %s", self.config.url)
        with self._lock:
            subs = list(self._subs.values())
            listeners = list(self._listeners)
        for sub in subs:
            client.subscribe(sub.topic_filter, sub.qos)
        for fn in listeners:
            try:
                fn()
            except Exception:
                self._count("_callback_errors")
                logger.exception("connect listener %r raised; continuing", fn)

    def _on_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        delay = self._schedule_reconnect()
        logger.warning("cannot connect to %s; retrying in %.1f s", self.config.url, delay)

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self._connected.clear()
        self._acks.put(_DISCONNECTED)
        if self._state == "closed":
            return
        delay = self._schedule_reconnect()
        logger.warning("disconnected from %s (%s); reconnecting in %.1f s", self.config.url, reason, delay)

    def _schedule_reconnect(self) -> float:
        """Set paho's next reconnect wait to our jittered delay (paho calls this hook right before waiting)."""
        delay = backoff_delay(self._attempt, self.config.reconnect_min, self.config.reconnect_max, self._rng)
        self._attempt += 1
        self._paho.reconnect_delay_set(delay, delay)  # type: ignore[arg-type]  # paho accepts float seconds
        return delay

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        # Runs on paho's thread while paho holds its outgoing-message lock: hand over, never call user code here.
        self._acks.put((mid, bool(reason.is_failure)))

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, reasons: Any, properties: Any) -> None:
        for reason in reasons:
            if reason.is_failure:
                logger.warning("broker %s refused a subscription (mid %d): %s", self.config.url, mid, reason)

    def _on_unmatched(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        logger.debug("message on %r matched no handler", message.topic)

    def _dispatcher(self, sub: _Subscription) -> Callable[[paho.Client, Any, paho.MQTTMessage], None]:
        def dispatch(client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
            try:
                sub.handler(message.topic, message.payload)
            except Exception:
                self._count("_handler_errors")
                logger.exception("handler for %r raised on a message of %d bytes; continuing",
                                 sub.topic_filter, len(message.payload))

        return dispatch

    def _ack_loop(self) -> None:
        while True:
            item = self._acks.get()
            if item is _STOP:
                return
            if item is _DISCONNECTED:
                # QoS 0 messages not written before the connection dropped are gone; forget them.
                with self._lock:
                    for mid in [m for m, p in self._pending.items() if p.qos == 0]:
                        del self._pending[mid]
                continue
            if isinstance(item, tuple):
                mid, rejected = item
                with self._acked:
                    entry = self._pending.pop(mid, None)
                    if entry is None:  # acked before publish() returned; publish() hands the entry over
                        self._early[mid] = rejected
                        continue
                    entry.rejected = rejected
                    self._acked.notify_all()
            else:
                entry = item
            self._deliver_ack(entry)

    def _count(self, counter: str) -> None:
        with self._lock:
            setattr(self, counter, getattr(self, counter) + 1)

    def _deliver_ack(self, entry: _Pending) -> None:
        if entry.rejected:
            self._count("_rejected")
            logger.warning("broker refused a QoS %d message; it was not delivered", entry.qos)
            return
        if entry.on_ack is None:
            return
        try:
            entry.on_ack()
        except Exception:
            self._count("_callback_errors")
            logger.exception("on_ack callback %r raised; continuing", entry.on_ack)


def _no_delay(client: paho.Client) -> None:
    """Turn Nagle's algorithm off for this client's socket (paho leaves it on).

    With it on, a small packet (a chunk request, a PUBACK) written while an earlier one is unacknowledged
    waits for the peer's delayed ACK, about 40 ms on Linux: request/response traffic such as the OTA chunk
    transfer stalls in 40 ms steps. The broker's side of the connection is the broker's setting (Mosquitto:
    ``set_tcp_nodelay true``)."""
    sock = client.socket()
    if sock is None:
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):  # not a TCP socket (a unix socket, a websocket wrapper): nothing to tune
        pass


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)


def _check_filter(topic_filter: str) -> None:
    if not isinstance(topic_filter, str) or not topic_filter or len(topic_filter.encode()) > 65535:
        raise MqttError(f"invalid topic filter {topic_filter!r}")
    levels = topic_filter.split("/")
    for i, level in enumerate(levels):
        if ("+" in level and level != "+") or ("#" in level and (level != "#" or i != len(levels) - 1)):
            raise MqttError(f"invalid topic filter {topic_filter!r}: '+' must fill a whole level and '#' must be "
                            "the whole last level")


def _check_will(will: Will | None) -> Will | None:
    if will is None:
        return None
    try:
        topic, payload, qos, retain = will
    except (TypeError, ValueError):
        raise MqttError(f"will must be (topic, payload, qos, retain), got {will!r:.100}") from None
    if not isinstance(topic, str) or not topic or "+" in topic or "#" in topic:
        raise MqttError(f"will topic must be a topic without wildcards, got {topic!r}")
    if not isinstance(payload, (bytes, bytearray)):
        raise MqttError(f"will payload must be bytes, got {type(payload).__name__}")
    if qos not in (0, 1, 2) or not isinstance(retain, bool):
        raise MqttError(f"will qos must be 0, 1 or 2 and retain a bool, got qos={qos!r}, retain={retain!r}")
    return topic, bytes(payload), qos, retain

