"""What the hub says back to the box: confirmations, re-send requests, and their absence.

Runs on the publisher's thread (:mod:`edge.delivery.publisher`), beside the
:class:`~edge.delivery.stream.ResultStream` it steers:

- ``edge.confirm/1``: journalled (when its ``id`` is this box's result of that
  ``seq``); results up to it are done, and retention may forget them;
- ``edge.resend/1``: the stream goes back over the range asked, in order;
- silence: when the oldest unconfirmed result is older than
  ``mqtt.confirm_timeout_s`` and no confirmation came for that long, everything
  unconfirmed goes again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from edge.delivery import protocol
from edge.delivery.companions import CompanionStore
from edge.delivery.stream import ResultStream
from edge.errors import JournalError
from edge.journal import OutboxEntry, Unconfirmed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeviceTopics:
    """Who this box is, and the topics of the confirmation protocol."""

    site: str
    device: str
    status: str
    hello: str
    confirm: str
    resend: str


class DeliveryStore(CompanionStore, Protocol):
    """Where the results to deliver, and their companions, are kept: the journal."""

    def sendable_after(
        self, entry: int, *, replay: tuple[int, int] | None, limit: int
    ) -> list[OutboxEntry]: ...

    def acknowledge(self, entry: int) -> bool: ...

    def confirm(self, seq: int, result_id: str) -> bool: ...

    def unconfirmed(self) -> Unconfirmed: ...


class HubReplies:
    """The hub's side of the conversation, as the box hears it."""

    def __init__(
        self,
        store: DeliveryStore,
        stream: ResultStream,
        topics: DeviceTopics,
        *,
        by_hub: bool,
        timeout_s: float,
    ) -> None:
        self._store = store
        self._stream = stream
        self._topics = topics
        self._by_hub = by_hub
        self._timeout_s = timeout_s
        self._last_progress = time.monotonic()
        self._also_rewind: list[Callable[[int, int | None], None]] = []

    def also_rewind(self, rewind: Callable[[int, int | None], None]) -> None:
        """Go back over a re-send request's range with ``rewind`` too (the companions)."""
        self._also_rewind.append(rewind)

    def restart_clock(self) -> None:
        """A new connection: the time-out counts from its replay."""
        self._last_progress = time.monotonic()

    def handle(self, topic: str, payload: bytes) -> bool:
        """Take a confirmation or a re-send request; False for any other topic."""
        if topic == self._topics.confirm:
            self._on_confirmation(payload)
        elif topic == self._topics.resend:
            self._on_resend(payload)
        else:
            return False
        return True

    def check_timeout(self) -> None:
        """Send everything unconfirmed again when the hub has been silent too long."""
        now = time.monotonic()
        if not self._by_hub or now - self._last_progress < self._timeout_s:
            return
        self._last_progress = now
        state = self.unconfirmed()
        if state is None or state.oldest_created_at is None:
            return
        if time.time() - state.oldest_created_at < self._timeout_s:
            return
        log.warning("%d results unconfirmed by the hub for over %.0f s: sending them again",
                    state.count, self._timeout_s)  # fmt: skip
        self._stream.rewind(state.confirmed_seq + 1, None)

    def unconfirmed(self) -> Unconfirmed | None:
        try:
            return self._store.unconfirmed()
        except JournalError as exc:
            log.error("cannot read the journal's confirmations: %s", exc)
            return None

    def _on_confirmation(self, payload: bytes) -> None:
        try:
            confirmation = protocol.parse_confirmation(payload)
        except protocol.ProtocolError as exc:
            log.warning("ignoring a confirmation the box cannot read: %s", exc)
            return
        if not self._by_hub or not self._is_ours(confirmation.site, confirmation.device):
            return
        try:
            news = self._store.confirm(confirmation.seq, confirmation.id)
        except JournalError as exc:
            log.error("cannot record the hub's confirmation: %s", exc)
            return
        if news:
            self._last_progress = time.monotonic()
            log.info("hub confirmed results up to seq %d", confirmation.seq)

    def _on_resend(self, payload: bytes) -> None:
        try:
            request = protocol.parse_resend(payload)
        except protocol.ProtocolError as exc:
            log.warning("ignoring a re-send request the box cannot read: %s", exc)
            return
        if not self._is_ours(request.site, request.device):
            return
        last = "newest" if request.last_seq is None else str(request.last_seq)
        log.info("hub asks (%s) for seq %d..%s again", request.reason, request.first_seq, last)
        self._stream.rewind(request.first_seq, request.last_seq)
        for rewind in self._also_rewind:
            rewind(request.first_seq, request.last_seq)

    def _is_ours(self, site: str, device: str) -> bool:
        return (site, device) == (self._topics.site, self._topics.device)
