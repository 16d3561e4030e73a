"""An MQTT 5 subscriber with a persistent session (clean start off, session expiry),
which the broker keeps across its own restarts, like the hub's collector."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


class HubSession:
    """A subscriber whose session (subscription and queued messages) outlives broker restarts.

    Every message received is kept in order: ``results()`` decodes the result
    documents, duplicates included.
    """

    def __init__(self, port: int, topics: list[str], client_id: str) -> None:
        self._lock = threading.Lock()
        self.received: list[tuple[str, bytes]] = []
        self._client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=paho.MQTTv5,
        )
        self._client.reconnect_delay_set(min_delay=1, max_delay=2)
        self.subscribed = threading.Event()
        self._client.on_message = self._on_message
        self._client.on_connect = lambda client, *_: client.subscribe([(t, 1) for t in topics])
        self._client.on_subscribe = lambda *_: self.subscribed.set()
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = 3600
        self._client.connect("127.0.0.1", port, clean_start=False, properties=properties)
        self._client.loop_start()

    def _on_message(self, client: Any, userdata: Any, message: paho.MQTTMessage) -> None:
        with self._lock:
            self.received.append((message.topic, bytes(message.payload)))

    def results(self) -> list[dict[str, Any]]:
        with self._lock:
            payloads = [payload for topic, payload in self.received if topic.endswith("/results")]
        return [json.loads(payload) for payload in payloads]

    def topics(self) -> list[str]:
        """The topic of every message received, in order."""
        with self._lock:
            return [topic for topic, _payload in self.received]

    def raw_results(self) -> list[bytes]:
        with self._lock:
            return [payload for topic, payload in self.received if topic.endswith("/results")]

    def wait_results(self, count: int, timeout: float) -> list[dict[str, Any]]:
        """Wait until results for ``count`` distinct studies arrived; return all received."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            results = self.results()
            if len({result["study_uid"] for result in results}) >= count:
                return results
            time.sleep(0.1)
        results = self.results()
        raise TimeoutError(
            f"{len({r['study_uid'] for r in results})} of {count} studies within {timeout}s"
        )

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()
