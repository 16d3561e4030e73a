"""From an assembled study to the journal's outbox: each result gets its ``seq``.

A result is delivered only from the journal (:class:`~edge.delivery.publisher.
Publisher`), so it is journalled, with its ``seq`` and its finished payload, before
the publisher is woken. When the journal refuses the write (``state_dir`` full), the
result waits here, in memory and in order, and is tried again from the tick.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from edge.common.privacy import study_hash
from edge.config import Config
from edge.errors import JournalError
from edge.health.incidents import Incidents
from edge.health.metrics import Metrics
from edge.journal import Journal, OutboxEntry
from edge.messages.result import encode, result_message
from edge.types import StudyResult

log = logging.getLogger(__name__)


class Reports(Protocol):
    """What else a result becomes as it is journalled: its CAD SR
    (:class:`~edge.delivery.dicom_delivery.DicomDelivery`)."""

    def prepare(self, result: StudyResult) -> Any | None:
        """Read what the report needs, outside the journal's lock; None: no report."""

    def commit(self, prepared: Any, result_id: str) -> str:
        """Keep the report of the result ``result_id`` durably; its id (the SR's UID)."""


class ResultJournal:
    """Journals assembled results for the publisher and keeps those the journal refused."""

    def __init__(
        self,
        config: Config,
        journal: Journal,
        metrics: Metrics,
        incidents: Incidents,
        wake_publisher: Callable[[], None],
        reports: Reports | None = None,
    ) -> None:
        self._config = config
        self._reports = reports
        self._journal = journal
        self._metrics = metrics
        self._incidents = incidents
        self._wake_publisher = wake_publisher
        #: results assembled but not yet journalled (journal unwritable): retried
        self._unjournalled: list[StudyResult] = []
        self._lock = threading.Lock()
        #: seq -> monotonic time its result was assembled, until its PUBACK (the publish timing)
        self._submitted_at: dict[int, float] = {}

    @property
    def waiting(self) -> int:
        """Results the journal refused, waiting to be tried again."""
        return len(self._unjournalled)

    def assembled(self, result: StudyResult) -> None:
        """Take a study's result: time its assembly, journal it for the publisher."""
        self._metrics.observe({"assemble": result.timings_ms["assemble"]})
        self._journal_result(result)

    def retry(self) -> None:
        """Journal the results the journal refused, in order, until one fails again."""
        with self._lock:
            waiting, self._unjournalled = self._unjournalled, []
        for index, result in enumerate(waiting):
            if not self._journal_result(result):
                # Still failing: keep the rest in order behind it.
                with self._lock:
                    self._unjournalled.extend(waiting[index + 1 :])
                break
        self._incidents.note_journal_recovery()

    def delivered(self, entry: OutboxEntry) -> None:
        """The broker acknowledged ``entry``: count it and time its publish."""
        self._metrics.count("published")
        submitted = self._submitted_at.pop(entry.seq, None)
        if submitted is not None:
            self._metrics.observe({"publish": (time.monotonic() - submitted) * 1000})
        log.info("result seq %d delivered", entry.seq)

    def _journal_result(self, result: StudyResult) -> bool:
        """Give the result its seq in the journal and wake the publisher; False: retry later."""
        config = self._config
        reports = self._reports
        prepared = None if reports is None else reports.prepare(result)

        def payload(seq: int) -> tuple[str, bytes]:
            message = result_message(result, site=config.site, device=config.device, seq=seq)
            if prepared is not None and reports is not None:
                # Kept in the DICOM outbox before the result that names it is committed.
                message["sr_uid"] = reports.commit(prepared, message["id"])
            # Before the commit makes the result visible to the publisher.
            self._submitted_at[seq] = result.assembled_at
            return message["id"], encode(message)

        try:
            seq = self._journal.record_result(result, config.topic("results"), payload)
        except JournalError as exc:
            self._incidents.journal_failed("publish", exc)
            with self._lock:
                self._unjournalled.append(result)
            return False
        log.info("study %s: result seq %d journalled", study_hash(result.study_uid), seq)
        self._wake_publisher()
        return True
