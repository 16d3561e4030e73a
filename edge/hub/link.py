"""The collector's MQTT 5 session: persistent, a shared subscription, manual acknowledgements.

Results and events come through an MQTT 5 shared subscription
(``$share/<group>/...``): collectors of one group split that stream, each
message going to one of them. Health and status are retained "latest state"
messages, and a shared subscription never receives retained messages, so every
collector subscribes to them directly.

The session is persistent (clean start off, a session expiry), and paho does not
acknowledge on its own (``manual_ack``): the collector calls :meth:`ack` once the
message is committed, so whatever arrives while the collector is down, or
before it commits, is sent again by the broker.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from edge.common.mqttclient import make_client
from edge.hub.config import HubMqttConfig, read_secret
from edge.hub.errors import HubError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Delivery:
    """One message as the broker delivered it, and which connection it came on."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    #: the connection's number: an ack is only valid on the connection it came on
    link: int


def subscriptions(mqtt: HubMqttConfig) -> list[str]:
    """The topic filters: shared for the streams, direct for the retained state."""
    shared = f"$share/{mqtt.group}/{mqtt.topic_prefix}/+/+"
    direct = f"{mqtt.topic_prefix}/+/+"
    streams = [f"{shared}/{leaf}" for leaf in ("results", "shadow", "events", "hello")]
    return [*streams, f"{direct}/health", f"{direct}/status"]


class SessionLink:
    """One collector's connection to the broker, reconnecting by itself.

    ``on_delivery`` is called on paho's network thread for every message; it must
    only hand the message over (to a queue).
    """

    def __init__(self, config: HubMqttConfig, on_delivery: Callable[[Delivery], None]) -> None:
        self._config = config
        self._on_delivery = on_delivery
        self._ack_lock = threading.Lock()
        self._link = 0
        self._closing = threading.Event()
        #: set when the broker refused a subscription: the collector cannot do its job
        self.fatal: str | None = None
        self._client = self._make_client()

    def start(self) -> None:
        config = self._config
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = config.session_expiry_s
        properties.ReceiveMaximum = config.receive_maximum
        self._client.connect_async(
            config.host, config.port, keepalive=config.keepalive_s, clean_start=False,
            properties=properties,
        )  # fmt: skip
        self._client.loop_start()

    def stop(self) -> None:
        """Disconnect; the broker keeps the session and what is not acknowledged."""
        self._closing.set()
        self._client.disconnect()
        self._client.loop_stop()

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> bool:
        """Hand a QoS 1 message to paho (a confirmation, a re-send request); False if it
        could not be queued (paho keeps what is queued across its reconnects)."""
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            log.warning("cannot publish on %s now: %s", topic, paho.error_string(info.rc))
            return False
        return True

    def ack(self, delivery: Delivery) -> None:
        """Acknowledge ``delivery`` (a PUBACK), if its connection is still the current one."""
        with self._ack_lock:
            if delivery.link != self._link:
                # The connection it came on is gone; the broker sends it again and the
                # store counts the re-delivery.
                return
            self._client.ack(delivery.mid, delivery.qos)

    # -- paho, on its network thread -----------------------------------------------------

    def _make_client(self) -> paho.Client:
        client = hub_client(self._config, self._config.client_id, manual_ack=True)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        return client

    def _on_connect(
        self, client: Any, userdata: Any, flags: Any, reason: ReasonCode, properties: Any
    ) -> None:
        if reason.is_failure:
            log.error("broker refused the connection: %s", reason)
            return
        log.info("connected (session present: %s)", bool(flags.session_present))
        options = SubscribeOptions(qos=1)
        client.subscribe([(topic, options) for topic in subscriptions(self._config)])

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        mqtt = self._config
        log.warning("cannot reach the broker at %s:%d; retrying", mqtt.host, mqtt.port)

    def _on_subscribe(
        self, client: Any, userdata: Any, mid: int, reasons: list[ReasonCode], properties: Any
    ) -> None:
        topics = subscriptions(self._config)
        # Granted QoS 0 is a refusal too: the broker would not queue for an absent collector.
        refused = [
            f"{topic}: {reason}"
            for topic, reason in zip(topics, reasons, strict=False)
            if reason.is_failure or reason.value < 1
        ]
        if refused:
            self.fatal = "broker refused subscriptions: " + "; ".join(refused)
            log.error("%s", self.fatal)
            return
        log.info("subscribed to %s", ", ".join(topics))

    def _on_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason: ReasonCode, properties: Any
    ) -> None:
        with self._ack_lock:
            self._link += 1
        if not self._closing.is_set():
            log.warning("disconnected from broker (%s); reconnecting", reason)

    def _on_message(self, client: Any, userdata: Any, message: paho.MQTTMessage) -> None:
        self._on_delivery(
            Delivery(message.topic, bytes(message.payload), message.mid, message.qos, self._link)
        )


def hub_client(mqtt: HubMqttConfig, client_id: str, *, manual_ack: bool) -> paho.Client:
    """A paho MQTT 5 client with the hub's credentials and TLS (reconnecting by itself)."""
    password = None
    if mqtt.username is not None and mqtt.password_file:
        password = read_secret(mqtt.password_file)
    return make_client(
        client_id,
        tls=mqtt.tls,
        username=mqtt.username,
        password=password,
        reconnect_on_failure=True,
        manual_ack=manual_ack,
    )


def publish_once(mqtt: HubMqttConfig, topic: str, payload: bytes, timeout_s: float = 30.0) -> None:
    """Publish one QoS 1 message under a client id of its own, and wait for the PUBACK.

    Raises
    ------
    HubError
        When the broker cannot be reached, refuses the connection or the message.
    """
    client = hub_client(mqtt, f"{mqtt.client_id}-cli-{os.getpid()}"[:64], manual_ack=False)
    try:
        client.connect(mqtt.host, mqtt.port, keepalive=mqtt.keepalive_s)
    except OSError as exc:
        raise HubError(f"cannot reach the broker at {mqtt.host}:{mqtt.port}: {exc}") from exc
    client.loop_start()
    try:
        info = client.publish(topic, payload, qos=1)
        info.wait_for_publish(timeout=timeout_s)
        if not info.is_published():
            raise HubError(f"the broker did not acknowledge the message on {topic}")
    except (RuntimeError, ValueError) as exc:
        raise HubError(f"the broker refused the message on {topic}: {exc}") from exc
    finally:
        client.disconnect()
        client.loop_stop()
