"""Delivers the SRs in the DICOM outbox by C-STORE, one thread and queue per destination.

Each destination's queue is independent: a PACS that is down delays only its
own SRs. A send that may pass (unreachable, 0xA7xx, a lost association) is
retried with a back-off that doubles, with jitter, from ``dicom.retry_min_s``
to ``dicom.retry_max_s``; a refusal that will not change holds the destination
and raises the alarm ``dicom_destination_held`` until the service restarts
(after the PACS or the configuration is fixed), when it is tried again. The
SR leaves a destination's queue only at its success or warning response.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable

from pynetdicom.association import Association

from edge.delivery.dicom_store import DestinationState, DicomStore, Pending
from edge.dicom.scu import StoreOutcome, StoreScu
from edge.dicom_config import DicomConfig, DicomDestination
from edge.errors import JournalError

log = logging.getLogger(__name__)

#: (destination, reason): a destination refused for good and now holds its queue
HoldCallback = Callable[[str, str], None]
#: (destination, SR SOP Instance UID, seconds from queueing to the C-STORE response)
DeliveredCallback = Callable[[str, str, float], None]
#: the longest a sender sleeps before it looks at its queue again
IDLE_S = 1.0


class DicomOutbox:
    def __init__(
        self,
        config: DicomConfig,
        store: DicomStore,
        *,
        on_hold: HoldCallback,
        on_delivered: DeliveredCallback,
    ) -> None:
        self._store = store
        self._senders = [
            _Sender(config, destination, store, on_hold, on_delivered)
            for destination in config.destinations
        ]

    @property
    def names(self) -> list[str]:
        return [sender.name for sender in self._senders]

    def start(self) -> None:
        for sender in self._senders:
            reason = self._store.release(sender.name)
            if reason is not None:
                log.warning("DICOM destination %s: held before (%s); trying it again",
                            sender.name, reason)  # fmt: skip
            sender.start()

    def wake(self) -> None:
        """New SRs were queued."""
        for sender in self._senders:
            sender.wake.set()

    def states(self) -> list[DestinationState]:
        return self._store.states(self.names)

    def is_alive(self) -> bool:
        return all(sender.is_alive() for sender in self._senders)

    def stop(self, timeout: float) -> None:
        for sender in self._senders:
            sender.stopping.set()
            sender.wake.set()
        deadline = time.monotonic() + timeout
        for sender in self._senders:
            sender.join(max(0.0, deadline - time.monotonic()))


class _Sender:
    """The thread that owns one destination's queue and its SCU."""

    def __init__(
        self,
        config: DicomConfig,
        destination: DicomDestination,
        store: DicomStore,
        on_hold: HoldCallback,
        on_delivered: DeliveredCallback,
    ) -> None:
        self.name = destination.name
        self._config = config
        self._scu = StoreScu(config.ae_title, destination)
        self._store = store
        self._on_hold = on_hold
        self._on_delivered = on_delivered
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self._held = False
        self._thread = threading.Thread(target=self._run, name=f"dicom-{self.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                self._deliver_due()
            except JournalError as exc:  # the disk, not the PACS: kept, tried again
                log.error("DICOM destination %s: %s", self.name, exc)
            except Exception:  # a bug must not end delivery: the store keeps every SR
                log.exception("DICOM destination %s: sender failed; going on", self.name)
            self.wake.wait(self._sleep_s())
            self.wake.clear()

    def _sleep_s(self) -> float:
        if self._held:
            return IDLE_S
        try:
            at = self._store.next_retry(self.name)
        except JournalError:
            return IDLE_S
        return IDLE_S if at is None else min(IDLE_S, max(0.0, at - time.time()))

    def _deliver_due(self) -> None:
        """Send everything due over one association; stop at the first failure."""
        if self._held:
            return
        pending = self._store.due(self.name, time.time())
        if pending is None:
            return
        opened = self._scu.open()
        if isinstance(opened, StoreOutcome):
            self._settle(pending, opened)
            return
        try:
            self._send_all(opened, pending)
        finally:
            if opened.is_established:
                opened.release()

    def _send_all(self, assoc: Association, first: Pending) -> None:
        pending: Pending | None = first
        while pending is not None and not self.stopping.is_set():
            outcome = self._scu.send(assoc, pending.payload)
            self._settle(pending, outcome)
            if outcome.decision != "done" or not assoc.is_established:
                return
            pending = self._store.due(self.name, time.time())

    def _settle(self, pending: Pending, outcome: StoreOutcome) -> None:
        if outcome.decision == "done":
            self._store.delivered(pending.sop_uid, self.name)
            self._on_delivered(self.name, pending.sop_uid, time.time() - pending.created_at)
            return
        if outcome.decision == "hold":
            self._held = True
            self._store.hold(self.name, outcome.detail)
            self._store.failed(pending.sop_uid, self.name, outcome.detail, time.time())
            log.error("DICOM destination %s refused the SR for good (%s): its queue holds",
                      self.name, outcome.detail)  # fmt: skip
            self._on_hold(self.name, outcome.detail)
            return
        delay = self._backoff(pending.attempts)
        self._store.failed(pending.sop_uid, self.name, outcome.detail, time.time() + delay)
        log.warning("DICOM destination %s: %s; retrying in %.1f s",
                    self.name, outcome.detail, delay)  # fmt: skip

    def _backoff(self, attempts: int) -> float:
        base = min(self._config.retry_max_s, self._config.retry_min_s * 2 ** min(attempts, 30))
        return float(min(self._config.retry_max_s, base * random.uniform(0.8, 1.2)))
