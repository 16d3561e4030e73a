"""Incidents: internal errors, events and journal failures, counted, kept and sent.

Every stage reports what went wrong through one :class:`Incidents`: the count goes
into the metrics, the last error into health's ``last_error``, and an
``edge.event/1`` to the hub at once (kept by the publisher while the broker is
away) and into the journal for ``edge status``. A failing journal is announced once
per episode (``journal_write_failed``, or ``journal_failed`` for a damaged or
unreadable one) and once as usable again; a journal replaced at start once.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Protocol

from edge.common.privacy import scrub
from edge.config import Config
from edge.errors import JournalError
from edge.health.metrics import Metrics
from edge.journal import EventRecord, Journal
from edge.journal.recovery import Recovery
from edge.messages.event import event

log = logging.getLogger(__name__)


class Sender(Protocol):
    """What incidents need of the publisher: a message sent now, kept if it cannot be."""

    def publish_now(
        self, topic: str, payload: bytes, *, retain: bool, keep: bool = False
    ) -> None: ...


class Incidents:
    """Reports errors and events for every stage; tracks whether the journal is failing."""

    def __init__(self, config: Config, metrics: Metrics, journal: Journal, sender: Sender) -> None:
        self._config = config
        self._metrics = metrics
        self._journal = journal
        self._sender = sender
        self._journal_failing = False
        #: a read failing, or the file damaged: ``journal_failed`` until it reads again
        self._journal_unreadable = False

    def error(
        self, where: str, message: str, path: Path | None = None, reason: str = "internal_error"
    ) -> None:
        """Count an internal error, keep it as health's last_error and send an event."""
        self._metrics.count("errors")
        self._metrics.error(where, message if path is None else scrub(message, path))
        self.event("error", reason, message, path=path, where=where)

    def journal_failed(self, where: str, exc: JournalError) -> None:
        """Count a journal failure; one event per episode (write, or read/damage)."""
        self._metrics.count("journal_errors")
        if self._journal.write_error is not None and not self._journal_failing:
            self._journal_failing = True
            self.error(where, str(exc), reason="journal_write_failed")
        elif self._journal.failure is not None and not self._journal_unreadable:
            self._journal_unreadable = True
            self.error(where, str(exc), reason="journal_failed")

    def note_journal_recovery(self) -> None:
        """Announce, once each, that the journal takes writes, or can be read, again."""
        if self._journal_failing and self._journal.write_error is None:
            self._journal_failing = False
            self.event("journal", "journal_writable", "the journal is writable again")
        if self._journal_unreadable and self._journal.failure is None:
            self._journal_unreadable = False
            self.event("journal", "journal_readable", "the journal can be read again")

    def journal_replaced(self, recovery: Recovery) -> None:
        """Say on every channel that the journal was replaced: last_error and an event."""
        self._metrics.count("errors")
        self._metrics.error("journal", recovery.summary())
        self.event("journal", "journal_replaced", recovery.summary(), where="journal")

    def event(
        self,
        kind: str,
        reason: str,
        message: str,
        *,
        path: Path | None = None,
        where: str = "",
        study: str | None = None,
    ) -> None:
        """Journal an ``edge.event/1`` for ``edge status`` and send it now.

        Journalled first: whoever hears the event can find it in the journal.
        """
        config = self._config
        document = event(
            kind,
            site=config.site,
            device=config.device,
            reason=reason,
            message=message,
            path=path,
            study=study,
            where=where or None,
        )
        try:
            self._journal.record_event(
                EventRecord(
                    **{k: document[k] for k in ("at", "kind", "reason", "file", "study")},
                    stage=document["where"],
                    message=document["message"],
                )
            )
        except JournalError:
            # Sent all the same; the failing journal is reported by the write that found it.
            self._metrics.count("journal_errors")
        self._sender.publish_now(
            config.topic("events"), json.dumps(document).encode(), retain=False, keep=True
        )
