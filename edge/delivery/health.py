"""What health says about delivery: the hub's confirmations, and the broker's refusals.

Built from a snapshot the daemon takes on its own thread (the journal's
:class:`~edge.journal.Unconfirmed` and the publisher's refusal), so that health
never touches the publisher's state.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from edge.config import Config
from edge.delivery.publisher import Publisher
from edge.delivery.stream import Refusal, TooLarge
from edge.errors import JournalError
from edge.journal import Backlog, Journal, Unconfirmed
from edge.messages.health import JournalState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeliverySnapshot:
    by_hub: bool
    #: None when the journal could not be read
    unconfirmed: Unconfirmed | None
    refusal: Refusal | None
    too_large: TooLarge | None
    window: int
    alarm_after_s: float


def delivery_snapshot(
    config: Config,
    journal: Journal,
    publisher: Publisher,
    on_journal_error: Callable[[JournalError], None],
) -> DeliverySnapshot:
    """Taken on the daemon's thread; the publisher's fields are read, never changed."""
    try:
        unconfirmed: Unconfirmed | None = journal.unconfirmed()
    except JournalError as exc:
        on_journal_error(exc)
        unconfirmed = None
    return DeliverySnapshot(
        by_hub=config.mqtt.confirm == "hub",
        unconfirmed=unconfirmed,
        refusal=publisher.refusal,
        too_large=publisher.too_large,
        window=publisher.window,
        alarm_after_s=config.health.unconfirmed_alarm_s,
    )


class OutboxWatch:
    """The journal's backlog for health, with one warning when the outbox fills."""

    def __init__(self, outbox_max: int) -> None:
        self._outbox_max = outbox_max
        self._full = False

    def backlog(
        self, journal: Journal, on_journal_error: Callable[[JournalError], None]
    ) -> Backlog | None:
        """The backlog, None when the journal cannot be read."""
        try:
            backlog: Backlog | None = journal.backlog()
        except JournalError as exc:
            on_journal_error(exc)
            backlog = None
        full = backlog is not None and backlog.waiting > 0
        if full and not self._full and backlog is not None:
            log.warning("outbox full (mqtt.outbox_max %d): results wait in the journal "
                        "(%d so far)", self._outbox_max, backlog.waiting)  # fmt: skip
        self._full = full
        return backlog


def journal_state(
    backlog: Backlog | None, journal: Journal, replaced: dict[str, Any] | None
) -> JournalState:
    """What health says of the journal: its backlog (no counts when it could not be
    read), its errors, and what replaced it at start (``Recovery.health()``)."""
    return JournalState(
        outbox=None if backlog is None else backlog.outbox,
        waiting=None if backlog is None else backlog.waiting,
        last_seq=None if backlog is None else backlog.last_seq,
        oldest_created_at=None if backlog is None else backlog.oldest_created_at,
        write_error=journal.write_error,
        error=journal.failure,
        replaced=replaced,
    )


def journal_fields(snapshot: DeliverySnapshot) -> dict[str, Any]:
    """Health's ``journal`` fields of the hub's confirmations."""
    state = snapshot.unconfirmed
    oldest = None if state is None else state.oldest_created_at
    return {
        "confirm": "hub" if snapshot.by_hub else "broker",
        "confirmed_seq": None if state is None else state.confirmed_seq,
        "unconfirmed": None if state is None else state.count,
        "oldest_unconfirmed_at": None if oldest is None else _iso(oldest),
        "oldest_unconfirmed_age_s": None if oldest is None else round(time.time() - oldest, 1),
    }


def broker_fields(snapshot: DeliverySnapshot) -> dict[str, Any]:
    """Health's ``broker.window`` and ``broker.refused``."""
    refusal = snapshot.refusal
    return {
        "window": snapshot.window,
        "refused": None
        if refusal is None
        else {
            "reason": refusal.reason,
            "topic": refusal.topic,
            "seq": refusal.seq,
            "at": _iso(refusal.at),
        },
    }


def delivery_alarms(snapshot: DeliverySnapshot) -> list[str]:
    """``hub_unconfirmed``, ``broker_refused: <reason> on <topic>``, ``broker_packet_too_large``."""
    raised = []
    oldest = None if snapshot.unconfirmed is None else snapshot.unconfirmed.oldest_created_at
    if snapshot.by_hub and oldest is not None and time.time() - oldest > snapshot.alarm_after_s:
        raised.append("hub_unconfirmed")
    if snapshot.refusal is not None:
        raised.append(f"broker_refused: {snapshot.refusal.reason} on {snapshot.refusal.topic}")
    if snapshot.too_large is not None:
        raised.append("broker_packet_too_large")
    return raised


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, timezone.utc).isoformat(timespec="seconds")
