"""The DICOM side of delivery, as the daemon composes it: SR builder, store, outbox.

One object with a narrow interface for the daemon: ``prepare``/``commit`` around
the journalling of a result (:class:`~edge.pipeline.results.ResultJournal`),
``health`` and ``alarms`` for the health message, ``stages`` for the watchdog,
``start``/``stop`` for its threads, ``forget_old`` for retention. When the SR is
off (no ``dicom`` section, ``dicom.sr.enabled: false``, or nowhere to send it),
every one of them does nothing, and no DICOM outbox is opened.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from edge.common.privacy import study_hash
from edge.config import Config
from edge.delivery.cad_reports import CadReports, PreparedSr
from edge.delivery.dicom_outbox import DicomOutbox
from edge.delivery.dicom_store import DestinationState, DicomStore
from edge.dicom.cad_tree import Algorithm, is_demonstration
from edge.dicom.sources import SourceError
from edge.engines.engine import Engine
from edge.errors import JournalError
from edge.health.incidents import Incidents
from edge.health.liveness import Stage
from edge.health.metrics import Metrics
from edge.types import EngineInfo, StudyResult

log = logging.getLogger(__name__)

#: the engine (serving or finishing) that made a result, by its identity
EngineFor = Callable[[EngineInfo], Engine]
HELD = "dicom_destination_held"


class DicomDelivery:
    def __init__(
        self, config: Config, metrics: Metrics, incidents: Incidents, engine_for: EngineFor
    ) -> None:
        self._metrics = metrics
        self._incidents = incidents
        self._engine_for = engine_for
        self._on = config.dicom.active
        #: SRs the box could not build (a source image gone), since the start
        self.not_built = 0
        if not self._on:
            return
        self._store = DicomStore.open(config.state_dir)
        self._reports = CadReports(config, self._store, self._algorithm)
        self._outbox = DicomOutbox(
            config.dicom, self._store, on_hold=self._held, on_delivered=self._delivered
        )

    def start(self) -> None:
        if self._on:
            self._outbox.start()

    def stop(self, timeout: float) -> None:
        if self._on:
            self._outbox.stop(timeout)
            self._store.close()

    def stages(self) -> list[Stage]:
        """The senders, for the watchdog (a dead sender thread stops the service)."""
        return [Stage("dicom", self._outbox.is_alive, lambda: None)] if self._on else []

    def prepare(self, result: StudyResult) -> PreparedSr | None:
        """What the SR needs from the images; None when off, or (and an event) when the
        images are gone."""
        if not self._on:
            return None
        try:
            return self._reports.prepare(result)
        except SourceError as exc:
            self.not_built += 1
            message = f"study {study_hash(result.study_uid)}: no CAD SR: {exc}"
            log.error("%s", message)
            self._incidents.error("dicom", message, reason="sr_not_built")
            return None

    def commit(self, prepared: PreparedSr, result_id: str) -> str:
        """Keep the SR of the result ``result_id``; its SOP Instance UID.

        Raises
        ------
        JournalError
            When the DICOM outbox cannot be written (the result is journalled later).
        """
        sop_uid = self._reports.commit(prepared, result_id)
        # Durable from here: on its way at once, while the result's own commit flushes.
        self._outbox.wake()
        return sop_uid

    def forget_old(self, keep_days: float) -> int:
        """Forget SRs delivered everywhere more than ``journal.keep_days`` ago.

        Raises
        ------
        JournalError
            When the DICOM outbox cannot be written.
        """
        return self._store.forget(time.time() - keep_days * 86400) if self._on else 0

    def health(self) -> dict[str, Any] | None:
        """``dicom`` in the health message: each destination's queue and last error."""
        if not self._on:
            return None
        return {
            "sr_not_built": self.not_built,
            "destinations": {state.name: _state(state) for state in self._outbox.states()},
        }

    def alarms(self) -> list[str]:
        if not self._on:
            return []
        return [HELD] if any(state.held for state in self._outbox.states()) else []

    def _algorithm(self, engine: EngineInfo, threshold: float) -> Algorithm:
        demo = is_demonstration(self._engine_for(engine).bundle.manifest.description)
        return Algorithm(engine.name, engine.version, engine.sha256, threshold, demo)

    def _held(self, destination: str, reason: str) -> None:
        message = f"DICOM destination {destination} holds its queue: {reason}"
        self._incidents.error("dicom", message, reason=HELD)

    def _delivered(self, destination: str, sop_uid: str, seconds: float) -> None:
        log.info("CAD SR delivered to %s", destination)
        self._metrics.observe({"dicom_store": seconds * 1000})


def _state(state: DestinationState) -> dict[str, Any]:
    oldest = state.oldest_created_at
    return {
        "queue": state.waiting,
        "delivered": state.delivered,
        "last_error": state.last_error,
        "held": state.held,
        "oldest_waiting_at": None
        if oldest is None
        else datetime.fromtimestamp(oldest, timezone.utc).isoformat(timespec="seconds"),
    }


def status_lines(config: Config) -> list[str]:
    """``edge status``: each DICOM destination's queue, hold and last error."""
    if not config.dicom.active or not config.dicom.destinations:
        return []
    try:
        store = DicomStore.open(config.state_dir, read_only=True)
    except JournalError as exc:
        return [f"dicom     unknown: {exc}"]
    try:
        states = store.states([d.name for d in config.dicom.destinations])
    finally:
        store.close()
    return [f"dicom     {_state_line(state)}" for state in states]


def _state_line(state: DestinationState) -> str:
    line = f"{state.name}: {state.waiting} SRs waiting, {state.delivered} delivered"
    if state.held:
        line += f"; HELD ({state.held}): fix the destination, then restart the service"
    elif state.last_error:
        line += f"; last error: {state.last_error}"
    return line
