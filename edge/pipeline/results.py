"""From an assembled study to the journal's outbox: each result gets its ``seq``.

The shadow engine's scores come here too (the inference worker's sink), and each
shadowed result's companion (``edge.shadow/1``) is journalled once its scores are
in (:class:`~edge.pipeline.shadow_study.ShadowCompanions`), after its result.

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
from edge.messages.shadow import shadow_message
from edge.pipeline.shadow_study import JournalledResult, ShadowCompanions
from edge.types import ImageScore, ShadowResult, ShadowScore, StudyResult

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
        #: the shadow's companions of the results journalled here (edge.shadow/1)
        self.companions = ShadowCompanions(self.companion)
        #: results assembled but not yet journalled (journal unwritable), each with the
        #: score that completed its study, journalled with it: retried
        self._unjournalled: list[tuple[StudyResult, ImageScore | None]] = []
        #: companions not yet journalled (journal unwritable): retried
        self._companions_waiting: list[tuple[ShadowResult, JournalledResult]] = []
        self._lock = threading.Lock()
        #: seq -> monotonic time its result was assembled, until its PUBACK (the publish timing)
        self._submitted_at: dict[int, float] = {}

    @property
    def waiting(self) -> int:
        """Results the journal refused, waiting to be tried again."""
        return len(self._unjournalled)

    # -- the shadow's scores (the inference worker's ShadowSink) ----------------------------

    def expect(self, sop_uid: str) -> None:
        """The image's shadow score follows its serving score."""
        self.companions.expect(sop_uid)

    def shadowed(self, sop_uid: str, score: ShadowScore | None) -> None:
        """Keep the shadow's score of an image (for a restart) and gather it."""
        if score is not None:
            try:
                self._journal.image_shadowed(sop_uid, score)
            except JournalError as exc:  # kept in memory: only a restart would lose it
                log.warning("cannot journal a shadow score: %s", exc)
        self.companions.shadowed(sop_uid, score)

    def companion(self, shadow: ShadowResult, journalled: JournalledResult) -> None:
        """Journal a result's shadow companion for the publisher (kept when refused)."""
        if not self._journal_companion(shadow, journalled):
            with self._lock:
                self._companions_waiting.append((shadow, journalled))

    def assembled(self, result: StudyResult, completing: ImageScore | None = None) -> None:
        """Take a study's result: time its assembly, journal it for the publisher.

        ``completing``: the score of the image that completed the study, not yet
        journalled (:meth:`~edge.pipeline.study.StudyAssembler.scored`): it is
        journalled with the result.
        """
        self._metrics.observe({"assemble": result.timings_ms["assemble"]})
        self._journal_result(result, completing)

    def retry(self) -> None:
        """Journal the results the journal refused, in order, until one fails again."""
        with self._lock:
            waiting, self._unjournalled = self._unjournalled, []
        for index, (result, completing) in enumerate(waiting):
            if not self._journal_result(result, completing):
                # Still failing: keep the rest in order behind it.
                with self._lock:
                    self._unjournalled.extend(waiting[index + 1 :])
                break
        with self._lock:
            companions, self._companions_waiting = self._companions_waiting, []
        for shadow, journalled in companions:
            self.companion(shadow, journalled)
        self._incidents.note_journal_recovery()

    def delivered(self, entry: OutboxEntry) -> None:
        """The broker acknowledged ``entry``: count it and time its publish."""
        self._metrics.count("published")
        submitted = self._submitted_at.pop(entry.seq, None)
        if submitted is not None:
            self._metrics.observe({"publish": (time.monotonic() - submitted) * 1000})
        log.info("result seq %d delivered", entry.seq)

    def _journal_result(self, result: StudyResult, completing: ImageScore | None) -> bool:
        """Give the result its seq in the journal and wake the publisher; False: retry later."""
        config = self._config
        reports = self._reports
        prepared = None if reports is None else reports.prepare(result)
        follows = self.companions.follows(result)
        named: list[str] = []

        def payload(seq: int) -> tuple[str, bytes]:
            message = result_message(
                result, site=config.site, device=config.device, seq=seq, shadow_follows=follows
            )
            named.append(message["id"])
            if prepared is not None and reports is not None:
                # Kept in the DICOM outbox before the result that names it is committed.
                message["sr_uid"] = reports.commit(prepared, message["id"])
            # Before the commit makes the result visible to the publisher.
            self._submitted_at[seq] = result.assembled_at
            return message["id"], encode(message)

        try:
            seq = self._journal.record_result(result, config.topic("results"), payload, completing)
        except JournalError as exc:
            self._incidents.journal_failed("publish", exc)
            with self._lock:
                self._unjournalled.append((result, completing))
            return False
        self._wake_publisher()
        log.info("study %s: result seq %d journalled", study_hash(result.study_uid), seq)
        self.companions.journalled(JournalledResult.of(result, seq, named[-1]))
        return True

    def _journal_companion(self, shadow: ShadowResult, journalled: JournalledResult) -> bool:
        config = self._config

        def payload(seq: int) -> bytes:
            return encode(
                shadow_message(
                    shadow,
                    result_id=journalled.id,
                    seq=seq,
                    site=config.site,
                    device=config.device,
                    study_uid=journalled.study_uid,
                    serving=journalled.engine,
                )
            )

        try:
            seq = self._journal.record_companion(journalled.id, config.topic("shadow"), payload)
        except JournalError as exc:
            self._incidents.journal_failed("publish", exc)
            return False
        if seq is not None:
            log.info("result seq %d: shadow companion journalled", seq)
            self._wake_publisher()
        return True
