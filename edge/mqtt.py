"""The MQTT connection: paho-mqtt 2 with a last will, reconnects and acknowledgements.

This module only talks to the broker. Connection changes and acknowledgements are
handed to a callback as :class:`LinkEvent` values, so that the publisher's
outbox state is only ever touched by the publisher's own thread (paho calls its
callbacks from its network thread while holding its own locks).
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

from edge.config import MqttConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LinkEvent:
    #: ``connected``, ``disconnected`` or ``acked``
    kind: str
    mid: int = 0
    detail: str = ""


EventCallback = Callable[[LinkEvent], None]


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
    ) -> None:
        self._config = config
        self._on_event = on_event
        self._connected = threading.Event()
        self.last_error = ""
        protocol = (
            MQTTProtocolVersion.MQTTv5 if config.protocol == "5" else MQTTProtocolVersion.MQTTv311
        )
        self._client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=protocol,
        )
        self._client.will_set(will_topic, will_payload, qos=1, retain=True)
        self._client.reconnect_delay_set(min_delay=1, max_delay=30)
        # The publisher keeps its own outbox; paho's queue only holds what is in flight.
        self._client.max_inflight_messages_set(100)
        if config.tls is not None:
            self._configure_tls()
        self._client.on_connect = self._handle_connect
        self._client.on_disconnect = self._handle_disconnect
        self._client.on_publish = self._handle_publish

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self) -> None:
        self._client.connect_async(
            self._config.host, self._config.port, keepalive=self._config.keepalive_s
        )
        self._client.loop_start()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> int:
        """Hand a message to paho; return its message id (acknowledged later by event)."""
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise ConnectionError(f"publish to {topic} refused: {paho.error_string(info.rc)}")
        return int(info.mid)

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _configure_tls(self) -> None:
        tls = self._config.tls
        assert tls is not None
        self._client.tls_set(
            ca_certs=str(tls.ca_file) if tls.ca_file else None,
            certfile=str(tls.cert_file) if tls.cert_file else None,
            keyfile=str(tls.key_file) if tls.key_file else None,
            cert_reqs=ssl.CERT_REQUIRED,
        )

    # paho callbacks, on paho's network thread --------------------------------------------

    def _handle_connect(
        self, client: Any, userdata: Any, flags: Any, reason: ReasonCode, properties: Any
    ) -> None:
        if reason.is_failure:
            # A refused CONNACK is not a connection: say so and let paho retry.
            self.last_error = f"broker refused the connection: {reason}"
            log.error("%s", self.last_error)
            return
        log.info("connected to mqtt %s:%d", self._config.host, self._config.port)
        self._connected.set()
        self._on_event(LinkEvent("connected"))

    def _handle_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason: ReasonCode, properties: Any
    ) -> None:
        was_connected = self._connected.is_set()
        self._connected.clear()
        if was_connected:
            self.last_error = f"disconnected from broker: {reason}"
            log.warning("%s", self.last_error)
        self._on_event(LinkEvent("disconnected", detail=str(reason)))

    def _handle_publish(
        self, client: Any, userdata: Any, mid: int, reason: ReasonCode, properties: Any
    ) -> None:
        if reason.is_failure:
            log.error("broker did not accept message %d: %s", mid, reason)
            return
        self._on_event(LinkEvent("acked", mid=mid))
