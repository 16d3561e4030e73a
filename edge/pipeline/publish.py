"""The publisher: the one thread that delivers what the appliance publishes over MQTT.

The messages themselves are built in :mod:`edge.messages`. Delivery is at least
once: a result is journalled (with its ``seq``) before it
is sent, and leaves the journal's outbox only at the broker's PUBACK.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from edge.errors import JournalError
from edge.journal import OutboxEntry
from edge.mqtt import LinkEvent, MqttLink

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutgoingMessage:
    """A message that only matters while it is current (status, health, events)."""

    topic: str
    payload: bytes
    retain: bool = False
    #: kept (in memory, bounded) while disconnected and sent after reconnect
    keep: bool = False


class OutboxStore(Protocol):
    """Where the results to deliver are kept: the journal."""

    def outbox_after(self, entry: int) -> list[OutboxEntry]: ...

    def acknowledge(self, entry: int) -> None: ...


DeliveredCallback = Callable[[OutboxEntry], None]
RequestCallback = Callable[[str, bytes], None]
#: events kept while disconnected; older ones are dropped (and counted) beyond this
MAX_KEPT = 1000
#: how often acknowledgements the journal could not record are tried again
ACK_RETRY_S = 1.0


class Publisher:
    """Delivers journalled results at least once, in order, through an :class:`MqttLink`.

    The journal's outbox is the source of truth; this thread holds a copy of it
    (at most ``mqtt.outbox_max`` results) and the message ids in flight. After
    every reconnect, everything unacknowledged is sent again in ``seq`` order,
    and only then is ``online`` published. All state here is owned by this
    class's thread; other threads talk to it through its event queue.
    """

    def __init__(
        self,
        link_factory: Callable[[Callable[[LinkEvent], None]], MqttLink],
        store: OutboxStore,
        *,
        status_topic: str,
        on_delivered: DeliveredCallback | None = None,
        on_request: RequestCallback | None = None,
    ) -> None:
        self._events: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._link = link_factory(lambda event: self._events.put(("link", event)))
        self._store = store
        self._status_topic = status_topic
        self._on_delivered = on_delivered
        self._on_request = on_request
        self._outbox: OrderedDict[int, OutboxEntry] = OrderedDict()
        self._loaded = 0
        self._in_flight: dict[int, int] = {}
        self._sent: set[int] = set()
        self._kept: deque[OutgoingMessage] = deque()
        self._unrecorded: list[int] = []
        self._next_ack_retry = 0.0
        self._connected = False
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="publish", daemon=True)
        self.delivered = 0
        #: events dropped because more than MAX_KEPT waited for a connection
        self.dropped_events = 0
        #: results in this thread's outbox, readable from other threads
        self.backlog = 0

    @property
    def link(self) -> MqttLink:
        return self._link

    def start(self) -> None:
        self._thread.start()
        self._link.start()
        self.wake()

    def wake(self) -> None:
        """New results were journalled: load them from the outbox and send them."""
        self._events.put(("wake", None))

    def publish_now(self, topic: str, payload: bytes, *, retain: bool, keep: bool = False) -> None:
        """Publish a message that is not a result (never journalled).

        ``keep=False`` (health): dropped while disconnected, the next one replaces
        it. ``keep=True`` (events): held in memory until the next connection.
        """
        self._events.put(("now", OutgoingMessage(topic, payload, retain, keep)))

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
            if kind == "stop":
                stop_request, deadline = value, time.monotonic() + 5.0
            try:
                self._handle(kind, value)
                self._retry_unrecorded()
            except Exception:  # a bug must not end all delivery: the journal keeps it all
                log.exception("publisher failed on a %s event; going on", kind)
            self.backlog = len(self._outbox)
            if stop_request is not None and (
                not self._outbox or not self._connected or time.monotonic() > deadline
            ):
                self._say_offline()
                stop_request.set()
                return
            if self._stopping.is_set():
                return

    def _handle(self, kind: str, value: Any) -> None:
        if kind == "link":
            self._on_link(value)
        elif kind == "wake":
            self._load()
            self._send_pending()
        elif kind == "now":
            self._send_now(value)

    def _on_link(self, event: LinkEvent) -> None:
        if event.kind == "connected":
            self._connected = True
            self._in_flight.clear()
            self._sent.clear()
            self._load()
            if self._outbox:
                log.info("replaying %d unacknowledged results", len(self._outbox))
            self._send_pending()
            self._send_now(OutgoingMessage(self._status_topic, b"online", retain=True))
            self._send_kept()
        elif event.kind == "disconnected":
            self._connected = False
            self._in_flight.clear()
            self._sent.clear()
        elif event.kind == "acked":
            self._on_acked(event.mid)
        elif event.kind == "message" and self._on_request is not None:
            self._on_request(event.topic, event.payload)

    def _on_acked(self, mid: int) -> None:
        entry = self._in_flight.pop(mid, None)
        if entry is None:  # a status, health or event message, or one from before a reconnect
            return
        row = self._outbox.pop(entry, None)
        self._sent.discard(entry)
        if row is None:
            return
        self._record_ack(entry)
        self.delivered += 1
        if self._on_delivered is not None:
            self._on_delivered(row)
        self._load()
        self._send_pending()

    def _record_ack(self, entry: int) -> None:
        try:
            self._store.acknowledge(entry)
        except JournalError:
            # The broker has it; if the box restarts before this is recorded it
            # is sent again, which at-least-once delivery allows.
            self._unrecorded.append(entry)

    def _retry_unrecorded(self) -> None:
        if not self._unrecorded or time.monotonic() < self._next_ack_retry:
            return
        self._next_ack_retry = time.monotonic() + ACK_RETRY_S
        pending, self._unrecorded = self._unrecorded, []
        for entry in pending:
            self._record_ack(entry)
        self._load()
        self._send_pending()

    def _load(self) -> None:
        """Take the journal's outbox rows this thread does not hold yet."""
        try:
            rows = self._store.outbox_after(self._loaded)
        except JournalError as exc:
            log.error("cannot read the outbox: %s", exc)
            return
        for row in rows:
            self._outbox[row.entry] = row
            self._loaded = max(self._loaded, row.entry)
        self.backlog = len(self._outbox)

    def _send_pending(self) -> None:
        if not self._connected:
            return
        for entry, row in self._outbox.items():
            if entry in self._sent:
                continue
            try:
                mid = self._link.publish(row.topic, row.payload)
            except ConnectionError as exc:
                log.warning("%s; will resend after reconnect", exc)
                return
            self._in_flight[mid] = entry
            self._sent.add(entry)

    def _send_now(self, message: OutgoingMessage) -> None:
        if not self._connected:
            self._keep(message)
            return
        try:
            self._link.publish(message.topic, message.payload, retain=message.retain)
        except ConnectionError as exc:
            log.warning("%s", exc)
            self._keep(message)

    def _keep(self, message: OutgoingMessage) -> None:
        if not message.keep:
            return
        if len(self._kept) >= MAX_KEPT:
            self._kept.popleft()
            self.dropped_events += 1
        self._kept.append(message)

    def _send_kept(self) -> None:
        kept, self._kept = self._kept, deque()
        for message in kept:
            self._send_now(message)

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
            if kind != "link":
                continue
            if value.kind == "acked" and value.mid == mid:
                return
            self._on_link(value)  # a result's PUBACK still counts
