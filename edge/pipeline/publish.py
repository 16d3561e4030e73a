"""The messages the appliance publishes, and the topics they go to.

``results``: one ``edge.result/1`` message per study (JSON Schema in
``edge/schemas/result.schema.json``, documented in ``docs/messages.md``). No
message carries a patient's name, birth date or ID: a study is named by its
Study Instance UID and accession number only.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edge.mqtt import LinkEvent, MqttLink
from edge.types import ImageScore, StudyResult

log = logging.getLogger(__name__)

RESULT_SCHEMA = "edge.result/1"


def result_message(result: StudyResult, *, site: str, device: str) -> dict[str, Any]:
    """The ``edge.result/1`` document for ``result``."""
    return {
        "schema": RESULT_SCHEMA,
        "id": result.id,
        "site": site,
        "device": device,
        "study_uid": result.study_uid,
        "accession": result.accession,
        "model": {
            "name": result.engine.name,
            "version": result.engine.version,
            "sha256": result.engine.sha256,
            "backend": result.engine.backend,
        },
        "study": {
            "score": _round(result.score),
            "suspicious": result.suspicious,
            "threshold": result.threshold,
        },
        "breasts": {
            side: {"score": _round(breast.score), "suspicious": breast.suspicious}
            for side, breast in sorted(result.breasts.items())
        },
        "images": [_image(image) for image in result.images],
        "missing_views": list(result.missing_views),
        "closed_by": result.closed_by,
        "timings_ms": {name: round(value, 2) for name, value in result.timings_ms.items()},
        "created_at": result.created_at,
    }


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":"), sort_keys=True).encode()


def _image(image: ImageScore) -> dict[str, Any]:
    header = image.header
    return {
        "sop_uid": header.sop_uid,
        "laterality": header.laterality,
        "view": header.view,
        "screening": header.screening,
        "score": _round(image.score),
    }


def _round(value: float) -> float:
    return round(value, 6)


@dataclass(frozen=True)
class OutgoingMessage:
    """A message that must reach the broker: kept until its PUBACK."""

    key: str
    topic: str
    payload: bytes
    retain: bool = False


DeliveredCallback = Callable[[OutgoingMessage], None]


class Publisher:
    """Delivers results at least once, in order, through an :class:`~edge.mqtt.MqttLink`.

    Results wait in the outbox until the broker acknowledges them. After every
    reconnect, everything unacknowledged is sent again in the order it was
    submitted, and only then is ``online`` published. All outbox state is owned by
    this class's thread; other threads talk to it through its event queue.
    """

    def __init__(
        self,
        link_factory: Callable[[Callable[[LinkEvent], None]], MqttLink],
        *,
        status_topic: str,
        on_delivered: DeliveredCallback | None = None,
    ) -> None:
        self._events: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._link = link_factory(lambda event: self._events.put(("link", event)))
        self._status_topic = status_topic
        self._on_delivered = on_delivered
        self._outbox: OrderedDict[str, OutgoingMessage] = OrderedDict()
        self._in_flight: dict[int, str] = {}
        self._sent: set[str] = set()
        self._connected = False
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="publish", daemon=True)
        self.delivered = 0
        #: outbox size, readable from other threads
        self.backlog = 0

    @property
    def link(self) -> MqttLink:
        return self._link

    def start(self) -> None:
        self._thread.start()
        self._link.start()

    def submit(self, message: OutgoingMessage) -> None:
        self._events.put(("submit", message))

    def publish_now(self, topic: str, payload: bytes, *, retain: bool) -> None:
        """Publish a message that only matters while current (health): never queued."""
        self._events.put(("now", OutgoingMessage("", topic, payload, retain)))

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float) -> None:
        """Try to deliver the outbox, publish ``offline`` ourselves, then disconnect."""
        done = threading.Event()
        self._events.put(("stop", done))
        done.wait(timeout)
        self._stopping.set()
        self._thread.join(timeout=2)
        self._link.stop()

    # -- the publisher thread ---------------------------------------------------------------

    def _run(self) -> None:
        stop_request: threading.Event | None = None
        deadline = 0.0
        while True:
            try:
                kind, value = self._events.get(timeout=0.2)
            except queue.Empty:
                kind, value = "idle", None
            if kind == "link":
                self._on_link(value)
            elif kind == "submit":
                self._outbox[value.key] = value
                self._send_pending()
            elif kind == "now":
                self._send_now(value)
            elif kind == "stop":
                stop_request, deadline = value, time.monotonic() + 5.0
            self.backlog = len(self._outbox)
            if stop_request is not None and (not self._outbox or time.monotonic() > deadline):
                self._say_offline()
                stop_request.set()
                return
            if self._stopping.is_set():
                return

    def _on_link(self, event: LinkEvent) -> None:
        if event.kind == "connected":
            self._connected = True
            self._in_flight.clear()
            self._sent.clear()
            if self._outbox:
                log.info("replaying %d unacknowledged results", len(self._outbox))
            self._send_pending()
            self._send_now(OutgoingMessage("", self._status_topic, b"online", retain=True))
        elif event.kind == "disconnected":
            self._connected = False
            self._in_flight.clear()
            self._sent.clear()
        elif event.kind == "acked":
            key = self._in_flight.pop(event.mid, None)
            if key is None:
                return
            message = self._outbox.pop(key, None)
            self._sent.discard(key)
            if message is not None:
                self.delivered += 1
                if self._on_delivered is not None:
                    self._on_delivered(message)

    def _send_pending(self) -> None:
        if not self._connected:
            return
        for key, message in self._outbox.items():
            if key in self._sent:
                continue
            try:
                mid = self._link.publish(message.topic, message.payload, retain=message.retain)
            except ConnectionError as exc:
                log.warning("%s; will resend after reconnect", exc)
                return
            self._in_flight[mid] = key
            self._sent.add(key)

    def _send_now(self, message: OutgoingMessage) -> None:
        if not self._connected:
            return
        try:
            self._link.publish(message.topic, message.payload, retain=message.retain)
        except ConnectionError as exc:
            log.warning("%s", exc)

    def _say_offline(self) -> None:
        if not self._connected:
            return
        try:
            mid = self._link.publish(self._status_topic, b"offline", retain=True)
        except ConnectionError as exc:
            log.warning("could not publish offline: %s", exc)
            return
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            try:
                kind, value = self._events.get(timeout=0.1)
            except queue.Empty:
                continue
            if kind == "link" and value.kind == "acked" and value.mid == mid:
                return
