"""The broker connection: connect, retry, simulation mode, publish, subscribe, presence.

One paho client per connection: when a connection drops, its paho client is abandoned
with whatever it still had queued, and a fresh one connects. That is what guarantees
that a command whose moment has passed is never delivered late by paho's own resend.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from runner.model import TLSConfig
from runner.mqtt.tls import tls_context
from runner.ratelimitlog import RateLimitedLog
from runner.records import Delivery
from runner.topics import TopicFilter

log = logging.getLogger("mqtt")

CONNACK_TIMEOUT = 5.0  # seconds from TCP connect to the broker's answer
SOCKET_TIMEOUT = 5.0  # paho's connect timeout for the TCP (and TLS) handshake
MIN_BACKOFF = 0.1  # first background reconnect delay; doubles up to max_backoff
# Background retry period after a lost connection: a refused TCP connect to a local
# broker costs next to nothing, so the runner is back within this of the broker.
RECONNECT_DELAY = 0.1
OFFLINE_FLUSH_TIMEOUT = 1.0  # how long disconnect() waits for `offline` to be sent
# The largest packet sent when the broker names no limit (an MQTT 5 CONNACK's Maximum
# Packet Size): what SECURITY.md has brokers set, so a bigger one would get us cut off.
DEFAULT_MAX_PACKET = 65536
# Asked of the broker in CONNECT (MQTT 5 Maximum Packet Size): it discards bigger
# messages instead of sending them, so a 1 MB junk payload never reaches this process.
# The handler's payload limit (64 KiB) plus room for a topic and the header.
MAX_INCOMING_PACKET = 65536 + 1024
MAX_INCOMING_TOPIC = 1024  # bytes; a longer topic is junk, dropped before it is decoded
# MQTT 3.1.1 CONNACK 4/5 and their MQTT 5 reason codes: a person must fix the login.
AUTH_REFUSED = {4, 5, 134, 135}

MessageHandler = Callable[[str, bytes, bool], None]
Hook = Callable[[], None]


@dataclass(frozen=True)
class BrokerHealth:
    """The connection's figures for the dashboard; `since`: epoch of the last up/down change."""

    connected: bool
    simulation: bool
    since: float
    reconnects: int
    messages_in: int
    messages_out: int
    messages_dropped: int  # cut before any decoding (too large, junk topic)
    broker: str  # "host:port"
    gave_up: bool  # login or TLS refused: no more attempts


class _Attempt(Enum):
    CONNECTED = "connected"
    UNREACHABLE = "unreachable"  # worth trying again
    REFUSED = "refused"  # login or TLS refused: retrying cannot help


@dataclass(eq=False)
class _Link:
    """One paho client for one connection attempt, and how its CONNACK went."""

    paho: mqtt.Client
    connack: threading.Event = field(default_factory=threading.Event)
    reason: Any = None  # paho ReasonCode from CONNACK
    dropped: bool = False  # abandoned: a late CONNACK must not revive it
    closed_reason: str | None = None  # the connection closed before CONNACK
    max_packet: int = DEFAULT_MAX_PACKET  # the broker's Maximum Packet Size, when it says


def packet_size(topic: str, payload: str, qos: int) -> int:
    """Bytes of the PUBLISH packet (MQTT 3.1.1; one more for MQTT 5's property length)."""
    rest = 2 + len(topic.encode("utf-8")) + (2 if qos else 0) + len(payload.encode("utf-8")) + 1
    header = 2 + (rest > 127) + (rest > 16383) + (rest > 2097151)
    return header + rest


class MQTTClient:
    """The room's MQTT connection; never raises because the broker is away."""

    def __init__(self, host: str = "127.0.0.1", port: int = 1883, client_id: str = "runner",
                 *, username: str | None = None, password: str | None = None,
                 tls: TLSConfig | None = None, connect_retries: int = 5,
                 retry_delay: float = 2.0, keepalive: int = 30,
                 presence_topic: str | None = None, max_backoff: float = 5.0,
                 connack_timeout: float = CONNACK_TIMEOUT,
                 reconnect_delay: float | None = RECONNECT_DELAY,
                 fallback: bool = True, mqtt5: bool = True) -> None:
        self.host = host
        self.port = port
        self.client_id = client_id
        self._username = username
        self._password = password
        self._tls = tls
        self._connect_retries = max(1, connect_retries)
        self._retry_delay = retry_delay
        self._keepalive = keepalive
        self._presence_topic = presence_topic
        self._max_backoff = max(MIN_BACKOFF, max_backoff)
        # A fixed background retry period; None: MIN_BACKOFF doubling up to max_backoff.
        self._reconnect_delay = None if reconnect_delay is None else max(0.0, reconnect_delay)
        self._connack_timeout = connack_timeout
        # False: a connect() that fails just returns False (no simulation mode, no background
        # reconnect, no log line); the caller says what failed, with last_error's reason.
        self._fallback = fallback
        self.last_error = ""
        # MQTTv311 once a broker refused MQTT 5, or from the start without `mqtt5`.
        self._protocol = mqtt.MQTTv5 if mqtt5 else mqtt.MQTTv311
        self._v5_refused = False

        self._lock = threading.Lock()
        self._link: _Link | None = None  # the live connection, None while away
        self._simulation = False
        self._gave_up = False  # login or TLS refused: no more attempts
        self._ever_connected = False
        self._since = time.time()
        self._reconnects = 0
        self._messages_in = 0
        self._messages_out = 0
        self._messages_dropped = 0  # cut in _handle_message before any decoding
        self._subscriptions: dict[str, int] = {}
        # MQTT 5 brokers send one copy per matching subscription; each filter carries an
        # id (in the order subscribed) and only the copy for the lowest is handed on.
        self._sub_ids: dict[str, tuple[int, TopicFilter]] = {}
        self._on_message: MessageHandler | None = None
        self._on_connect: Hook | None = None
        self._on_disconnect: Hook | None = None

        self._closing = threading.Event()
        self._wake = threading.Event()
        self._supervisor: threading.Thread | None = None
        self._too_large = RateLimitedLog(log)
        self._dropped = RateLimitedLog(log)

    # -- state ---------------------------------------------------------------------

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def connected(self) -> bool:
        with self._lock:
            return self._link is not None

    @property
    def simulation(self) -> bool:
        """True after the first connect failed and until the broker is reached."""
        with self._lock:
            return self._simulation

    def health(self) -> BrokerHealth:
        """Figures for the dashboard, taken together under the lock."""
        with self._lock:
            return BrokerHealth(
                connected=self._link is not None,
                simulation=self._simulation,
                since=self._since,
                reconnects=self._reconnects,
                messages_in=self._messages_in,
                messages_out=self._messages_out,
                messages_dropped=self._messages_dropped,
                broker=self.address,
                gave_up=self._gave_up,
            )

    def set_handlers(self, on_message: MessageHandler | None = None,
                     on_connect: Hook | None = None,
                     on_disconnect: Hook | None = None) -> None:
        """Callbacks run in the network thread: they must return quickly."""
        with self._lock:
            self._on_message = on_message
            self._on_connect = on_connect
            self._on_disconnect = on_disconnect

    # -- connecting ------------------------------------------------------------------

    def connect(self) -> bool:
        """Try `connect_retries` times; False means simulation mode, retrying in background.

        With `fallback=False`, False means only that no attempt got through (why: last_error).
        """
        if self.connected:
            return True
        self._closing.clear()
        for attempt in range(1, self._connect_retries + 1):
            outcome, why = self._attempt()
            if outcome is _Attempt.CONNECTED:
                self._start_supervisor()
                return True
            if outcome is _Attempt.REFUSED:
                self._enter_simulation(give_up=True)
                return False
            self.last_error = why
            if self._fallback:
                log.warning("MQTT broker %s not reachable (attempt %d of %d): %s",
                            self.address, attempt, self._connect_retries, why)
            if attempt < self._connect_retries and self._closing.wait(self._retry_delay):
                return False
        if not self._fallback:
            return False
        self._enter_simulation(give_up=False)
        log.warning("SIMULATION mode: the broker %s did not answer, so commands are logged, "
                    "not sent; reconnecting in the background. Check that mosquitto runs "
                    "and broker.host/port in runner.yaml.", self.address)
        self._start_supervisor()
        self._wake.set()
        return False

    def _enter_simulation(self, *, give_up: bool) -> None:
        with self._lock:
            self._simulation = True
            self._gave_up = self._gave_up or give_up

    def _new_paho(self) -> mqtt.Client:
        if self._protocol == mqtt.MQTTv5:
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                                 protocol=mqtt.MQTTv5, reconnect_on_failure=False)
        else:
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                                 clean_session=True, reconnect_on_failure=False)
        client.connect_timeout = SOCKET_TIMEOUT
        # No local queue in front of the socket: a command goes now or not at all.
        client.max_inflight_messages_set(0)
        if self._username is not None:
            client.username_pw_set(self._username, self._password)
        if self._tls is not None:
            client.tls_set_context(tls_context(self._tls))
        if self._presence_topic:
            client.will_set(self._presence_topic, "offline", qos=1, retain=True)
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.on_message = self._handle_message
        return client

    def _attempt(self) -> tuple[_Attempt, str]:
        """One connection; MQTT 5 first, MQTT 3.1.1 from then on if the broker refuses it."""
        outcome, why = self._attempt_once()
        if outcome is _Attempt.UNREACHABLE and self._protocol == mqtt.MQTTv5 \
                and self._v5_refused:
            self._protocol = mqtt.MQTTv311
            log.warning("MQTT broker %s does not accept MQTT 5 (%s): using MQTT 3.1.1, "
                        "without asking it for a maximum packet size; cap it at the broker "
                        "(max_packet_size, SECURITY.md)", self.address, why)
            outcome, why = self._attempt_once()
        return outcome, why

    def _attempt_once(self) -> tuple[_Attempt, str]:
        """One connection with a fresh paho client; waits for CONNACK (never in paho's thread)."""
        self._v5_refused = False
        try:
            paho = self._new_paho()
        except (OSError, ValueError) as err:  # ssl.SSLError is an OSError
            files = ", ".join(f"{name} {path}" for name, path in (
                ("ca_file", self._tls and self._tls.ca_file),
                ("certfile", self._tls and self._tls.certfile),
                ("keyfile", self._tls and self._tls.keyfile)) if path)
            log.error("Cannot use the TLS files for MQTT broker %s (%s): %s. Check broker.tls "
                      "in runner.yaml; running in SIMULATION mode.", self.address, files,
                      getattr(err, "strerror", None) or err)
            return _Attempt.REFUSED, str(err)
        link = _Link(paho)
        paho.user_data_set(link)
        try:
            if self._protocol == mqtt.MQTTv5:
                paho.connect(self.host, self.port, self._keepalive, clean_start=True,
                             properties=connect_properties())
            else:
                paho.connect(self.host, self.port, self._keepalive)
        except ssl.SSLCertVerificationError as err:
            log.error("TLS with MQTT broker %s failed: %s. Check broker.tls.ca_file (the CA "
                      "that signed the broker's certificate) and that broker.host is the "
                      "name in that certificate; running in SIMULATION mode.",
                      self.address, err.verify_message or err)
            self._drop(link)
            return _Attempt.REFUSED, str(err)
        except (OSError, ValueError) as err:
            self._drop(link)
            return _Attempt.UNREACHABLE, str(err) or type(err).__name__
        sock = link.paho.socket()
        if isinstance(sock, socket.socket):  # TLS sockets included
            # Commands are tiny; Nagle would hold the second of two cues fired together.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        link.paho.loop_start()
        if not link.connack.wait(self._connack_timeout):
            self._drop(link)
            self._v5_refused = True  # amqtt leaves an MQTT 5 CONNECT unanswered
            return _Attempt.UNREACHABLE, f"no answer to CONNECT within {self._connack_timeout}s"
        reason = link.reason
        if reason is not None and not reason.is_failure:
            return _Attempt.CONNECTED, ""
        self._drop(link)
        if reason is not None and reason.value in AUTH_REFUSED:
            log.error("MQTT broker %s refused the login (%s): check broker.username and the "
                      "password (secrets.yaml or MQTT_PASSWORD) in runner.yaml; running in "
                      "SIMULATION mode without further attempts.", self.address, reason)
            return _Attempt.REFUSED, str(reason)
        # A broker that does not speak MQTT 5 refuses the version (1, 132) or just closes.
        self._v5_refused = reason is None or reason.value in (1, 132)
        if reason is None:
            return _Attempt.UNREACHABLE, f"connection closed before CONNACK ({link.closed_reason})"
        return _Attempt.UNREACHABLE, f"refused: {reason}"

    def _drop(self, link: _Link) -> None:
        """Abandon a connection and everything paho still holds for it."""
        with self._lock:
            link.dropped = True
            if self._link is link:
                self._link = None
                self._since = time.time()
        link.paho.on_connect = None
        link.paho.on_disconnect = None
        link.paho.on_message = None
        try:
            link.paho.disconnect()
        except Exception:  # already gone; nothing to tell anyone
            log.debug("disconnect of an abandoned connection failed", exc_info=True)
        link.paho.loop_stop()

    def _start_supervisor(self) -> None:
        if self._supervisor is None or not self._supervisor.is_alive():
            self._supervisor = threading.Thread(target=self._supervise,
                                                name="mqtt-reconnect", daemon=True)
            self._supervisor.start()

    def _supervise(self) -> None:
        """Reconnect in the background whenever woken, every `reconnect_delay` seconds.

        A refused login or TLS ends the attempts (no storm); without a fixed period the
        delay starts at MIN_BACKOFF and doubles up to max_backoff.
        """
        while not self._closing.is_set():
            self._wake.wait()
            self._wake.clear()
            fixed = self._reconnect_delay
            delay = MIN_BACKOFF if fixed is None else fixed
            while not self._closing.is_set() and not self.connected:
                outcome, why = self._attempt()
                if outcome is _Attempt.CONNECTED:
                    break
                if outcome is _Attempt.REFUSED:
                    self._enter_simulation(give_up=True)
                    return
                log.debug("reconnect to %s failed: %s; next try in %.2fs",
                          self.address, why, delay)
                if self._closing.wait(delay):
                    return
                if fixed is None:
                    delay = min(delay * 2, self._max_backoff)

    # -- paho callbacks (network thread: no waiting here) ------------------------------

    def _handle_connect(self, client: mqtt.Client, link: _Link, _flags: Any, reason: Any,
                        _props: Any) -> None:
        link.reason = reason
        limit = getattr(_props, "MaximumPacketSize", None)
        if isinstance(limit, int) and limit > 0:
            link.max_packet = limit
        if reason.is_failure:
            link.connack.set()
            return
        with self._lock:
            if link.dropped or self._closing.is_set():
                link.connack.set()
                return
            self._link = link
            self._since = time.time()
            if self._ever_connected:
                self._reconnects += 1
            self._ever_connected = True
            was_simulating = self._simulation
            self._simulation = False
            subscriptions = dict(self._subscriptions)
            hook = self._on_connect
        # Renewed on every connection, so retained presence refills the registry.
        for topic_filter, qos in subscriptions.items():
            client.subscribe(topic_filter, qos, properties=self._sub_props(topic_filter))
        if self._presence_topic:
            client.publish(self._presence_topic, "online", qos=1, retain=True)
        log.info("connected to MQTT broker %s%s", self.address,
                 " (simulation mode ended)" if was_simulating else "")
        link.connack.set()
        self._call(hook, "on_connect")

    def _handle_disconnect(self, _client: mqtt.Client, link: _Link, _flags: Any,
                           reason: Any, _props: Any) -> None:
        with self._lock:
            if self._link is not link:
                # Closed before a successful CONNACK (e.g. TLS client certificate
                # refused after the handshake): the waiting attempt need not time out.
                link.closed_reason = str(reason)
                link.connack.set()
                return
            self._link = None
            self._since = time.time()
            hook = self._on_disconnect
        if not self._closing.is_set():
            log.warning("lost the MQTT broker %s (%s): commands are not sent until it is "
                        "back (never late); reconnecting", self.address, reason)
            self._wake.set()
        self._call(hook, "on_disconnect")

    def _handle_message(self, _client: mqtt.Client, _link: _Link,
                        msg: mqtt.MQTTMessage) -> None:
        # Cheap checks on the raw bytes first: a flood of junk must cost no decoding, no
        # copy and no log line each (the playing scene's cues share this process).
        topic_bytes = len(getattr(msg, "_topic", b""))
        payload_bytes = len(msg.payload)
        with self._lock:
            self._messages_in += 1
            handler = self._on_message
            oversized = topic_bytes > MAX_INCOMING_TOPIC or payload_bytes > MAX_INCOMING_PACKET
            if oversized:
                self._messages_dropped += 1
        if oversized:
            self._dropped.warning("oversized-in", "dropped incoming message: topic %d bytes, "
                                  "payload %d bytes (limits %d and %d)", topic_bytes,
                                  payload_bytes, MAX_INCOMING_TOPIC, MAX_INCOMING_PACKET)
            return
        if handler is None:
            return
        topic = msg.topic
        if self._duplicate(topic, msg):
            return
        try:
            handler(topic, bytes(msg.payload), bool(msg.retain))
        except Exception:
            log.exception("message handler failed on %s; message dropped", msg.topic)

    @staticmethod
    def _call(hook: Hook | None, name: str) -> None:
        if hook is None:
            return
        try:
            hook()
        except Exception:
            log.exception("%s handler failed", name)

    # -- publishing and subscribing ------------------------------------------------------

    def publish(self, topic: str, payload: str, qos: int = 1, retain: bool = False) -> Delivery:
        """Send now or not at all: SENT, SIMULATED (simulation mode) or NOT_SENT."""
        with self._lock:
            link = self._link
            simulation = self._simulation
        if link is None:
            if simulation:
                log.info("SIMULATED %s = %s", topic, payload)
                return Delivery.SIMULATED
            log.warning("NOT SENT %s = %s: the broker %s is away", topic, payload, self.address)
            return Delivery.NOT_SENT
        size = packet_size(topic, payload, qos)
        if size > link.max_packet:
            # The broker would cut the connection, and every command with it.
            self._too_large.log(topic, logging.ERROR, "NOT SENT %s: %d bytes, more than the "
                                "broker accepts (%d)", topic, size, link.max_packet)
            return Delivery.FAILED
        try:
            info = link.paho.publish(topic, payload, qos=qos, retain=retain)
        except ValueError as err:
            log.error("NOT SENT %s = %s: %s", topic, payload, err)
            return Delivery.FAILED
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            # Whatever paho kept of it dies with this connection's client.
            log.warning("NOT SENT %s = %s: %s", topic, payload, mqtt.error_string(info.rc))
            return Delivery.NOT_SENT
        with self._lock:
            self._messages_out += 1
        log.debug("sent %s = %s", topic, payload)
        return Delivery.SENT

    def subscribe(self, topic_filter: str, qos: int = 1) -> None:
        """Remembered, and renewed on every (re)connect."""
        with self._lock:
            self._subscriptions[topic_filter] = qos
            if topic_filter not in self._sub_ids:
                self._sub_ids[topic_filter] = (len(self._sub_ids) + 1, TopicFilter(topic_filter))
            link = self._link
        if link is not None:
            link.paho.subscribe(topic_filter, qos, properties=self._sub_props(topic_filter))

    def _sub_props(self, topic_filter: str) -> Properties:
        props = Properties(PacketTypes.SUBSCRIBE)  # type: ignore[no-untyped-call]
        props.SubscriptionIdentifier = self._sub_ids[topic_filter][0]
        return props

    def _duplicate(self, topic: str, msg: mqtt.MQTTMessage) -> bool:
        """A copy sent for another of our overlapping subscriptions than the first one."""
        props = getattr(msg, "properties", None)
        carried = getattr(props, "SubscriptionIdentifier", None) if props else None
        if not carried:
            return False
        ids = set(carried) if isinstance(carried, list) else {carried}
        levels = topic.split("/")
        with self._lock:
            matching = [n for n, f in self._sub_ids.values() if f.match(levels)]
        return bool(matching) and min(matching) not in ids

    def disconnect(self) -> None:
        """Publish `offline` on the presence topic, close the connection, stop reconnecting."""
        self._closing.set()
        self._wake.set()
        if self._supervisor is not None and self._supervisor is not threading.current_thread():
            self._supervisor.join(timeout=self._connack_timeout + SOCKET_TIMEOUT)
        with self._lock:
            link = self._link
        if link is not None:
            if self._presence_topic:
                info = link.paho.publish(self._presence_topic, "offline", qos=1, retain=True)
                try:
                    info.wait_for_publish(OFFLINE_FLUSH_TIMEOUT)
                except (RuntimeError, ValueError):
                    log.debug("offline presence not confirmed before disconnect")
            with self._lock:
                self._link = None
                self._since = time.time()
            self._drop(link)
            log.info("disconnected from MQTT broker %s", self.address)


def connect_properties() -> Properties:
    """CONNECT's properties: the largest packet the broker may send us."""
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.MaximumPacketSize = MAX_INCOMING_PACKET
    return props

