"""The MQTT connection: paho-mqtt 2, TLS, credentials, a last will, reconnects, acks.

This module only talks to the broker. Connection changes, acknowledgements and
incoming requests are handed to a callback as :class:`LinkEvent` values, so that
the publisher's outbox is only ever touched by the publisher's own thread.

The network loop is our own thread rather than paho's ``loop_start``: paho
retries with a fixed doubling delay and no jitter, so after a hub broker restart
every box of every clinic would reconnect in lock-step. Here each retry waits a
capped exponential delay with jitter (:class:`Backoff`), and every failure gets
one log line that says what to check: a refused CONNACK, an untrusted broker
certificate, a TLS handshake the broker rejected, an unreachable host.
"""

from __future__ import annotations

import logging
import random
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.reasoncodes import ReasonCode

from edge.common.mqttclient import Will, make_client
from edge.config import Config, MqttConfig
from edge.credentials import broker_password, check_tls_files
from edge.errors import ConfigError

log = logging.getLogger(__name__)

#: the Receive Maximum a broker that announces none allows (MQTT 5.0, 3.2.2.3.3)
DEFAULT_RECEIVE_MAXIMUM = 65535
#: CONNACK reason codes (MQTT 5 numbering, 3.1.1 codes 4 and 5 map onto them)
_BAD_CREDENTIALS = frozenset({134, 135})
#: how long a stop waits for the DISCONNECT to go out
STOP_GRACE_S = 2.0


@dataclass(frozen=True)
class LinkEvent:
    #: ``connected``, ``disconnected``, ``acked``, ``refused`` (a PUBACK with a failure
    #: reason, named in ``detail``) or ``message``
    kind: str
    mid: int = 0
    detail: str = ""
    topic: str = ""
    payload: bytes = b""
    #: from the CONNACK (``connected``): publishes the broker takes unacknowledged
    receive_maximum: int = DEFAULT_RECEIVE_MAXIMUM
    #: from the CONNACK (``connected``): the largest packet the broker takes, if it says
    max_packet: int | None = None


EventCallback = Callable[[LinkEvent], None]


class Backoff:
    """Capped exponential back-off with "equal jitter".

    The n-th delay is drawn from ``[d/2, d]`` with ``d = min(cap, first * 2**n)``:
    never less than half the nominal delay, so a box does not hammer a broker
    that refuses it, yet spread enough that many boxes do not retry in step.
    """

    def __init__(self, first_s: float, cap_s: float, rng: random.Random | None = None) -> None:
        self.first_s = first_s
        self.cap_s = cap_s
        self._rng = rng or random.Random()
        self._attempt = 0

    def next_delay(self) -> float:
        nominal = min(self.cap_s, self.first_s * 2.0 ** min(self._attempt, 32))
        self._attempt += 1
        return nominal / 2 + self._rng.uniform(0, nominal / 2)

    def reset(self) -> None:
        self._attempt = 0


class MqttLink:
    """One client connection to the broker, reconnecting by itself."""

    def __init__(
        self,
        config: MqttConfig,
        client_id: str,
        *,
        will_topic: str,
        will_payload: bytes,
        on_event: EventCallback,
        subscriptions: Sequence[str] = (),
        password: str | None = None,
        password_source: Callable[[], str | None] | None = None,
    ) -> None:
        self._config = config
        #: read again before each connection attempt: a fixed password needs no restart
        self._password_source = password_source
        #: cuts a reconnect wait short (stop, or a SIGHUP asking to try at once)
        self._wake = threading.Event()
        self._on_event = on_event
        self._subscriptions = tuple(subscriptions)
        self._connected = threading.Event()
        self._stopping = threading.Event()
        self._backoff = Backoff(config.reconnect_min_s, config.reconnect_max_s)
        #: what went wrong last, for health; empty once connected
        self.last_error = ""
        self._socket_error = ""
        self._reported = False
        self._accepted = False
        self._client = self._make_client(client_id, password, Will(will_topic, will_payload))
        self._thread = threading.Thread(target=self._run, name="mqtt", daemon=True)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def where(self) -> str:
        return f"{self._config.host}:{self._config.port}"

    def start(self) -> None:
        config = self._config
        # The box keeps no session on the broker: its outbox is the journal, and
        # it sends everything unacknowledged again after every connect.
        options: dict[str, Any] = {"clean_start": True} if config.protocol == "5" else {}
        self._client.connect_async(config.host, config.port, config.keepalive_s, **options)
        self._thread.start()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> int:
        """Hand a message to paho; return its message id (acknowledged later by event)."""
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise ConnectionError(f"publish to {topic} refused: {paho.error_string(info.rc)}")
        return int(info.mid)

    def retry_now(self) -> None:
        """Cut the wait before the next connection attempt short (after a fix, on SIGHUP)."""
        self._wake.set()

    def stop(self) -> None:
        """Disconnect cleanly (the broker then sends no last will) and end the thread."""
        self._stopping.set()
        self._wake.set()
        self._client.disconnect()
        self._thread.join(timeout=STOP_GRACE_S + 3)

    # -- the network thread ----------------------------------------------------------------

    def _make_client(self, client_id: str, password: str | None, will: Will) -> paho.Client:
        config = self._config
        client = make_client(
            client_id,
            protocol=config.protocol,
            tls=config.tls,
            username=config.username,
            password=password,
            will=will,
        )
        # No cap in paho: the publisher keeps what is in flight within the Receive
        # Maximum the broker announces, which paho does not read from the CONNACK.
        client.max_inflight_messages_set(0)
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.on_publish = self._handle_publish
        client.on_message = self._handle_message
        client.on_log = self._handle_log
        # Packets are written by this link's thread only: without this, paho
        # writes to the socket from whichever thread calls publish(), while
        # our thread may be writing too.
        client.on_socket_register_write = _ignore_socket
        return client

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                if self._attempt():
                    self._serve()
            except Exception as exc:  # a bug in a callback must not end all delivery
                log.exception("mqtt %s: connection failed unexpectedly", self.where)
                self.last_error = f"{type(exc).__name__}: {exc}"
            if self._stopping.is_set():
                break
            delay = self._backoff.next_delay()
            log.debug("reconnecting to mqtt %s in %.1f s", self.where, delay)
            self._wake.wait(delay)
            self._wake.clear()

    def _attempt(self) -> bool:
        """Open the socket (and TLS) and send CONNECT; False with a log line on failure."""
        self._socket_error = ""
        self._reported = False
        self._accepted = False
        if not self._refresh_password():
            return False
        try:
            self._client.reconnect()
        except ssl.SSLCertVerificationError as exc:
            self._failed(
                f"TLS: the broker's certificate is not trusted ({exc.verify_message}); "
                "is mqtt.tls.ca_file the CA that signed it, and does it name this host?"
            )
        except ssl.SSLError as exc:
            self._failed(f"TLS handshake with the broker failed: {exc.reason or exc}")
        except OSError as exc:
            self._failed(f"cannot reach the broker: {exc.strerror or exc}")
        else:
            return True
        return False

    def _refresh_password(self) -> bool:
        """Read the password file or credential again; False (logged) when it cannot be."""
        if self._password_source is None or self._config.username is None:
            return True
        try:
            self._client.username_pw_set(self._config.username, self._password_source())
        except ConfigError as exc:
            self._failed(str(exc))
            return False
        return True

    def _serve(self) -> None:
        """Run paho's network loop until the connection ends."""
        stop_deadline: float | None = None
        while True:
            rc = self._client.loop(timeout=0.5)
            if rc != paho.MQTT_ERR_SUCCESS:
                break
            if self._stopping.is_set():
                stop_deadline = stop_deadline or time.monotonic() + STOP_GRACE_S
                if time.monotonic() > stop_deadline:
                    break
        if not (self._stopping.is_set() or self._accepted or self._reported):
            # Closed before any CONNACK: a TLS broker that wants a client
            # certificate rejects the handshake only when it first reads.
            hint = (
                "; it wants a client certificate: set mqtt.tls.cert_file and key_file"
                if "CERTIFICATE_REQUIRED" in self._socket_error
                else ""
            )
            self._failed(
                "the broker closed the connection before accepting it"
                f"{_because(self._socket_error)}{hint}"
            )

    def _failed(self, message: str) -> None:
        # One ERROR line per distinct failure: a broker down for a night is one
        # line (and health's broker.last_error), not one per retry.
        level = logging.DEBUG if message == self.last_error else logging.ERROR
        self._reported = True
        self.last_error = message
        log.log(level, "mqtt %s: %s", self.where, message)

    # paho callbacks, on this link's thread ---------------------------------------------------

    def _handle_connect(
        self, client: Any, userdata: Any, flags: Any, reason: ReasonCode, properties: Any
    ) -> None:
        if reason.is_failure:
            hint = (
                " (check mqtt.username and the password file or credential)"
                if reason.value in _BAD_CREDENTIALS
                else ""
            )
            self._failed(f"the broker refused the connection: {reason}{hint}")
            return
        # Our outbox resends everything unacknowledged, in order, after this
        # event; paho's own copies would go out first and twice.
        client.drop_out_messages()
        for topic in self._subscriptions:
            client.subscribe(topic, qos=1)
        self._backoff.reset()
        self._accepted = True
        self.last_error = ""
        log.info("connected to mqtt %s", self.where)
        self._connected.set()
        self._on_event(
            LinkEvent(
                "connected",
                receive_maximum=_property(properties, "ReceiveMaximum", DEFAULT_RECEIVE_MAXIMUM),
                max_packet=_property(properties, "MaximumPacketSize", None),
            )
        )

    def _handle_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason: ReasonCode, properties: Any
    ) -> None:
        if not self._connected.is_set():
            return
        self._connected.clear()
        if not self._stopping.is_set():
            if getattr(flags, "is_disconnect_packet_from_server", False):
                self.last_error = f"the broker disconnected us: {reason}"
            else:
                self.last_error = f"connection lost{_because(self._socket_error)}"
            log.warning("mqtt %s: %s", self.where, self.last_error)
        self._on_event(LinkEvent("disconnected", detail=str(reason)))

    def _handle_publish(
        self, client: Any, userdata: Any, mid: int, reason: ReasonCode, properties: Any
    ) -> None:
        if reason.is_failure:
            # Refused (an ACL, a quota): the publisher keeps it and decides when to retry.
            self._on_event(LinkEvent("refused", mid=mid, detail=str(reason).lower()))
            return
        self._on_event(LinkEvent("acked", mid=mid))

    def _handle_message(self, client: Any, userdata: Any, message: paho.MQTTMessage) -> None:
        self._on_event(LinkEvent("message", topic=message.topic, payload=bytes(message.payload)))

    def _handle_log(self, client: Any, userdata: Any, level: int, text: str) -> None:
        if level == paho.MQTT_LOG_ERR:
            self._socket_error = text
            log.debug("paho: %s", text)


def box_link(config: Config, on_event: EventCallback) -> MqttLink:
    """The appliance's link: its client id, ``offline`` as last will, its subscriptions.

    Every TLS file is checked first, so that a missing one stops the start with its
    key path instead of paho's traceback; the password is read again before every
    connection attempt.

    Raises
    ------
    ConfigError
        A TLS file, the password file or the credential cannot be read.
    """
    check_tls_files(config.mqtt)
    return MqttLink(
        config.mqtt,
        config.mqtt.client_id or f"edge-{config.site}-{config.device}",
        will_topic=config.topic("status"),
        will_payload=b"offline",
        on_event=on_event,
        subscriptions=[config.topic(leaf) for leaf in ("health/get", "confirm", "resend")],
        password=broker_password(config.mqtt),
        password_source=lambda: broker_password(config.mqtt),
    )


def _property(properties: Any, name: str, default: Any) -> Any:
    """A CONNACK property, or ``default`` when the broker did not send it (or spoke 3.1.1)."""
    value = getattr(properties, name, None)
    return value if isinstance(value, int) and value > 0 else default


def _because(socket_error: str) -> str:
    return f" ({socket_error})" if socket_error else ""


def _ignore_socket(client: Any, userdata: Any, sock: Any) -> None:
    """paho's write-registration hook, unused: our loop selects for writing itself."""
