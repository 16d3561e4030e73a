"""Incidents: internal errors, events and journal failures, counted, kept and sent.

Every stage reports what went wrong through one :class:`Incidents`: the count goes
into the metrics, the last error into health's ``last_error``, and an
``edge.event/1`` to the hub at once (kept by the publisher while the broker is
away) and into the journal for ``edge status``. A failing journal raises its alarm
once, when the first write fails, and is announced once as writable again.
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

    def error(
        self, where: str, message: str, path: Path | None = None, reason: str = "internal_error"
    ) -> None:
        """Count an internal error, keep it as health's last_error and send an event."""
        self._metrics.count("errors")
        self._metrics.error(where, message if path is None else scrub(message, path))
        self.event("error", reason, message, path=path, where=where)

    def journal_failed(self, where: str, exc: JournalError) -> None:
        self._metrics.count("journal_errors")
        if self._journal.write_error is None:
            # A read failed: no write is waiting to succeed again, so no alarm whose
            # end would be announced as "writable again".
            self.error(where, str(exc))
        elif not self._journal_failing:
            self._journal_failing = True
            self.error(where, str(exc), reason="journal_write_failed")

    def note_journal_recovery(self) -> None:
        """Announce, once, that the journal takes writes again after it failed."""
        if self._journal_failing and self._journal.write_error is None:
            self._journal_failing = False
            self.event("journal", "journal_writable", "the journal is writable again")

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
        """Send an ``edge.event/1`` now and journal it for ``edge status``."""
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
        self._sender.publish_now(
            config.topic("events"), json.dumps(document).encode(), retain=False, keep=True
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
