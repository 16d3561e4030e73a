"""The collector process: MQTT in, database out, an acknowledgement only after the commit.

    paho network thread (edge.hub.link): on_message -> inbox (SimpleQueue)
    main thread: take a batch (what is queued, up to database.batch, 50 ms at most)
                 -> decode -> one transaction -> commit -> PUBACK each
                 -> confirm to each box (edge.confirm/1); now and then, ask for gaps

A message is acknowledged only once its row is committed: whatever is published
while the collector is down, crashes or is killed, is sent again by the broker
(the session is persistent), and a re-delivery of a stored result is only
counted. While the database is unavailable the batch waits, unacknowledged.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import signal
import threading
import time
from types import FrameType

from sqlalchemy.exc import OperationalError, SQLAlchemyError

from edge.common import signals
from edge.delivery.protocol import confirm_message, encode
from edge.hub.config import HubConfig
from edge.hub.database import utc_now
from edge.hub.errors import HubError
from edge.hub.link import Delivery, SessionLink
from edge.hub.messages import Record, Rejected, decode, oversized
from edge.hub.queries import find_gaps
from edge.hub.repair import GapRepair
from edge.hub.store import Store, WriteReport

log = logging.getLogger(__name__)

TICK_S = 0.2
#: seconds between retries while the database refuses to commit
RETRY_MAX_S = 30.0
SUMMARY_EVERY_S = 60.0
#: seconds a batch waits for more messages after its first (see Collector._take_batch)
BATCH_WAIT_S = 0.05


class Collector:
    def __init__(self, config: HubConfig, store: Store) -> None:
        self.config = config
        self.store = store
        self.should_exit = threading.Event()
        self._inbox: queue.SimpleQueue[Delivery] = queue.SimpleQueue()
        self._totals = WriteReport()
        self.link = SessionLink(config.mqtt, self._inbox.put)
        self.repair = GapRepair(self.link, config.mqtt.topic_prefix, config.mqtt.resend_after_s)

    # -- life cycle ---------------------------------------------------------------------

    def run(self) -> None:
        """Run until SIGTERM or SIGINT, then commit what was received and return.

        Raises
        ------
        HubError
            When the broker refuses a subscription, or the database refuses a reject.
        """
        with self._signals_captured():
            self.start()
            try:
                self.main_loop()
            finally:
                self.shutdown()

    def start(self) -> None:
        mqtt = self.config.mqtt
        self.link.start()
        log.info("collector %s starting: broker %s:%d", mqtt.client_id, mqtt.host, mqtt.port)

    def main_loop(self) -> None:
        next_summary = time.monotonic() + SUMMARY_EVERY_S
        while not self.should_exit.is_set():
            batch = self._take_batch(block=True)
            if batch:
                self._commit(batch)
            if self.link.fatal is not None:
                raise HubError(self.link.fatal)
            if self.repair.due():
                self._ask_for_gaps()
            if time.monotonic() >= next_summary:
                self._log_summary()
                next_summary = time.monotonic() + SUMMARY_EVERY_S

    def shutdown(self) -> None:
        """Commit and acknowledge what already arrived, then leave the session to the broker."""
        while batch := self._take_batch(block=False):
            if not self._commit(batch):
                break
        self.link.stop()
        self._log_summary()
        log.info("collector stopped")

    def request_exit(self, signum: int = signal.SIGTERM, frame: FrameType | None = None) -> None:
        self.should_exit.set()

    # -- the main thread's work ---------------------------------------------------------------

    def _take_batch(self, *, block: bool) -> list[Delivery]:
        """Up to ``database.batch`` deliveries; if ``block``, waits a tick for the first.

        After the first, what is queued is drained, and for up to ``BATCH_WAIT_S`` what
        arrives too: a full batch costs the database a few statements, where a batch of
        one costs as many (the acknowledgements wait that long at most).
        """
        batch: list[Delivery] = []
        if block:
            try:
                batch.append(self._inbox.get(timeout=TICK_S))
            except queue.Empty:
                return batch
        deadline = time.monotonic() + BATCH_WAIT_S
        while len(batch) < self.config.database.batch:
            left = deadline - time.monotonic() if block else 0.0
            try:
                batch.append(
                    self._inbox.get(timeout=left) if left > 0 else self._inbox.get_nowait()
                )
            except queue.Empty:
                break
        return batch

    def _commit(self, batch: list[Delivery]) -> bool:
        """Store ``batch`` and acknowledge it; False if the database never took it."""
        pairs = [(delivery, self._decode(delivery)) for delivery in batch]
        report = self._store_with_retries(pairs)
        if report is None:
            return False
        for delivery in batch:
            self.link.ack(delivery)
        self._confirm(report)
        for delivery, record in pairs:
            if isinstance(record, Rejected):
                # Not the detail: it may quote the message's values, which stay in the database.
                log.warning("rejected a message on %s (%s); kept in the rejects table",
                            delivery.topic, record.reason)  # fmt: skip
        self._account(report)
        return True

    def _confirm(self, report: WriteReport) -> None:
        """Tell each box how far its results are committed (retained: it reads it at connect)."""
        prefix = self.config.mqtt.topic_prefix
        for (site, device), confirmation in sorted(report.confirms.items()):
            if confirmation is not None:
                topic = f"{prefix}/{site}/{device}/confirm"
                self.link.publish(topic, encode(confirm_message(confirmation)), retain=True)

    def _ask_for_gaps(self) -> None:
        try:
            with self.store.engine.connect() as connection:
                self.repair.step(connection)
        except SQLAlchemyError as exc:  # asked again at the next check
            log.warning("cannot look for gaps now: %s", _one_line(exc))

    def _decode(self, delivery: Delivery) -> Record:
        mqtt = self.config.mqtt
        refused = oversized(delivery.topic, delivery.payload, mqtt.max_message_bytes)
        if refused is not None:
            return refused
        try:
            return decode(delivery.topic, delivery.payload, self.config.mqtt.topic_prefix)
        except Exception as exc:  # a decoder bug must reject one message, not stop the hub
            log.exception("cannot decode a message on %s", delivery.topic)
            return Rejected(delivery.topic, delivery.payload, "internal_error", repr(exc))

    def _store_with_retries(self, pairs: list[tuple[Delivery, Record]]) -> WriteReport | None:
        """Commit ``pairs``, waiting out an unavailable database; None if told to stop first.

        A batch the database refuses for its content (a constraint, a value out of
        range) is written again one message at a time, and the one message it
        still refuses is stored as a ``storage_error`` reject instead.
        """
        delay = 1.0
        while True:
            try:
                return self.store.write([record for _, record in pairs], utc_now())
            except OperationalError as exc:
                # Unreachable, locked or restarting: the batch waits, unacknowledged.
                log.error("database unavailable, retrying in %.0fs: %s", delay, _one_line(exc.orig))
            except SQLAlchemyError as exc:
                return self._store_apart(pairs, exc)
            if self.should_exit.wait(delay):
                log.warning("stopping with %d messages uncommitted: the broker keeps them",
                            len(pairs))  # fmt: skip
                return None
            delay = min(delay * 2, RETRY_MAX_S)

    def _store_apart(
        self, pairs: list[tuple[Delivery, Record]], error: SQLAlchemyError
    ) -> WriteReport | None:
        if len(pairs) == 1:
            delivery, record = pairs[0]
            if isinstance(record, Rejected):
                raise HubError(f"the database refuses even a reject: {error}") from error
            log.error("database refused a message on %s: %s", delivery.topic, error)
            detail = str(error).splitlines()[0][:500]
            reject = Rejected(delivery.topic, delivery.payload, "storage_error", detail)
            return self._store_with_retries([(delivery, reject)])
        log.warning("database refused a batch, storing it one message at a time: %s", error)
        total = WriteReport()
        for pair in pairs:
            single = self._store_with_retries([pair])
            if single is None:
                return None
            _add(total, single)
            total.confirms.update(single.confirms)
            total.notices.extend(single.notices)
            total.late |= single.late
        return total

    def _account(self, report: WriteReport) -> None:
        _add(self._totals, report)
        log.debug("committed: %d results stored, %d re-deliveries, %d updates, %d rejected",
                  report.stored, report.duplicates, report.updates, report.rejected)  # fmt: skip
        for level, message in report.notices:
            log.log(level, "%s", message)
        for site, device in sorted(report.late):
            self._log_open_gaps(site, device)

    def _log_open_gaps(self, site: str, device: str) -> None:
        """After a late result: say whether the device still misses any."""
        try:
            with self.store.engine.connect() as connection:
                open_gaps = find_gaps(connection, site=site, device=device)
        except SQLAlchemyError as exc:  # only a log line depends on it: the data is committed
            log.warning("%s/%s: cannot recount its gaps now: %s", site, device, exc)
            return
        missing = sum(gap.count for gap in open_gaps)
        if missing:
            log.warning("%s/%s: %d seq still missing", site, device, missing)
        else:
            log.info("%s/%s: gap closed, no seq missing", site, device)

    def _log_summary(self) -> None:
        totals = self._totals
        log.info(
            "so far: %d results stored, %d re-deliveries, %d updates, %d rejected",
            totals.stored, totals.duplicates, totals.updates, totals.rejected,
        )  # fmt: skip

    def _signals_captured(self) -> contextlib.AbstractContextManager[None]:
        return signals.captured(dict.fromkeys(signals.STOP_SIGNALS, self.request_exit))


def _add(total: WriteReport, part: WriteReport) -> None:
    """Add ``part``'s counts to ``total`` (not its notices)."""
    total.stored += part.stored
    total.duplicates += part.duplicates
    total.rejected += part.rejected
    total.updates += part.updates


def _one_line(error: BaseException | None) -> str:
    """A driver's error message on one log line (psycopg's span several)."""
    return " ".join(str(error).split())
