"""The result stream: which journalled results go to the broker next, and what is in flight.

The publisher's thread owns one :class:`ResultStream`. It walks the journal in
``entry`` (hence ``seq``) order from a cursor, a page at a time, and hands the
publisher at most a window of results to have in flight:

- the window is the smaller of ``mqtt.max_in_flight`` and the Receive Maximum the
  broker announced in its CONNACK (MQTT 5), so a strict broker never sees more
  unacknowledged publishes than it allows; a result larger than the broker's
  Maximum Packet Size is never sent (it would cost the connection) and stalls the
  stream with an alarm, since skipping it would break the order;
- what it sends is the outbox (results the broker has not acknowledged) and, with
  ``mqtt.confirm: hub``, every result above the hub's confirmation since the last
  connect, re-send request or confirmation time-out (:meth:`rewind`): byte for
  byte the journalled payload, so the hub stores each ``id`` once. A replay ends
  when the cursor reaches the end of the journal: a later request sends its own
  range, not again everything since the connect;
- a PUBACK with a failure reason (an ACL that denies the topic, a quota) is an
  outcome: the result stays, the refusal is kept for health, and the stream goes
  back to it and retries it alone, after a growing delay, on the same connection.
  Nothing newer is sent meanwhile, and once it is accepted the stream goes on in
  order from it (with ``confirm: hub`` sending again the newer ones the broker had
  accepted in the same window, so the hub sees them after it).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Protocol

from edge.journal import OutboxEntry
from edge.mqtt import Backoff

#: rows read from the journal at a time
PAGE = 100
#: "no upper bound" for a replayed seq range
NEWEST = 2**62


@dataclass(frozen=True)
class Refusal:
    """The broker refused a result (a PUBACK reason code of 0x80 or more)."""

    entry: int
    seq: int
    topic: str
    reason: str
    at: float


@dataclass(frozen=True)
class TooLarge:
    """A result bigger than the broker's Maximum Packet Size: held, never sent."""

    seq: int
    size: int
    limit: int


class StreamStore(Protocol):
    def sendable_after(
        self, entry: int, *, replay: tuple[int, int] | None, limit: int
    ) -> list[OutboxEntry]: ...


class ResultStream:
    """The cursor, window and in-flight set over the journal's results."""

    def __init__(
        self, store: StreamStore, *, by_hub: bool, max_in_flight: int, retry: Backoff
    ) -> None:
        self._store = store
        self._by_hub = by_hub
        self._limit = max_in_flight
        self._retry = retry
        self.window = max_in_flight
        self.max_packet: int | None = None
        self._cursor = 0
        self._replay: tuple[int, int] | None = None
        self._page: deque[OutboxEntry] = deque()
        self._in_flight: dict[int, OutboxEntry] = {}
        self._retry_at = 0.0
        #: the oldest refusal not yet overcome, for health's alarm
        self.refusal: Refusal | None = None
        self.too_large: TooLarge | None = None

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def restart(self, *, receive_maximum: int, max_packet: int | None, confirmed_seq: int) -> None:
        """A new connection: nothing is in flight; everything unconfirmed goes again."""
        self.window = max(1, min(self._limit, receive_maximum))
        self.max_packet = max_packet
        self._in_flight.clear()
        self._retry_at = 0.0
        self.too_large = None
        self._replay = None
        self._go_back(0)
        if self._by_hub:
            self.rewind(confirmed_seq + 1, None)

    def rewind(self, first_seq: int, last_seq: int | None) -> None:
        """Send this device's results ``first_seq``..``last_seq`` again, in order."""
        high = NEWEST if last_seq is None else last_seq
        self._replay = _union(self._replay, (first_seq - 1, high))
        self._go_back(0)

    def peek(self, now: float) -> OutboxEntry | None:
        """The next result to send now, or None (window full, waiting to retry, at the end)."""
        if now < self._retry_at or self.too_large is not None:
            return None
        if self.in_flight >= (1 if self.refusal is not None else self.window):
            return None
        row = self._next_row()
        if row is not None and self.max_packet is not None:
            size = packet_size(row.topic, row.payload)
            if size > self.max_packet:
                self.too_large = TooLarge(row.seq, size, self.max_packet)
                return None
        return row

    def sent(self, mid: int, row: OutboxEntry) -> None:
        """``row`` (the last :meth:`peek`) is on its way as message ``mid``."""
        if self._page and self._page[0].entry == row.entry:
            self._page.popleft()
        self._cursor = max(self._cursor, row.entry)
        self._in_flight[mid] = row

    def acked(self, mid: int) -> OutboxEntry | None:
        """The broker accepted ``mid``: its row, or None if it is not a result of this link."""
        row = self._in_flight.pop(mid, None)
        if row is not None and self.refusal is not None and row.entry == self.refusal.entry:
            self.refusal = None
            self._retry.reset()
        return row

    def refused(self, mid: int, reason: str) -> OutboxEntry | None:
        """The broker refused ``mid``: retry it, alone, after a delay; its row, or None."""
        row = self._in_flight.pop(mid, None)
        if row is None:
            return None
        if self.refusal is None or row.entry <= self.refusal.entry:
            self.refusal = Refusal(row.entry, row.seq, row.topic, reason, time.time())
        self._retry_at = time.monotonic() + self._retry.next_delay()
        self._go_back(row.entry - 1)
        if self._by_hub:
            # The newer ones the broker accepted meanwhile go again, after it.
            self._replay = _union(self._replay, (row.seq - 1, NEWEST))
        return row

    def _go_back(self, entry: int) -> None:
        self._cursor = min(self._cursor, entry) if entry else 0
        self._page.clear()

    def _next_row(self) -> OutboxEntry | None:
        busy = {row.entry for row in self._in_flight.values()}
        while True:
            if not self._page:
                self._page.extend(
                    self._store.sendable_after(self._cursor, replay=self._replay, limit=PAGE)
                )
                if not self._page:
                    self._replay = None  # everything asked for has been sent
                    return None
            row = self._page[0]
            if row.entry not in busy:
                return row
            self._page.popleft()
            self._cursor = max(self._cursor, row.entry)


def _union(replay: tuple[int, int] | None, other: tuple[int, int]) -> tuple[int, int]:
    """One ``(low, high]`` seq range covering a replay under way and another."""
    if replay is None:
        return other
    return min(replay[0], other[0]), max(replay[1], other[1])


def packet_size(topic: str, payload: bytes) -> int:
    """Bytes of an MQTT 5 QoS 1 PUBLISH without properties (MQTT 5.0, section 3.3)."""
    remaining = 2 + len(topic.encode()) + 2 + 1 + len(payload)
    limits = (128, 2**14, 2**21, 2**28)
    length_bytes = next(n for n, limit in enumerate(limits, 1) if remaining < limit)
    return 1 + length_bytes + remaining
