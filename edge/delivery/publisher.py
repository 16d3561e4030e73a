"""The publisher: one thread that owns the broker connection's outbound side.

Results go out through a :class:`~edge.delivery.stream.ResultStream` over the
journal, other messages (status, hello, health, events) beside them, and all of
them together stay within the Receive Maximum the broker announced. The hub's
confirmations and re-send requests come back on the same connection and are
handled here, on this thread, so the stream is only ever touched by it.

Delivery is at least once. With ``mqtt.confirm: broker`` a result is done at the
broker's PUBACK; with ``hub`` (the default) only once the hub's cumulative
confirmation (``edge.confirm/1``) covers it: until then it is sent again, byte
for byte, after every connect, on a re-send request, and when unconfirmed past
``mqtt.confirm_timeout_s``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edge.config import Config
from edge.delivery import protocol
from edge.delivery.companions import CompanionStream
from edge.delivery.confirmations import DeliveryStore, DeviceTopics, HubReplies
from edge.delivery.stream import Refusal, ResultStream, TooLarge
from edge.errors import JournalError
from edge.journal import OutboxEntry, Unconfirmed
from edge.mqtt import DEFAULT_RECEIVE_MAXIMUM, Backoff, LinkEvent, MqttLink, box_link

log = logging.getLogger(__name__)

DeliveredCallback = Callable[[OutboxEntry], None]
RequestCallback = Callable[[str, bytes], None]
#: events kept while disconnected; older ones are dropped (and counted) beyond this
MAX_KEPT = 1000
#: how often acknowledgements the journal could not record are tried again
ACK_RETRY_S = 1.0
#: the first and the longest wait before a refused result is tried again
REFUSED_RETRY_S = (1.0, 60.0)


@dataclass(frozen=True)
class OutgoingMessage:
    """A message that only matters while it is current (status, health, events)."""

    topic: str
    payload: bytes
    retain: bool = False
    #: kept (in memory, bounded) while disconnected and sent after reconnect
    keep: bool = False


class Publisher:
    """Delivers journalled results at least once, in order, through an :class:`MqttLink`."""

    def __init__(
        self,
        link_factory: Callable[[Callable[[LinkEvent], None]], MqttLink],
        store: DeliveryStore,
        *,
        topics: DeviceTopics,
        by_hub: bool = True,
        max_in_flight: int = 20,
        confirm_timeout_s: float = 300.0,
        on_delivered: DeliveredCallback | None = None,
        on_request: RequestCallback | None = None,
    ) -> None:
        self._events: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._link = link_factory(lambda event: self._events.put(("link", event)))
        self._store = store
        self._topics = topics
        self._by_hub = by_hub
        self._on_delivered = on_delivered
        self._on_request = on_request
        self._stream = ResultStream(
            store, by_hub=by_hub, max_in_flight=max_in_flight, retry=Backoff(*REFUSED_RETRY_S)
        )
        self._companions = CompanionStream(store)
        self._replies = HubReplies(
            store, self._stream, topics, by_hub=by_hub, timeout_s=confirm_timeout_s
        )
        self._replies.also_rewind(self._companions.rewind)
        self._receive_maximum = DEFAULT_RECEIVE_MAXIMUM
        self._others: set[int] = set()
        self._queued: deque[OutgoingMessage] = deque()
        self._kept: deque[OutgoingMessage] = deque()
        self._unrecorded: list[int] = []
        self._next_ack_retry = 0.0
        self._connected = False
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="publish", daemon=True)
        self.delivered = 0
        #: events dropped because more than MAX_KEPT waited for a connection
        self.dropped_events = 0
        #: results in flight to the broker, readable from other threads
        self.backlog = 0

    @property
    def link(self) -> MqttLink:
        return self._link

    @property
    def refusal(self) -> Refusal | None:
        """The broker's refusal of a result not yet overcome (health's ``broker_refused``)."""
        return self._stream.refusal

    @property
    def too_large(self) -> TooLarge | None:
        return self._stream.too_large

    @property
    def window(self) -> int:
        """Results in flight at most on this connection (Receive Maximum and config)."""
        return self._stream.window

    def start(self) -> None:
        self._thread.start()
        self._link.start()
        self.wake()

    def wake(self) -> None:
        """New results were journalled: send them."""
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
        """Try to deliver what is in flight, publish ``offline`` ourselves, then disconnect."""
        done = threading.Event()
        self._events.put(("stop", min(timeout, 5.0)))
        self._events.put(("stopped", done))
        done.wait(timeout)
        self._stopping.set()
        self._thread.join(timeout=2)
        self._link.stop()

    # -- the publisher thread ---------------------------------------------------------------

    def _run(self) -> None:
        deadline: float | None = None
        done: threading.Event | None = None
        while True:
            try:
                kind, value = self._events.get(timeout=0.2)
            except queue.Empty:
                kind, value = "idle", None
            if kind == "stop":
                deadline = time.monotonic() + float(value)
            elif kind == "stopped":
                done = value
            try:
                self._handle(kind, value)
                self._tick()
            except Exception:  # a bug must not end all delivery: the journal keeps it all
                log.exception("publisher failed on a %s event; going on", kind)
            self.backlog = self._stream.in_flight
            if done is not None and deadline is not None and self._drained(deadline):
                self._say_offline()
                done.set()
                return
            if self._stopping.is_set():
                return

    def _drained(self, deadline: float) -> bool:
        idle = self._stream.in_flight == 0 and self._stream.peek(time.monotonic()) is None
        return idle or not self._connected or time.monotonic() > deadline

    def _handle(self, kind: str, value: Any) -> None:
        if kind == "link":
            self._on_link(value)
        elif kind == "wake":
            self._companions.wake()
            self._pump()
        elif kind == "now":
            self._send_now(value)

    def _tick(self) -> None:
        self._retry_unrecorded()
        if self._connected:
            self._replies.check_timeout()
        self._pump()

    def _on_link(self, event: LinkEvent) -> None:
        if event.kind == "connected":
            self._on_connected(event)
        elif event.kind == "disconnected":
            self._connected = False
            self._others.clear()
            kept = [message for message in self._queued if message.keep]
            self._queued.clear()
            for message in kept:
                self._keep(message)
        elif event.kind == "acked":
            self._on_acked(event.mid)
        elif event.kind == "refused":
            self._on_refused(event.mid, event.detail)
        elif event.kind == "message":
            if self._replies.handle(event.topic, event.payload):
                self._pump()
            elif self._on_request is not None:
                self._on_request(event.topic, event.payload)

    def _on_connected(self, event: LinkEvent) -> None:
        self._connected = True
        self._others.clear()
        self._receive_maximum = event.receive_maximum
        state = self._replies.unconfirmed()
        self._stream.restart(
            receive_maximum=event.receive_maximum,
            max_packet=event.max_packet,
            confirmed_seq=0 if state is None else state.confirmed_seq,
        )
        self._replies.restart_clock()
        self._companions.restart()
        if event.receive_maximum < DEFAULT_RECEIVE_MAXIMUM:
            log.info("broker receive maximum %d: %d results in flight at most",
                     event.receive_maximum, self._stream.window)  # fmt: skip
        if self._stream.peek(time.monotonic()) is not None:
            done = "confirmed by the hub" if self._by_hub else "acknowledged by the broker"
            log.info("replaying the results not yet %s", done)
        if state is not None:
            self._send_hello(state)
        self._pump()
        self._send_now(OutgoingMessage(self._topics.status, b"online", retain=True))
        kept, self._kept = self._kept, deque()
        for message in kept:
            self._send_now(message)

    def _send_hello(self, state: Unconfirmed) -> None:
        topics = self._topics
        hello = protocol.Hello(
            topics.site,
            topics.device,
            last_seq=state.last_seq,
            confirmed_seq=state.confirmed_seq,
            unconfirmed=state.count,
        )
        payload = protocol.encode(protocol.hello_message(hello))
        self._send_now(OutgoingMessage(topics.hello, payload))

    def _on_acked(self, mid: int) -> None:
        if mid in self._others:
            self._others.discard(mid)
        elif not self._companions.acked(mid):
            row = self._stream.acked(mid)
            if row is not None:
                self._record_ack(row)
        self._pump()

    def _on_refused(self, mid: int, reason: str) -> None:
        if mid in self._others:
            self._others.discard(mid)
            log.warning("the broker refused a status, health or event message: %s", reason)
        elif not self._companions.refused(mid, reason):
            before = self._stream.refusal
            row = self._stream.refused(mid, reason)
            if row is not None and (before is None or before.reason != reason):
                log.error("broker_refused: %s on %s (result seq %d); kept, retrying",
                          reason, row.topic, row.seq)  # fmt: skip
        self._pump()

    def _record_ack(self, row: OutboxEntry) -> None:
        try:
            first = self._store.acknowledge(row.entry)
        except JournalError:
            # The broker has it; if the box restarts before this is recorded it
            # is sent again, which at-least-once delivery allows.
            self._unrecorded.append(row.entry)
            first = True
        if not first:
            return
        self.delivered += 1
        if self._on_delivered is not None:
            self._on_delivered(row)

    def _retry_unrecorded(self) -> None:
        if not self._unrecorded or time.monotonic() < self._next_ack_retry:
            return
        self._next_ack_retry = time.monotonic() + ACK_RETRY_S
        pending, self._unrecorded = self._unrecorded, []
        for entry in pending:
            try:
                self._store.acknowledge(entry)
            except JournalError:
                self._unrecorded.append(entry)

    # -- sending ---------------------------------------------------------------------------

    def _room(self) -> bool:
        in_flight = len(self._others) + self._stream.in_flight + self._companions.in_flight
        return in_flight < self._receive_maximum

    def _pump(self) -> None:
        """Send what waits, other messages first, within the broker's Receive Maximum."""
        while self._connected and self._queued and self._room():
            message = self._queued.popleft()
            try:
                mid = self._link.publish(message.topic, message.payload, retain=message.retain)
            except ConnectionError as exc:
                log.warning("%s", exc)
                self._keep(message)
                return
            self._others.add(mid)
        now = time.monotonic()
        while self._connected and self._room() and (row := self._stream.peek(now)):
            if (result_mid := self._publish_journalled(row.topic, row.payload)) is None:
                return
            self._stream.sent(result_mid, row)
        # The results' companions after them (edge.delivery.companions).
        while self._connected and self._room() and (companion := self._companions.peek(now)):
            companion_mid = self._publish_journalled(companion.topic, companion.payload)
            if companion_mid is None:
                return
            self._companions.sent(companion_mid, companion)

    def _publish_journalled(self, topic: str, payload: bytes) -> int | None:
        """Publish what the journal keeps; None: the link is down (it goes after reconnect)."""
        try:
            return self._link.publish(topic, payload)
        except ConnectionError as exc:
            log.warning("%s; will resend after reconnect", exc)
            return None

    def _send_now(self, message: OutgoingMessage) -> None:
        if not self._connected:
            self._keep(message)
            return
        self._queued.append(message)
        self._pump()

    def _keep(self, message: OutgoingMessage) -> None:
        if not message.keep:
            return
        if len(self._kept) >= MAX_KEPT:
            self._kept.popleft()
            self.dropped_events += 1
        self._kept.append(message)

    def _say_offline(self) -> None:
        if not self._connected:
            return
        try:
            mid = self._link.publish(self._topics.status, b"offline", retain=True)
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
            if value.kind in ("acked", "refused") and value.mid == mid:
                return
            self._on_link(value)  # a result's PUBACK still counts


def box_publisher(
    config: Config,
    store: DeliveryStore,
    *,
    on_delivered: DeliveredCallback | None = None,
    on_request: RequestCallback | None = None,
) -> Publisher:
    """The box's publisher and its link (:func:`edge.mqtt.box_link`), as configured."""
    topics = DeviceTopics(
        config.site,
        config.device,
        *(config.topic(leaf) for leaf in ("status", "hello", "confirm", "resend")),
    )
    return Publisher(
        lambda on_event: box_link(config, on_event),
        store,
        topics=topics,
        by_hub=config.mqtt.confirm == "hub",
        max_in_flight=config.mqtt.max_in_flight,
        confirm_timeout_s=config.mqtt.confirm_timeout_s,
        on_delivered=on_delivered,
        on_request=on_request,
    )
