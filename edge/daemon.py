"""The daemon: builds the stages, owns the threads and the stop event, drains on exit.

    watch -> ingest (pool) -> decode -> preprocess -> infer (one thread)
          -> study assembly -> journal -> publish (outbox thread) -> MQTT

The main thread ticks: it closes quiet studies, publishes health, and watches
for the stop signal. Every per-file failure is handled here with a named reason
(quarantine, skip, duplicate); nothing that one file does stops the daemon.

Every step is journalled before it is acted on (:mod:`edge.journal`): a file
taken, its SOP Instance UID claimed, its score, its study's result with its
``seq``. A restarted daemon rebuilds its open studies from the journal, takes
again only the files it had not scored, and replays the results the broker had
not acknowledged. When the journal cannot be written (``state_dir`` full), new
work waits, in the watch folder or in memory, until it can.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from types import FrameType
from typing import Any

from edge import __version__
from edge.common import signals
from edge.common.privacy import file_tag, scrub, study_hash
from edge.config import Config
from edge.credentials import broker_password
from edge.engines.engine import Engine
from edge.engines.store import EngineStore
from edge.engines.switch import EngineSwitch
from edge.errors import IngestError, JournalError, Skip
from edge.health.gpu import GpuTelemetry, open_gpu_telemetry
from edge.health.liveness import Stage, Supervisor, WorkClock
from edge.health.metrics import HEALTH_SCHEMA, Metrics, alarms, disk_free, now_iso
from edge.journal import Backlog, EventRecord, Journal, OutboxEntry
from edge.journal.retention import Retention
from edge.messages.event import event
from edge.mqtt import LinkEvent, MqttLink
from edge.notify import Notifier
from edge.pipeline.infer import InferenceWorker
from edge.pipeline.ingest import read_header
from edge.pipeline.pool import make_pool
from edge.pipeline.publish import Publisher, encode, result_message
from edge.pipeline.quarantine import quarantine
from edge.pipeline.study import StudyAssembler
from edge.pipeline.watch import FolderWatcher
from edge.types import ImageHeader, ImageScore, IncomingFile, ModelInput, StudyResult

log = logging.getLogger(__name__)

#: failures that a file still being written also shows; retried once it settles
RETRYABLE = frozenset({"empty", "truncated", "not_dicom", "malformed", "unreadable"})
#: what ``systemctl reload`` sends: load the store's current engine beside the serving one
RELOAD_SIGNAL = signal.SIGHUP
TICK_S = 0.05
#: in the log line that says the daemon serves ("edge 0.1.0 serving clinic-1/box-1"),
#: what tests and the bench wait for; spaced, so a logger name such as
#: ``edge.engines.serving`` does not match it
SERVING = " serving "
#: how often results that could not be journalled are tried again
JOURNAL_RETRY_S = 1.0


class Daemon:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.metrics = Metrics()
        self.should_exit = threading.Event()
        self._started_at = time.time()
        self.store = EngineStore(config.engine_store_dir)
        self.switch = EngineSwitch(config, self.store, self.metrics, self.should_exit)
        self.gpu: GpuTelemetry | None = None
        #: results assembled but not yet journalled (journal unwritable): retried
        self._unjournalled: list[StudyResult] = []
        self._unjournalled_lock = threading.Lock()
        self._journal_failing = False
        self._health_requested = threading.Event()
        self._outbox_full = False
        #: start times of the files the ingest pool has in hand, for the watchdog
        self._ingest_clock = WorkClock()
        #: seq -> monotonic time its result was assembled, until its PUBACK (the publish timing)
        self._submitted_at: dict[int, float] = {}

    # -- life cycle ---------------------------------------------------------------------

    def run(self) -> None:
        """Run until SIGTERM or SIGINT, then drain and return."""
        with self._signals_captured():
            self.startup()
            try:
                self.main_loop()
            finally:
                self.shutdown()

    def startup(self) -> None:
        config = self.config
        for folder in (config.state_dir, config.quarantine_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self.journal = Journal.open(
            config.state_dir, device=config.device, outbox_max=config.mqtt.outbox_max
        )
        engine = self.switch.load_first()
        self.assembler = StudyAssembler(config.study.quiet_s, self.switch.threshold_of)
        self.assembler.serve(engine.info)
        self.infer = InferenceWorker(
            engine, self._on_score, self._on_infer_failure, self.assembler.engines_in_use
        )
        self.switch.attach(self.infer, self.assembler)
        self.publisher = Publisher(
            self._make_link,
            self.journal,
            status_topic=config.topic("status"),
            on_delivered=self._on_delivered,
            on_request=self._on_request,
        )
        self.retention = Retention(self.journal, config.journal.keep_days)
        self._resume_from_journal()
        self.gpu = open_gpu_telemetry()
        workers = config.decode.workers or (os.cpu_count() or 1)
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ingest")
        self.decoder = make_pool(config.decode.pool, workers, timeout_s=config.decode.timeout_s)
        self._paths_in_hand: set[Path] = set()
        self._paths_changed: set[Path] = set()
        self._pool_lock = threading.Lock()
        self.watcher = FolderWatcher(
            config.watch.dir,
            self._on_file,
            recursive=config.watch.recursive,
            settle_s=config.watch.settle_s,
            ignore=config.watch.ignore,
        )
        self.infer.start()
        self.publisher.start()
        self.watcher.start()
        log.info("edge %s%s%s/%s", __version__, SERVING, config.site, config.device)
        self.supervisor = Supervisor(
            Notifier.from_environment(),
            self._stages(),
            stuck_s=config.health.stuck_s,
            status=self._status_line,
        )
        self.supervisor.ready()

    def main_loop(self) -> None:
        next_health = next_retry = time.monotonic()
        while not self.should_exit.wait(TICK_S):
            for result in self.assembler.due():
                self._publish_result(result)
            if time.monotonic() >= next_retry:
                self._retry_unjournalled()
                next_retry = time.monotonic() + JOURNAL_RETRY_S
            self.switch.poll()
            if self.retention.due():
                self._forget_old()
            if time.monotonic() >= next_health or self._health_requested.is_set():
                self._health_requested.clear()
                self.publish_health()
                next_health = time.monotonic() + self.config.health.interval_s
            self.supervisor.tick()

    def shutdown(self) -> None:
        log.info("stopping: draining the pipeline")
        self.supervisor.stopping("stopping: finishing the files in hand, flushing the outbox")
        self.watcher.stop()
        # Files queued but not begun stay in the watch folder, unfinished in the
        # journal, and are taken at the next start: the stop stays within
        # TimeoutStopSec however many files were waiting.
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.decoder.close()
        self.infer.stop(timeout=30)
        # Studies still incomplete are not published half-done: their scores stay in
        # the journal and they reopen at the next start.
        self._retry_unjournalled()
        self.publish_health()
        self.publisher.stop(timeout=10)
        self.switch.join(timeout=60)
        self.infer.close_engines()
        if self.gpu is not None:
            self.gpu.close()
        self.journal.close()
        log.info("stopped")

    def request_exit(self, signum: int = signal.SIGTERM, frame: FrameType | None = None) -> None:
        if self.should_exit.is_set():
            log.warning("second signal: exiting without waiting")
        self.should_exit.set()

    def request_reload(self, signum: int = RELOAD_SIGNAL, frame: FrameType | None = None) -> None:
        self.switch.request()

    # -- the stages' hand-offs ------------------------------------------------------------

    def _make_link(self, on_event: Callable[[LinkEvent], None]) -> MqttLink:
        config = self.config
        return MqttLink(
            config.mqtt,
            config.mqtt.client_id or f"edge-{config.site}-{config.device}",
            will_topic=config.topic("status"),
            will_payload=b"offline",
            on_event=on_event,
            subscriptions=[config.topic("health/get")],
            password=broker_password(config.mqtt),
        )

    def _resume_from_journal(self) -> None:
        """Rebuild open studies from journalled scores; forget files that vanished.

        Files taken but not scored are not resubmitted here: they are still in
        the watch folder, and the watcher's start-up scan hands them on again.
        """
        unfinished = self.journal.unfinished_files()
        for record in unfinished:
            if not Path(record.path).exists():
                self._note_file_state(Path(record.path), "gone", "missing_at_start")
        scores = self.journal.open_study_scores()
        for result in self.assembler.restore(scores):
            self._publish_result(result)
        if unfinished or scores:
            log.info(
                "resuming: %d scored images of open studies, %d files not yet scored",
                len(scores),
                len(unfinished),
            )

    def _on_file(self, incoming: IncomingFile) -> None:
        self.metrics.count("received")
        with self._pool_lock:
            # One job per path at a time: two events for a file still being written
            # (a new folder's first scan and its close-write) would otherwise both
            # claim and score the same image. The later one is looked at again once
            # the job in hand is done.
            if incoming.path in self._paths_in_hand:
                self._paths_changed.add(incoming.path)
                return
            self._paths_in_hand.add(incoming.path)
        self.pool.submit(self._process_file, incoming)

    def _process_file(self, incoming: IncomingFile) -> None:
        token = self._ingest_clock.begin()
        try:
            self._ingest(incoming)
        except Exception as exc:  # a bug must not stop the daemon
            log.exception("unexpected failure on file %s", file_tag(incoming.path))
            self._report_error("ingest", f"{type(exc).__name__}: {exc}", incoming.path)
            self._reject(incoming, IngestError("internal_error", f"{type(exc).__name__}: {exc}"))
        finally:
            self._ingest_clock.end(token)
            with self._pool_lock:
                self._paths_in_hand.discard(incoming.path)
                changed = incoming.path in self._paths_changed
                self._paths_changed.discard(incoming.path)
            if changed:
                self.watcher.recheck(incoming.path)

    def _ingest(self, incoming: IncomingFile) -> None:
        config = self.config
        if not self._journal_file(incoming):
            return
        try:
            header = read_header(
                incoming,
                max_pixels=config.decode.max_pixels,
                accepts=self.infer.engine.bundle.manifest.accepts,
            )
        except Skip as skip:
            log.info("skipped file %s: %s", file_tag(incoming.path), skip.detail)
            self.metrics.skipped(skip.reason)
            self._note_file_state(incoming.path, "skipped", skip.reason)
            return
        except IngestError as error:
            self._reject(incoming, error)
            return
        if incoming.trigger != "scan":  # a file found at start-up waited for the daemon
            header.timings_ms["detect"] = detect_ms(incoming)
        if not self._claim(header):
            return
        engine = self.infer.engine_for(self.assembler.arrived(header))
        try:
            model_input = self._decode_and_prepare(header, engine)
        except IngestError as error:
            self.assembler.dropped(header)
            self._reject(incoming, error, header.study_uid)
            return
        self._note_file_state(incoming.path, "decoded")
        self.infer.submit(model_input)

    def _journal_file(self, incoming: IncomingFile) -> bool:
        """Record the file as taken; False when it needs no work or must wait."""
        try:
            done = self.journal.finished(incoming)
            if done is not None:
                log.debug("file %s already %s", file_tag(incoming.path), done.state)
                self.metrics.count("already_processed")
                return False
            self.journal.file_seen(incoming)
        except JournalError as exc:
            self._journal_failed("ingest", exc)
            self.watcher.recheck(incoming.path)  # taken again after settle_s
            return False
        return True

    def _claim(self, header: ImageHeader) -> bool:
        """Claim the image's SOP Instance UID; False for a duplicate or when it must wait."""
        try:
            first = self.journal.claim_sop(header.source.path, header.sop_uid, header.study_uid)
        except JournalError as exc:
            self._journal_failed("ingest", exc)
            self.watcher.recheck(header.source.path)
            return False
        if not first:
            log.info("duplicate image in study %s: already scored", study_hash(header.study_uid))
            self.metrics.count("duplicates")
        return first

    def _note_file_state(self, path: Path, state: str, reason: str | None = None) -> None:
        """Journal a state whose loss costs only repeated work after a restart."""
        try:
            self.journal.set_file_state(path, state, reason)
        except JournalError as exc:
            self._journal_failed("ingest", exc)

    def _decode_and_prepare(self, header: ImageHeader, engine: Engine) -> ModelInput:
        prepared = self.decoder.run(header, engine.preprocessing)
        return dataclasses.replace(prepared, engine=engine.info)

    def _reject(
        self, incoming: IncomingFile, error: IngestError, study_uid: str | None = None
    ) -> None:
        settle_s = self.config.watch.settle_s
        if error.reason in RETRYABLE and _recently_written(incoming.path, settle_s):
            log.debug("file %s incomplete (%s); waiting", file_tag(incoming.path), error.reason)
            self.watcher.recheck(incoming.path)
            return
        moved = quarantine(incoming.path, error, self.config.quarantine_dir)
        self.watcher.forget(incoming.path)
        self.metrics.quarantined(error.reason)
        self._note_file_state(incoming.path, "quarantined", error.reason)
        log.warning(
            "quarantined file %s (%s): %s%s",
            file_tag(incoming.path),
            error.reason,
            error.detail,
            f" -> {moved.name}" if moved else "",
        )
        self._emit_event(
            "quarantined",
            error.reason,
            error.detail,
            path=incoming.path,
            where="ingest",
            study=None if study_uid is None else study_hash(study_uid),
        )

    def _on_score(self, score: ImageScore) -> None:
        try:
            self.journal.image_scored(score)
        except JournalError as exc:
            # Not journalled, so not kept: the file is scored again once it can be.
            self._journal_failed("infer", exc)
            self.assembler.dropped(score.header)
            self.watcher.recheck(score.header.source.path)
            return
        self.metrics.count("processed")
        self.metrics.observe(score.timings_ms)
        result = self.assembler.scored(score)
        if result is not None:
            self._publish_result(result)

    def _on_infer_failure(self, item: ModelInput, reason: str, error: Exception) -> None:
        detail = f"{type(error).__name__}: {error}"
        self._report_error("infer", detail, item.header.source.path)
        self.assembler.dropped(item.header)
        self._reject(item.header.source, IngestError(reason, detail), item.header.study_uid)

    def _publish_result(self, result: StudyResult) -> None:
        self.metrics.observe({"assemble": result.timings_ms["assemble"]})
        self._journal_result(result)

    def _journal_result(self, result: StudyResult) -> bool:
        """Give the result its seq in the journal and wake the publisher; False: retry later."""
        config = self.config

        def payload(seq: int) -> tuple[str, bytes]:
            message = result_message(result, site=config.site, device=config.device, seq=seq)
            # Before the commit makes the result visible to the publisher.
            self._submitted_at[seq] = result.assembled_at
            return message["id"], encode(message)

        try:
            seq = self.journal.record_result(result, config.topic("results"), payload)
        except JournalError as exc:
            self._journal_failed("publish", exc)
            with self._unjournalled_lock:
                self._unjournalled.append(result)
            return False
        log.info("study %s: result seq %d journalled", study_hash(result.study_uid), seq)
        self.publisher.wake()
        return True

    def _retry_unjournalled(self) -> None:
        with self._unjournalled_lock:
            waiting, self._unjournalled = self._unjournalled, []
        for index, result in enumerate(waiting):
            if not self._journal_result(result):
                # Still failing: keep the rest in order behind it.
                with self._unjournalled_lock:
                    self._unjournalled.extend(waiting[index + 1 :])
                break
        if self._journal_failing and self.journal.write_error is None:
            self._journal_failing = False
            self._emit_event("journal", "journal_writable", "the journal is writable again")

    def _forget_old(self) -> None:
        try:
            self.retention.step()
        except JournalError as exc:
            self._journal_failed("retention", exc)

    def _journal_failed(self, where: str, exc: JournalError) -> None:
        self.metrics.count("journal_errors")
        if self.journal.write_error is None:
            # A read failed: no write is waiting to succeed again, so no alarm whose
            # end would be announced as "writable again".
            self._report_error(where, str(exc))
        elif not self._journal_failing:
            self._journal_failing = True
            self._report_error(where, str(exc), reason="journal_write_failed")

    def _on_delivered(self, entry: OutboxEntry) -> None:
        self.metrics.count("published")
        submitted = self._submitted_at.pop(entry.seq, None)
        if submitted is not None:
            self.metrics.observe({"publish": (time.monotonic() - submitted) * 1000})
        log.info("result seq %d delivered", entry.seq)

    def _on_request(self, topic: str, payload: bytes) -> None:
        if topic == self.config.topic("health/get"):
            self._health_requested.set()

    def _report_error(
        self, where: str, message: str, path: Path | None = None, reason: str = "internal_error"
    ) -> None:
        """Count an internal error, keep it as health's last_error and send an event."""
        self.metrics.count("errors")
        self.metrics.error(where, message if path is None else scrub(message, path))
        self._emit_event("error", reason, message, path=path, where=where)

    def _emit_event(
        self,
        kind: str,
        reason: str,
        message: str,
        *,
        path: Path | None = None,
        where: str = "",
        study: str | None = None,
    ) -> None:
        config = self.config
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
        self.publisher.publish_now(
            config.topic("events"), json.dumps(document).encode(), retain=False, keep=True
        )
        try:
            self.journal.record_event(
                EventRecord(
                    **{k: document[k] for k in ("at", "kind", "reason", "file", "study")},
                    stage=document["where"],
                    message=document["message"],
                )
            )
        except JournalError:
            # Sent all the same; the failing journal is reported by the write that found it.
            self.metrics.count("journal_errors")

    # -- health ---------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        config = self.config
        engine = self.infer.engine
        state_disk = disk_free(config.state_dir)
        try:
            backlog = self.journal.backlog()
        except JournalError as exc:
            self._journal_failed("health", exc)
            backlog = None
        self._note_outbox_full(backlog)
        message: dict[str, Any] = {
            "schema": HEALTH_SCHEMA,
            "site": config.site,
            "device": config.device,
            "version": __version__,
            "at": now_iso(),
            "uptime_s": round(time.time() - self._started_at, 1),
            "engine": {
                "name": engine.info.name,
                "version": engine.info.version,
                "sha256": engine.info.sha256,
                "backend": engine.info.backend,
                "backend_requested": config.engine.backend,
                "backend_reason": engine.backend_reason,
                "source": self.switch.origin,
                "finishing": [info.version for info in self.infer.retiring()],
                "last_activation": self.switch.activation,
            },
            "broker": {
                "connected": self.publisher.link.connected,
                "last_error": self.publisher.link.last_error or None,
            },
            "disk": {
                "watch": disk_free(config.watch.dir),
                "state": state_disk,
            },
            "queues": {
                "files_pending": self._files_pending(),
                "infer": self.infer.depth,
                "open_studies": self.assembler.open_studies,
                "outbox": None if backlog is None else backlog.outbox,
                "journal_backlog": None if backlog is None else backlog.waiting,
                "unjournalled": len(self._unjournalled),
            },
            "journal": {
                "last_seq": None if backlog is None else backlog.last_seq,
                "oldest_undelivered_at": None
                if backlog is None or backlog.oldest_created_at is None
                else _iso(backlog.oldest_created_at),
                "write_error": self.journal.write_error,
            },
            "counters": {
                **self.metrics.counters(),
                "events_dropped": self.publisher.dropped_events,
            },
            "latency_ms": self.metrics.latency(),
            "last_error": self.metrics.last_error,
            "alarms": alarms(
                results_waiting=0 if backlog is None else backlog.waiting,
                journal_error=self.journal.write_error,
                state_disk=state_disk,
                min_free_mb=config.health.min_free_mb,
            ),
        }
        if self.gpu is not None:
            message["gpu"] = {"source": self.gpu.source, "devices": self.gpu.snapshot()}
        return message

    def _note_outbox_full(self, backlog: Backlog | None) -> None:
        full = backlog is not None and backlog.waiting > 0
        if full and not self._outbox_full:
            log.warning(
                "outbox full (mqtt.outbox_max %d): results wait in the journal (%d so far)",
                self.config.mqtt.outbox_max,
                backlog.waiting if backlog else 0,
            )
        self._outbox_full = full

    def _stages(self) -> list[Stage]:
        """The stages the systemd watchdog watches for progress."""
        return [
            Stage("watch", self.watcher.is_alive, lambda: None),
            Stage("ingest", lambda: True, self._ingest_clock.oldest),
            Stage("infer", self.infer.is_alive, lambda: self.infer.busy_since),
            Stage("publish", self.publisher.is_alive, lambda: None),
        ]

    def _status_line(self) -> str:
        """``systemctl status``'s one line: engine, queues, outbox, broker."""
        engine = self.infer.engine
        link = self.publisher.link
        return (
            f"engine {engine.info.name} {engine.info.version} on {engine.info.backend}"
            f"; queue {self._files_pending()} files, {self.infer.depth} to score, "
            f"{self.assembler.open_studies} open studies; outbox {self.publisher.backlog}; "
            f"broker {link.where} {'connected' if link.connected else 'not connected'}"
        )

    def _files_pending(self) -> int:
        """Files seen but not yet complete, and files in the ingest pool's hands."""
        with self._pool_lock:
            in_hand = len(self._paths_in_hand)
        return self.watcher.pending + in_hand

    def publish_health(self) -> None:
        payload = json.dumps(self.health(), separators=(",", ":")).encode()
        self.publisher.publish_now(self.config.topic("health"), payload, retain=True)

    # -- signals ----------------------------------------------------------------------------

    def _signals_captured(self) -> contextlib.AbstractContextManager[None]:
        """Stop on SIGTERM/SIGINT and reload on SIGHUP for the daemon's lifetime."""
        handlers: dict[signal.Signals, signals.Handler] = dict.fromkeys(
            signals.STOP_SIGNALS, self.request_exit
        )
        handlers[RELOAD_SIGNAL] = self.request_reload
        return signals.captured(handlers)


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, timezone.utc).isoformat(timespec="seconds")


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
