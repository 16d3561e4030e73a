"""The collector process: MQTT in, database out, an acknowledgement only after the commit.

    paho network thread: on_message -> inbox (SimpleQueue)
    main thread: take a batch -> decode -> one transaction -> commit -> PUBACK each

Results and events come through an MQTT 5 shared subscription
(``$share/<group>/...``): collectors of one group split that stream, each
message going to one of them. Health and status are retained "latest state"
messages, and a shared subscription never receives retained messages, so every
collector subscribes to them directly; storing them is an idempotent update.

The session is persistent (clean start off, a session expiry), and a message is
acknowledged only once its row is committed: whatever is published while the
collector is down, crashes or is killed, is sent again by the broker, and a
re-delivery of a stored result is only counted.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import signal
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from types import FrameType
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from edge.hub.config import HubConfig, read_secret
from edge.hub.errors import HubError
from edge.hub.messages import Record, Rejected, decode
from edge.hub.queries import find_gaps
from edge.hub.store import Store, WriteReport

log = logging.getLogger(__name__)

HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)
TICK_S = 0.2
#: seconds between retries while the database refuses to commit
RETRY_MAX_S = 30.0
SUMMARY_EVERY_S = 60.0


@dataclass(frozen=True)
class Delivery:
    """One message as the broker delivered it, and which connection it came on."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    #: the connection's number: an ack is only valid on the connection it came on
    link: int


def subscriptions(config: HubConfig) -> list[str]:
    """The topic filters: shared for the streams, direct for the retained state."""
    mqtt = config.mqtt
    shared = f"$share/{mqtt.group}/{mqtt.topic_prefix}/+/+"
    direct = f"{mqtt.topic_prefix}/+/+"
    return [f"{shared}/results", f"{shared}/events", f"{direct}/health", f"{direct}/status"]


class Collector:
    def __init__(self, config: HubConfig, store: Store) -> None:
        self.config = config
        self.store = store
        self.should_exit = threading.Event()
        self._inbox: queue.SimpleQueue[Delivery] = queue.SimpleQueue()
        self._ack_lock = threading.Lock()
        self._link = 0
        self._subscribe_mid = -1
        self._fatal: str | None = None
        self._totals = WriteReport()
        self._client = self._make_client()

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
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = mqtt.session_expiry_s
        properties.ReceiveMaximum = mqtt.receive_maximum
        self._client.connect_async(
            mqtt.host, mqtt.port, keepalive=mqtt.keepalive_s, clean_start=False,
            properties=properties,
        )  # fmt: skip
        self._client.loop_start()
        log.info("collector %s starting: broker %s:%d", mqtt.client_id, mqtt.host, mqtt.port)

    def main_loop(self) -> None:
        next_summary = time.monotonic() + SUMMARY_EVERY_S
        while not self.should_exit.is_set():
            batch = self._take_batch(block=True)
            if batch:
                self._commit(batch)
            if self._fatal is not None:
                raise HubError(self._fatal)
            if time.monotonic() >= next_summary:
                self._log_summary()
                next_summary = time.monotonic() + SUMMARY_EVERY_S

    def shutdown(self) -> None:
        """Commit and acknowledge what already arrived, then leave the session to the broker."""
        while batch := self._take_batch(block=False):
            if not self._commit(batch):
                break
        self._client.disconnect()
        self._client.loop_stop()
        self._log_summary()
        log.info("collector stopped")

    def request_exit(self, signum: int = signal.SIGTERM, frame: FrameType | None = None) -> None:
        self.should_exit.set()

    # -- the main thread's work ---------------------------------------------------------------

    def _take_batch(self, *, block: bool) -> list[Delivery]:
        batch: list[Delivery] = []
        try:
            if block:
                batch.append(self._inbox.get(timeout=TICK_S))
            while len(batch) < self.config.database.batch:
                batch.append(self._inbox.get_nowait())
        except queue.Empty:
            pass  # the inbox is drained: commit what there is
        return batch

    def _commit(self, batch: list[Delivery]) -> bool:
        """Store ``batch`` and acknowledge it; False if the database never took it."""
        pairs = [(delivery, self._decode(delivery)) for delivery in batch]
        report = self._store_with_retries(pairs)
        if report is None:
            return False
        for delivery in batch:
            self._ack(delivery)
        for delivery, record in pairs:
            if isinstance(record, Rejected):
                # Not the detail: it may quote the message's values, which stay in the database.
                log.warning("rejected a message on %s (%s); kept in the rejects table",
                            delivery.topic, record.reason)  # fmt: skip
        self._account(report)
        return True

    def _decode(self, delivery: Delivery) -> Record:
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
                return self.store.write([record for _, record in pairs], _utc_now())
            except OperationalError as exc:
                # Unreachable, locked or restarting: the batch waits, unacknowledged.
                log.error("database unavailable, retrying in %.0fs: %s", delay, exc.orig)
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
            with self.store.engine.connect() as connection:
                open_gaps = find_gaps(connection, site=site, device=device)
            missing = sum(gap.count for gap in open_gaps)
            if missing:
                log.warning("%s/%s: %d seq still missing", site, device, missing)
            else:
                log.info("%s/%s: gap closed, no seq missing", site, device)

    def _ack(self, delivery: Delivery) -> None:
        with self._ack_lock:
            if delivery.link != self._link:
                # The connection it came on is gone; the broker sends it again and the
                # store counts the re-delivery.
                return
            self._client.ack(delivery.mid, delivery.qos)

    def _log_summary(self) -> None:
        totals = self._totals
        log.info(
            "so far: %d results stored, %d re-deliveries, %d updates, %d rejected",
            totals.stored, totals.duplicates, totals.updates, totals.rejected,
        )  # fmt: skip

    # -- paho -----------------------------------------------------------------------------

    def _make_client(self) -> paho.Client:
        mqtt = self.config.mqtt
        client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=mqtt.client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
            manual_ack=True,
        )
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        if mqtt.username is not None:
            password = read_secret(mqtt.password_file) if mqtt.password_file else None
            client.username_pw_set(mqtt.username, password)
        if mqtt.tls is not None:
            tls = mqtt.tls
            client.tls_set(
                ca_certs=str(tls.ca_file) if tls.ca_file else None,
                certfile=str(tls.cert_file) if tls.cert_file else None,
                keyfile=str(tls.key_file) if tls.key_file else None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        return client

    def _on_connect(
        self, client: Any, userdata: Any, flags: Any, reason: ReasonCode, properties: Any
    ) -> None:
        if reason.is_failure:
            log.error("broker refused the connection: %s", reason)
            return
        log.info("connected (session present: %s)", bool(flags.session_present))
        options = SubscribeOptions(qos=1)
        _rc, self._subscribe_mid = client.subscribe(
            [(topic, options) for topic in subscriptions(self.config)]
        )

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        mqtt = self.config.mqtt
        log.warning("cannot reach the broker at %s:%d; retrying", mqtt.host, mqtt.port)

    def _on_subscribe(
        self, client: Any, userdata: Any, mid: int, reasons: list[ReasonCode], properties: Any
    ) -> None:
        topics = subscriptions(self.config)
        refused = [f"{t}: {r}" for t, r in zip(topics, reasons, strict=False) if r.is_failure]
        if refused:
            self._fatal = "broker refused subscriptions: " + "; ".join(refused)
            log.error("%s", self._fatal)
            return
        log.info("subscribed to %s", ", ".join(topics))

    def _on_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason: ReasonCode, properties: Any
    ) -> None:
        with self._ack_lock:
            self._link += 1
        if not self.should_exit.is_set():
            log.warning("disconnected from broker (%s); reconnecting", reason)

    def _on_message(self, client: Any, userdata: Any, message: paho.MQTTMessage) -> None:
        self._inbox.put(
            Delivery(message.topic, bytes(message.payload), message.mid, message.qos, self._link)
        )

    @contextlib.contextmanager
    def _signals_captured(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.request_exit) for sig in HANDLED_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _add(total: WriteReport, part: WriteReport) -> None:
    """Add ``part``'s counts to ``total`` (not its notices)."""
    total.stored += part.stored
    total.duplicates += part.duplicates
    total.rejected += part.rejected
    total.updates += part.updates


def _utc_now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)
