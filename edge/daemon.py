"""The daemon: builds the stages, owns the threads and the stop event, drains on exit.

    watch -> intake (ingest pool: journal, header, claim, decode, prepare)
          -> infer (one thread) -> study assembly -> results journal
          -> publish (outbox thread) -> MQTT

This module only composes and runs: the per-file policy is
:mod:`edge.pipeline.intake`, journalling results for the publisher
:mod:`edge.pipeline.results`, errors and events :mod:`edge.health.incidents`, and
the health message :mod:`edge.messages.health`, built from the snapshot taken here.
The main thread ticks: it closes quiet studies, publishes health, and watches for
the stop signal.

Every step is journalled before it is acted on (:mod:`edge.journal`): a file
taken, its SOP Instance UID claimed, its score, its study's result with its
``seq``. A restarted daemon rebuilds its open studies from the journal, takes
again only the files it had not scored, and replays the results the broker had
not acknowledged. When the journal cannot be written (``state_dir`` full), new
work waits, in the watch folder or in memory, until it can.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import FrameType

from edge import __version__
from edge.common import signals
from edge.common.privacy import describe
from edge.config import Config
from edge.delivery.dicom_delivery import DicomDelivery
from edge.delivery.health import (
    OutboxWatch,
    broker_fields,
    delivery_alarms,
    delivery_snapshot,
    journal_fields,
    journal_state,
)
from edge.delivery.publisher import box_publisher
from edge.dicom.service import daemon_hooks, open_receiver
from edge.engines.store import EngineStore
from edge.engines.switch import EngineSwitch
from edge.errors import ConfigError, IngestError, JournalError
from edge.health.gpu import GpuTelemetry, open_gpu_telemetry
from edge.health.incidents import Incidents
from edge.health.liveness import Stage, Supervisor
from edge.health.metrics import Metrics, alarms, disk_free
from edge.journal import OutboxEntry
from edge.journal.recovery import open_journal
from edge.journal.retention import Retention
from edge.messages.health import EngineState, HealthSnapshot, health_message
from edge.notify import Notifier
from edge.pipeline.infer import InferenceWorker
from edge.pipeline.intake import Intake, IntakeStages
from edge.pipeline.pool import pool_for
from edge.pipeline.results import ResultJournal
from edge.pipeline.resume import resume_from_journal
from edge.pipeline.study import StudyAssembler
from edge.pipeline.watch_folder import WatchGuard, watch_alarms, watch_folder_problem
from edge.statelock import state_lock
from edge.stopping import StopClock
from edge.types import ImageScore, ModelInput, StudyResult

log = logging.getLogger(__name__)

#: what ``systemctl reload`` sends: load the store's current engine beside the serving one
RELOAD_SIGNAL = signal.SIGHUP
#: the main loop's tick; a stop, a reload and a health request wake it at once
TICK_S = 0.5
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
        #: a second stop signal: the drain waits for nothing more
        self.force_exit = threading.Event()
        #: the stop left work in hand (deadline or second signal): the process must
        #: exit without waiting for those threads (the journal has it all)
        self.abandoned = False
        self._started_at = time.time()
        self.store = EngineStore(config.engine_store_dir)
        self.switch = EngineSwitch(config, self.store, self.metrics, self.should_exit)
        self.gpu: GpuTelemetry | None = None
        self._health_requested = threading.Event()
        self._tick_now = threading.Event()
        self._outbox = OutboxWatch(config.mqtt.outbox_max)

    # -- life cycle ---------------------------------------------------------------------

    def run(self) -> None:
        """Run until SIGTERM or SIGINT, then drain and return.

        Raises
        ------
        StateLocked
            Another daemon runs on this ``state_dir``: nothing was started.
        """
        with state_lock(self.config.state_dir), self._signals_captured():
            self.startup()
            try:
                self.main_loop()
            finally:
                self.shutdown()

    def startup(self) -> None:
        config = self.config
        for folder in (config.state_dir, config.quarantine_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self.receiver = open_receiver(config)  # first: a port it cannot bind stops the start
        self.journal, self.recovery = open_journal(
            config.state_dir, device=config.device, outbox_max=config.mqtt.outbox_max
        )
        self._build_stages()
        if self.recovery is not None:
            self.incidents.journal_replaced(self.recovery)
        # After the engine (its errors come first), before anything looks at the folder.
        if (problem := watch_folder_problem(config.watch.dir)) is not None:
            raise ConfigError(problem)
        resume_from_journal(self.journal, self.assembler, self.results, self.incidents)
        self.gpu = open_gpu_telemetry()
        self._build_intake()
        hooks = daemon_hooks(self.journal, self.incidents, self._request_health)
        self.receiver.start(self.intake.on_file, **hooks)
        self.infer.start()
        self.publisher.start()
        self.dicom.start()
        self.watcher.start()
        log.info("edge %s%s%s/%s", __version__, SERVING, config.site, config.device)
        self.supervisor = Supervisor(
            Notifier.from_environment(),
            self._stages(),
            stuck_s=config.health.stuck_s,
            status=self._status_line,
        )
        self.supervisor.ready()

    def _build_stages(self) -> None:
        """The engine, inference, study assembly and the way out to the broker."""
        config = self.config
        engine = self.switch.load_first()
        self.assembler = StudyAssembler(config.study.quiet_s, self.switch.threshold_of)
        self.assembler.serve(engine.info)
        self.infer = InferenceWorker(
            engine, self._on_score, self._on_infer_failure, self.assembler.engines_in_use
        )
        self.switch.attach(self.infer, self.assembler)
        self.publisher = box_publisher(
            config, self.journal, on_delivered=self._on_delivered, on_request=self._on_request
        )
        self.incidents = Incidents(config, self.metrics, self.journal, self.publisher)
        self.dicom = DicomDelivery(config, self.metrics, self.incidents, self.infer.engine_for)
        self.results = ResultJournal(
            config, self.journal, self.metrics, self.incidents, self.publisher.wake, self.dicom
        )
        self.infer.shadow_to(self.results)
        self.retention = Retention(
            self.journal, config.journal.keep_days, keep_unconfirmed=config.mqtt.confirm == "hub"
        )

    def _build_intake(self) -> None:
        """The watcher and the ingest pool that takes its files (and decodes them)."""
        config = self.config
        workers = config.decode.workers or (os.cpu_count() or 1)
        self.ingest_pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ingest")
        self.decoder = pool_for(config.decode, workers)
        stages = IntakeStages(
            self.journal, self.incidents, self.infer, self.assembler, self.decoder
        )
        self.intake = Intake(config, self.metrics, stages, self.ingest_pool)
        self.watcher = WatchGuard.on(config.watch, self.intake.on_file, self.incidents.event)
        self.intake.attach(self.watcher)

    def main_loop(self) -> None:
        next_health = next_retry = time.monotonic()
        while True:
            self._tick_now.wait(TICK_S)
            self._tick_now.clear()
            if self.should_exit.is_set():
                break
            for result in self.assembler.due():
                self.results.assembled(result)
            if time.monotonic() >= next_retry:
                self.results.retry()
                next_retry = time.monotonic() + JOURNAL_RETRY_S
            self.switch.poll()
            self.watcher.poll()
            if self.retention.due():
                self._forget_old()
            if time.monotonic() >= next_health or self._health_requested.is_set():
                self._health_requested.clear()
                self.publish_health()
                next_health = time.monotonic() + self.config.health.interval_s
            self.supervisor.tick()

    def shutdown(self) -> None:
        """Drain within ``stop_timeout_s`` (a second signal: at once); see :mod:`edge.stopping`."""
        clock = StopClock(self.config.stop_timeout_s, self.force_exit)
        log.info("stopping: draining the pipeline (at most %g s)", self.config.stop_timeout_s)
        self.supervisor.stopping("stopping: finishing the files in hand, flushing the outbox")
        self.receiver.stop()  # first: no instance is acknowledged that nobody will take
        self.intake.stopping.set()
        self.watcher.stop()
        # Files queued but not begun stay in the watch folder, unfinished in the
        # journal, and are taken at the next start.
        self.ingest_pool.shutdown(wait=False, cancel_futures=True)
        ingest_done = clock.wait_for(lambda: self.intake.in_hand == 0)
        if ingest_done:
            self.decoder.close()  # not under a file in hand: it would fail as decoder_crashed
        # Waits in slices: a second signal must end them (a thread join is resumed
        # after a signal handler, not cut short by it).
        self.infer.stop(timeout=0)
        clock.wait_for(lambda: not self.infer.is_alive())
        # Studies still incomplete are not published half-done: their scores stay in
        # the journal and they reopen at the next start.
        self.results.retry()
        self.publish_health()
        self.publisher.stop(timeout=clock.remaining())
        self.dicom.stop(timeout=clock.remaining())
        clock.wait_for(lambda: not self.switch.loading)
        self.abandoned = not (ingest_done and not self.infer.is_alive())
        if self.abandoned:
            clock.say_abandoned()
            return
        self.infer.close_engines()
        if self.gpu is not None:
            self.gpu.close()
        self.journal.close()
        log.info("stopped")

    def request_exit(self, signum: int = signal.SIGTERM, frame: FrameType | None = None) -> None:
        if self.should_exit.is_set():
            log.warning("second signal: exiting without waiting")
            self.force_exit.set()
        self.should_exit.set()
        self._tick_now.set()

    def request_reload(self, signum: int = RELOAD_SIGNAL, frame: FrameType | None = None) -> None:
        self.switch.request()
        self._tick_now.set()
        if not self.publisher.link.connected:
            self.publisher.link.retry_now()  # a fixed password need not wait out the back-off

    def _signals_captured(self) -> contextlib.AbstractContextManager[None]:
        """Stop on SIGTERM/SIGINT and reload on SIGHUP for the daemon's lifetime."""
        handlers: dict[signal.Signals, signals.Handler] = dict.fromkeys(
            signals.STOP_SIGNALS, self.request_exit
        )
        handlers[RELOAD_SIGNAL] = self.request_reload
        return signals.captured(handlers)

    # -- the stages' hand-offs ------------------------------------------------------------

    def _on_score(self, score: ImageScore) -> None:
        try:
            # Journalled here unless it completes its study: then with the result.
            result: StudyResult | None = self.assembler.scored(score, self.journal.image_scored)
        except JournalError as exc:
            # Not journalled, so not kept: the file is scored again once it can be.
            self.incidents.journal_failed("infer", exc)
            self.assembler.dropped(score.header)
            self.watcher.recheck(score.header.source.path)
            return
        self.metrics.count("processed")
        self.metrics.observe(score.timings_ms)
        if result is not None:
            self.results.assembled(result, completing=score)

    def _on_infer_failure(self, item: ModelInput, reason: str, error: Exception) -> None:
        detail = describe(error)  # its text may quote an element's value
        self.incidents.error("infer", detail, item.header.source.path)
        self.assembler.dropped(item.header)
        self.intake.reject(item.header.source, IngestError(reason, detail), item.header.study_uid)

    def _on_delivered(self, entry: OutboxEntry) -> None:
        self.results.delivered(entry)

    def _on_request(self, topic: str, payload: bytes) -> None:
        if topic == self.config.topic("health/get"):
            self._request_health()

    def _request_health(self) -> None:
        """A health message now (the hub asked, or an alarm changed), not at the next tick."""
        self._health_requested.set()
        self._tick_now.set()

    def _forget_old(self) -> None:
        try:
            if self.retention.step() is not None:  # a pass over the journal ended
                self.dicom.forget_old(self.config.journal.keep_days)
        except JournalError as exc:
            self.incidents.journal_failed("retention", exc)

    # -- health ---------------------------------------------------------------------------

    def health_snapshot(self) -> HealthSnapshot:
        """What the stages say now, for :func:`~edge.messages.health.health_message`."""
        config = self.config
        state_disk = disk_free(config.state_dir)
        on_error = functools.partial(self.incidents.journal_failed, "health")
        backlog = self._outbox.backlog(self.journal, on_error)
        delivery = delivery_snapshot(config, self.journal, self.publisher, on_error)
        replaced = None if self.recovery is None else self.recovery.health()
        return HealthSnapshot(
            site=config.site,
            device=config.device,
            version=__version__,
            uptime_s=time.time() - self._started_at,
            engine=self._engine_state(),
            broker_connected=self.publisher.link.connected,
            broker_error=self.publisher.link.last_error or None,
            disk={"watch": disk_free(config.watch.dir), "state": state_disk},
            files_pending=self._files_pending(),
            infer_depth=self.infer.depth,
            scoring=self.infer.scoring,
            open_studies=self.assembler.open_studies,
            unjournalled=self.results.waiting,
            journal=journal_state(backlog, self.journal, replaced),
            counters={**self.metrics.counters(), "events_dropped": self.publisher.dropped_events},
            latency_ms=self.metrics.latency(),
            last_error=self.metrics.last_error,
            alarms=alarms(
                results_waiting=0 if backlog is None else backlog.waiting,
                journal_error=self.journal.write_error,
                state_disk=state_disk,
                min_free_mb=config.health.min_free_mb,
                receiver_refusing=self.receiver.refusing,
                journal_failed=self.journal.failure,
                journal_replaced=self.recovery is not None,
            )
            + delivery_alarms(delivery)
            + self.dicom.alarms()
            + watch_alarms(self.watcher),
            receiver=self.receiver.snapshot(),
            journal_delivery=journal_fields(delivery),
            broker_delivery=broker_fields(delivery),
            gpu=None
            if self.gpu is None
            else {"source": self.gpu.source, "devices": self.gpu.snapshot()},
            dicom=self.dicom.health(),
        )

    def _engine_state(self) -> EngineState:
        engine = self.infer.engine
        return EngineState(
            info=engine.info,
            backend_requested=self.config.engine.backend,
            backend_reason=engine.backend_reason,
            source=self.switch.origin,
            finishing=[info.version for info in self.infer.retiring()],
            last_activation=self.switch.activation,
            shadow=self.switch.shadow_state(),
        )

    def _stages(self) -> list[Stage]:
        """The stages the systemd watchdog watches for progress."""
        return [
            Stage("watch", self.watcher.is_alive, lambda: None),
            Stage("ingest", lambda: True, self.intake.clock.oldest),
            Stage("infer", self.infer.is_alive, lambda: self.infer.busy_since),
            Stage("publish", self.publisher.is_alive, lambda: None),
            *self.receiver.stages(),
            *self.dicom.stages(),
        ]

    def _status_line(self) -> str:
        """``systemctl status``'s one line: engine, queues, outbox, broker."""
        info, link = self.infer.engine.info, self.publisher.link
        return (
            f"engine {info.name} {info.version} on {info.backend}"
            f"; queue {self._files_pending()} files, {self.infer.depth} to score, "
            f"{self.assembler.open_studies} open studies; outbox {self.publisher.backlog}; "
            f"broker {link.where} {'connected' if link.connected else 'not connected'}"
        )

    def _files_pending(self) -> int:
        """Files seen but not yet complete, and files in the ingest pool's hands."""
        return self.watcher.pending + self.intake.in_hand

    def publish_health(self) -> None:
        message = health_message(self.health_snapshot())
        payload = json.dumps(message, separators=(",", ":")).encode()
        self.publisher.publish_now(self.config.topic("health"), payload, retain=True)
