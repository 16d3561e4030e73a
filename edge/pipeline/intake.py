"""Intake: the policy for each file the watcher hands over, up to the inference queue.

    watch -> intake: journal the file, read its header, claim its SOP Instance UID,
             decode and prepare it on the ingest pool -> infer

A decode worker starts on the file as soon as it is journalled, reading it once
with the same header checks, while the header is read and claimed here: those
milliseconds are off the image's path to a result. What is decided here (skip,
quarantine, duplicate) decides the file's fate, and the worker's reading is let
go; the worker's image must be the one read here (``changed`` if not).

Every per-file failure is handled here with a named reason (quarantine, skip,
duplicate); nothing that one file does stops the daemon. A file that looks broken
only because it is still being written (``RETRYABLE``) is looked at again once it
settles, and a file that cannot be journalled waits in the watch folder.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

from edge.common.privacy import describe, file_tag, study_hash
from edge.config import Config
from edge.engines.engine import Engine
from edge.errors import IngestError, JournalError, Skip
from edge.health.incidents import Incidents
from edge.health.liveness import WorkClock
from edge.health.metrics import Metrics
from edge.journal import Journal
from edge.pipeline.infer import InferenceWorker
from edge.pipeline.ingest import read_header
from edge.pipeline.options import HeaderCheck
from edge.pipeline.pool import DecodePool, Decoding
from edge.pipeline.quarantine import quarantine
from edge.pipeline.study import StudyAssembler
from edge.types import ImageHeader, IncomingFile, ModelInput

log = logging.getLogger(__name__)

#: failures that a file still being written also shows; retried once it settles
RETRYABLE = frozenset({"empty", "truncated", "not_dicom", "malformed", "unreadable"})
#: failures a stop itself can cause (a decoder closed under a file): never the file's
#: fault while stopping
STOP_FAILURES = frozenset({"decoder_crashed", "decode_timeout", "internal_error"})


class Rechecks(Protocol):
    """What intake needs of the watcher: a path looked at again, or let go."""

    def recheck(self, path: Path) -> None: ...

    def forget(self, path: Path) -> None: ...


@dataclasses.dataclass(frozen=True)
class IntakeStages:
    """The stages intake hands work to, built by the daemon."""

    journal: Journal
    incidents: Incidents
    infer: InferenceWorker
    assembler: StudyAssembler
    decoder: DecodePool


class Intake:
    """Takes each file on the ingest pool, one job per path at a time."""

    def __init__(
        self, config: Config, metrics: Metrics, stages: IntakeStages, pool: ThreadPoolExecutor
    ) -> None:
        self._config = config
        self._metrics = metrics
        self._stages = stages
        self._pool = pool
        self._watcher: Rechecks | None = None
        self._paths_in_hand: set[Path] = set()
        self._paths_changed: set[Path] = set()
        self._lock = threading.Lock()
        #: start times of the files the ingest pool has in hand, for the watchdog
        self.clock = WorkClock()
        #: set by the daemon when it stops: what fails now stays for the next start
        self.stopping = threading.Event()

    def attach(self, watcher: Rechecks) -> None:
        """Give intake the watcher that feeds it (built after it, with its callback)."""
        self._watcher = watcher

    @property
    def watcher(self) -> Rechecks:
        assert self._watcher is not None, "attach the watcher first"
        return self._watcher

    @property
    def in_hand(self) -> int:
        """Files the ingest pool holds or has queued."""
        with self._lock:
            return len(self._paths_in_hand)

    def on_file(self, incoming: IncomingFile) -> None:
        """The watcher's callback: queue the file on the ingest pool."""
        self._metrics.count("received")
        with self._lock:
            # One job per path at a time: two events for a file still being written
            # (a new folder's first scan and its close-write) would otherwise both
            # claim and score the same image. The later one is looked at again once
            # the job in hand is done.
            if incoming.path in self._paths_in_hand:
                self._paths_changed.add(incoming.path)
                return
            self._paths_in_hand.add(incoming.path)
        self._pool.submit(self._process_file, incoming)

    def note_file_state(self, path: Path, state: str, reason: str | None = None) -> None:
        """Journal a state whose loss costs only repeated work after a restart."""
        try:
            self._stages.journal.set_file_state(path, state, reason)
        except JournalError as exc:
            self._stages.incidents.journal_failed("ingest", exc)

    def reject(
        self, incoming: IncomingFile, error: IngestError, study_uid: str | None = None
    ) -> None:
        """Quarantine the file with its reason, unless it is only still being written
        (or the daemon is stopping, which may be the cause)."""
        if self.stopping.is_set() and error.reason in STOP_FAILURES:
            log.warning("file %s left for the next start (%s while stopping)",
                        file_tag(incoming.path), error.reason)  # fmt: skip
            return
        settle_s = self._config.watch.settle_s
        if error.reason in RETRYABLE and _recently_written(incoming.path, settle_s):
            log.debug("file %s incomplete (%s); waiting", file_tag(incoming.path), error.reason)
            self.watcher.recheck(incoming.path)
            return
        moved = quarantine(incoming.path, error, self._config.quarantine_dir)
        self.watcher.forget(incoming.path)
        self._metrics.quarantined(error.reason)
        self.note_file_state(incoming.path, "quarantined", error.reason)
        log.warning(
            "quarantined file %s (%s): %s%s",
            file_tag(incoming.path),
            error.reason,
            error.detail,
            f" -> {moved.name}" if moved else "",
        )
        self._stages.incidents.event(
            "quarantined",
            error.reason,
            error.detail,
            path=incoming.path,
            where="ingest",
            study=None if study_uid is None else study_hash(study_uid),
        )

    def _process_file(self, incoming: IncomingFile) -> None:
        token = self.clock.begin()
        try:
            self._ingest(incoming)
        except JournalError as exc:
            # The journal's failure, never the file's: it stays where it is, untouched,
            # and is taken again once the journal answers.
            self._stages.incidents.journal_failed("ingest", exc)
            self.watcher.recheck(incoming.path)
        except Exception as exc:  # noqa: BLE001 - a bug must not stop the daemon; logged below
            # The stack, not the exception's text: that may quote an element's value.
            log.error(
                "unexpected failure on file %s: %s\n%s",
                file_tag(incoming.path),
                describe(exc),
                "".join(traceback.format_tb(exc.__traceback__)),
            )
            self._stages.incidents.error("ingest", describe(exc), incoming.path)
            self.reject(incoming, IngestError("internal_error", describe(exc)))
        finally:
            self.clock.end(token)
            with self._lock:
                self._paths_in_hand.discard(incoming.path)
                changed = incoming.path in self._paths_changed
                self._paths_changed.discard(incoming.path)
            if changed:
                self.watcher.recheck(incoming.path)

    def _ingest(self, incoming: IncomingFile) -> None:
        if self._finished(incoming):
            return
        stages = self._stages
        current = stages.infer.engine
        # A worker reads, checks and decodes the file while it is journalled, its
        # header read and claimed here; what is decided here decides the file's fate.
        decoding = stages.decoder.begin(
            incoming,
            current.preprocessing,
            HeaderCheck(self._config.decode.max_pixels, current.bundle.manifest.accepts),
        )
        try:
            if self._journal_seen(incoming):
                self._take(incoming, decoding)
        finally:
            decoding.abandon()

    def _take(self, incoming: IncomingFile, decoding: Decoding) -> None:
        header = self._read_header(incoming)
        if header is None:
            return
        if incoming.trigger != "scan":  # a file found at start-up waited for the daemon
            header.timings_ms["detect"] = detect_ms(incoming)
        if not self._claim(header):
            return
        log.info(
            "took file %s: %s%s%s of study %s",
            file_tag(incoming.path),
            header.laterality,
            header.view,
            "" if header.screening else " (work-up view, not scored for screening)",
            study_hash(header.study_uid),
        )
        stages = self._stages
        engine = stages.infer.engine_for(stages.assembler.arrived(header))
        try:
            model_input = self._decoded(decoding, header, engine)
        except IngestError as error:
            stages.assembler.dropped(header)
            self.reject(incoming, error, header.study_uid)
            return
        # No journal write here: the image's next state (scored) is milliseconds away,
        # and a commit now would take a core from the engine scoring it.
        stages.infer.submit(model_input)

    def _read_header(self, incoming: IncomingFile) -> ImageHeader | None:
        """The file's header; None when it is skipped or quarantined."""
        try:
            return read_header(
                incoming,
                max_pixels=self._config.decode.max_pixels,
                accepts=self._stages.infer.engine.bundle.manifest.accepts,
            )
        except Skip as skip:
            log.info("skipped file %s: %s", file_tag(incoming.path), skip.detail)
            self._metrics.skipped(skip.reason)
            self.note_file_state(incoming.path, "skipped", skip.reason)
        except IngestError as error:
            self.reject(incoming, error)
        return None

    def _finished(self, incoming: IncomingFile) -> bool:
        """True when the journal says the file needs no work, or cannot say (it waits)."""
        try:
            done = self._stages.journal.finished(incoming)
        except JournalError as exc:
            self._journal_failed(incoming, exc)
            return True
        if done is not None:
            log.debug("file %s already %s", file_tag(incoming.path), done.state)
            self._metrics.count("already_processed")
            return True
        return False

    def _journal_seen(self, incoming: IncomingFile) -> bool:
        """Record the file as taken; False when it must wait for the journal."""
        try:
            self._stages.journal.file_seen(incoming)
        except JournalError as exc:
            self._journal_failed(incoming, exc)
            return False
        return True

    def _journal_failed(self, incoming: IncomingFile, exc: JournalError) -> None:
        self._stages.incidents.journal_failed("ingest", exc)
        self.watcher.recheck(incoming.path)  # taken again after settle_s

    def _claim(self, header: ImageHeader) -> bool:
        """Claim the image's SOP Instance UID; False for a duplicate or when it must wait."""
        path = header.source.path
        try:
            first = self._stages.journal.claim_sop(path, header.sop_uid, header.study_uid)
        except JournalError as exc:
            self._stages.incidents.journal_failed("ingest", exc)
            self.watcher.recheck(path)
            return False
        if not first:
            log.info("duplicate image in study %s: already scored", study_hash(header.study_uid))
            self._metrics.count("duplicates")
        return first

    def _decoded(self, decoding: Decoding, header: ImageHeader, engine: Engine) -> ModelInput:
        prepared = decoding.result(header, engine.preprocessing)
        if prepared.gpu_fallback:
            self._metrics.count("gpu_decode_fallbacks")
        return dataclasses.replace(prepared, engine=engine.info)


def _recently_written(path: Path, settle_s: float) -> bool:
    try:
        return time.time() - path.stat().st_mtime < settle_s
    except OSError:
        return False


def detect_ms(incoming: IncomingFile) -> float:
    """Milliseconds from the file's last write (its mtime) to the watcher taking it.

    The mtime is wall-clock time and the watcher's stamp monotonic, so the stamp is
    carried over to wall-clock time first. File systems set mtime from a coarse
    clock: the figure is good to a few milliseconds.
    """
    taken = time.time() - (time.monotonic() - incoming.detected_at)
    return max(0.0, (taken - incoming.mtime_ns / 1e9) * 1000)
