"""The results' companions (``edge.shadow/1``) on their way to the broker.

A companion is informative (a candidate engine's scores, never the answer) and is
not numbered: it rides beside the results, after them within the broker's Receive
Maximum, at least once. It is journalled (:mod:`edge.journal.shadows`) and done at
the broker's PUBACK; after a reconnect what was in flight goes again, and a hub's
re-send request for a range of results sends their companions again too, which is
how the hub repairs one it never received (``edge hub gaps`` lists those).

Runs on the publisher's thread (:mod:`edge.delivery.publisher`) only.
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

from edge.errors import JournalError
from edge.journal import Companion

log = logging.getLogger(__name__)

#: how long a companion the broker refused, or the journal could not read, waits
RETRY_S = 30.0


class CompanionStore(Protocol):
    """Where the companions are kept: the journal."""

    def companions_waiting(self, limit: int) -> list[Companion]: ...

    def companion_delivered(self, entry: int) -> None: ...

    def resend_companions(self, first_seq: int, last_seq: int | None) -> int: ...


class CompanionStream:
    """Companions not yet acknowledged, read from the journal when it may hold new ones."""

    def __init__(self, store: CompanionStore) -> None:
        self._store = store
        self._in_flight: dict[int, Companion] = {}
        self._stale = True
        self._not_before = 0.0

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def wake(self) -> None:
        """Something was journalled: the journal may hold a new companion."""
        self._stale = True

    def restart(self) -> None:
        """A new connection: what was in flight goes again."""
        self._in_flight.clear()
        self._stale = True

    def peek(self, now: float) -> Companion | None:
        """The next companion to send, if any."""
        if not self._stale or now < self._not_before:
            return None
        sending = {companion.entry for companion in self._in_flight.values()}
        try:
            waiting = self._store.companions_waiting(len(sending) + 1)
        except JournalError as exc:
            log.error("cannot read the results' companions: %s", exc)
            self._not_before = now + RETRY_S
            return None
        for companion in waiting:
            if companion.entry not in sending:
                return companion
        self._stale = False
        return None

    def sent(self, mid: int, companion: Companion) -> None:
        self._in_flight[mid] = companion

    def acked(self, mid: int) -> bool:
        """The broker acknowledged ``mid``; False when it is not a companion's."""
        companion = self._in_flight.pop(mid, None)
        if companion is None:
            return False
        try:
            self._store.companion_delivered(companion.entry)
        except JournalError as exc:  # sent again later: at least once allows it
            log.error("cannot record a companion's acknowledgement: %s", exc)
        return True

    def refused(self, mid: int, reason: str) -> bool:
        """The broker refused ``mid``; False when it is not a companion's."""
        companion = self._in_flight.pop(mid, None)
        if companion is None:
            return False
        log.error("broker_refused: %s on %s (companion of result seq %d); retrying in %.0f s",
                  reason, companion.topic, companion.seq, RETRY_S)  # fmt: skip
        self._not_before = time.monotonic() + RETRY_S
        self._stale = True
        return True

    def rewind(self, first_seq: int, last_seq: int | None) -> None:
        """The hub asks for results ``first_seq..last_seq`` again: their companions too."""
        try:
            self._store.resend_companions(first_seq, last_seq)
        except JournalError as exc:
            log.error("cannot mark companions to send again: %s", exc)
        self._stale = True
